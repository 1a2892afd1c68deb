//! The certificate decision: [`Engine::decide`] over [`IssueFacts`], and the [`Grant`] it makes.

use cedar_policy::{Entities, PolicySet};
use serde_json::{Value, json};

use super::cedar::{clamp, hour_and_weekday, principal_entities, uid};
use super::{
    ApprovalFacts, BACKDATE_SECS, Decision, DenyReason, Engine, GrantIds, IssueFacts, Policy,
    PolicyError, RequestFacts, RequestStatus,
};
use crate::Grant;

impl Engine {
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

/// The placeholder approval has an empty id; give it an entity id no real approval has.
fn approval_key(a: &ApprovalFacts) -> String {
    if a.id.is_empty() {
        "\u{0}none".into()
    } else {
        a.id.clone()
    }
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
