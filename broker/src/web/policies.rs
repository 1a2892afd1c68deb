//! The customer's own policies (Cedar `forbid` rules on top of sallyport's base policy): listed,
//! saved and deleted by the customer's approvers through the API's handlers, checked on save
//! with the error shown in place; reviewers read every customer's.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::session::{form_refused, refuse_form};
use super::{Viewer, api_error, render};
use crate::api::approvals as api;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::CustomerPolicy;

/// Examples shown on the page: (name, what it does, text).
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "business-hours",
        "engineers get in only on weekdays, 08:00-18:00 UTC",
        include_str!("../../../policies/examples/business-hours.cedar"),
    ),
    (
        "no-file-transfer",
        "no scp or sftp to your nodes",
        include_str!("../../../policies/examples/no-file-transfer.cedar"),
    ),
];

struct Example {
    name: &'static str,
    about: &'static str,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage<'a> {
    nav: Option<&'a Viewer>,
    can_edit: bool,
    policies: Vec<CustomerPolicy>,
    examples: Vec<Example>,
    /// The form: name and text (kept after a refusal), and why it was refused.
    name: String,
    body: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PoliciesQuery {
    /// Fill the form with this example.
    #[serde(default)]
    example: String,
    /// Fill the form with this saved policy, to change it.
    #[serde(default)]
    edit: String,
}

/// The viewer's customers whose policies the page shows: an approver's own; a reviewer's, all.
async fn customers(b: &Broker, viewer: &Viewer) -> Result<Vec<String>, ApiError> {
    Ok(match viewer.scope() {
        Some(c) => vec![c.to_string()],
        None => {
            let mut all: Vec<String> = b
                .store
                .clusters(None)
                .await?
                .into_iter()
                .map(|c| c.customer)
                .collect();
            all.sort();
            all.dedup();
            all
        }
    })
}

async fn page(
    b: &Arc<Broker>,
    viewer: &Viewer,
    name: String,
    body: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut policies = Vec::new();
    let list = match customers(b, viewer).await {
        Ok(l) => l,
        Err(e) => return api_error(viewer, e, "/console/"),
    };
    for c in list {
        match api::list_policies(State(b.clone()), viewer.caller.clone(), Path(c)).await {
            Ok(Json(mut p)) => policies.append(&mut p),
            Err(e) => return api_error(viewer, e, "/console/"),
        }
    }
    let mut r = render(&PoliciesPage {
        nav: Some(viewer),
        can_edit: viewer.may(crate::authz::Action::SavePolicy),
        policies,
        examples: EXAMPLES
            .iter()
            .map(|(name, about, _)| Example { name, about })
            .collect(),
        name,
        body,
        error,
    });
    *r.status_mut() = status;
    r
}

pub async fn policies(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(q): Query<PoliciesQuery>,
) -> Response {
    let (mut name, mut body) = (String::new(), String::new());
    if let Some((n, _, text)) = EXAMPLES.iter().find(|(n, _, _)| *n == q.example) {
        name = (*n).to_string();
        body = (*text).to_string();
        // The examples name a demo cluster: show the viewer's own.
        if let Some(customer) = viewer.scope()
            && let Ok(clusters) = b.store.clusters(Some(customer)).await
            && let Some(first) = clusters.first()
        {
            body = body
                .replace("acme-prod", &first.id)
                .replace("acme_", &format!("{}_", customer.replace('-', "_")))
                .replace("acme ", &format!("{customer} "));
        }
    } else if !q.edit.is_empty()
        && let Some(customer) = viewer.scope()
        && let Ok(list) = b.store.policies(customer).await
        && let Some(p) = list.into_iter().find(|p| p.name == q.edit)
    {
        name = p.name;
        body = p.body;
    }
    page(&b, &viewer, name, body, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    body: String,
}

/// Save (create or replace) a policy of the approver's customer; a policy that does not check
/// comes back in the form with the checker's message beside it, and nothing is saved.
pub async fn save(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<PolicyForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "save_policy").await;
        return r;
    }
    let Some(customer) = viewer.scope().map(str::to_string) else {
        return api_error(
            &viewer,
            ApiError::Forbidden("only the customer's own approvers may save its policies".into()),
            "/console/policies",
        );
    };
    let name = f.name.trim().to_string();
    match api::save_policy(
        State(b.clone()),
        viewer.caller.clone(),
        Path((customer, name.clone())),
        crate::api::Body(api::PolicyInput {
            body: f.body.clone(),
        }),
    )
    .await
    {
        Ok(_) => Redirect::to("/console/policies").into_response(),
        Err(ApiError::BadRequest(why)) => {
            page(
                &b,
                &viewer,
                name,
                f.body,
                Some(why),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => api_error(&viewer, e, "/console/policies"),
    }
}

pub async fn delete(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<super::session::CsrfForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "delete_policy").await;
        return r;
    }
    let customer = viewer.scope().unwrap_or_default().to_string();
    match api::delete_policy(
        State(b.clone()),
        viewer.caller.clone(),
        Path((customer, name)),
    )
    .await
    {
        Ok(_) => Redirect::to("/console/policies").into_response(),
        Err(e) => api_error(&viewer, e, "/console/policies"),
    }
}
