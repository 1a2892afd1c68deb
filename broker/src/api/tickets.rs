//! Tickets, pushed by the ticket system (or the operator). A ticket that leaves the `open`
//! state revokes the certificates issued for it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::put;
use axum::{Json, Router};

use super::certs::revoke_and_audit;
use super::{Body, check_name, permit, permit_or_hide};
use crate::audit::AuditEvent;
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{self, RevokeScope};
use sallyport_api::tickets::TicketInput;
use sallyport_ca::clock::now_secs;

pub fn router() -> Router<Arc<Broker>> {
    Router::new().route("/v1/tickets/{ticket}", put(save_ticket).get(get_ticket))
}

async fn save_ticket(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<TicketInput>,
) -> ApiResult<Json<store::Ticket>> {
    permit(&b, &caller, Action::SaveTicket, Scope::Unread).await?;
    check_name("ticket", &id)?;
    check_name("assignee", &req.assignee)?;
    let status = req.status.trim().to_ascii_lowercase();
    check_name("status", &status)?;
    if req.title.len() > 512 {
        return Err(ApiError::BadRequest(
            "the title is longer than 512 bytes".into(),
        ));
    }
    let Some(cluster) = b.store.cluster(&req.cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&req.cluster)
        )));
    };
    if cluster.customer != req.customer {
        return Err(ApiError::BadRequest(format!(
            "cluster {} belongs to another customer than {:?}",
            cluster.id,
            crate::audit::sanitize(&req.customer)
        )));
    }
    let before = b.store.ticket(&id).await?;
    // A ticket system scoped to a customer writes that customer's tickets only: neither a new
    // one for another customer nor one that exists for another customer.
    let scope = Scope::Ticket {
        customer: &req.customer,
        cluster: &cluster.id,
        assignee: &req.assignee,
        was: before.as_ref().map(|t| t.customer.as_str()),
    };
    permit(&b, &caller, Action::SaveTicket, scope).await?;
    let t = store::Ticket {
        id: id.clone(),
        customer: req.customer,
        cluster: req.cluster,
        assignee: req.assignee,
        status,
        title: req.title,
        updated_at: now_secs(),
    };
    b.store.upsert_ticket(&t).await?;
    b.store
        .audit(&AuditEvent::TicketSaved {
            ticket: t.id.clone(),
            customer: t.customer.clone(),
            cluster: t.cluster.clone(),
            engineer: t.assignee.clone(),
            status: t.status.clone(),
            by: caller.label(),
        })
        .await?;
    // Leaving "open", changing hands or clusters ends what was issued for it.
    let changed = before.as_ref().is_some_and(|old| {
        old.assignee != t.assignee || old.cluster != t.cluster || old.customer != t.customer
    });
    if t.status != "open" || changed {
        let reason = if t.status != "open" {
            format!("ticket {} is {}", t.id, t.status)
        } else {
            format!("ticket {} was reassigned or moved", t.id)
        };
        revoke_and_audit(&b, RevokeScope::Ticket, &t.id, &caller.label(), &reason).await?;
    }
    Ok(Json(t))
}

async fn get_ticket(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<store::Ticket>> {
    let Some(t) = b.store.ticket(&id).await? else {
        return Err(ApiError::NotFound("ticket".into()));
    };
    // Another's ticket has the same answer as a ticket that does not exist: no probing of ids.
    let scope = Scope::Ticket {
        customer: &t.customer,
        cluster: &t.cluster,
        assignee: &t.assignee,
        was: None,
    };
    permit_or_hide(&b, &caller, Action::ReadTicket, scope, "ticket").await?;
    Ok(Json(t))
}
