//! Customers' approvals of access groups, their own forbid policies, and just-in-time access
//! requests. An approver acts only on its own customer's clusters; every refusal is audited.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::certs::revoke_and_audit;
use super::{Body, check_name, created, permit, permit_or_hide};
use crate::audit::AuditEvent;
use crate::auth::{Caller, random_id};
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{AccessRequest, Approval, CustomerPolicy, RevokeScope, Vote};
use sallyport_api::approvals::PolicyDeleted;
pub(crate) use sallyport_api::approvals::{ApprovalInput, PolicyInput};
pub(crate) use sallyport_api::requests::Decision as DecisionInput;
use sallyport_ca::clock::now_secs;

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/approvals", post(create_approval).get(list_approvals))
        .route(
            "/v1/approvals/{approval}",
            get(get_approval)
                .put(edit_approval)
                .delete(withdraw_approval),
        )
        .route("/v1/customers/{customer}/policies", get(list_policies))
        .route(
            "/v1/customers/{customer}/policies/{name}",
            put(save_policy).delete(delete_policy),
        )
        .route("/v1/access-requests", get(list_requests))
        .route("/v1/access-requests/{request}", get(get_request))
        .route(
            "/v1/access-requests/{request}/decision",
            post(decide_request),
        )
}

/// The cluster's customer, when the caller may act on the cluster's approvals (an approver of
/// that customer).
async fn approver_of(
    b: &Broker,
    caller: &Caller,
    action: Action,
    cluster: &str,
) -> ApiResult<String> {
    let Some(c) = b.store.cluster(cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(cluster)
        )));
    };
    let scope = Scope::Cluster {
        customer: Some(&c.customer),
        cluster: &c.id,
    };
    permit(b, caller, action, scope).await?;
    Ok(c.customer)
}

/// The largest quorum an approval may ask for.
const MAX_APPROVERS: u64 = 5;

fn check_input(a: &ApprovalInput) -> ApiResult<()> {
    check_name("group", &a.group)?;
    if a.logins.is_empty() || a.logins.len() > 32 {
        return Err(ApiError::BadRequest("name between 1 and 32 logins".into()));
    }
    for l in &a.logins {
        check_name("login", l)?;
    }
    if a.max_session_secs < 60 || a.max_session_secs > 7 * 86_400 {
        return Err(ApiError::BadRequest(
            "max_session_secs must be between 60 and 604800".into(),
        ));
    }
    if a.valid_until <= now_secs() {
        return Err(ApiError::BadRequest("valid_until is in the past".into()));
    }
    if !(1..=MAX_APPROVERS).contains(&a.approvers_required) {
        return Err(ApiError::BadRequest(format!(
            "approvers_required must be between 1 and {MAX_APPROVERS}"
        )));
    }
    if a.approvers_required > 1 && !a.just_in_time {
        return Err(ApiError::BadRequest(
            "a quorum of approvers decides each just-in-time request: set just_in_time too".into(),
        ));
    }
    if a.source_networks.len() > 32 {
        return Err(ApiError::BadRequest("at most 32 source networks".into()));
    }
    for n in &a.source_networks {
        if n.parse::<sallyport_ca::cidr::Cidr>().is_err() {
            return Err(ApiError::BadRequest(format!(
                "invalid source network {:?}: use CIDR notation such as 203.0.113.0/24",
                crate::audit::sanitize(n)
            )));
        }
    }
    Ok(())
}

fn approval_detail(a: &Approval) -> Value {
    json!({
        "logins": a.logins, "max_session_secs": a.max_session_secs, "valid_from": a.valid_from,
        "valid_until": a.valid_until, "just_in_time": a.just_in_time,
        "per_session_mfa": a.per_session_mfa, "port_forwarding": a.port_forwarding,
        "source_networks": a.source_networks, "approvers_required": a.approvers_required,
        "observer_required": a.observer_required,
    })
}

pub(crate) async fn create_approval(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<ApprovalInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Approval>)> {
    let customer = approver_of(&b, &caller, Action::CreateApproval, &req.cluster).await?;
    check_input(&req)?;
    let now = now_secs();
    let a = Approval {
        id: format!("ap-{}", &random_id()[..16]),
        customer,
        cluster: req.cluster,
        group: req.group,
        logins: req.logins,
        max_session_secs: req.max_session_secs,
        valid_from: req.valid_from.unwrap_or(now),
        valid_until: req.valid_until,
        just_in_time: req.just_in_time,
        per_session_mfa: req.per_session_mfa,
        observer_required: req.observer_required,
        port_forwarding: req.port_forwarding,
        source_networks: req.source_networks,
        created_by: caller.label(),
        created_at: now,
        updated_at: now,
        withdrawn_at: None,
        withdrawn_by: None,
        approvers_required: req.approvers_required,
    };
    b.store.save_approval(&a, true).await?;
    b.store
        .audit(&AuditEvent::ApprovalSaved {
            approval: a.id.clone(),
            customer: a.customer.clone(),
            cluster: a.cluster.clone(),
            group: a.group.clone(),
            by: caller.label(),
            created: true,
            detail: approval_detail(&a),
        })
        .await?;
    Ok(created(a))
}

/// Load an approval the caller may change.
async fn own_approval(
    b: &Broker,
    caller: &Caller,
    action: Action,
    id: &str,
) -> ApiResult<Approval> {
    let Some(a) = b.store.approval(id).await? else {
        return Err(ApiError::NotFound("approval".into()));
    };
    approver_of(b, caller, action, &a.cluster).await?;
    Ok(a)
}

async fn edit_approval(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ApprovalInput>,
) -> ApiResult<Json<Approval>> {
    let old = own_approval(&b, &caller, Action::EditApproval, &id).await?;
    if old.withdrawn_at.is_some() {
        return Err(ApiError::Conflict(
            "this approval was withdrawn: create a new one".into(),
        ));
    }
    if req.cluster != old.cluster {
        return Err(ApiError::BadRequest(
            "an approval cannot move to another cluster: create a new one".into(),
        ));
    }
    check_input(&req)?;
    let a = Approval {
        group: req.group,
        logins: req.logins,
        max_session_secs: req.max_session_secs,
        valid_from: req.valid_from.unwrap_or(old.valid_from),
        valid_until: req.valid_until,
        just_in_time: req.just_in_time,
        per_session_mfa: req.per_session_mfa,
        observer_required: req.observer_required,
        port_forwarding: req.port_forwarding,
        source_networks: req.source_networks,
        approvers_required: req.approvers_required,
        updated_at: now_secs(),
        ..old.clone()
    };
    b.store.save_approval(&a, false).await?;
    b.store
        .audit(&AuditEvent::ApprovalSaved {
            approval: a.id.clone(),
            customer: a.customer.clone(),
            cluster: a.cluster.clone(),
            group: a.group.clone(),
            by: caller.label(),
            created: false,
            detail: approval_detail(&a),
        })
        .await?;
    // Certificates issued under the old terms do not carry the new ones: they end, and so do
    // requests decided (or waiting) under them.
    b.store.void_requests(&a.id).await?;
    revoke_and_audit(
        &b,
        RevokeScope::Approval,
        &a.id,
        &caller.label(),
        "the approval was changed",
    )
    .await?;
    Ok(Json(a))
}

pub(crate) async fn withdraw_approval(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    let old = own_approval(&b, &caller, Action::WithdrawApproval, &id).await?;
    if old.withdrawn_at.is_some() {
        return Ok(Json(old));
    }
    let a = Approval {
        withdrawn_at: Some(now_secs()),
        withdrawn_by: Some(caller.label()),
        ..old
    };
    b.store.save_approval(&a, false).await?;
    b.store
        .audit(&AuditEvent::ApprovalWithdrawn {
            approval: a.id.clone(),
            customer: a.customer.clone(),
            cluster: a.cluster.clone(),
            group: a.group.clone(),
            by: caller.label(),
        })
        .await?;
    b.store.void_requests(&a.id).await?;
    revoke_and_audit(
        &b,
        RevokeScope::Approval,
        &a.id,
        &caller.label(),
        "the approval was withdrawn",
    )
    .await?;
    Ok(Json(a))
}

#[derive(Deserialize)]
pub(crate) struct ListApprovals {
    pub(crate) cluster: Option<String>,
}

pub(crate) async fn list_approvals(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ListApprovals>,
) -> ApiResult<Json<Vec<Approval>>> {
    permit(&b, &caller, Action::ListApprovals, Scope::None).await?;
    Ok(Json(
        b.store
            .approvals(customer_view(&caller), q.cluster.as_deref())
            .await?,
    ))
}

pub(crate) async fn get_approval(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    let Some(a) = b.store.approval(&id).await? else {
        return Err(ApiError::NotFound("approval".into()));
    };
    let scope = Scope::Customer(&a.customer);
    permit_or_hide(&b, &caller, Action::ReadApproval, scope, "approval").await?;
    Ok(Json(a))
}

// --- customer policies ---

pub(crate) async fn save_policy(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path((customer, name)): Path<(String, String)>,
    Body(req): Body<PolicyInput>,
) -> ApiResult<Json<CustomerPolicy>> {
    permit(&b, &caller, Action::SavePolicy, Scope::Customer(&customer)).await?;
    check_name("policy name", &name)?;
    let checked = b
        .engine
        .check_customer_policies(&req.body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A customer's policy may only speak of that customer's clusters.
    let own: Vec<String> = b
        .store
        .clusters(Some(&customer))
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    sallyport_ca::policy::Engine::check_scope(&checked, &own)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let p = CustomerPolicy {
        id: random_id(),
        customer: customer.clone(),
        name: name.clone(),
        body: req.body,
        created_by: caller.label(),
        created_at: now_secs(),
    };
    b.store.save_policy(&p).await?;
    b.store
        .audit(&AuditEvent::CustomerPolicySaved {
            customer,
            policy: name,
            by: caller.label(),
        })
        .await?;
    Ok(Json(p))
}

pub(crate) async fn delete_policy(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path((customer, name)): Path<(String, String)>,
) -> ApiResult<Json<PolicyDeleted>> {
    permit(
        &b,
        &caller,
        Action::DeletePolicy,
        Scope::Customer(&customer),
    )
    .await?;
    if !b.store.delete_policy(&customer, &name).await? {
        return Err(ApiError::NotFound("policy".into()));
    }
    b.store
        .audit(&AuditEvent::CustomerPolicySaved {
            customer,
            policy: format!("{name} (deleted)"),
            by: caller.label(),
        })
        .await?;
    Ok(Json(PolicyDeleted { deleted: name }))
}

pub(crate) async fn list_policies(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(customer): Path<String>,
) -> ApiResult<Json<Vec<CustomerPolicy>>> {
    permit(
        &b,
        &caller,
        Action::ListPolicies,
        Scope::Customer(&customer),
    )
    .await?;
    Ok(Json(b.store.policies(&customer).await?))
}

// --- access requests ---

#[derive(Deserialize)]
pub(crate) struct ListRequests {
    pub(crate) status: Option<String>,
}

pub(crate) async fn list_requests(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ListRequests>,
) -> ApiResult<Json<Vec<AccessRequest>>> {
    permit(&b, &caller, Action::ListRequests, Scope::None).await?;
    Ok(Json(
        b.store
            .requests(customer_view(&caller), q.status.as_deref())
            .await?,
    ))
}

async fn get_request(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessRequest>> {
    let Some(r) = b.store.request(&id).await? else {
        return Err(ApiError::NotFound("access request".into()));
    };
    let customer = b.store.cluster(&r.cluster).await?.map(|c| c.customer);
    let scope = Scope::Request {
        customer: customer.as_deref(),
        cluster: &r.cluster,
        engineer: &r.engineer,
    };
    permit_or_hide(&b, &caller, Action::ReadRequest, scope, "access request").await?;
    Ok(Json(r))
}

/// The narrowed terms of an approval, checked against what was asked: `None` when the
/// approver keeps them.
fn narrowed(r: &AccessRequest, req: &DecisionInput) -> ApiResult<Option<(Vec<String>, u64)>> {
    if req.logins.is_none() && req.ttl_secs.is_none() {
        return Ok(None);
    }
    if !req.approve {
        return Err(ApiError::BadRequest(
            "logins and ttl_secs narrow an approval; a denial takes neither".into(),
        ));
    }
    let logins = match &req.logins {
        None => r.logins.clone(),
        Some(l) => {
            let mut l: Vec<String> = l.iter().map(|x| x.trim().to_string()).collect();
            l.sort();
            l.dedup();
            if l.is_empty() || l.iter().any(|x| !r.logins.contains(x)) {
                return Err(ApiError::BadRequest(format!(
                    "approve some of the logins asked for ({}), at least one; an approval cannot add a login",
                    r.logins.join(", ")
                )));
            }
            l
        }
    };
    let ttl = req.ttl_secs.unwrap_or(r.ttl_secs);
    if ttl < 60 || ttl > r.ttl_secs {
        return Err(ApiError::BadRequest(format!(
            "approve a lifetime of 60 to {} seconds (what was asked); an approval cannot lengthen it",
            r.ttl_secs
        )));
    }
    let mut asked = r.logins.clone();
    asked.sort();
    Ok((logins != asked || ttl != r.ttl_secs).then_some((logins, ttl)))
}

pub(crate) async fn decide_request(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<DecisionInput>,
) -> ApiResult<Json<AccessRequest>> {
    let Some(r) = b.store.request(&id).await? else {
        return Err(ApiError::NotFound("access request".into()));
    };
    let Some(c) = b.store.cluster(&r.cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&r.cluster)
        )));
    };
    // An approver of the cluster's customer, and not the engineer who asked.
    let scope = Scope::Request {
        customer: Some(&c.customer),
        cluster: &c.id,
        engineer: &r.engineer,
    };
    permit(&b, &caller, Action::DecideRequest, scope).await?;
    if req.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::BadRequest(
            "the reason is longer than 1024 bytes".into(),
        ));
    }
    let narrow = narrowed(&r, &req)?;
    let who = caller.label();
    let vote = b
        .store
        .vote(
            &r,
            &who,
            req.approve,
            req.reason.as_deref(),
            narrow.as_ref().map(|(l, t)| (l.as_slice(), *t)),
        )
        .await?;
    let r = b
        .store
        .request(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("access request".into()))?;
    match vote {
        Vote::AlreadyVoted => {
            return Err(ApiError::Conflict(format!(
                "you already decided this request; it needs {} distinct approvers ({} approved so far)",
                r.approvers_required,
                r.approved_by.len()
            )));
        }
        Vote::TermsChanged => {
            return Err(ApiError::Conflict(
                "another approver changed this request's terms since you read them: look at it again".into(),
            ));
        }
        Vote::NotPending => {
            return Err(ApiError::Conflict(format!(
                "this request was already decided ({})",
                r.status
            )));
        }
        Vote::Decided | Vote::Waiting { .. } => {}
    }
    b.store
        .audit(&AuditEvent::AccessRequestDecided {
            request: r.id.clone(),
            engineer: r.engineer.clone(),
            ticket: r.ticket.clone(),
            cluster: r.cluster.clone(),
            decided_by: who,
            status: r.status.as_str().into(),
            reason: req.reason.clone(),
            approvals: r.approved_by.len() as u64,
            approvers_required: r.approvers_required,
            logins: r.logins.clone(),
            ttl_secs: r.ttl_secs,
            narrowed: narrow.is_some(),
        })
        .await?;
    Ok(Json(r))
}
