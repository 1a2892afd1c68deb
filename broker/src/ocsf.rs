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
//!
//! Files: the classes, activities, statuses and severities here, where each record goes in
//! `place.rs`, the event's fields in `fields.rs`.

mod fields;
mod place;

pub use fields::event;
pub use place::{Placed, broker_event, place};

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

#[cfg(test)]
mod tests;
