//! Where each record goes: the exhaustive table from every kind of event of every chain to its
//! class and activity, status and severity.

use serde_json::{Value, json};

use super::{Account, Activity, Api, Auth, Severity, Ssh, Status};
use crate::audit::{AuditEvent, AuditRecord};
use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind, Role};

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
        AuditEvent::HiddenInputOpened { .. } => ok(A(Api::Read)),
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
