//! The policy decision: may this engineer get a certificate for this cluster now?
//!
//! Written in Cedar (`policies/`). The broker gathers the facts by I/O (LDAP groups, ticket,
//! approvals, access request, MFA, clock) into [`IssueFacts`]; [`Engine::decide`] is pure and is
//! the only maker of a [`Grant`]. A denial's reasons are the `@message`s of the `forbid`
//! policies that matched, so the decision and what the engineer reads have one source.

//!
//! Files: the policies' loading and checking and the [`Engine`] here, the facts and the answer in
//! `facts.rs`, the certificate decision in `issue.rs`, the channel and `pass_env` decisions in
//! `channel.rs`, the Cedar request and the reading of its answer in `cedar.rs`.

use std::str::FromStr;

/// A checked customer policy, as [`Engine::check_customer_policies`] returns it.
pub use cedar_policy::Policy;
use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};

mod cedar;
mod channel;
mod facts;
mod issue;

pub use facts::{
    ApprovalFacts, BACKDATE_SECS, ChannelFacts, ChannelRequest, Decision, DenyReason, GrantIds,
    IssueFacts, RequestFacts, RequestStatus, TicketFacts,
};

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

#[cfg(test)]
mod tests;
