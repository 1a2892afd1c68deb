//! Who may write which chain, and what it may say: the one table of event kinds and subject
//! fields per source kind, checked by the broker at ingest and obeyed by the data plane's spool.
//!
//! | source | chain | event kinds | subject fields it may set |
//! |---|---|---|---|
//! | broker | `broker` | the broker's own typed events (its `AuditEvent` enum); nothing is ingested into it | all |
//! | edge | `edge:<name>` | [`EdgeKind`]: connection-level events only (`edge_session`, `edge_refused`, `edge_disconnected`, `edge_shutdown`, `edge_stopped`) and its own trust (`edge_user_cas_refused`) — never `command` or anything about a session's content | `engineer`, `ticket`, `cluster`, `node` ([`EDGE_SUBJECTS`]); every record names the edge itself (`edge` = its name) |
//! | gateway | `gateway:<id>` | [`GatewayKind`]: sessions, channels, commands, recordings, file transfers, forwards, env, its own trust (`user_cas_refused`) | all five ([`GATEWAY_SUBJECTS`]); `cluster`, when set, is the gateway's own cluster |
//!
//! Subject fields are what searches and customers' reports filter on, so their values are
//! checked: `engineer`, `ticket`, `cluster` and `node` are [`valid_name`]s, `session` is a
//! [`valid_session`] id (`[A-Za-z0-9_-]{1,64}`); `null` means "none". No control characters or
//! escape sequences can reach a subject field.
//!
//! An edge speaks only of its own connections: it cannot write a session's content (no
//! `command`, no `session`), and each of its records names it. The clusters, engineers and
//! tickets in an edge's records are what the connections presented (for a refused certificate,
//! an unverified claim): they are the edge's word, signed by its key, never a gateway's.
//!
//! The data plane writes kinds only through the typed enums, so a kind outside its allowlist
//! cannot be written; [`conform`] moves a subject value that would be refused (a name with
//! control characters taken from a refused certificate, say) to `<field>_invalid`, shown
//! escaped. A record the broker refuses is therefore a bug or tampering, never routine.

use serde_json::Value;

use crate::{SUBJECT_FIELDS, sanitize, valid_name};

/// The kinds of source that write chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Broker,
    Edge,
    Gateway,
}

impl Role {
    /// The role and the name of a chain's source: `broker`, `edge:<name>`, `gateway:<id>`.
    pub fn of(source: &str) -> Option<(Role, &str)> {
        if source == "broker" {
            return Some((Role::Broker, ""));
        }
        if let Some(n) = source.strip_prefix("edge:") {
            return Some((Role::Edge, n));
        }
        source.strip_prefix("gateway:").map(|n| (Role::Gateway, n))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Edge => "edge",
            Role::Gateway => "gateway",
        }
    }
}

/// An event kind of one role's chain.
pub trait ChainKind: Copy + std::fmt::Debug + Send + Sync + 'static {
    const ROLE: Role;
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    /// A record that closes or accounts for what was already allowed: it may use the spool's
    /// reserve of free space.
    fn closes(self) -> bool;
}

macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident, $role:expr, { $($variant:ident => $text:literal, $closes:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant,)* }

        impl ChainKind for $name {
            const ROLE: Role = $role;
            const ALL: &'static [Self] = &[$($name::$variant,)*];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
            fn closes(self) -> bool {
                match self { $($name::$variant => $closes,)* }
            }
        }
    };
}

kinds!(
    /// What an edge writes: about the connections it accepted, refused or ended, and itself.
    EdgeKind, Role::Edge, {
        EdgeSession => "edge_session", false;
        EdgeRefused => "edge_refused", false;
        EdgeDisconnected => "edge_disconnected", false;
        EdgeShutdown => "edge_shutdown", false;
        EdgeStopped => "edge_stopped", false;
        // A change of the trusted user CAs that no CA it trusts signed (refused, the last set kept).
        EdgeUserCasRefused => "edge_user_cas_refused", false;
        // SIGHUP: the config was read again; what was applied and what needs a restart.
        EdgeConfigReloaded => "edge_config_reloaded", false;
        // SIGHUP: the config read again was not usable; nothing changed.
        EdgeConfigReloadRefused => "edge_config_reload_refused", false;
    }
);

kinds!(
    /// What a gateway writes: the sessions it terminated, their channels and content.
    GatewayKind, Role::Gateway, {
        SessionRefused => "session_refused", false;
        SessionStarted => "session_started", false;
        SessionTerminated => "session_terminated", true;
        SessionEnded => "session_ended", true;
        NodeUnreachable => "node_unreachable", false;
        NodeKeyRefused => "node_key_refused", false;
        NodeKeyPinned => "node_key_pinned", false;
        // A moderated session's first observer joined: what waited for one now runs.
        ObserverJoined => "observer_joined", false;
        ChannelRefused => "channel_refused", false;
        ForwardRefused => "forward_refused", false;
        ChannelExit => "channel_exit", true;
        Env => "env", false;
        Shell => "shell", false;
        Command => "command", false;
        LineEntered => "line_entered", false;
        InputHidden => "input_hidden", false;
        FullScreen => "full_screen", false;
        FullScreenSuppressed => "full_screen_suppressed", false;
        OutputRecorded => "output_recorded", true;
        SftpStarted => "sftp_started", false;
        FileTransfer => "file_transfer", false;
        FileOp => "file_op", false;
        Forward => "forward", false;
        ForwardFailed => "forward_failed", false;
        RecordingFinished => "recording_finished", true;
        RecordingFailed => "recording_failed", true;
        RecordingRecovered => "recording_recovered", false;
        RecordingUnreadable => "recording_unreadable", false;
        // A change of the trusted user CAs that no CA it trusts signed (refused, the last set kept).
        UserCasRefused => "user_cas_refused", false;
        // SIGHUP: the config was read again; what was applied and what needs a restart.
        GatewayConfigReloaded => "gateway_config_reloaded", false;
        // SIGHUP: the config read again was not usable; nothing changed.
        GatewayConfigReloadRefused => "gateway_config_reload_refused", false;
    }
);

/// The subject fields an edge may set.
pub const EDGE_SUBJECTS: [&str; 4] = ["engineer", "ticket", "cluster", "node"];
/// The subject fields a gateway may set.
pub const GATEWAY_SUBJECTS: [&str; 5] = SUBJECT_FIELDS;

/// A session id as gateways make them and recordings are named: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_session(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The writer of one chain other than the broker's, and what bounds what it may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    Edge { name: String },
    Gateway { id: String, cluster: String },
}

impl Writer {
    pub fn role(&self) -> Role {
        match self {
            Writer::Edge { .. } => Role::Edge,
            Writer::Gateway { .. } => Role::Gateway,
        }
    }

    /// The chain it writes.
    pub fn source(&self) -> String {
        match self {
            Writer::Edge { name } => format!("edge:{name}"),
            Writer::Gateway { id, .. } => format!("gateway:{id}"),
        }
    }

    /// The event kinds it may write.
    pub fn kinds(&self) -> Vec<&'static str> {
        match self {
            Writer::Edge { .. } => EdgeKind::ALL.iter().map(|k| k.as_str()).collect(),
            Writer::Gateway { .. } => GatewayKind::ALL.iter().map(|k| k.as_str()).collect(),
        }
    }

    /// The subject fields it may set.
    pub fn subjects(&self) -> &'static [&'static str] {
        match self {
            Writer::Edge { .. } => &EDGE_SUBJECTS,
            Writer::Gateway { .. } => &GATEWAY_SUBJECTS,
        }
    }
}

/// Why a record may not be written by its writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Is `value` acceptable in subject field `field` (a problem in words when not)?
fn subject_problem(field: &str, value: &Value) -> Option<String> {
    let s = match value {
        Value::Null => return None,
        Value::String(s) => s,
        _ => {
            return Some(format!(
                "the subject field {field} must be a string or null"
            ));
        }
    };
    let ok = if field == "session" {
        valid_session(s)
    } else {
        valid_name(s)
    };
    (!ok).then(|| {
        let rule = if field == "session" {
            "letters, digits, '_' and '-', at most 64"
        } else {
            "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"
        };
        format!(
            "the subject field {field} {:?} is not a valid name ({rule}; no control characters \
             or escape sequences)",
            sanitize(s)
        )
    })
}

/// May `writer` write a record of `kind` with `data`? The broker's check at ingest.
pub fn check(writer: &Writer, kind: &str, data: &Value) -> Result<(), Refusal> {
    let role = match writer {
        Writer::Edge { .. } => "an edge",
        Writer::Gateway { .. } => "a gateway",
    };
    if !writer.kinds().contains(&kind) {
        return Err(Refusal(format!(
            "{role} may not write {:?} events ({role} writes only {})",
            sanitize(kind),
            writer.kinds().join(", ")
        )));
    }
    let Value::Object(fields) = data else {
        return Err(Refusal("data must be a JSON object".into()));
    };
    for field in SUBJECT_FIELDS {
        let Some(value) = fields.get(field) else {
            continue;
        };
        if !value.is_null() && !writer.subjects().contains(&field) {
            return Err(Refusal(format!(
                "{role} may not set the subject field {field} (it sets only {})",
                writer.subjects().join(", ")
            )));
        }
        if let Some(problem) = subject_problem(field, value) {
            return Err(Refusal(problem));
        }
    }
    match writer {
        Writer::Edge { name } => {
            if fields.get("edge").and_then(Value::as_str) != Some(name.as_str()) {
                return Err(Refusal(format!(
                    "an edge speaks only of its own connections: each of its records names it \
                     (\"edge\": {name:?})"
                )));
            }
        }
        Writer::Gateway { cluster, .. } => {
            if let Some(c) = fields.get("cluster")
                && !c.is_null()
                && c.as_str() != Some(cluster.as_str())
            {
                return Err(Refusal(format!(
                    "a gateway speaks only of its own cluster ({cluster}): the record names \
                     another"
                )));
            }
        }
    }
    Ok(())
}

/// Make `data` pass [`check`] for `writer` (the kind being its own by type): a subject value it
/// may not set, or that is not a valid name, moves to `<field>_invalid` (escaped); an edge's
/// records name the edge. The data plane applies this to every record before writing it.
pub fn conform(writer: &Writer, data: Value) -> Value {
    let mut fields = match data {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    for field in SUBJECT_FIELDS {
        let Some(value) = fields.get(field) else {
            continue;
        };
        let other_cluster = matches!(writer, Writer::Gateway { cluster, .. }
            if field == "cluster" && !value.is_null() && value.as_str() != Some(cluster.as_str()));
        let refused = (!value.is_null() && !writer.subjects().contains(&field))
            || subject_problem(field, value).is_some()
            || other_cluster;
        if refused && let Some(value) = fields.remove(field) {
            let shown = match &value {
                Value::String(s) => sanitize(s),
                other => sanitize(&other.to_string()),
            };
            fields.insert(format!("{field}_invalid"), Value::String(shown));
        }
    }
    if let Writer::Edge { name } = writer
        && fields.get("edge").and_then(Value::as_str) != Some(name.as_str())
    {
        if let Some(other) = fields.remove("edge") {
            fields.insert(
                "edge_invalid".into(),
                Value::String(sanitize(&other.to_string())),
            );
        }
        fields.insert("edge".into(), Value::String(name.clone()));
    }
    // A gateway's record always names its own cluster: whatever it is about is on that cluster
    // (a record that named another kept it as `cluster_invalid` above).
    if let Writer::Gateway { cluster, .. } = writer
        && fields.get("cluster").is_none_or(Value::is_null)
    {
        fields.insert("cluster".into(), Value::String(cluster.clone()));
    }
    Value::Object(fields)
}

/// The text a chain's source signs for its head: record `seq` of `source` has hash `hash`.
/// Signing a head covers every earlier record through the hash chain.
pub fn head_message(source: &str, seq: u64, hash: &str) -> String {
    format!("sallyport audit chain head v1\nsource {source}\nseq {seq}\nhash {hash}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edge() -> Writer {
        Writer::Edge {
            name: "edge-eu1".into(),
        }
    }
    fn gateway() -> Writer {
        Writer::Gateway {
            id: "gw-1".into(),
            cluster: "acme-prod".into(),
        }
    }

    #[test]
    fn kinds_are_names_of_one_role_each() {
        let e: Vec<_> = EdgeKind::ALL.iter().map(|k| k.as_str()).collect();
        let g: Vec<_> = GatewayKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in e.iter().chain(&g) {
            assert!(valid_name(k), "{k}");
        }
        assert!(e.iter().all(|k| !g.contains(k)));
        assert!(!e.contains(&"command"));
        assert!(g.contains(&"command"));
    }

    #[test]
    fn the_table_decides() {
        let ok =
            json!({"edge": "edge-eu1", "engineer": "alice", "cluster": "acme-prod", "node": null});
        let cases: Vec<(&str, Writer, &str, Value, Option<&str>)> = vec![
            ("edge refusal", edge(), "edge_refused", ok.clone(), None),
            (
                "edge command",
                edge(),
                "command",
                ok.clone(),
                Some("may not write \"command\""),
            ),
            (
                "edge session field",
                edge(),
                "edge_session",
                json!({"edge": "edge-eu1", "session": "s-1"}),
                Some("may not set the subject field session"),
            ),
            (
                "edge names another edge",
                edge(),
                "edge_session",
                json!({"edge": "edge-xx"}),
                Some("its own connections"),
            ),
            (
                "edge names no edge",
                edge(),
                "edge_session",
                json!({}),
                Some("its own connections"),
            ),
            (
                "escape sequence",
                edge(),
                "edge_refused",
                json!({"edge": "edge-eu1", "engineer": "alice\u{1b}[2J"}),
                Some("engineer"),
            ),
            (
                "non-string subject",
                gateway(),
                "command",
                json!({"ticket": 7}),
                Some("string or null"),
            ),
            (
                "gateway command",
                gateway(),
                "command",
                json!({"cluster": "acme-prod", "session": "s-0a", "engineer": "alice"}),
                None,
            ),
            (
                "gateway other cluster",
                gateway(),
                "command",
                json!({"cluster": "globex-prod"}),
                Some("its own cluster"),
            ),
            (
                "gateway edge kind",
                gateway(),
                "edge_session",
                json!({}),
                Some("may not write"),
            ),
            (
                "bad session id",
                gateway(),
                "command",
                json!({"session": "../x"}),
                Some("session"),
            ),
            (
                "not an object",
                gateway(),
                "command",
                json!([1]),
                Some("JSON object"),
            ),
        ];
        for (name, w, kind, data, want) in cases {
            match (check(&w, kind, &data), want) {
                (Ok(()), None) => {}
                (Err(e), Some(word)) => assert!(e.0.contains(word), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn conform_makes_every_record_of_every_kind_pass() {
        let nasty = json!({
            "engineer": "al\u{1b}]0;x\u{7}ice", "ticket": "T-1", "cluster": "globex-prod",
            "node": "n1", "session": "s 1", "edge": "someone-else", "command": "ls"
        });
        for w in [edge(), gateway()] {
            for kind in w.kinds() {
                let data = conform(&w, nasty.clone());
                assert_eq!(check(&w, kind, &data), Ok(()), "{w:?} {kind}: {data}");
                assert_eq!(data["ticket"], "T-1");
                assert!(
                    data["engineer_invalid"]
                        .as_str()
                        .is_some_and(|s| !s.contains('\u{1b}'))
                );
            }
        }
        let g = conform(&gateway(), json!({"cluster": "acme-prod"}));
        assert_eq!(g, json!({"cluster": "acme-prod"}));
        // A gateway's record without a cluster, or naming another, is about its own.
        for data in [json!({}), json!({"cluster": null}), nasty.clone()] {
            assert_eq!(conform(&gateway(), data)["cluster"], "acme-prod");
        }
        let e = conform(&edge(), json!({"cluster": "globex-prod"}));
        assert_eq!(e, json!({"cluster": "globex-prod", "edge": "edge-eu1"}));
    }

    #[test]
    fn roles_of_sources() {
        assert_eq!(Role::of("broker"), Some((Role::Broker, "")));
        assert_eq!(Role::of("edge:e1"), Some((Role::Edge, "e1")));
        assert_eq!(Role::of("gateway:gw-1"), Some((Role::Gateway, "gw-1")));
        assert_eq!(Role::of("other"), None);
    }

    /// What the data plane writes is what the broker accepts: for any data, `conform` gives
    /// data that `check` passes for every kind of the writer (a record it refused would stop
    /// the chain's shipping for good), and conforming again changes nothing.
    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::*;

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                prop_oneof![
                    Just("acme-prod".to_string()),
                    Just("edge-eu1".to_string()),
                    Just("s-1_a".to_string()),
                    "[a-zA-Z0-9._-]{0,70}",
                    "\\PC{0,12}",
                    "[\\x00-\\x1f\\x7f\\u{9b}\\u{2028}a-z]{0,8}",
                    any::<String>(),
                ]
                .prop_map(Value::String),
            ]
        }

        fn json() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Objects naming the subject fields and `edge` (with any values), or any JSON.
        fn data() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                3 => prop::sample::select(vec![
                    "engineer", "ticket", "cluster", "node", "session", "edge",
                    "engineer_invalid", "edge_invalid", "value",
                ])
                .prop_map(str::to_string),
                1 => "[a-z_]{1,10}",
            ];
            prop_oneof![
                3 => proptest::collection::btree_map(key, json(), 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
                1 => json(),
            ]
        }

        fn writer() -> impl Strategy<Value = Writer> {
            prop_oneof![
                Just(edge()),
                Just(gateway()),
                "[a-z][a-z0-9-]{0,20}".prop_map(|name| Writer::Edge { name }),
                ("[a-z0-9]{1,8}", "[a-z][a-z0-9.-]{0,20}")
                    .prop_map(|(id, cluster)| Writer::Gateway { id, cluster }),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(512))]

            #[test]
            fn conformed_data_passes_the_check(writer in writer(), data in data()) {
                let conformed = conform(&writer, data);
                for kind in writer.kinds() {
                    let checked = check(&writer, kind, &conformed);
                    prop_assert!(checked.is_ok(), "{kind}: {checked:?} for {conformed}");
                }
                prop_assert_eq!(conform(&writer, conformed.clone()), conformed);
            }

            #[test]
            fn kinds_of_another_role_are_refused(writer in writer(), data in data(), kind in "\\PC{0,24}") {
                let conformed = conform(&writer, data);
                let others = match writer {
                    Writer::Edge { .. } => GatewayKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    Writer::Gateway { .. } => EdgeKind::ALL.iter().map(|k| k.as_str()).collect(),
                };
                for other in others.into_iter().chain([kind.as_str()]) {
                    if !writer.kinds().contains(&other) {
                        prop_assert!(check(&writer, other, &conformed).is_err());
                    }
                }
            }
        }
    }
}
