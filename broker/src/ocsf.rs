//! OCSF events from stored audit records, for SIEMs: `sallyport audit export --format ocsf`,
//! `GET /v1/audit/events?format=ocsf` and `GET /v1/audit/stream?format=ocsf`. Pure: a record in,
//! one OCSF 1.x event (JSON) out.
//!
//! Each kind of event of each chain has one class and activity, decided by the exhaustive
//! matches below (a new event kind does not compile until it is placed):
//!
//! | class | what of ours |
//! |---|---|
//! | SSH Activity (4007) | a gateway's sessions, channels, commands, file transfers, forwards, recordings; an edge's forwarded connections |
//! | Authentication (3002) | engineers' and accounts' logins, per-session MFA, certificate issuance and denials, certificates refused by an edge or a gateway, console logout |
//! | Account Change (3001) | disabling and enabling engineers and accounts, lockouts after a burst of failed logins, accounts created, TOTP enrolment, API tokens created and revoked |
//! | API Activity (6003) | requests, decisions, approvals, policies, tickets, revocations, terminations, watches, exports, enrolments, keys pinned, recordings stored and read, webhooks set up, removed or failing, the operator's changes, refusals of a request |
//!
//! Every event carries what each of these classes requires (checked against the OCSF schema by
//! `tests/ocsf.rs`): `category_uid`, `class_uid`, `activity_id`, `type_uid` (= `class_uid * 100 +
//! activity_id`), `severity_id`, `time` (unix ms), `metadata` (`version`, `product`), and per class:
//! `src_endpoint` or `dst_endpoint` (SSH Activity), `user` and `service` (Authentication), `user`
//! (Account Change), `actor`, `api` and `src_endpoint` (API Activity). `metadata.uid` is
//! `<source>:<seq>`, the record's key; `metadata.original_time` its time as RFC 3339;
//! `metadata.correlation_uid` the session, when there is one. Everything of ours is kept under
//! `unmapped`: `kind`, `source`, `seq`, `hash`, `prev_hash` and the event's own fields (`data`).
//!
//! What a field cannot say is left out rather than guessed: a broker event whose client address
//! the broker did not record names its `src_endpoint` `unknown`; a certificate refused before
//! any engineer was known names its `user` from the unverified claim, or `unknown`.

use serde_json::{Map, Value, json};

use crate::audit::{AuditEvent, AuditRecord};
use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind, Role};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";

/// The OCSF classes sallyport emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    SshActivity,
    Authentication,
    AccountChange,
    ApiActivity,
}

impl Class {
    pub fn uid(self) -> u64 {
        match self {
            Class::SshActivity => 4007,
            Class::Authentication => 3002,
            Class::AccountChange => 3001,
            Class::ApiActivity => 6003,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::SshActivity => "SSH Activity",
            Class::Authentication => "Authentication",
            Class::AccountChange => "Account Change",
            Class::ApiActivity => "API Activity",
        }
    }

    pub fn category_uid(self) -> u64 {
        self.uid() / 1000
    }

    pub fn category_name(self) -> &'static str {
        match self {
            Class::SshActivity => "Network Activity",
            Class::Authentication | Class::AccountChange => "Identity & Access Management",
            Class::ApiActivity => "Application Activity",
        }
    }
}

/// An activity of one class: the class follows from it, so no event can pair an activity with
/// another class's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Ssh(Ssh),
    Auth(Auth),
    Account(Account),
    Api(Api),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ssh {
    Open,
    Close,
    Reset,
    Fail,
    Refuse,
    Traffic,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Logon,
    Logoff,
    /// Certificate issuance and denial (no OCSF activity names it).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    Create,
    Enable,
    Disable,
    /// A lockout after a burst of failed logins.
    Lock,
    MfaFactorEnable,
    /// A passkey removed from an account.
    MfaFactorDisable,
    /// API tokens made and revoked.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Create,
    Read,
    Update,
    Delete,
    /// A request refused before it reached a decision.
    Other,
}

impl Activity {
    pub fn class(self) -> Class {
        match self {
            Activity::Ssh(_) => Class::SshActivity,
            Activity::Auth(_) => Class::Authentication,
            Activity::Account(_) => Class::AccountChange,
            Activity::Api(_) => Class::ApiActivity,
        }
    }

    /// The OCSF `activity_id` and its caption.
    pub fn id_and_name(self) -> (u64, &'static str) {
        match self {
            Activity::Ssh(a) => match a {
                Ssh::Open => (1, "Open"),
                Ssh::Close => (2, "Close"),
                Ssh::Reset => (3, "Reset"),
                Ssh::Fail => (4, "Fail"),
                Ssh::Refuse => (5, "Refuse"),
                Ssh::Traffic => (6, "Traffic"),
                Ssh::Other => (99, "Other"),
            },
            Activity::Auth(a) => match a {
                Auth::Logon => (1, "Logon"),
                Auth::Logoff => (2, "Logoff"),
                Auth::Other => (99, "Other"),
            },
            Activity::Account(a) => match a {
                Account::Create => (1, "Create"),
                Account::Enable => (2, "Enable"),
                Account::Disable => (5, "Disable"),
                Account::Lock => (9, "Lock"),
                Account::MfaFactorEnable => (10, "MFA Factor Enable"),
                Account::MfaFactorDisable => (11, "MFA Factor Disable"),
                Account::Other => (99, "Other"),
            },
            Activity::Api(a) => match a {
                Api::Create => (1, "Create"),
                Api::Read => (2, "Read"),
                Api::Update => (3, "Update"),
                Api::Delete => (4, "Delete"),
                Api::Other => (99, "Other"),
            },
        }
    }
}

/// OCSF `status_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Success,
    Failure,
}

impl Status {
    fn id_and_name(self) -> (u64, &'static str) {
        match self {
            Status::Unknown => (0, "Unknown"),
            Status::Success => (1, "Success"),
            Status::Failure => (2, "Failure"),
        }
    }
}

/// OCSF `severity_id`: what is routine is Informational; a refusal or a failure Medium; what
/// speaks of tampering or a broken trust High.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    fn id_and_name(self) -> (u64, &'static str) {
        match self {
            Severity::Informational => (1, "Informational"),
            Severity::Low => (2, "Low"),
            Severity::Medium => (3, "Medium"),
            Severity::High => (4, "High"),
        }
    }
}

/// Where a record goes: its activity (hence class), status and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub activity: Activity,
    pub status: Status,
    pub severity: Severity,
}

const fn ok(activity: Activity) -> Placed {
    Placed {
        activity,
        status: Status::Success,
        severity: Severity::Informational,
    }
}

const fn refused(activity: Activity) -> Placed {
    Placed {
        activity,
        status: Status::Failure,
        severity: Severity::Medium,
    }
}

const fn alarming(activity: Activity) -> Placed {
    Placed {
        activity,
        status: Status::Failure,
        severity: Severity::High,
    }
}

/// A broker event as its typed enum (`None`: a record of a shape this version does not know,
/// e.g. written by an older broker).
pub fn broker_event(r: &AuditRecord) -> Option<AuditEvent> {
    let mut m = match &r.data {
        Value::Object(m) => m.clone(),
        _ => return None,
    };
    m.insert("kind".into(), json!(r.kind));
    serde_json::from_value(Value::Object(m)).ok()
}

/// Where a stored record goes.
pub fn place(r: &AuditRecord) -> Placed {
    match Role::of(&r.source).map(|(role, _)| role) {
        Some(Role::Broker) => match broker_event(r) {
            Some(e) => place_broker(&e),
            None => Placed {
                activity: Activity::Api(Api::Other),
                status: Status::Unknown,
                severity: Severity::Informational,
            },
        },
        Some(Role::Edge) => match EdgeKind::ALL.iter().find(|k| k.as_str() == r.kind) {
            Some(k) => place_edge(*k),
            None => unknown(),
        },
        Some(Role::Gateway) => match GatewayKind::ALL.iter().find(|k| k.as_str() == r.kind) {
            Some(k) => place_gateway(*k, &r.data),
            None => unknown(),
        },
        None => unknown(),
    }
}

fn unknown() -> Placed {
    Placed {
        activity: Activity::Api(Api::Other),
        status: Status::Unknown,
        severity: Severity::Informational,
    }
}

fn place_broker(e: &AuditEvent) -> Placed {
    use Activity::{Account as Ac, Api as A, Auth as Au};
    match e {
        AuditEvent::LoginSucceeded { .. } | AuditEvent::AccountLoginSucceeded { .. } => {
            ok(Au(Auth::Logon))
        }
        AuditEvent::LoginFailed { .. } | AuditEvent::AccountLoginFailed { .. } => {
            refused(Au(Auth::Logon))
        }
        AuditEvent::SessionMfaVerified { .. } => ok(Au(Auth::Logon)),
        AuditEvent::SessionMfaFailed { .. } => refused(Au(Auth::Logon)),
        AuditEvent::ConsoleLogout { .. } => ok(Au(Auth::Logoff)),
        AuditEvent::CertificateIssued { .. } => ok(Au(Auth::Other)),
        AuditEvent::CertificateDenied { .. } => refused(Au(Auth::Other)),
        AuditEvent::AccessRequestCreated { .. } => ok(A(Api::Create)),
        AuditEvent::AccessRequestDecided { .. } => ok(A(Api::Update)),
        AuditEvent::ApprovalSaved { created, .. } => {
            ok(A(if *created { Api::Create } else { Api::Update }))
        }
        AuditEvent::ApprovalWithdrawn { .. } => ok(A(Api::Delete)),
        AuditEvent::CustomerPolicySaved { .. } => ok(A(Api::Update)),
        AuditEvent::Revoked { .. } => ok(A(Api::Delete)),
        AuditEvent::TicketSaved { .. } => ok(A(Api::Update)),
        AuditEvent::AdminChange { action, .. } => match admin_account_activity(action) {
            Some(a) => ok(Ac(a)),
            None => ok(A(admin_api_activity(action))),
        },
        AuditEvent::GatewayEnrolled { .. } => ok(A(Api::Create)),
        AuditEvent::AuditKeyPinned { .. } => ok(A(Api::Create)),
        AuditEvent::RecordingStored { .. } => ok(A(Api::Create)),
        AuditEvent::RecordingRead { .. } => ok(A(Api::Read)),
        AuditEvent::SessionTerminationRequested { .. } => ok(A(Api::Delete)),
        AuditEvent::SessionWatched { .. } => ok(A(Api::Read)),
        AuditEvent::AuditExported { .. } => ok(A(Api::Read)),
        // A lockout began: someone is guessing.
        AuditEvent::RefusalBurst { .. } => Placed {
            activity: Ac(Account::Lock),
            status: Status::Success,
            severity: Severity::High,
        },
        AuditEvent::WebhookCreated { .. } => ok(A(Api::Create)),
        AuditEvent::WebhookDeleted { .. } => ok(A(Api::Delete)),
        AuditEvent::WebhookFailed { .. } => refused(A(Api::Other)),
        AuditEvent::Refused { action, by, .. } => {
            if credential_refusal(action, by) {
                refused(Au(Auth::Logon))
            } else {
                refused(A(Api::Other))
            }
        }
    }
}

/// The changes that are about an account (an engineer's, an approver's, a reviewer's, an API
/// token's): `admin_change` actions as `broker/src/api/admin.rs` names them, and an account's
/// own passkeys (`broker/src/web/account.rs`).
fn admin_account_activity(action: &str) -> Option<Account> {
    if action.starts_with("disable_") {
        Some(Account::Disable)
    } else if action.starts_with("enable_") {
        Some(Account::Enable)
    } else if matches!(action, "enroll_engineer_totp" | "register_passkey") {
        Some(Account::MfaFactorEnable)
    } else if action == "remove_passkey" {
        Some(Account::MfaFactorDisable)
    } else if action.ends_with("_token") || action.contains("_token_") {
        Some(Account::Other)
    } else if matches!(
        action,
        "create_operator" | "create_reviewer" | "create_approver" | "create_ticket_system"
    ) {
        Some(Account::Create)
    } else {
        None
    }
}

/// The operator's other changes (customers, clusters, nodes, gateways, the TOTP store).
fn admin_api_activity(action: &str) -> Api {
    if action.starts_with("create_") {
        Api::Create
    } else if action.starts_with("revoke_") || action.starts_with("delete_") {
        Api::Delete
    } else {
        Api::Update
    }
}

/// A `refused` event about a credential (a token or a console session that is unknown,
/// revoked or disabled: `broker/src/auth.rs` names the route as the action, `GET /v1/...`, and
/// an unknown one's caller `unknown@<address>`) rather than about what the caller asked.
fn credential_refusal(action: &str, by: &str) -> bool {
    action.contains(' ') || by.starts_with("unknown@") || action == "console_session"
}

fn place_edge(k: EdgeKind) -> Placed {
    use Activity::{Api as A, Auth as Au, Ssh as S};
    match k {
        EdgeKind::EdgeSession => ok(S(Ssh::Open)),
        // What an edge refuses is a certificate (invalid, revoked, expired, for another
        // cluster or network) or a per-session code: a credential.
        EdgeKind::EdgeRefused => refused(Au(Auth::Logon)),
        EdgeKind::EdgeDisconnected => Placed {
            activity: S(Ssh::Reset),
            status: Status::Success,
            severity: Severity::Low,
        },
        EdgeKind::EdgeShutdown | EdgeKind::EdgeStopped => ok(S(Ssh::Close)),
        EdgeKind::EdgeUserCasRefused => alarming(A(Api::Update)),
        EdgeKind::EdgeConfigReloaded => ok(A(Api::Update)),
        EdgeKind::EdgeConfigReloadRefused => refused(A(Api::Update)),
    }
}

fn place_gateway(k: GatewayKind, data: &Value) -> Placed {
    use Activity::{Api as A, Auth as Au, Ssh as S};
    match k {
        GatewayKind::SessionRefused => refused(Au(Auth::Logon)),
        GatewayKind::SessionStarted => ok(S(Ssh::Open)),
        GatewayKind::SessionTerminated => Placed {
            activity: S(Ssh::Reset),
            status: Status::Success,
            severity: Severity::Low,
        },
        GatewayKind::SessionEnded => ok(S(Ssh::Close)),
        GatewayKind::NodeUnreachable => refused(S(Ssh::Fail)),
        GatewayKind::NodeKeyRefused => alarming(S(Ssh::Fail)),
        GatewayKind::NodeKeyPinned | GatewayKind::ObserverJoined => ok(S(Ssh::Other)),
        GatewayKind::ChannelRefused | GatewayKind::ForwardRefused => refused(S(Ssh::Refuse)),
        GatewayKind::ChannelExit => {
            let clean = data.get("exit_status").and_then(Value::as_u64) == Some(0);
            Placed {
                activity: S(Ssh::Traffic),
                status: if clean {
                    Status::Success
                } else {
                    Status::Failure
                },
                severity: Severity::Informational,
            }
        }
        GatewayKind::Env
        | GatewayKind::Shell
        | GatewayKind::Command
        | GatewayKind::LineEntered
        | GatewayKind::InputHidden
        | GatewayKind::FullScreen
        | GatewayKind::FullScreenSuppressed
        | GatewayKind::OutputRecorded
        | GatewayKind::SftpStarted
        | GatewayKind::FileTransfer
        | GatewayKind::FileOp => ok(S(Ssh::Traffic)),
        GatewayKind::Forward => ok(S(Ssh::Open)),
        GatewayKind::ForwardFailed => refused(S(Ssh::Fail)),
        GatewayKind::RecordingFinished | GatewayKind::RecordingRecovered => ok(S(Ssh::Other)),
        GatewayKind::RecordingFailed | GatewayKind::RecordingUnreadable => alarming(S(Ssh::Other)),
        GatewayKind::UserCasRefused => alarming(A(Api::Update)),
        GatewayKind::GatewayConfigReloaded => ok(A(Api::Update)),
        GatewayKind::GatewayConfigReloadRefused => refused(A(Api::Update)),
    }
}

fn s<'a>(d: &'a Value, k: &str) -> Option<&'a str> {
    d.get(k).and_then(Value::as_str).filter(|v| !v.is_empty())
}

/// `ip:port` (or `[v6]:port`) as an OCSF network endpoint; otherwise the text as its name.
fn endpoint_of_peer(peer: &str) -> Value {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        Err(_) => match peer.parse::<std::net::IpAddr>() {
            Ok(ip) => json!({"ip": ip.to_string()}),
            Err(_) => json!({"name": peer}),
        },
    }
}

/// The node an event is about, as an OCSF network endpoint.
fn node_endpoint(d: &Value) -> Option<Value> {
    let node = s(d, "node")?;
    let mut e = Map::new();
    e.insert("name".into(), json!(node));
    let hostname = match (s(d, "host"), s(d, "cluster")) {
        (Some(h), _) => Some(h.to_string()),
        (None, Some(c)) => Some(format!("{node}.{c}")),
        (None, None) => None,
    };
    if let Some(h) = hostname {
        e.insert("hostname".into(), json!(h));
    }
    if let Some(c) = s(d, "cluster") {
        e.insert("domain".into(), json!(c));
    }
    e.insert("svc_name".into(), json!("ssh"));
    Some(Value::Object(e))
}

fn user(name: &str) -> Value {
    json!({"name": name, "type_id": 1, "type": "User"})
}

/// The one who acted in a broker event, by its label (`reviewer:bob`, `approver:acme:carol`,
/// `operator:config`, `gateway:gw-1`...).
fn label_user(label: &str) -> Value {
    let system = label.starts_with("gateway:") || label.starts_with("edge:");
    let admin = label.starts_with("operator:");
    let (id, name) = if system {
        (4, "Service")
    } else if admin {
        (2, "Admin")
    } else {
        (1, "User")
    };
    json!({"name": label, "type_id": id, "type": name})
}

fn rfc3339(ms: u64) -> String {
    crate::timefmt::millis(ms)
}

/// The OCSF event of one stored record.
pub fn event(r: &AuditRecord) -> Value {
    let placed = place(r);
    let class = placed.activity.class();
    let (activity_id, activity_name) = placed.activity.id_and_name();
    let (status_id, status) = placed.status.id_and_name();
    let (severity_id, severity) = placed.severity.id_and_name();
    let d = &r.data;
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "sallyport",
            "uid": "sallyport",
            "vendor_name": "sallyport",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": format!("{}:{}", r.source, r.seq),
        "original_time": rfc3339(r.time),
        "log_name": r.source,
        "event_code": r.kind,
    });
    if let Some(session) = s(d, "session") {
        metadata["correlation_uid"] = json!(session);
    }
    let mut e = json!({
        "category_uid": class.category_uid(),
        "category_name": class.category_name(),
        "class_uid": class.uid(),
        "class_name": class.name(),
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class.uid() * 100 + activity_id,
        "type_name": format!("{}: {activity_name}", class.name()),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": r.time,
        "message": message(r),
        "metadata": metadata,
        "unmapped": {
            "kind": r.kind,
            "source": r.source,
            "seq": r.seq,
            "hash": r.hash,
            "prev_hash": r.prev_hash,
            "data": r.data,
        },
    });
    if let Some(code) = s(d, "code") {
        e["status_code"] = json!(code);
    }
    if placed.status == Status::Failure
        && let Some(reason) = s(d, "reason").map(str::to_string).or_else(|| reasons(d))
    {
        e["status_detail"] = json!(reason);
    }
    let obj = match e.as_object_mut() {
        Some(o) => o,
        None => return e,
    };
    // Who, and where from and to, per class.
    let engineer = s(d, "engineer")
        .or_else(|| s(d, "engineer_invalid"))
        .or_else(|| s(d, "account"));
    let peer = s(d, "peer")
        .or_else(|| s(d, "source_ip"))
        .or_else(|| s(d, "by").and_then(|b| b.strip_prefix("unknown@")));
    match class {
        Class::SshActivity => {
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            let dst = match (r.kind.as_str(), s(d, "target")) {
                ("forward" | "forward_failed" | "forward_refused", Some(t)) => Some(json!({
                    "name": t,
                    "hostname": t.rsplit_once(':').map_or(t, |(h, _)| h),
                })),
                _ => node_endpoint(d),
            };
            // The node when the event names one; otherwise the gateway or edge that wrote it.
            obj.insert(
                "dst_endpoint".into(),
                dst.unwrap_or_else(|| json!({"name": r.source, "svc_name": "ssh"})),
            );
            // SSH Activity names who acted through the host profile's `actor`.
            if let Some(who) = engineer {
                obj.insert("actor".into(), json!({"user": user(who)}));
                if let Some(m) = obj.get_mut("metadata") {
                    m["profiles"] = json!(["host"]);
                }
            }
            obj.insert("protocol_ver".into(), json!("2.0"));
            if r.kind == "session_started" || r.kind == "edge_session" {
                obj.insert("auth_type_id".into(), json!(1));
                obj.insert("auth_type".into(), json!("Certificate Based"));
            }
            if let Some(f) = file(r) {
                obj.insert("file".into(), f);
            }
        }
        Class::Authentication => {
            let who = engineer.or_else(|| s(d, "by").filter(|b| !b.starts_with("unknown@")));
            obj.insert("user".into(), user(who.unwrap_or("unknown")));
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            let service = match Role::of(&r.source).map(|(role, _)| role) {
                Some(Role::Edge) => "sallyport edge",
                Some(Role::Gateway) => "sallyport gateway",
                Some(Role::Broker) | None => "sallyport broker",
            };
            obj.insert(
                "service".into(),
                json!({"name": service, "uid": s(d, "by").filter(|b| b.starts_with("edge:")).unwrap_or(&r.source)}),
            );
            if let Some(dst) = node_endpoint(d) {
                obj.insert("dst_endpoint".into(), dst);
            }
            // Logins and per-session codes are password (or token) plus TOTP.
            let mfa = matches!(
                r.kind.as_str(),
                "login_succeeded"
                    | "login_failed"
                    | "account_login_succeeded"
                    | "account_login_failed"
                    | "session_mfa_verified"
                    | "session_mfa_failed"
            );
            if mfa {
                obj.insert("is_mfa".into(), json!(true));
            }
            obj.insert("is_remote".into(), json!(true));
        }
        Class::AccountChange => {
            let target = s(d, "target")
                .or(engineer)
                .or_else(|| s(d, "principal"))
                .unwrap_or("unknown");
            obj.insert("user".into(), user(target));
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            if let Some(by) = s(d, "by") {
                obj.insert("actor".into(), json!({"user": label_user(by)}));
            }
        }
        Class::ApiActivity => {
            let actor = match s(d, "by").or_else(|| s(d, "decided_by")) {
                Some(by) => label_user(by),
                None => match engineer {
                    Some(who) => user(who),
                    None => label_user(&r.source),
                },
            };
            obj.insert("actor".into(), json!({"user": actor}));
            let operation = match r.kind.as_str() {
                "admin_change" | "refused" => s(d, "action").unwrap_or(&r.kind).to_string(),
                other => other.to_string(),
            };
            obj.insert(
                "api".into(),
                json!({"operation": operation, "service": {"name": "sallyport broker"}}),
            );
            let src = match peer {
                Some(p) => endpoint_of_peer(p),
                None => match Role::of(&r.source) {
                    // A gateway's or an edge's own event: it is the endpoint.
                    Some((Role::Gateway | Role::Edge, _)) => json!({"name": r.source}),
                    Some((Role::Broker, _)) | None => json!({"name": "unknown"}),
                },
            };
            obj.insert("src_endpoint".into(), src);
        }
    }
    e
}

/// A certificate denial's reasons, as words.
fn reasons(d: &Value) -> Option<String> {
    let list = d.get("reasons")?.as_array()?;
    let words: Vec<String> = list
        .iter()
        .filter_map(|r| {
            r.get("message")
                .or_else(|| r.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
}

/// The file of a file transfer or an sftp/scp operation, with its SHA-256 when recorded.
fn file(r: &AuditRecord) -> Option<Value> {
    let (path, size, sha) = match r.kind.as_str() {
        "file_op" => {
            let op = r.data.get("op")?;
            let path = s(op, "path").or_else(|| s(op, "from"))?;
            let sha = s(op, "sha256")
                .or_else(|| s(op, "sha256_written"))
                .or_else(|| s(op, "sha256_read"));
            let size = op
                .get("bytes")
                .or_else(|| op.get("size"))
                .and_then(Value::as_u64)
                .or_else(|| {
                    let w = op.get("bytes_written").and_then(Value::as_u64)?;
                    let rd = op.get("bytes_read").and_then(Value::as_u64)?;
                    Some(w.max(rd))
                });
            (path, size, sha)
        }
        "file_transfer" => (s(r.data.get("transfer")?, "path")?, None, None),
        _ => return None,
    };
    let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or(path);
    let mut f = json!({"name": name, "path": path, "type_id": 1, "type": "Regular File"});
    if let Some(n) = size {
        f["size"] = json!(n);
    }
    if let Some(h) = sha {
        f["hashes"] = json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": h}]);
    }
    Some(f)
}

/// One line a person can read.
fn message(r: &AuditRecord) -> String {
    let d = &r.data;
    let who = s(d, "engineer")
        .or_else(|| s(d, "by"))
        .or_else(|| s(d, "account"))
        .unwrap_or("someone");
    let on = match (s(d, "node"), s(d, "cluster")) {
        (Some(n), Some(c)) => format!(" on {n}.{c}"),
        (None, Some(c)) => format!(" on {c}"),
        (Some(n), None) => format!(" on {n}"),
        (None, None) => String::new(),
    };
    let what = r.kind.replace('_', " ");
    let detail = match r.kind.as_str() {
        "command" => s(d, "command").map(|c| format!(": {c}")),
        "file_op" | "file_transfer" => {
            file(r).and_then(|f| f["path"].as_str().map(|p| format!(": {p}")))
        }
        "channel_exit" => d
            .get("exit_status")
            .and_then(Value::as_u64)
            .map(|n| format!(": exit status {n}")),
        _ => s(d, "reason").map(|r| format!(": {r}")),
    }
    .unwrap_or_default();
    let mut m = format!("{what} by {who}{on}{detail}");
    if m.chars().count() > 512 {
        m = m.chars().take(511).collect::<String>() + "…";
    }
    m.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
