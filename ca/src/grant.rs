//! The Grant: the proof that the policy decision allowed an engineer in.
//!
//! A `Grant` can only be made inside this crate, by `policy::decide`: it has no public
//! constructor and cannot be deserialized, so nothing outside the policy decision can make one.
//! The CA signs only from a `Grant` (see `cert::build_user_cert`); the broker stores what it
//! needs of one (its id, engineer, ticket, logins, window) as plain rows, never a `Grant`.

use serde::Serialize;

/// What the policy decision allowed: engineer + ticket + cluster + logins + window + approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub(crate) id: String,
    pub(crate) engineer: String,
    pub(crate) ticket: String,
    pub(crate) customer: String,
    pub(crate) cluster: String,
    pub(crate) logins: Vec<String>,
    pub(crate) approval: String,
    /// The access group the approval names: the engineer's group this access came through.
    pub(crate) group: String,
    pub(crate) request: Option<String>,
    /// Unix seconds; already backdated.
    pub(crate) valid_after: u64,
    /// Unix seconds; min(policy cap, approval cap, approval end).
    pub(crate) valid_before: u64,
    pub(crate) serial: u64,
    pub(crate) permit_port_forwarding: bool,
    pub(crate) per_session_mfa: bool,
    /// Sessions wait at the gateway until a customer approver watches them.
    pub(crate) observer_required: bool,
    /// CIDR list the engineer may connect from; empty = anywhere.
    pub(crate) source_networks: Vec<String>,
}

impl Grant {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn engineer(&self) -> &str {
        &self.engineer
    }
    pub fn ticket(&self) -> &str {
        &self.ticket
    }
    pub fn customer(&self) -> &str {
        &self.customer
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn logins(&self) -> &[String] {
        &self.logins
    }
    pub fn approval(&self) -> &str {
        &self.approval
    }
    pub fn group(&self) -> &str {
        &self.group
    }
    pub fn request(&self) -> Option<&str> {
        self.request.as_deref()
    }
    pub fn valid_after(&self) -> u64 {
        self.valid_after
    }
    pub fn valid_before(&self) -> u64 {
        self.valid_before
    }
    pub fn serial(&self) -> u64 {
        self.serial
    }
    pub fn permit_port_forwarding(&self) -> bool {
        self.permit_port_forwarding
    }
    pub fn per_session_mfa(&self) -> bool {
        self.per_session_mfa
    }
    pub fn observer_required(&self) -> bool {
        self.observer_required
    }
    pub fn source_networks(&self) -> &[String] {
        &self.source_networks
    }
}

#[cfg(test)]
pub(crate) fn test_grant() -> Grant {
    Grant {
        id: "g-0001".into(),
        engineer: "alice".into(),
        ticket: "SUP-1234".into(),
        customer: "acme".into(),
        cluster: "acme-prod".into(),
        logins: vec!["ubuntu".into(), "deploy".into()],
        approval: "ap-1".into(),
        group: "support-l2".into(),
        request: None,
        valid_after: 1_700_000_000 - 60,
        valid_before: 1_700_000_000 + 3600,
        serial: 0x1234_5678_9abc_def0,
        permit_port_forwarding: false,
        per_session_mfa: false,
        observer_required: false,
        source_networks: vec![],
    }
}
