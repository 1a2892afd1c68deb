//! The console's pages. Reads and changes go through the API's handlers (or, for what the API
//! does not serve yet, store reads scoped here to the viewer's customer), with the viewer as
//! the caller. Here: the overview and the session rows the pages share; each area's pages in
//! its own module.

mod approvals;
mod audit;
mod replay;
mod requests;
mod sessions;

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::{Viewer, When, api_error, duration, render};
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::{AuditQuery, SessionSummary};

pub use approvals::{approvals, create_approval, withdraw_approval, withdraw_page};
pub use audit::{chains, report, search};
pub use replay::{replay_frames, replay_page};
pub use requests::{decide_request, requests};
pub use sessions::{
    session_bundle, session_page, sessions, terminate_session, unseal_hidden_input, watch_data,
    watch_page,
};

/// A session as a table row.
pub(crate) struct SessionRow {
    pub id: String,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub node: String,
    pub login: String,
    pub started: When,
    pub ended: Option<When>,
    pub length: String,
    pub commands: u64,
    /// Its approval requires an approver watching it (a moderated session).
    pub moderated: bool,
}

impl SessionRow {
    pub(super) fn of(s: &SessionSummary) -> SessionRow {
        let now = sallyport_ca::clock::now_ms();
        SessionRow {
            id: s.session.clone(),
            engineer: s.engineer.clone(),
            ticket: s.ticket.clone(),
            cluster: s.cluster.clone(),
            node: s.node.clone(),
            login: text(&s.data, "login"),
            started: When::ms(s.started_ms),
            ended: s.ended_ms.map(When::ms),
            length: duration(s.ended_ms.unwrap_or(now).saturating_sub(s.started_ms)),
            commands: s.commands,
            moderated: s.data.get("observer_required") == Some(&Value::Bool(true)),
        }
    }
}

pub(super) fn text(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    nav: Option<&'a Viewer>,
    sessions: Vec<SessionRow>,
    pending: usize,
    approvals: usize,
}

pub async fn overview(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let live = match b.store.session_summaries(viewer.scope(), true, 50).await {
        Ok(l) => l,
        Err(e) => return api_error(&viewer, ApiError::Internal(e), "/console/"),
    };
    let pending = match requests::pending_requests(&b, &viewer).await {
        Ok(p) => p.len(),
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    let approvals = match approvals::live_approvals(&b, &viewer).await {
        Ok(a) => a.len(),
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    render(&OverviewPage {
        nav: Some(&viewer),
        sessions: rows(&b, &live).await,
        pending,
        approvals,
    })
}

/// The rows of a session list: a moderated session still open needs a watcher only until its
/// first observer joined (`observer_joined` from its gateway).
pub(super) async fn rows(b: &Broker, list: &[SessionSummary]) -> Vec<SessionRow> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let mut row = SessionRow::of(s);
        if row.moderated && row.ended.is_none() {
            let q = AuditQuery {
                session: Some(s.session.clone()),
                kind: Some("observer_joined".into()),
                limit: Some(1),
                ..Default::default()
            };
            row.moderated = b
                .store
                .audit_search(&q)
                .await
                .map_or(true, |r| r.is_empty());
        } else {
            row.moderated = false;
        }
        out.push(row);
    }
    out
}
