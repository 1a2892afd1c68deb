//! The plain data the decisions look at, gathered by the caller, and what they answer.

use serde::{Deserialize, Serialize};

use crate::Grant;

/// One reason for a denial: the `@id` of the forbid policy (stored in the audit log) and its
/// `@message` (what the user reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyReason {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFacts {
    pub id: String,
    pub status: String,
    pub assignee: String,
    pub customer: String,
    pub cluster: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalFacts {
    pub id: String,
    pub group: String,
    pub cluster: String,
    pub logins: Vec<String>,
    pub valid_from: u64,
    pub valid_until: u64,
    pub withdrawn: bool,
    pub just_in_time: bool,
    pub max_session_secs: u64,
    pub per_session_mfa: bool,
    /// Each session waits at the gateway until an approver of the customer watches it.
    #[serde(default)]
    pub observer_required: bool,
    pub port_forwarding: bool,
    pub source_networks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
        }
    }
}

/// A just-in-time AccessRequest of this engineer for this ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    pub id: String,
    pub approval: String,
    pub status: RequestStatus,
    /// What the approvers saw and approved: the certificate from this request carries at most
    /// these logins and this lifetime (seconds).
    pub logins: Vec<String>,
    pub ttl_secs: u64,
}

/// Everything the decision looks at, gathered by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueFacts {
    pub engineer: String,
    pub groups: Vec<String>,
    /// A fresh TOTP code was checked in this login.
    pub mfa: bool,
    pub customer: String,
    pub cluster: String,
    pub ticket: TicketFacts,
    /// Every approval of this cluster, withdrawn and expired ones included.
    pub approvals: Vec<ApprovalFacts>,
    /// Logins asked for; `None` = every login of the approval.
    pub requested_logins: Option<Vec<String>>,
    pub request: Option<RequestFacts>,
    pub now: u64,
    /// The vendor's cap on a certificate's lifetime, seconds.
    pub max_ttl: u64,
    /// The engineer may ask for less.
    pub requested_ttl: Option<u64>,
}

/// A request on a channel of a session at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "request")]
pub enum ChannelRequest {
    Pty,
    Shell,
    Exec {
        command: String,
        /// What the gateway found the command to be: `"sftp"` (an sftp server), `"scp"`, or
        /// `""`.
        file_transfer: String,
    },
    Subsystem {
        name: String,
    },
    Env {
        name: String,
    },
    WindowChange,
    Signal {
        name: String,
    },
    /// `ssh -L` / `-W`: a connection opened from the node to the target.
    DirectTcpip {
        host: String,
        port: u32,
    },
    /// `ssh -R`.
    TcpipForward {
        host: String,
        port: u32,
    },
    Agent,
    X11,
}

impl ChannelRequest {
    /// The name policies see as `context.request`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelRequest::Pty => "pty",
            ChannelRequest::Shell => "shell",
            ChannelRequest::Exec { .. } => "exec",
            ChannelRequest::Subsystem { .. } => "subsystem",
            ChannelRequest::Env { .. } => "env",
            ChannelRequest::WindowChange => "window_change",
            ChannelRequest::Signal { .. } => "signal",
            ChannelRequest::DirectTcpip { .. } => "direct_tcpip",
            ChannelRequest::TcpipForward { .. } => "tcpip_forward",
            ChannelRequest::Agent => "agent",
            ChannelRequest::X11 => "x11",
        }
    }
}

/// What the gateway knows when a channel request arrives: the checked certificate, the
/// session, and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFacts {
    pub engineer: String,
    /// The access group the grant came through (the certificate's `group@sallyport.dev`).
    pub group: Option<String>,
    pub customer: String,
    pub cluster: String,
    pub node: String,
    pub login: String,
    pub ticket: String,
    /// The certificate allows port forwarding.
    pub port_forwarding: bool,
    pub now: u64,
    pub request: ChannelRequest,
}

/// Fresh identifiers for the Grant, drawn by the caller so that `decide` stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantIds {
    pub id: String,
    pub serial: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Box<Grant>),
    Deny {
        reasons: Vec<DenyReason>,
        /// Set when the only thing missing is a customer approver's yes on a just-in-time
        /// approval: the caller may create an AccessRequest for this approval.
        needs_request: Option<String>,
    },
}

/// Backdating of `valid_after`, for clocks that run a little behind.
pub const BACKDATE_SECS: u64 = 60;
