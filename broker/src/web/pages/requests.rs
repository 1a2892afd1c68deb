//! The access requests' page and the approver's decision on one.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};

use crate::api::approvals as api;
use crate::authz::Action;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::AccessRequest;
use crate::web::session::{form_refused, refuse_form};
use crate::web::{Viewer, When, api_error, duration, message, render};

/// A pending request as the requests page shows it.
pub(crate) struct RequestRow {
    pub r: AccessRequest,
    pub created: When,
    pub ticket_title: String,
    pub ticket_status: String,
    pub ttl: String,
    pub logins: String,
    pub approved_by: String,
    /// Shorter lifetimes the approver may choose instead: (seconds, label).
    pub shorter: Vec<(u64, String)>,
}

pub(super) async fn pending_requests(
    b: &Arc<Broker>,
    viewer: &Viewer,
) -> Result<Vec<AccessRequest>, ApiError> {
    let Json(list) = api::list_requests(
        State(b.clone()),
        viewer.caller.clone(),
        Query(api::ListRequests {
            status: Some("pending".into()),
        }),
    )
    .await?;
    Ok(list)
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage<'a> {
    nav: Option<&'a Viewer>,
    requests: Vec<RequestRow>,
    can_decide: bool,
}

pub async fn requests(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let list = match pending_requests(&b, &viewer).await {
        Ok(l) => l,
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    let mut rows = Vec::new();
    for r in list {
        let ticket = match b.store.ticket(&r.ticket).await {
            Ok(t) => t,
            Err(e) => return api_error(&viewer, e.into(), "/console/"),
        };
        rows.push(RequestRow {
            created: When::secs(r.created_at),
            ticket_title: ticket.as_ref().map(|t| t.title.clone()).unwrap_or_default(),
            ticket_status: ticket
                .as_ref()
                .map(|t| t.status.clone())
                .unwrap_or_else(|| "unknown".into()),
            ttl: duration(r.ttl_secs.saturating_mul(1000)),
            logins: r.logins.join(", "),
            approved_by: r.approved_by.join(", "),
            shorter: [900u64, 1800, 3600, 7200, 14400]
                .into_iter()
                .filter(|s| *s < r.ttl_secs)
                .map(|s| (s, duration(s * 1000)))
                .collect(),
            r,
        });
    }
    render(&RequestsPage {
        nav: Some(&viewer),
        requests: rows,
        can_decide: viewer.may(Action::DecideRequest),
    })
}

/// The decision form: `csrf`, `decision` (`approve` or `deny`), `reason`, and to narrow an
/// approval, `ttl` (seconds; empty keeps what was asked) and `login` once per login approved
/// (absent: every login asked for).
pub async fn decide_request(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let logins: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "login")
        .map(|(_, v)| v.clone())
        .collect();
    let has_logins = fields.iter().any(|(k, _)| k == "logins_shown");
    let f = (
        field("csrf"),
        field("decision"),
        field("reason"),
        field("ttl"),
    );
    let (csrf, decision, reason, ttl) = (&f.0, &f.1, &f.2, &f.3);
    if let Some(r) = form_refused(&viewer, &headers, csrf) {
        refuse_form(&b, &viewer, "decide_request").await;
        return r;
    }
    let approve = match decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(&viewer),
                "Check the form",
                "Choose Approve or Deny.".into(),
                "/console/requests",
                "Back to requests",
            );
        }
    };
    let reason = Some(reason.trim().to_string()).filter(|r| !r.is_empty());
    let ttl_secs = match ttl.trim() {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(t) => Some(t),
            Err(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    Some(&viewer),
                    "Check the form",
                    "Choose a lifetime from the list.".into(),
                    "/console/requests",
                    "Back to requests",
                );
            }
        },
    };
    // A denial narrows nothing: the form's narrowing fields are left out.
    let (logins, ttl_secs) = if approve {
        (has_logins.then_some(logins), ttl_secs)
    } else {
        (None, None)
    };
    match api::decide_request(
        State(b.clone()),
        viewer.caller.clone(),
        Path(id),
        crate::api::Body(api::DecisionInput {
            approve,
            reason,
            logins,
            ttl_secs,
        }),
    )
    .await
    {
        Ok(_) => Redirect::to("/console/requests").into_response(),
        Err(e) => api_error(&viewer, e, "/console/requests"),
    }
}
