//! The policy decision: may this engineer get a certificate for this cluster now?
//!
//! Written in Cedar (`policies/`). The broker gathers the facts by I/O (LDAP groups, ticket,
//! approvals, access request, MFA, clock) into [`IssueFacts`]; [`Engine::decide`] is pure and is
//! the only maker of a [`Grant`]. A denial's reasons are the `@message`s of the `forbid`
//! policies that matched, so the decision and what the engineer reads have one source.

use std::str::FromStr;

/// A checked customer policy, as [`Engine::check_customer_policies`] returns it.
pub use cedar_policy::Policy;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicyId, PolicySet,
    Request, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Grant;

/// The schema shipped in `policies/sallyport.cedarschema`.
pub const SCHEMA: &str = include_str!("../../policies/sallyport.cedarschema");
/// The vendor's base policies shipped in `policies/base.cedar`.
pub const BASE_POLICIES: &str = include_str!("../../policies/base.cedar");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy text does not parse: {0}")]
    Parse(String),
    #[error("policy does not match the schema: {0}")]
    Invalid(String),
    #[error(
        "customer policies may only forbid, or permit action pass_env (policy {0} is another permit)"
    )]
    NotForbid(String),
    #[error("policy {0} has no @message annotation; add one: it is what the engineer reads")]
    NoMessage(String),
    #[error("policy {0} has no @id annotation")]
    NoId(String),
    #[error(
        "policy {0} must name one of your clusters: `resource == Sallyport::Cluster::\"<cluster>\"`"
    )]
    NotScoped(String),
    #[error("internal policy error: {0}")]
    Internal(String),
}

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

/// The compiled base policies and schema, plus a customer's own forbid policies.
pub struct Engine {
    schema: Schema,
    policies: PolicySet,
}

impl Engine {
    /// The shipped base policies.
    pub fn new() -> Result<Engine, PolicyError> {
        Engine::with_policies(BASE_POLICIES)
    }

    /// Base policies from text (tests and operators who ship their own base file).
    pub fn with_policies(text: &str) -> Result<Engine, PolicyError> {
        let schema = schema()?;
        let policies = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let engine = Engine { schema, policies };
        engine.validate(&engine.policies)?;
        for p in engine.policies.policies() {
            annotation(p, "id")?;
            if p.effect() == cedar_policy::Effect::Forbid {
                annotation(p, "message")?;
            }
        }
        Ok(engine)
    }

    fn validate(&self, set: &PolicySet) -> Result<(), PolicyError> {
        let result = Validator::new(self.schema.clone()).validate(set, ValidationMode::Strict);
        if result.validation_passed() {
            Ok(())
        } else {
            let msgs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            Err(PolicyError::Invalid(msgs.join("; ")))
        }
    }

    /// Check a customer's policy text: forbid only, each with `@id` and `@message`, valid
    /// against the schema. Returns the parsed policies, ready for [`Engine::decide`].
    pub fn check_customer_policies(&self, text: &str) -> Result<Vec<Policy>, PolicyError> {
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if set.policies().next().is_none() {
            return Err(PolicyError::Parse("no policy in the text".into()));
        }
        if set.templates().next().is_some() {
            return Err(PolicyError::Parse("templates are not accepted".into()));
        }
        let mut out = Vec::new();
        for p in set.policies() {
            let id = annotation(p, "id")?;
            match p.effect() {
                cedar_policy::Effect::Forbid => {
                    annotation(p, "message")?;
                }
                // The one thing a customer may permit: more environment variable names.
                cedar_policy::Effect::Permit if is_pass_env(p) => {}
                cedar_policy::Effect::Permit => return Err(PolicyError::NotForbid(id)),
            }
            out.push(p.clone());
        }
        self.validate(&self.combined(&out)?)?;
        Ok(out)
    }

    /// Each policy must be about exactly one of `clusters` (`resource == Sallyport::Cluster::"c"`),
    /// so that a customer's rule never reaches another customer's cluster.
    pub fn check_scope(policies: &[Policy], clusters: &[String]) -> Result<(), PolicyError> {
        for p in policies {
            let scoped = match p.resource_constraint() {
                cedar_policy::ResourceConstraint::Eq(uid) => {
                    uid.type_name().to_string() == "Sallyport::Cluster"
                        && clusters.iter().any(|c| c.as_str() == uid.id().unescaped())
                }
                cedar_policy::ResourceConstraint::Any
                | cedar_policy::ResourceConstraint::In(_)
                | cedar_policy::ResourceConstraint::Is(_)
                | cedar_policy::ResourceConstraint::IsIn(_, _) => false,
            };
            if !scoped {
                return Err(PolicyError::NotScoped(
                    p.annotation("id").unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(())
    }

    fn combined(&self, extra: &[Policy]) -> Result<PolicySet, PolicyError> {
        let mut set = self.policies.clone();
        for (i, p) in extra.iter().enumerate() {
            let id = PolicyId::new(format!("customer{i}"));
            set.add(p.clone().new_id(id))
                .map_err(|e| PolicyError::Internal(e.to_string()))?;
        }
        Ok(set)
    }

    /// The decision. Pure: everything it looks at is in `facts`, `customer` and `ids`.
    pub fn decide(&self, facts: &IssueFacts, customer: &[Policy], ids: GrantIds) -> Decision {
        let set = match self.combined(customer) {
            Ok(s) => s,
            Err(e) => return internal_deny(e),
        };
        // Candidates: approvals of this cluster naming one of the engineer's groups. With none,
        // a placeholder that names no group lets the forbid policies explain everything else.
        let mut candidates: Vec<&ApprovalFacts> = facts
            .approvals
            .iter()
            .filter(|a| a.cluster == facts.cluster && facts.groups.contains(&a.group))
            .collect();
        // On equal denials, explain with the approval most likely meant: one still standing.
        candidates.sort_by_key(|a| a.withdrawn);
        let placeholder;
        if candidates.is_empty() {
            placeholder = ApprovalFacts {
                id: String::new(),
                group: String::new(),
                cluster: facts.cluster.clone(),
                // Never granted from: it only keeps the login check quiet so that the reason
                // the engineer reads is the missing group.
                logins: facts
                    .requested_logins
                    .clone()
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| vec!["*".into()]),
                valid_from: 0,
                valid_until: u64::MAX / 2,
                withdrawn: false,
                just_in_time: false,
                max_session_secs: 0,
                per_session_mfa: false,
                observer_required: false,
                port_forwarding: false,
                source_networks: vec![],
            };
            candidates.push(&placeholder);
        }
        // Prefer approvals that are in force, so that an expired one does not hide a valid one.
        let mut best: Option<(Vec<DenyReason>, &ApprovalFacts)> = None;
        for approval in candidates {
            match self.evaluate(&set, facts, approval) {
                Ok(None) => return Decision::Allow(Box::new(grant(facts, approval, ids))),
                Ok(Some(reasons)) => {
                    if best.as_ref().is_none_or(|(b, _)| reasons.len() < b.len()) {
                        best = Some((reasons, approval));
                    }
                }
                Err(e) => return internal_deny(e),
            }
        }
        let Some((reasons, approval)) = best else {
            return internal_deny(PolicyError::Internal("no candidate".into()));
        };
        let needs_request = (reasons.len() == 1 && reasons[0].code == "request_pending")
            .then(|| approval.id.clone());
        Decision::Deny {
            reasons,
            needs_request,
        }
    }

    /// `Ok(None)` = allowed; `Ok(Some(reasons))` = denied.
    fn evaluate(
        &self,
        set: &PolicySet,
        facts: &IssueFacts,
        approval: &ApprovalFacts,
    ) -> Result<Option<Vec<DenyReason>>, PolicyError> {
        let internal = |e: &dyn std::fmt::Display| PolicyError::Internal(e.to_string());
        let entities =
            Entities::from_json_value(entities_json(facts, approval), Some(&self.schema))
                .map_err(|e| internal(&e))?;
        let action = uid("Action", "issue")?;
        let requested = requested_logins(facts, approval);
        // An approved request covers only the logins its approvers saw: asking for more needs
        // a new request.
        let request_status = match &facts.request {
            Some(r)
                if r.approval == approval.id
                    && (r.status != RequestStatus::Approved
                        || requested.iter().all(|l| r.logins.contains(l))) =>
            {
                r.status.as_str()
            }
            _ => "none",
        };
        let request_logins = approved_request(facts, approval)
            .map(|r| r.logins.clone())
            .unwrap_or_default();
        let (hour, weekday) = hour_and_weekday(facts.now);
        let context = json!({
            "approval": {"__entity": {"type": "Sallyport::Approval", "id": approval_key(approval)}},
            "ticket": {
                "id": facts.ticket.id, "status": facts.ticket.status,
                "assignee": facts.ticket.assignee, "cluster": facts.ticket.cluster,
                "customer": facts.ticket.customer,
            },
            "requested_logins": requested,
            "request_logins": request_logins,
            "mfa": facts.mfa,
            "request_status": request_status,
            "now": clamp(facts.now),
            "hour": hour,
            "weekday": weekday,
        });
        self.authorize(
            set,
            &entities,
            action,
            &facts.engineer,
            &facts.cluster,
            context,
        )
    }

    /// One Cedar request: `engineer` asks `action` on `cluster` with `context` (checked against
    /// the schema). `Ok(None)` = allowed.
    fn authorize(
        &self,
        set: &PolicySet,
        entities: &Entities,
        action: EntityUid,
        engineer: &str,
        cluster: &str,
        context: Value,
    ) -> Result<Option<Vec<DenyReason>>, PolicyError> {
        let internal = |e: &dyn std::fmt::Display| PolicyError::Internal(e.to_string());
        let context = Context::from_json_value(context, Some((&self.schema, &action)))
            .map_err(|e| internal(&e))?;
        let request = Request::new(
            uid("Engineer", engineer)?,
            action,
            uid("Cluster", cluster)?,
            context,
            Some(&self.schema),
        )
        .map_err(|e| internal(&e))?;
        denial(
            set,
            &Authorizer::new().is_authorized(&request, set, entities),
        )
    }

    /// May this channel request go on? Asked by the gateway for every request of a session,
    /// with the customer's policies. Pure. `Err` holds the reasons (a customer's with the
    /// `customer:` prefix); an evaluation error is a denial.
    pub fn decide_channel(
        &self,
        facts: &ChannelFacts,
        customer: &[Policy],
    ) -> Result<(), Vec<DenyReason>> {
        let set = self.combined(customer).map_err(policy_failure)?;
        if let Some(reasons) = self.evaluate_channel(&set, facts).map_err(policy_failure)? {
            return Err(explain_fallback(
                reasons,
                "request_not_allowed",
                format!(
                    "the {} request is not allowed through sallyport",
                    facts.request.kind()
                ),
            ));
        }
        let name = match &facts.request {
            ChannelRequest::Env { name } => name,
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::Exec { .. }
            | ChannelRequest::Subsystem { .. }
            | ChannelRequest::WindowChange
            | ChannelRequest::Signal { .. }
            | ChannelRequest::DirectTcpip { .. }
            | ChannelRequest::TcpipForward { .. }
            | ChannelRequest::Agent
            | ChannelRequest::X11 => return Ok(()),
        };
        // An environment variable passes only when a permit of action `pass_env` names it (the
        // base allowlist, or a customer's own) and no forbid does.
        let entities = self.session_entities(facts).map_err(policy_failure)?;
        let action = uid("Action", "pass_env").map_err(policy_failure)?;
        let context = json!({"env_name": name, "node": facts.node, "login": facts.login});
        match self
            .authorize(
                &set,
                &entities,
                action,
                &facts.engineer,
                &facts.cluster,
                context,
            )
            .map_err(policy_failure)?
        {
            None => Ok(()),
            Some(reasons) => Err(explain_fallback(
                reasons,
                "environment_not_allowlisted",
                format!(
                    "the environment variable {name} is not passed to the node (allowed: LANG, \
                     LC_*, TERM, COLORTERM, TZ, and what the customer allows)"
                ),
            )),
        }
    }

    /// The engineer (in the group the grant came through) and the cluster, as entities.
    fn session_entities(&self, facts: &ChannelFacts) -> Result<Entities, PolicyError> {
        let groups: Vec<String> = facts
            .group
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect();
        let list = principal_entities(&facts.engineer, &groups, &facts.cluster, &facts.customer);
        Entities::from_json_value(Value::Array(list), Some(&self.schema))
            .map_err(|e| PolicyError::Internal(e.to_string()))
    }

    fn evaluate_channel(
        &self,
        set: &PolicySet,
        facts: &ChannelFacts,
    ) -> Result<Option<Vec<DenyReason>>, PolicyError> {
        let entities = self.session_entities(facts)?;
        let action = uid("Action", "channel")?;
        let r = &facts.request;
        let (command, subsystem, env_name, signal, target_host, target_port) = match r {
            ChannelRequest::Exec { command, .. } => (command.as_str(), "", "", "", "", 0),
            ChannelRequest::Subsystem { name } => ("", name.as_str(), "", "", "", 0),
            ChannelRequest::Env { name } => ("", "", name.as_str(), "", "", 0),
            ChannelRequest::Signal { name } => ("", "", "", name.as_str(), "", 0),
            ChannelRequest::DirectTcpip { host, port }
            | ChannelRequest::TcpipForward { host, port } => {
                ("", "", "", "", host.as_str(), i64::from(*port))
            }
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::WindowChange
            | ChannelRequest::Agent
            | ChannelRequest::X11 => ("", "", "", "", "", 0),
        };
        let file_transfer = match r {
            ChannelRequest::Exec { file_transfer, .. } => file_transfer.as_str(),
            ChannelRequest::Subsystem { name } if name == "sftp" => "sftp",
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::Subsystem { .. }
            | ChannelRequest::Env { .. }
            | ChannelRequest::WindowChange
            | ChannelRequest::Signal { .. }
            | ChannelRequest::DirectTcpip { .. }
            | ChannelRequest::TcpipForward { .. }
            | ChannelRequest::Agent
            | ChannelRequest::X11 => "",
        };
        let (hour, weekday) = hour_and_weekday(facts.now);
        let context = json!({
            "request": r.kind(),
            "file_transfer": file_transfer,
            "node": facts.node,
            "login": facts.login,
            "ticket": facts.ticket,
            "command": command,
            "subsystem": subsystem,
            "env_name": env_name,
            "signal": signal,
            "target_host": target_host,
            "target_port": target_port,
            "port_forwarding": facts.port_forwarding,
            "now": clamp(facts.now),
            "hour": hour,
            "weekday": weekday,
        });
        self.authorize(
            set,
            &entities,
            action,
            &facts.engineer,
            &facts.cluster,
            context,
        )
    }
}

/// An evaluation error is a denial that says so.
fn policy_failure(e: PolicyError) -> Vec<DenyReason> {
    vec![DenyReason {
        code: "policy_error".into(),
        message: format!("the policy could not be evaluated ({e}); the request is refused"),
    }]
}

/// When nothing but the default denial applies (no permit matched), say what was not allowed.
fn explain_fallback(mut reasons: Vec<DenyReason>, code: &str, message: String) -> Vec<DenyReason> {
    if let [only] = reasons.as_mut_slice()
        && only.code == FALLBACK_CODE
    {
        *only = DenyReason {
            code: code.into(),
            message,
        };
    }
    reasons
}

/// A policy about action `pass_env` only.
fn is_pass_env(p: &Policy) -> bool {
    match p.action_constraint() {
        cedar_policy::ActionConstraint::Eq(a) => {
            a.type_name().to_string() == "Sallyport::Action" && a.id().unescaped() == "pass_env"
        }
        cedar_policy::ActionConstraint::Any | cedar_policy::ActionConstraint::In(_) => false,
    }
}

/// The reason given when nothing but the default denial applies (no permit matched).
const FALLBACK_CODE: &str = "not_in_approved_group";

/// `Ok(None)` = allowed; `Ok(Some(reasons))` = denied, reasons in the order of the policy files.
fn denial(
    set: &PolicySet,
    response: &cedar_policy::Response,
) -> Result<Option<Vec<DenyReason>>, PolicyError> {
    // Fail closed: an evaluation error in any policy is a denial, whatever else matched.
    if let Some(err) = response.diagnostics().errors().next() {
        return Err(PolicyError::Internal(err.to_string()));
    }
    if response.decision() == CedarDecision::Allow {
        return Ok(None);
    }
    let mut reasons = Vec::new();
    for id in response.diagnostics().reason() {
        let Some(p) = set.policy(id) else { continue };
        if p.effect() != cedar_policy::Effect::Forbid {
            continue;
        }
        let code = annotation(p, "id")?;
        let code = if id.to_string().starts_with("customer") {
            format!("customer:{code}")
        } else {
            code
        };
        reasons.push(DenyReason {
            code,
            message: annotation(p, "message")?,
        });
    }
    // Keep the order of the policy files, so the same facts read the same way every time.
    let order: Vec<String> = set
        .policies()
        .filter_map(|p| p.annotation("id").map(str::to_string))
        .collect();
    reasons.sort_by_key(|r| {
        order
            .iter()
            .position(|o| r.code.trim_start_matches("customer:") == o)
    });
    if reasons.is_empty() {
        reasons.push(DenyReason {
            code: FALLBACK_CODE.into(),
            message: "no approval of this cluster names one of your groups".into(),
        });
    }
    Ok(Some(reasons))
}

fn internal_deny(e: PolicyError) -> Decision {
    Decision::Deny {
        reasons: vec![DenyReason {
            code: "policy_error".into(),
            message: format!("the policy could not be evaluated ({e}); access is refused"),
        }],
        needs_request: None,
    }
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::Invalid(e.to_string()))
}

fn annotation(p: &Policy, key: &str) -> Result<String, PolicyError> {
    match p.annotation(key) {
        Some(v) if !v.trim().is_empty() => Ok(v.to_string()),
        _ if key == "id" => Err(PolicyError::NoId(p.id().to_string())),
        _ => Err(PolicyError::NoMessage(
            p.annotation("id").unwrap_or(p.id().as_ref()).to_string(),
        )),
    }
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let v = json!({"type": format!("Sallyport::{kind}"), "id": id});
    EntityUid::from_json(v).map_err(|e| PolicyError::Internal(e.to_string()))
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The placeholder approval has an empty id; give it an entity id no real approval has.
fn approval_key(a: &ApprovalFacts) -> String {
    if a.id.is_empty() {
        "\u{0}none".into()
    } else {
        a.id.clone()
    }
}

/// The engineer (in `groups`), the groups and the cluster, as Cedar entities.
fn principal_entities(
    engineer: &str,
    groups: &[String],
    cluster: &str,
    customer: &str,
) -> Vec<Value> {
    let mut list: Vec<Value> = groups
        .iter()
        .map(|g| json!({"uid": {"type": "Sallyport::AccessGroup", "id": g}, "attrs": {}, "parents": []}))
        .collect();
    let parents: Vec<Value> = groups
        .iter()
        .map(|g| json!({"type": "Sallyport::AccessGroup", "id": g}))
        .collect();
    list.push(json!({
        "uid": {"type": "Sallyport::Engineer", "id": engineer},
        "attrs": {"uid": engineer},
        "parents": parents,
    }));
    list.push(json!({
        "uid": {"type": "Sallyport::Cluster", "id": cluster},
        "attrs": {"name": cluster, "customer": customer},
        "parents": [],
    }));
    list
}

fn entities_json(facts: &IssueFacts, approval: &ApprovalFacts) -> Value {
    let mut list = principal_entities(
        &facts.engineer,
        &facts.groups,
        &facts.cluster,
        &facts.customer,
    );
    list.push(json!({
        "uid": {"type": "Sallyport::Approval", "id": approval_key(approval)},
        "attrs": {
            "group": {"__entity": {"type": "Sallyport::AccessGroup", "id": approval.group}},
            "cluster": {"__entity": {"type": "Sallyport::Cluster", "id": approval.cluster}},
            "logins": approval.logins,
            "valid_from": clamp(approval.valid_from),
            "valid_until": clamp(approval.valid_until),
            "withdrawn": approval.withdrawn,
            "just_in_time": approval.just_in_time,
        },
        "parents": [],
    }));
    Value::Array(list)
}

/// Hour of day and weekday (0 = Sunday) in UTC.
fn hour_and_weekday(now: u64) -> (i64, i64) {
    let days = now / 86_400;
    let hour = (now % 86_400) / 3600;
    // 1970-01-01 was a Thursday (4).
    let weekday = (days + 4) % 7;
    (clamp(hour), clamp(weekday))
}

/// The engineer's request for this approval, when a customer approved it.
fn approved_request<'a>(
    facts: &'a IssueFacts,
    approval: &ApprovalFacts,
) -> Option<&'a RequestFacts> {
    facts.request.as_ref().filter(|r| {
        r.approval == approval.id
            && r.status == RequestStatus::Approved
            && facts
                .requested_logins
                .as_ref()
                .is_none_or(|want| want.iter().all(|l| r.logins.contains(l)))
    })
}

/// The logins asked for; by default those of the approved request (what the approvers saw),
/// else every login of the approval.
fn requested_logins(facts: &IssueFacts, approval: &ApprovalFacts) -> Vec<String> {
    if let Some(l) = &facts.requested_logins {
        return l.clone();
    }
    match approved_request(facts, approval) {
        Some(r) => r.logins.clone(),
        None => approval.logins.clone(),
    }
}

fn grant(facts: &IssueFacts, approval: &ApprovalFacts, ids: GrantIds) -> Grant {
    let logins = requested_logins(facts, approval);
    let mut until = facts.now.saturating_add(facts.max_ttl);
    until = until.min(facts.now.saturating_add(approval.max_session_secs));
    until = until.min(approval.valid_until);
    if let Some(ttl) = facts.requested_ttl {
        until = until.min(facts.now.saturating_add(ttl));
    }
    // No longer than the approvers approved.
    if let Some(r) = approved_request(facts, approval) {
        until = until.min(facts.now.saturating_add(r.ttl_secs));
    }
    Grant {
        id: ids.id,
        engineer: facts.engineer.clone(),
        ticket: facts.ticket.id.clone(),
        customer: facts.customer.clone(),
        cluster: facts.cluster.clone(),
        logins,
        approval: approval.id.clone(),
        group: approval.group.clone(),
        request: approved_request(facts, approval).map(|r| r.id.clone()),
        valid_after: facts.now.saturating_sub(BACKDATE_SECS),
        valid_before: until,
        serial: ids.serial,
        permit_port_forwarding: approval.port_forwarding,
        per_session_mfa: approval.per_session_mfa,
        observer_required: approval.observer_required,
        source_networks: approval.source_networks.clone(),
    }
}

#[cfg(test)]
mod tests;
