//! Webhooks (notifications): a customer's approvers set up and delete their customer's; the
//! operator sets up vendor-wide ones (told about every customer's events) and may set one up
//! for a customer; reviewers read them all. Every change is an audit event naming the caller;
//! the URL in full and the secret are never shown after creation (docs/webhooks.md).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use sallyport_api::webhooks::{Deliveries, WebhookCreated, WebhookDeleted, WebhookInput, Webhooks};
use serde::Deserialize;

use super::{Body, created, permit, permit_or_hide};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::{Caller, random_id};
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{DeliveryRow, NewWebhook, Webhook};
use crate::webhooks::{
    Format, NOTIFIED, check_url, new_secret, secret_context, shown_url, url_context,
};

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v1/webhooks/deliveries", get(all_deliveries))
        .route("/v1/webhooks/{webhook}", delete(delete_webhook))
        .route("/v1/webhooks/{webhook}/deliveries", get(webhook_deliveries))
}

/// The webhook `id` when the caller may see it; another customer's (or a vendor-wide one, for
/// an approver) is "not found", and the attempt is audited.
async fn visible(b: &Broker, caller: &Caller, id: &str, action: Action) -> ApiResult<Webhook> {
    const NOT_FOUND: &str = "a webhook with this id that you may see";
    permit(b, caller, action, Scope::Unread).await?;
    let Some(w) = b.store.webhook(id).await? else {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    };
    let scope = Scope::Webhook {
        customer: w.customer.as_deref(),
    };
    permit_or_hide(b, caller, action, scope, NOT_FOUND).await?;
    Ok(w)
}

/// The event kinds asked for: each one notified; `*` (or none) is every one.
fn check_events(events: &[String]) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if e == "*" {
            return Ok(vec![]);
        }
        if !NOTIFIED.contains(&e) {
            return Err(ApiError::Unprocessable(format!(
                "{:?} is not an event a webhook can be told about: use {} (or * for all)",
                sanitize(e),
                NOTIFIED.join(", ")
            )));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

pub(crate) async fn create_webhook(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<WebhookInput>,
) -> ApiResult<(axum::http::StatusCode, Json<WebhookCreated>)> {
    const ACTION: Action = Action::CreateWebhook;
    permit(&b, &caller, ACTION, Scope::Unread).await?;
    // An approver sets up its own customer's; the operator a customer's or a vendor-wide one.
    if let Some(c) = &req.customer {
        permit(&b, &caller, ACTION, Scope::Customer(c)).await?;
    }
    let customer = customer_view(&caller).map(str::to_string).or(req.customer);
    if let Some(c) = &customer
        && !b.store.customer_exists(c).await?
    {
        return Err(ApiError::NotFound(format!("customer {:?}", sanitize(c))));
    }
    let url = check_url(
        &req.url,
        b.cfg.webhooks.allow_http_loopback,
        customer.is_some(),
    )
    .map_err(|e| ApiError::Unprocessable(e.0))?;
    let format = match req.format.as_deref().map(str::trim) {
        None | Some("") => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "format {:?} is not known: use json (signed, for your own receiver) or slack (a Slack incoming webhook)",
                sanitize(f)
            ))
        })?,
    };
    let events = check_events(&req.events)?;
    let (secret, show_secret) = match req.secret {
        Some(s) if s.trim().chars().count() >= 24 && s.trim().len() <= 256 => {
            (s.trim().to_string(), false)
        }
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "the secret must be 24 to 256 characters: or leave it out and the broker makes one"
                    .into(),
            ));
        }
        None => (new_secret(), true),
    };
    let id = format!("wh-{}", &random_id()[..16]);
    let shown = shown_url(&url);
    let hook = b
        .store
        .create_webhook(&NewWebhook {
            id: id.clone(),
            customer: customer.clone(),
            url_sealed: b.totp_box.seal(&url_context(&id), url.as_str()),
            url_shown: shown.clone(),
            format: format.as_str().into(),
            events: events.clone(),
            secret_sealed: b.totp_box.seal(&secret_context(&id), &secret),
            created_by: caller.label(),
        })
        .await?;
    b.store
        .audit(&AuditEvent::WebhookCreated {
            webhook: id,
            customer,
            url: shown,
            format: format.as_str().into(),
            events: if events.is_empty() {
                vec!["*".into()]
            } else {
                events
            },
            by: caller.label(),
        })
        .await?;
    Ok(created(WebhookCreated {
        webhook: hook,
        secret: show_secret.then_some(secret),
    }))
}

/// The webhooks the caller may see.
pub(crate) async fn hooks_for(b: &Broker, caller: &Caller) -> ApiResult<Vec<Webhook>> {
    permit(b, caller, Action::ListWebhooks, Scope::None).await?;
    Ok(b.store.webhooks(customer_view(caller)).await?)
}

async fn list_webhooks(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<Webhooks>> {
    Ok(Json(Webhooks {
        webhooks: hooks_for(&b, &caller).await?,
    }))
}

pub(crate) async fn delete_webhook(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookDeleted>> {
    let w = visible(&b, &caller, &id, Action::DeleteWebhook).await?;
    let Some(cancelled) = b.store.delete_webhook(&w.id, &caller.label()).await? else {
        return Err(ApiError::NotFound(
            "a webhook with this id that you may see".into(),
        ));
    };
    b.store
        .audit(&AuditEvent::WebhookDeleted {
            webhook: w.id.clone(),
            customer: w.customer.clone(),
            url: w.url.clone(),
            by: caller.label(),
            cancelled,
        })
        .await?;
    Ok(Json(WebhookDeleted {
        id: w.id,
        deleted: true,
        cancelled_deliveries: cancelled,
    }))
}

#[derive(Deserialize, Default)]
pub(crate) struct DeliveriesQuery {
    pub(crate) limit: Option<u64>,
}

/// Recent deliveries the caller may see, newest first: of one webhook, or of all it sees.
pub(crate) async fn deliveries_for(
    b: &Broker,
    caller: &Caller,
    webhook: Option<&str>,
    limit: u64,
) -> ApiResult<Vec<DeliveryRow>> {
    const ACTION: Action = Action::ListWebhookDeliveries;
    Ok(match webhook {
        Some(id) => {
            let w = visible(b, caller, id, ACTION).await?;
            b.store.deliveries(None, Some(&w.id), limit).await?
        }
        None => {
            permit(b, caller, ACTION, Scope::None).await?;
            b.store
                .deliveries(customer_view(caller), None, limit)
                .await?
        }
    })
}

async fn all_deliveries(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Deliveries>> {
    let list = deliveries_for(&b, &caller, None, q.limit.unwrap_or(100)).await?;
    Ok(Json(Deliveries { deliveries: list }))
}

async fn webhook_deliveries(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Deliveries>> {
    let list = deliveries_for(&b, &caller, Some(&id), q.limit.unwrap_or(100)).await?;
    Ok(Json(Deliveries { deliveries: list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked() {
        assert_eq!(check_events(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(check_events(&["*".into()]).unwrap(), Vec::<String>::new());
        assert_eq!(
            check_events(&["revoked".into(), "revoked".into(), "session_started".into()]).unwrap(),
            vec!["revoked".to_string(), "session_started".into()]
        );
        let e = check_events(&["command".into()]).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.to_string().contains("certificate_issued"), "{e}");
    }
}
