//! One Cedar request and the reading of its answer (the reasons, in the order of the policy
//! files), and the entities and values both decisions build it from.

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request,
};
use serde_json::{Value, json};

use super::{DenyReason, Engine, PolicyError, annotation};

impl Engine {
    /// One Cedar request: `engineer` asks `action` on `cluster` with `context` (checked against
    /// the schema). `Ok(None)` = allowed.
    pub(super) fn authorize(
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
}

/// The reason given when nothing but the default denial applies (no permit matched).
pub(super) const FALLBACK_CODE: &str = "not_in_approved_group";

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

pub(super) fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let v = json!({"type": format!("Sallyport::{kind}"), "id": id});
    EntityUid::from_json(v).map_err(|e| PolicyError::Internal(e.to_string()))
}

pub(super) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The engineer (in `groups`), the groups and the cluster, as Cedar entities.
pub(super) fn principal_entities(
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

/// Hour of day and weekday (0 = Sunday) in UTC.
pub(super) fn hour_and_weekday(now: u64) -> (i64, i64) {
    let days = now / 86_400;
    let hour = (now % 86_400) / 3600;
    // 1970-01-01 was a Thursday (4).
    let weekday = (days + 4) % 7;
    (clamp(hour), clamp(weekday))
}
