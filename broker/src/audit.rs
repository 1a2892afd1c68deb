//! AuditEvents: typed, append-only, hash-chained.
//!
//! Each record holds `prev_hash` and `hash = SHA-256(prev_hash ‖ canonical JSON)`, where the
//! canonical JSON is the record's `source`, `seq`, `time` (unix milliseconds), `kind` and the
//! event's fields, with object keys sorted and no whitespace. The chain of one source starts
//! with a `prev_hash` of 64 zeros. This module is pure; the store and the gateway's spool use it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use sallyport_ca::policy::DenyReason;

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
        /// How the second factor was proved: `totp` or `passkey` (absent in older events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
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
        /// What the approver is asked to approve: these logins, at most this lifetime.
        logins: Vec<String>,
        ttl_secs: u64,
        approvers_required: u64,
    },
    /// One approver's vote. `status` is the request's status after it: `approved` (enough
    /// approvers said yes), `denied`, or `pending` (a quorum still waits for `required -
    /// approvals` more).
    AccessRequestDecided {
        request: String,
        engineer: String,
        ticket: String,
        cluster: String,
        decided_by: String,
        status: String,
        reason: Option<String>,
        approvals: u64,
        approvers_required: u64,
        /// The request's terms after this decision: the logins and lifetime its one
        /// certificate may carry (an approver may narrow them, never widen).
        logins: Vec<String>,
        ttl_secs: u64,
        /// This approver narrowed the terms.
        narrowed: bool,
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
        /// Fingerprint of the key that signs the gateway's audit chain, pinned with it.
        audit_key: String,
        source_ip: Option<String>,
    },
    /// The key that signs a chain was pinned at its first signed batch (an edge, or a gateway
    /// enrolled before chains were signed): from now on only this key signs that chain.
    AuditKeyPinned {
        /// The chain (`edge:<name>`, `gateway:<id>`).
        chain: String,
        fingerprint: String,
        pinned_by: String,
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
    /// A reviewer opened a line a gateway sealed (`input_hidden`: typed without echo at a
    /// password prompt), giving a reason. `event` names it: `<source>#<seq>`.
    HiddenInputOpened {
        session: String,
        event: String,
        by: String,
        reason: String,
        cluster: Option<String>,
        engineer: Option<String>,
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
    /// A reviewer, a customer approver or the operator ended an engineer's session; the
    /// cluster's gateway disconnects it (its own `session_terminated` event follows).
    SessionTerminationRequested {
        session: String,
        cluster: String,
        customer: String,
        by: String,
        reason: String,
    },
    /// A reviewer, a customer approver or the operator began watching a live session (again
    /// after a minute away).
    SessionWatched {
        session: String,
        cluster: String,
        customer: String,
        by: String,
    },
    /// An approver or a reviewer logged out of the web console.
    ConsoleLogout {
        account: String,
        role: String,
        customer: Option<String>,
    },
    /// A reviewer or the operator exported an evidence bundle (`GET /v1/audit/export`).
    AuditExported {
        by: String,
        selection: sallyport_audit::bundle::Selection,
        events: u64,
        links: u64,
        recordings: u64,
        missing_recordings: u64,
        manifest_sha256: String,
    },
    /// A lockout began: the `failures`-th failed login (or per-session code) in a row on one of
    /// the `[login]` counters (`counter`: `user_from_address`, `address` or `user`), so the
    /// principal, the address or both are locked out for `locked_secs`. Written once per
    /// lockout, by the attempt that reached the limit; notified as "a burst of refusals".
    RefusalBurst {
        /// `engineer:<uid>` or `account:<name>`, as typed (escaped).
        principal: String,
        engineer: Option<String>,
        /// The approver account's customer, when the principal is one.
        customer: Option<String>,
        source_ip: Option<String>,
        counter: String,
        failures: u64,
        locked_secs: u64,
    },
    /// A customer's approver (for its customer) or the operator (vendor-wide, `customer` null)
    /// set up a webhook. `url` is its shortened form; the URL and the secret are never logged.
    WebhookCreated {
        webhook: String,
        customer: Option<String>,
        url: String,
        format: String,
        events: Vec<String>,
        by: String,
    },
    WebhookDeleted {
        webhook: String,
        customer: Option<String>,
        url: String,
        by: String,
        /// Deliveries still waiting that were cancelled.
        cancelled: u64,
    },
    /// A notification could not be delivered after its last attempt.
    WebhookFailed {
        webhook: String,
        customer: Option<String>,
        url: String,
        host: String,
        delivery: String,
        /// The event told about, `<source>#<seq>`, and its kind.
        event: String,
        event_kind: String,
        attempts: u64,
        last_status: Option<u64>,
        last_error: String,
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

/// A `command` event that is a whole command: not the `partial: true` report of a stdin line's
/// unterminated rest, which its completed line repeats (`continues_partial`). Counts and lists of
/// commands read only these.
pub fn is_whole_command(r: &AuditRecord) -> bool {
    r.kind == "command" && r.data.get("partial").and_then(Value::as_bool) != Some(true)
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
            AuditEvent::AuditKeyPinned { .. } => "audit_key_pinned",
            AuditEvent::RecordingStored { .. } => "recording_stored",
            AuditEvent::RecordingRead { .. } => "recording_read",
            AuditEvent::HiddenInputOpened { .. } => "hidden_input_opened",
            AuditEvent::SessionMfaVerified { .. } => "session_mfa_verified",
            AuditEvent::SessionMfaFailed { .. } => "session_mfa_failed",
            AuditEvent::ConsoleLogout { .. } => "console_logout",
            AuditEvent::SessionTerminationRequested { .. } => "session_termination_requested",
            AuditEvent::SessionWatched { .. } => "session_watched",
            AuditEvent::AuditExported { .. } => "audit_exported",
            AuditEvent::RefusalBurst { .. } => "refusal_burst",
            AuditEvent::WebhookCreated { .. } => "webhook_created",
            AuditEvent::WebhookDeleted { .. } => "webhook_deleted",
            AuditEvent::WebhookFailed { .. } => "webhook_failed",
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

pub use sallyport_audit::{
    AuditRecord, ChainBreak, GENESIS, SUBJECT_FIELDS, continues, sanitize, verify_chain,
    write_canonical,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_stdin_report_is_not_a_whole_command() {
        let rec = |kind: &str, data: Value| AuditRecord {
            source: "gateway:g".into(),
            seq: 1,
            time: 1,
            kind: kind.into(),
            data,
            prev_hash: GENESIS.into(),
            hash: GENESIS.into(),
        };
        assert!(is_whole_command(&rec(
            "command",
            serde_json::json!({"command": "ls"})
        )));
        assert!(is_whole_command(&rec(
            "command",
            serde_json::json!({"command": "ls", "continues_partial": true})
        )));
        assert!(!is_whole_command(&rec(
            "command",
            serde_json::json!({"command": "l", "partial": true})
        )));
        assert!(!is_whole_command(&rec(
            "line_entered",
            serde_json::json!({"shown": "ls"})
        )));
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
}
