//! AuditEvents: typed, append-only, hash-chained.
//!
//! Each record holds `prev_hash` and `hash = SHA-256(prev_hash ‖ canonical JSON)`, where the
//! canonical JSON is the record's `source`, `seq`, `time` (unix milliseconds), `kind` and the
//! event's fields, with object keys sorted and no whitespace. The chain of one source starts
//! with a `prev_hash` of 64 zeros. This module is pure; the store and the gateway's spool use it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use sallyport_ca::policy::DenyReason;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything the audit log records. Adding a kind makes the compiler show every place that
/// must decide what to do with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    LoginSucceeded {
        engineer: String,
        groups: Vec<String>,
        source_ip: Option<String>,
    },
    LoginFailed {
        /// The name as typed (escaped for display), may not be a real engineer.
        engineer: String,
        code: String,
        reason: String,
        source_ip: Option<String>,
    },
    AccountLoginSucceeded {
        account: String,
        role: String,
        customer: Option<String>,
    },
    AccountLoginFailed {
        account: String,
        code: String,
        reason: String,
    },
    CertificateDenied {
        engineer: String,
        ticket: String,
        cluster: String,
        reasons: Vec<DenyReason>,
    },
    CertificateIssued {
        engineer: String,
        ticket: String,
        cluster: String,
        customer: String,
        grant: String,
        approval: String,
        request: Option<String>,
        serial: String,
        key_id: String,
        logins: Vec<String>,
        valid_after: u64,
        valid_before: u64,
        public_key: String,
    },
    AccessRequestCreated {
        request: String,
        engineer: String,
        ticket: String,
        cluster: String,
        approval: String,
    },
    AccessRequestDecided {
        request: String,
        engineer: String,
        ticket: String,
        cluster: String,
        decided_by: String,
        status: String,
        reason: Option<String>,
    },
    ApprovalSaved {
        approval: String,
        customer: String,
        cluster: String,
        group: String,
        by: String,
        created: bool,
        detail: Value,
    },
    ApprovalWithdrawn {
        approval: String,
        customer: String,
        cluster: String,
        group: String,
        by: String,
    },
    CustomerPolicySaved {
        customer: String,
        policy: String,
        by: String,
    },
    Revoked {
        scope: String,
        target: String,
        serials: Vec<String>,
        by: String,
        reason: String,
        engineer: Option<String>,
        ticket: Option<String>,
        cluster: Option<String>,
    },
    TicketSaved {
        ticket: String,
        customer: String,
        cluster: String,
        engineer: String,
        status: String,
        by: String,
    },
    /// Operator actions on customers, clusters, nodes, engineers, accounts and tokens.
    AdminChange {
        action: String,
        target: String,
        by: String,
        customer: Option<String>,
        cluster: Option<String>,
        node: Option<String>,
        engineer: Option<String>,
    },
    /// A gateway spent its join token and got its credential. The fingerprints (SHA-256) name
    /// the cluster's node CA and host CA keys it brought.
    GatewayEnrolled {
        gateway: String,
        name: String,
        cluster: String,
        customer: String,
        node_ca: String,
        host_ca: String,
        source_ip: Option<String>,
    },
    /// A gateway uploaded a session's recording (stored once; identical re-uploads are not
    /// recorded again).
    RecordingStored {
        session: String,
        gateway: String,
        cluster: String,
        engineer: Option<String>,
        ticket: Option<String>,
        node: Option<String>,
        recording_kind: String,
        size: u64,
        sha256: String,
    },
    /// Someone read a session's recording.
    RecordingRead {
        session: String,
        by: String,
        cluster: String,
        engineer: Option<String>,
        ticket: Option<String>,
        node: Option<String>,
    },
    /// An edge checked an engineer's TOTP code for a session whose certificate asks for
    /// per-session MFA (`mfa@sallyport.dev`), and it was right. `by` is the edge (`edge:<name>`);
    /// ticket, cluster and source_ip are what the edge read from the certificate and connection.
    SessionMfaVerified {
        engineer: String,
        by: String,
        ticket: Option<String>,
        cluster: Option<String>,
        source_ip: Option<String>,
    },
    /// A per-session TOTP code was refused (`code`: bad_totp, totp_replayed, totp_not_enrolled,
    /// locked_out, invalid_engineer). Counted toward the same lockout as logins.
    SessionMfaFailed {
        /// The name as sent (escaped for display), may not be a real engineer.
        engineer: String,
        code: String,
        reason: String,
        by: String,
        ticket: Option<String>,
        cluster: Option<String>,
        source_ip: Option<String>,
    },
    /// A request refused before it reached a decision: bad token, another customer's data...
    Refused {
        by: String,
        action: String,
        reason: String,
        customer: Option<String>,
        cluster: Option<String>,
    },
}

impl AuditEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::LoginSucceeded { .. } => "login_succeeded",
            AuditEvent::LoginFailed { .. } => "login_failed",
            AuditEvent::AccountLoginSucceeded { .. } => "account_login_succeeded",
            AuditEvent::AccountLoginFailed { .. } => "account_login_failed",
            AuditEvent::CertificateDenied { .. } => "certificate_denied",
            AuditEvent::CertificateIssued { .. } => "certificate_issued",
            AuditEvent::AccessRequestCreated { .. } => "access_request_created",
            AuditEvent::AccessRequestDecided { .. } => "access_request_decided",
            AuditEvent::ApprovalSaved { .. } => "approval_saved",
            AuditEvent::ApprovalWithdrawn { .. } => "approval_withdrawn",
            AuditEvent::CustomerPolicySaved { .. } => "customer_policy_saved",
            AuditEvent::Revoked { .. } => "revoked",
            AuditEvent::TicketSaved { .. } => "ticket_saved",
            AuditEvent::AdminChange { .. } => "admin_change",
            AuditEvent::GatewayEnrolled { .. } => "gateway_enrolled",
            AuditEvent::RecordingStored { .. } => "recording_stored",
            AuditEvent::RecordingRead { .. } => "recording_read",
            AuditEvent::SessionMfaVerified { .. } => "session_mfa_verified",
            AuditEvent::SessionMfaFailed { .. } => "session_mfa_failed",
            AuditEvent::Refused { .. } => "refused",
        }
    }

    /// The event's fields (without `kind`), as stored.
    pub fn data(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("kind");
        }
        v
    }
}

/// One link of a chain, as stored and shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub source: String,
    pub seq: u64,
    /// Unix milliseconds.
    pub time: u64,
    pub kind: String,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields indexed for search, read from an event's data.
pub const SUBJECT_FIELDS: [&str; 5] = ["engineer", "ticket", "cluster", "node", "session"];

impl AuditRecord {
    /// Make the next link after `prev` (`None` = the first of the source).
    pub fn next(
        source: &str,
        prev: Option<(u64, &str)>,
        time: u64,
        kind: &str,
        data: Value,
    ) -> AuditRecord {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let mut r = AuditRecord {
            source: source.into(),
            seq,
            time,
            kind: kind.into(),
            data,
            prev_hash,
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    pub fn canonical(&self) -> String {
        let v = serde_json::json!({
            "source": self.source,
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "data": self.data,
        });
        let mut out = String::new();
        write_canonical(&v, &mut out);
        out
    }

    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(self.canonical().as_bytes());
        hex::encode(h.finalize())
    }

    pub fn subject(&self, field: &str) -> Option<String> {
        self.data
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// JSON with object keys sorted, no whitespace (serde_json's own escaping of strings).
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub source: String,
    pub seq: u64,
    pub problem: String,
}

/// Check records of one source, in sequence order, from its first record.
pub fn verify_chain(records: &[AuditRecord]) -> Result<u64, ChainBreak> {
    let mut prev: Option<&AuditRecord> = None;
    for r in records {
        let brk = |problem: String| ChainBreak {
            source: r.source.clone(),
            seq: r.seq,
            problem,
        };
        let (want_seq, want_prev) = match prev {
            Some(p) => (p.seq + 1, p.hash.as_str()),
            None => (1, GENESIS),
        };
        if r.seq != want_seq {
            return Err(brk(format!(
                "expected sequence {want_seq}: an event is missing"
            )));
        }
        if r.prev_hash != want_prev {
            return Err(brk(
                "prev_hash does not match the previous event's hash".into()
            ));
        }
        if r.compute_hash() != r.hash {
            return Err(brk(
                "hash does not match the event's contents: it was altered".into(),
            ));
        }
        prev = Some(r);
    }
    Ok(records.len() as u64)
}

/// Display-safe: control characters replaced, length capped. For names typed by users.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().count() > 128 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let r = AuditRecord::next(
                "broker",
                prev,
                1000 + i as u64,
                "x",
                json!({"i": i, "b": "z"}),
            );
            out.push(r);
        }
        out
    }

    #[test]
    fn canonical_sorts_keys() {
        let mut s = String::new();
        write_canonical(&json!({"b": 1, "a": {"d": [1, "x"], "c": null}}), &mut s);
        assert_eq!(s, r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#);
    }

    #[test]
    fn verify_finds_the_first_broken_link() {
        let good = chain(5);
        assert_eq!(verify_chain(&good), Ok(5));
        type Change = Box<dyn Fn(&mut Vec<AuditRecord>)>;
        let cases: Vec<(&str, Change, u64, &str)> = vec![
            (
                "data edited",
                Box::new(|c| c[2].data = json!({"i": 99})),
                3,
                "altered",
            ),
            (
                "kind edited",
                Box::new(|c| c[1].kind = "y".into()),
                2,
                "altered",
            ),
            ("time edited", Box::new(|c| c[4].time = 1), 5, "altered"),
            (
                "removed",
                Box::new(|c| {
                    c.remove(2);
                }),
                4,
                "missing",
            ),
            (
                "rehashed alone",
                Box::new(|c| {
                    c[2].data = json!({"i": 99});
                    c[2].hash = c[2].compute_hash();
                }),
                4,
                "prev_hash",
            ),
        ];
        for (name, change, seq, word) in cases {
            let mut c = good.clone();
            change(&mut c);
            let err = verify_chain(&c).unwrap_err();
            assert_eq!(err.seq, seq, "{name}");
            assert!(err.problem.contains(word), "{name}: {}", err.problem);
        }
    }

    #[test]
    fn event_kind_matches_its_tag() {
        let e = AuditEvent::Refused {
            by: "x".into(),
            action: "a".into(),
            reason: "r".into(),
            customer: None,
            cluster: None,
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["kind"], e.kind());
        assert!(e.data().get("kind").is_none());
    }

    #[test]
    fn sanitize_strips_controls() {
        assert_eq!(sanitize("a\nb\u{1b}[31m"), "a\u{fffd}b\u{fffd}[31m");
        assert_eq!(sanitize(&"x".repeat(200)).chars().count(), 129);
    }
}
