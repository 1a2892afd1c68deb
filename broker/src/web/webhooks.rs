//! Notifications in the console: a customer's approvers list, add and delete their customer's
//! webhooks and see recent deliveries; reviewers read every webhook and delivery. Every action
//! goes through the API's handlers with the viewer as the caller.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::session::{form_refused, refuse_form};
use super::{Viewer, When, api_error, render};
use crate::api::webhooks as api;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::{DeliveryRow, Webhook};
use crate::webhooks::NOTIFIED;

/// How the page names each event kind.
fn label(kind: &str) -> &'static str {
    match kind {
        "access_request_created" => "Access requested",
        "access_request_decided" => "Request decided",
        "certificate_issued" => "Certificate issued",
        "session_started" => "Session started",
        "session_ended" => "Session ended",
        "session_terminated" => "Session terminated",
        "revoked" => "Revocation",
        "refusal_burst" => "Burst of refused logins",
        _ => "Other",
    }
}

struct HookRow {
    w: Webhook,
    created: When,
    events: String,
}

struct DeliveryView {
    d: DeliveryRow,
    kind: &'static str,
    created: When,
    /// Delivered at, or the next attempt of a pending one.
    then: Option<When>,
}

struct EventChoice {
    kind: &'static str,
    label: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage<'a> {
    nav: Option<&'a Viewer>,
    can_edit: bool,
    hooks: Vec<HookRow>,
    deliveries: Vec<DeliveryView>,
    choices: Vec<EventChoice>,
    /// The form, kept after a refusal, and why.
    url: String,
    format: String,
    error: Option<String>,
    /// Just made: its id and secret, shown this once.
    made: Option<(String, String)>,
}

#[derive(serde::Deserialize, Default)]
pub struct WebhooksQuery {
    /// Only this webhook's deliveries.
    #[serde(default)]
    webhook: Option<String>,
}

struct FormState {
    url: String,
    format: String,
    events: Vec<String>,
    error: Option<String>,
    made: Option<(String, String)>,
}

async fn page(
    b: &Arc<Broker>,
    viewer: &Viewer,
    only: Option<String>,
    form: FormState,
    status: StatusCode,
) -> Response {
    let hooks = match api::hooks_for(b, &viewer.caller).await {
        Ok(h) => h,
        Err(e) => return api_error(viewer, e, "/console/"),
    };
    let deliveries = match api::deliveries_for(b, &viewer.caller, only.as_deref(), 100).await {
        Ok(d) => d,
        Err(e) => return api_error(viewer, e, "/console/webhooks"),
    };
    let all = form.events.is_empty();
    let mut r = render(&WebhooksPage {
        nav: Some(viewer),
        can_edit: viewer.may(crate::authz::Action::CreateWebhook),
        hooks: hooks
            .into_iter()
            .map(|w| HookRow {
                created: When::secs(w.created_at),
                events: if w.events.iter().any(|e| e == "*") {
                    "every event".into()
                } else {
                    w.events
                        .iter()
                        .map(|e| label(e))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                w,
            })
            .collect(),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryView {
                kind: label(&d.kind),
                created: When::secs(d.created_at),
                then: d.delivered_at.or(d.next_at).map(When::secs),
                d,
            })
            .collect(),
        choices: NOTIFIED
            .iter()
            .map(|k| EventChoice {
                kind: k,
                label: label(k),
                checked: all || form.events.iter().any(|e| e == k),
            })
            .collect(),
        url: form.url,
        format: form.format,
        error: form.error,
        made: form.made,
    });
    *r.status_mut() = status;
    r
}

/// The page again with the form as it was sent, and why it was not taken (422).
async fn page_with_error(
    b: &Arc<Broker>,
    viewer: &Viewer,
    url: String,
    format: String,
    events: Vec<String>,
    why: String,
) -> Response {
    let form = FormState {
        url,
        format,
        events,
        error: Some(why),
        made: None,
    };
    page(b, viewer, None, form, StatusCode::UNPROCESSABLE_ENTITY).await
}

fn blank() -> FormState {
    FormState {
        url: String::new(),
        format: "json".into(),
        events: vec![],
        error: None,
        made: None,
    }
}

pub async fn webhooks(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(q): Query<WebhooksQuery>,
) -> Response {
    let only = q.webhook.filter(|w| !w.is_empty());
    page(&b, &viewer, only, blank(), StatusCode::OK).await
}

/// Add a webhook: the form's fields are `csrf`, `url`, `format` and one `event` per checked
/// kind. A refused URL comes back in the form with the reason; a new webhook's secret is shown
/// once, on the page that answers the form.
pub async fn create(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Some(r) = form_refused(&viewer, &headers, &field("csrf")) {
        refuse_form(&b, &viewer, "create_webhook").await;
        return r;
    }
    let events: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "event")
        .map(|(_, v)| v.clone())
        .collect();
    let (url, format) = (field("url").trim().to_string(), field("format"));
    // Every box checked is every event, including kinds added later.
    let asked = if events.len() == NOTIFIED.len() {
        vec![]
    } else if events.is_empty() {
        let why = "Check at least one event to be told about.".into();
        return page_with_error(&b, &viewer, url, format, events, why).await;
    } else {
        events.clone()
    };
    let res = api::create_webhook(
        State(b.clone()),
        viewer.caller.clone(),
        crate::api::Body(sallyport_api::webhooks::WebhookInput {
            url: url.clone(),
            format: Some(format.clone()),
            events: asked,
            secret: None,
            customer: None,
        }),
    )
    .await;
    match res {
        Ok((_, axum::Json(v))) => {
            let made = v.secret.map(|secret| (v.webhook.id, secret));
            page(
                &b,
                &viewer,
                None,
                FormState { made, ..blank() },
                StatusCode::OK,
            )
            .await
        }
        Err(ApiError::Unprocessable(why) | ApiError::BadRequest(why)) => {
            page_with_error(&b, &viewer, url, format, events, why).await
        }
        Err(e) => api_error(&viewer, e, "/console/webhooks"),
    }
}

pub async fn delete(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<super::session::CsrfForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "delete_webhook").await;
        return r;
    }
    match api::delete_webhook(State(b.clone()), viewer.caller.clone(), Path(id)).await {
        Ok(_) => Redirect::to("/console/webhooks").into_response(),
        Err(e) => api_error(&viewer, e, "/console/webhooks"),
    }
}
