//! Which events a webhook is told about: the data plane's kinds and the broker's own, matched
//! exhaustively.

use crate::audit::AuditEvent;
use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind, Role};

/// The event kinds a webhook can be told about.
pub const NOTIFIED: [&str; 8] = [
    "access_request_created",
    "access_request_decided",
    "certificate_issued",
    "session_started",
    "session_ended",
    "session_terminated",
    "revoked",
    "refusal_burst",
];

/// Whether a record of `kind` written by `source` is notified. The data plane's kinds are
/// matched exhaustively, so a new kind has to decide here.
pub fn notified(source: &str, kind: &str) -> bool {
    match Role::of(source) {
        Some((Role::Broker, _)) => matches!(
            kind,
            "access_request_created"
                | "access_request_decided"
                | "certificate_issued"
                | "revoked"
                | "refusal_burst"
        ),
        Some((Role::Gateway, _)) => GatewayKind::ALL
            .iter()
            .find(|k| k.as_str() == kind)
            .is_some_and(|k| gateway_notified(*k)),
        Some((Role::Edge, _)) => EdgeKind::ALL
            .iter()
            .find(|k| k.as_str() == kind)
            .is_some_and(|k| edge_notified(*k)),
        None => false,
    }
}

fn gateway_notified(k: GatewayKind) -> bool {
    match k {
        GatewayKind::SessionStarted
        | GatewayKind::SessionEnded
        | GatewayKind::SessionTerminated => true,
        GatewayKind::SessionRefused
        | GatewayKind::NodeUnreachable
        | GatewayKind::NodeKeyRefused
        | GatewayKind::NodeKeyPinned
        | GatewayKind::ObserverJoined
        | GatewayKind::ChannelRefused
        | GatewayKind::ForwardRefused
        | GatewayKind::ChannelExit
        | GatewayKind::Env
        | GatewayKind::Shell
        | GatewayKind::Command
        | GatewayKind::LineEntered
        | GatewayKind::InputHidden
        | GatewayKind::FullScreen
        | GatewayKind::FullScreenSuppressed
        | GatewayKind::OutputRecorded
        | GatewayKind::SftpStarted
        | GatewayKind::FileTransfer
        | GatewayKind::FileOp
        | GatewayKind::Forward
        | GatewayKind::ForwardFailed
        | GatewayKind::RecordingFinished
        | GatewayKind::RecordingFailed
        | GatewayKind::RecordingRecovered
        | GatewayKind::RecordingUnreadable
        | GatewayKind::UserCasRefused
        | GatewayKind::GatewayConfigReloaded
        | GatewayKind::GatewayConfigReloadRefused => false,
    }
}

fn edge_notified(k: EdgeKind) -> bool {
    match k {
        EdgeKind::EdgeSession
        | EdgeKind::EdgeRefused
        | EdgeKind::EdgeDisconnected
        | EdgeKind::EdgeShutdown
        | EdgeKind::EdgeStopped
        | EdgeKind::EdgeUserCasRefused
        | EdgeKind::EdgeConfigReloaded
        | EdgeKind::EdgeConfigReloadRefused => false,
    }
}

/// The broker's own events that are notified, by their typed kind (exhaustive: a new event
/// kind has to decide here; [`notified`] must agree, which a test checks).
pub fn event_notified(e: &AuditEvent) -> bool {
    match e {
        AuditEvent::AccessRequestCreated { .. }
        | AuditEvent::AccessRequestDecided { .. }
        | AuditEvent::CertificateIssued { .. }
        | AuditEvent::Revoked { .. }
        | AuditEvent::RefusalBurst { .. } => true,
        AuditEvent::LoginSucceeded { .. }
        | AuditEvent::LoginFailed { .. }
        | AuditEvent::AccountLoginSucceeded { .. }
        | AuditEvent::AccountLoginFailed { .. }
        | AuditEvent::CertificateDenied { .. }
        | AuditEvent::ApprovalSaved { .. }
        | AuditEvent::ApprovalWithdrawn { .. }
        | AuditEvent::CustomerPolicySaved { .. }
        | AuditEvent::TicketSaved { .. }
        | AuditEvent::AdminChange { .. }
        | AuditEvent::GatewayEnrolled { .. }
        | AuditEvent::AuditKeyPinned { .. }
        | AuditEvent::RecordingStored { .. }
        | AuditEvent::RecordingRead { .. }
        | AuditEvent::HiddenInputOpened { .. }
        | AuditEvent::SessionMfaVerified { .. }
        | AuditEvent::SessionMfaFailed { .. }
        | AuditEvent::SessionTerminationRequested { .. }
        | AuditEvent::SessionWatched { .. }
        | AuditEvent::ConsoleLogout { .. }
        | AuditEvent::AuditExported { .. }
        | AuditEvent::WebhookCreated { .. }
        | AuditEvent::WebhookDeleted { .. }
        | AuditEvent::WebhookFailed { .. }
        | AuditEvent::Refused { .. } => false,
    }
}
