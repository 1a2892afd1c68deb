//! The sessions' pages: the list, a session's timeline, watching a live one, its evidence
//! bundle, and ending it.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::Value;

use super::{SessionRow, rows, text};
use crate::audit::sanitize;
use crate::authz::Action;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::{AuditQuery, SessionSummary};
use crate::web::session::{form_refused, refuse_form};
use crate::web::{Viewer, When, api_error, duration, message, render};

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage<'a> {
    nav: Option<&'a Viewer>,
    sessions: Vec<SessionRow>,
    open_only: bool,
}

#[derive(Deserialize)]
pub struct SessionsQuery {
    #[serde(default)]
    open: Option<String>,
}

pub async fn sessions(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(q): Query<SessionsQuery>,
) -> Response {
    let open_only = q.open.is_some_and(|v| v == "1");
    match b
        .store
        .session_summaries(viewer.scope(), open_only, 200)
        .await
    {
        Ok(list) => render(&SessionsPage {
            nav: Some(&viewer),
            sessions: rows(&b, &list).await,
            open_only,
        }),
        Err(e) => api_error(&viewer, ApiError::Internal(e), "/console/"),
    }
}

/// One event of a session's timeline.
pub(crate) struct Entry {
    pub when: When,
    /// Seconds since the session started.
    pub offset: String,
    pub kind: String,
    pub channel: String,
    /// The main text (a command line, a path, a target...).
    pub text: String,
    /// Other facts, `name: value`.
    pub facts: Vec<(String, String)>,
    /// A refusal or a failure: shown as a warning.
    pub warn: bool,
    /// The moment in the replay, for events of a recorded channel.
    pub replay: Option<String>,
    /// A sealed line (`input_hidden`) a reviewer may open: its chain and place in it.
    pub sealed: Option<(String, u64)>,
}

/// What a timeline shows as an event's main text, by field, first found.
pub(super) const MAIN_FIELDS: [&str; 5] = ["command", "shown", "path", "target", "reason"];
/// Fields shown as facts, in this order, when present.
const FACT_FIELDS: [&str; 12] = [
    "exit_status",
    "exit_signal",
    "op",
    "direction",
    "size",
    "bytes",
    "sha256",
    "code",
    "name",
    "value",
    "subsystem",
    "file",
];

fn entry(
    r: &crate::audit::AuditRecord,
    started_ms: u64,
    recordings: &std::collections::HashMap<String, u64>,
) -> Entry {
    let d = &r.data;
    let replay = d
        .get("recording")
        .and_then(Value::as_str)
        .and_then(|id| recordings.get(id).map(|first| (id, first)))
        .map(|(id, first)| {
            let find = match d.get("command").and_then(Value::as_str) {
                Some(c) => format!("&find={}", super::replay::find_param(c)),
                None => String::new(),
            };
            format!(
                "/console/recordings/{id}?t={}{find}",
                super::replay::moment_of(r, *first)
            )
        });
    let main = MAIN_FIELDS
        .iter()
        .map(|f| text(d, f))
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let facts = FACT_FIELDS
        .iter()
        .filter_map(|f| {
            let t = text(d, f);
            (!t.is_empty()).then(|| ((*f).to_string(), sanitize(&t)))
        })
        .collect();
    Entry {
        when: When::ms(r.time),
        offset: duration(r.time.saturating_sub(started_ms)),
        kind: r.kind.replace('_', " "),
        channel: text(d, "channel"),
        text: sanitize(&main),
        facts,
        warn: r.kind.contains("refused")
            || r.kind.contains("failed")
            || r.kind.contains("unreachable")
            || r.kind == "session_terminated",
        replay,
        sealed: (r.kind == "input_hidden" && d.get("sealed").is_some_and(Value::is_string))
            .then(|| (r.source.clone(), r.seq)),
    }
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage<'a> {
    nav: Option<&'a Viewer>,
    s: SessionRow,
    facts: Vec<(String, String)>,
    entries: Vec<Entry>,
    /// (recording id, channel), in the order the channels opened.
    recordings: Vec<(String, String)>,
}

pub async fn session_page(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            Some(&viewer),
            "Session not found",
            "No session with this id is on a cluster you may see.".into(),
            "/console/sessions",
            "All sessions",
        )
    };
    if !sallyport_audit::writers::valid_session(&id) {
        return not_found();
    }
    let q = AuditQuery {
        session: Some(id.clone()),
        limit: Some(10_000),
        ..Default::default()
    };
    let records = match b.store.audit_search(&q).await {
        Ok(r) => r,
        Err(e) => return api_error(&viewer, ApiError::Internal(e), "/console/sessions"),
    };
    let Some(start) = records.iter().find(|r| r.kind == "session_started") else {
        return not_found();
    };
    let cluster = text(&start.data, "cluster");
    match crate::api::on_cluster(&b, &viewer.caller, Action::ConsoleSessionPage, &cluster).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(e) => return api_error(&viewer, e, "/console/sessions"),
    }
    let ended = records
        .iter()
        .filter(|r| r.kind == "session_ended" || r.kind == "session_terminated")
        .map(|r| r.time)
        .max();
    let summary = SessionSummary {
        session: id.clone(),
        started_ms: start.time,
        ended_ms: ended,
        engineer: text(&start.data, "engineer"),
        ticket: text(&start.data, "ticket"),
        cluster: cluster.clone(),
        node: text(&start.data, "node"),
        data: start.data.clone(),
        commands: records
            .iter()
            .filter(|r| crate::audit::is_whole_command(r))
            .count() as u64,
    };
    let facts = [
        ("Source address", "peer"),
        ("Certificate serial", "serial"),
        ("Certificate key id", "key_id"),
        ("Grant", "grant"),
        ("Host", "host"),
    ]
    .iter()
    .filter_map(|(label, f)| {
        let t = text(&start.data, f);
        (!t.is_empty()).then(|| ((*label).to_string(), sanitize(&t)))
    })
    .chain(std::iter::once((
        "Recorded by".to_string(),
        start.source.clone(),
    )))
    .collect();
    // Each recorded channel, from its first event (the origin of its replay's clock).
    let mut first = std::collections::HashMap::new();
    let mut recordings = Vec::new();
    for r in &records {
        if let Some(id) = r.data.get("recording").and_then(Value::as_str)
            && sallyport_audit::writers::valid_session(id)
            && !first.contains_key(id)
        {
            first.insert(id.to_string(), r.time);
            recordings.push((id.to_string(), text(&r.data, "channel")));
        }
    }
    render(&SessionPage {
        nav: Some(&viewer),
        s: SessionRow::of(&summary),
        facts,
        entries: records
            .iter()
            .map(|r| entry(r, start.time, &first))
            .collect(),
        recordings,
    })
}

#[derive(Deserialize)]
pub struct UnsealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    reason: String,
}

/// A reviewer opens a sealed line of the session (see `POST /v1/audit/unseal`): shown once, on a
/// page of its own; the opening is in the audit log before it is shown.
pub async fn unseal_hidden_input(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<UnsealForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "open_hidden_input").await;
        return r;
    }
    let back = format!("/console/sessions/{}", sanitize(&id));
    match crate::api::audit::unseal(
        State(b.clone()),
        viewer.caller.clone(),
        Json(sallyport_api::audit::UnsealRequest {
            source: f.source,
            seq: f.seq,
            reason: f.reason,
        }),
    )
    .await
    {
        Ok(Json(opened)) if opened.session == id => message(
            StatusCode::OK,
            Some(&viewer),
            "Sealed input opened",
            format!(
                "Line {} of session {} held: {}  (Opening it is recorded in the audit log with \
                 your reason.)",
                opened.line,
                sanitize(&opened.session),
                sanitize(&opened.text)
            ),
            &back,
            "Back to the session",
        ),
        Ok(_) => message(
            StatusCode::BAD_REQUEST,
            Some(&viewer),
            "Not this session's",
            "That event belongs to another session.".into(),
            &back,
            "Back to the session",
        ),
        Err(e) => api_error(&viewer, e, &back),
    }
}

#[derive(Deserialize)]
pub struct TerminateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub async fn terminate_session(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TerminateForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "terminate_session").await;
        return r;
    }
    let back = format!("/console/sessions/{}", sanitize(&id));
    match crate::api::sessions::terminate(
        State(b.clone()),
        viewer.caller.clone(),
        Path(id),
        crate::api::Body(sallyport_api::sessions::TerminateRequest { reason: f.reason }),
    )
    .await
    {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => api_error(&viewer, e, &back),
    }
}

/// One channel as the watch page shows it first.
pub(crate) struct WatchChannel {
    pub recording: String,
    pub label: String,
    pub pty: bool,
    pub text: String,
}

#[derive(Template)]
#[template(path = "watch.html")]
struct WatchPage<'a> {
    nav: Option<&'a Viewer>,
    s: SessionRow,
    live: bool,
    channels: Vec<WatchChannel>,
}

/// Watch a live session: the screens now, then (with JavaScript) twice a second.
pub async fn watch_page(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let view =
        match crate::api::sessions::live(State(b.clone()), viewer.caller.clone(), Path(id.clone()))
            .await
        {
            Ok(Json(v)) => v,
            Err(e) => return api_error(&viewer, e, "/console/sessions"),
        };
    let q = AuditQuery {
        session: Some(id.clone()),
        kind: Some("session_started".into()),
        limit: Some(1),
        ..Default::default()
    };
    let start = match b.store.audit_search(&q).await {
        Ok(r) => r.into_iter().next(),
        Err(e) => return api_error(&viewer, ApiError::Internal(e), "/console/sessions"),
    };
    let Some(start) = start else {
        return api_error(
            &viewer,
            ApiError::NotFound("a session with this id on a cluster you may see".into()),
            "/console/sessions",
        );
    };
    let live = view.live;
    let summary = SessionSummary {
        session: id.clone(),
        started_ms: start.time,
        ended_ms: (!live).then(sallyport_ca::clock::now_ms),
        engineer: text(&start.data, "engineer"),
        ticket: text(&start.data, "ticket"),
        cluster: text(&start.data, "cluster"),
        node: text(&start.data, "node"),
        data: start.data.clone(),
        commands: 0,
    };
    let channels = view
        .channels
        .into_iter()
        .enumerate()
        .map(|(i, c)| WatchChannel {
            label: if c.pty {
                format!("Channel {} (terminal {}×{})", i + 1, c.width, c.height)
            } else {
                format!("Channel {} (output, no terminal)", i + 1)
            },
            text: if c.pty { c.rows.join("\n") } else { c.stream },
            pty: c.pty,
            recording: c.recording,
        })
        .collect();
    render(&WatchPage {
        nav: Some(&viewer),
        s: SessionRow::of(&summary),
        live,
        channels,
    })
}

/// A session's evidence bundle (reviewers): the API's export, as a download.
pub async fn session_bundle(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let back = format!("/console/sessions/{}", sanitize(&id));
    match crate::api::export::export(
        State(b.clone()),
        viewer.caller.clone(),
        Query(crate::api::export::ExportQuery {
            ticket: None,
            session: Some(id),
            customer: None,
            since: None,
            until: None,
        }),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => api_error(&viewer, e, &back),
    }
}

/// The watch page's data: what the session's terminals show now (JSON).
pub async fn watch_data(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    match crate::api::sessions::live(State(b), viewer.caller.clone(), Path(id)).await {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    }
}
