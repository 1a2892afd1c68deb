//! The approvals' pages: the list, a new approval, and withdrawing one (what it ends first).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use sallyport_ca::clock::now_secs;
use serde::Deserialize;

use super::{SessionRow, text};
use crate::api::approvals as api;
use crate::audit::sanitize;
use crate::authz::Action;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::Approval;
use crate::web::session::{form_refused, refuse_form};
use crate::web::{Viewer, When, api_error, duration, render};

pub(super) async fn live_approvals(
    b: &Arc<Broker>,
    viewer: &Viewer,
) -> Result<Vec<Approval>, ApiError> {
    let Json(list) = api::list_approvals(
        State(b.clone()),
        viewer.caller.clone(),
        Query(api::ListApprovals { cluster: None }),
    )
    .await?;
    let now = now_secs();
    Ok(list
        .into_iter()
        .filter(|a| a.withdrawn_at.is_none() && a.valid_until > now)
        .collect())
}

/// An approval as the approvals page shows it.
pub(crate) struct ApprovalRow {
    pub a: Approval,
    pub logins: String,
    pub until: When,
    pub length: String,
    pub options: Vec<&'static str>,
    pub live: bool,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage<'a> {
    nav: Option<&'a Viewer>,
    approvals: Vec<ApprovalRow>,
    clusters: Vec<String>,
    can_edit: bool,
}

pub async fn approvals(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let list = match api::list_approvals(
        State(b.clone()),
        viewer.caller.clone(),
        Query(api::ListApprovals { cluster: None }),
    )
    .await
    {
        Ok(Json(l)) => l,
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    let clusters = match b.store.clusters(viewer.scope()).await {
        Ok(c) => c.into_iter().map(|c| c.id).collect(),
        Err(e) => return api_error(&viewer, e.into(), "/console/"),
    };
    let now = now_secs();
    let rows = list
        .into_iter()
        .map(|a| {
            let mut options = Vec::new();
            if a.just_in_time {
                options.push("just-in-time");
            }
            if a.approvers_required > 1 {
                options.push("quorum");
            }
            if a.per_session_mfa {
                options.push("MFA per session");
            }
            if a.observer_required {
                options.push("watched by an approver");
            }
            if a.port_forwarding {
                options.push("port forwarding");
            }
            if !a.source_networks.is_empty() {
                options.push("source networks");
            }
            ApprovalRow {
                logins: a.logins.join(", "),
                until: When::secs(a.valid_until),
                length: duration(a.max_session_secs.saturating_mul(1000)),
                options,
                live: a.withdrawn_at.is_none() && a.valid_until > now,
                a,
            }
        })
        .collect();
    render(&ApprovalsPage {
        nav: Some(&viewer),
        approvals: rows,
        clusters,
        can_edit: viewer.may(Action::CreateApproval),
    })
}

#[derive(Deserialize)]
pub struct ApprovalForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    group: String,
    /// Logins separated by commas or spaces.
    #[serde(default)]
    logins: String,
    /// Longest session, minutes.
    #[serde(default)]
    max_session_minutes: String,
    /// How long the approval stands, days.
    #[serde(default)]
    valid_days: String,
    #[serde(default)]
    just_in_time: Option<String>,
    #[serde(default)]
    approvers_required: String,
    #[serde(default)]
    per_session_mfa: Option<String>,
    #[serde(default)]
    observer_required: Option<String>,
    #[serde(default)]
    port_forwarding: Option<String>,
    /// CIDR networks separated by commas or spaces.
    #[serde(default)]
    source_networks: String,
}

fn words(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n', '\r', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn number(field: &str, v: &str, default: u64) -> Result<u64, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(default);
    }
    v.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{field} must be a whole number, not {:?}",
            sanitize(v)
        ))
    })
}

pub async fn create_approval(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<ApprovalForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "create_approval").await;
        return r;
    }
    let input = (|| {
        let minutes = number("The longest session (minutes)", &f.max_session_minutes, 60)?;
        let days = number("Valid for (days)", &f.valid_days, 30)?;
        if days == 0 || days > 366 {
            return Err(ApiError::BadRequest(
                "Valid for (days) must be between 1 and 366".into(),
            ));
        }
        Ok(api::ApprovalInput {
            cluster: f.cluster.trim().to_string(),
            group: f.group.trim().to_string(),
            logins: words(&f.logins),
            max_session_secs: minutes.saturating_mul(60),
            valid_until: now_secs() + days * 86_400,
            valid_from: None,
            just_in_time: f.just_in_time.is_some(),
            per_session_mfa: f.per_session_mfa.is_some(),
            observer_required: f.observer_required.is_some(),
            port_forwarding: f.port_forwarding.is_some(),
            source_networks: words(&f.source_networks),
            approvers_required: number("Approvers required", &f.approvers_required, 1)?,
        })
    })();
    let input = match input {
        Ok(i) => i,
        Err(e) => return api_error(&viewer, e, "/console/approvals"),
    };
    match api::create_approval(
        State(b.clone()),
        viewer.caller.clone(),
        crate::api::Body(input),
    )
    .await
    {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        Err(e) => api_error(&viewer, e, "/console/approvals"),
    }
}

/// A certificate the withdraw page lists.
pub(crate) struct CertRow {
    pub engineer: String,
    pub ticket: String,
    pub logins: String,
    pub serial: String,
    pub until: When,
}

#[derive(Template)]
#[template(path = "withdraw.html")]
struct WithdrawPage<'a> {
    nav: Option<&'a Viewer>,
    a: Approval,
    certificates: Vec<CertRow>,
    sessions: Vec<SessionRow>,
}

/// Before withdrawing: what it will end (certificates valid now, live sessions under them).
pub async fn withdraw_page(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let a = match api::get_approval(State(b.clone()), viewer.caller.clone(), Path(id.clone())).await
    {
        Ok(Json(a)) => a,
        Err(e) => return api_error(&viewer, e, "/console/approvals"),
    };
    let now = now_secs();
    let grants = match b
        .store
        .grants_where(crate::store::RevokeScope::Approval, &a.id)
        .await
    {
        Ok(g) => g,
        Err(e) => return api_error(&viewer, e.into(), "/console/approvals"),
    };
    let live: Vec<_> = grants
        .into_iter()
        .filter(|g| g.revoked_at.is_none() && g.valid_before > now)
        .collect();
    let sessions = match b
        .store
        .session_summaries(Some(&a.customer), true, 1000)
        .await
    {
        Ok(s) => s,
        Err(e) => return api_error(&viewer, ApiError::Internal(e), "/console/approvals"),
    };
    let sessions = sessions
        .iter()
        .filter(|s| {
            let grant = text(&s.data, "grant");
            live.iter().any(|g| g.id == grant)
        })
        .map(SessionRow::of)
        .collect();
    render(&WithdrawPage {
        nav: Some(&viewer),
        certificates: live
            .iter()
            .map(|g| CertRow {
                engineer: g.engineer.clone(),
                ticket: g.ticket.clone(),
                logins: g.logins.join(", "),
                serial: g.serial.clone(),
                until: When::secs(g.valid_before),
            })
            .collect(),
        sessions,
        a,
    })
}

pub async fn withdraw_approval(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<crate::web::session::CsrfForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "withdraw_approval").await;
        return r;
    }
    match api::withdraw_approval(State(b.clone()), viewer.caller.clone(), Path(id)).await {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        Err(e) => api_error(&viewer, e, "/console/approvals"),
    }
}
