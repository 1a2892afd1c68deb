//! The console's pages. Reads and changes go through the API's handlers (or, for what the API
//! does not serve yet, store reads scoped here to the viewer's customer), with the viewer as
//! the caller.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::Value;

use super::session::{form_refused, refuse_form};
use super::{Viewer, When, api_error, duration, message, render};
use crate::api::approvals as api;
use crate::audit::sanitize;
use crate::authz::{Action, Scope};
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::{AccessRequest, Approval, AuditQuery, SessionSummary, now_secs};

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
    fn of(s: &SessionSummary) -> SessionRow {
        let now = crate::store::now_ms();
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

fn text(v: &Value, field: &str) -> String {
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
    let pending = match pending_requests(&b, &viewer).await {
        Ok(p) => p.len(),
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    let approvals = match live_approvals(&b, &viewer).await {
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
async fn rows(b: &Broker, list: &[SessionSummary]) -> Vec<SessionRow> {
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
}

/// What a timeline shows as an event's main text, by field, first found.
const MAIN_FIELDS: [&str; 5] = ["command", "shown", "path", "target", "reason"];
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
                Some(c) => format!("&find={}", find_param(c)),
                None => String::new(),
            };
            format!("/console/recordings/{id}?t={}{find}", moment_of(r, *first))
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
        commands: records.iter().filter(|r| r.kind == "command").count() as u64,
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

async fn pending_requests(
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

async fn live_approvals(b: &Arc<Broker>, viewer: &Viewer) -> Result<Vec<Approval>, ApiError> {
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
    Form(f): Form<super::session::CsrfForm>,
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
        crate::api::Body(crate::api::sessions::TerminateInput { reason: f.reason }),
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
    let live = view["live"] == true;
    let summary = SessionSummary {
        session: id.clone(),
        started_ms: start.time,
        ended_ms: (!live).then(crate::store::now_ms),
        engineer: text(&start.data, "engineer"),
        ticket: text(&start.data, "ticket"),
        cluster: text(&start.data, "cluster"),
        node: text(&start.data, "node"),
        data: start.data.clone(),
        commands: 0,
    };
    let channels = view["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let pty = c["pty"] == true;
            let text = if pty {
                c["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                c["stream"].as_str().unwrap_or_default().to_string()
            };
            WatchChannel {
                recording: c["recording"].as_str().unwrap_or_default().to_string(),
                label: if pty {
                    format!(
                        "Channel {} (terminal {}×{})",
                        i + 1,
                        c["width"],
                        c["height"]
                    )
                } else {
                    format!("Channel {} (output, no terminal)", i + 1)
                },
                pty,
                text,
            }
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

/// A recording the viewer may read, and its text; refused (audited) as not found otherwise.
async fn readable_recording(
    b: &Arc<Broker>,
    viewer: &Viewer,
    id: &str,
) -> Result<(crate::store::Recording, String), Response> {
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            Some(viewer),
            "Recording not found",
            "No recording with this id is on a cluster you may see (a session's recordings reach the broker a few seconds after each channel ends).".into(),
            "/console/sessions",
            "All sessions",
        )
    };
    if !sallyport_audit::writers::valid_session(id) {
        return Err(not_found());
    }
    let r = match b.store.recording(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(api_error(viewer, e.into(), "/console/sessions")),
    };
    match crate::api::on_cluster(b, &viewer.caller, Action::ReadRecording, &r.cluster).await {
        Ok(true) => {}
        Ok(false) => return Err(not_found()),
        Err(e) => return Err(api_error(viewer, e, "/console/sessions")),
    }
    let bytes = match b.recordings.read(&r, b.cfg.max_recording_bytes).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(not_found()),
        Err(e) => {
            return Err(api_error(
                viewer,
                ApiError::Internal(e),
                "/console/sessions",
            ));
        }
    };
    if let Err(e) = b
        .store
        .audit(&crate::audit::AuditEvent::RecordingRead {
            session: r.session.clone(),
            by: viewer.caller.label(),
            cluster: r.cluster.clone(),
            engineer: r.engineer.clone(),
            ticket: r.ticket.clone(),
            node: r.node.clone(),
        })
        .await
    {
        return Err(api_error(
            viewer,
            ApiError::Internal(e),
            "/console/sessions",
        ));
    }
    Ok((r, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn build_replay(text: String) -> Result<crate::replay::Replay, String> {
    tokio::task::spawn_blocking(move || crate::replay::replay(&text))
        .await
        .map_err(|_| "the recording could not be replayed".to_string())?
}

/// Text for the player to look for on screen from a moment on (the command as typed, at most
/// 200 characters), URL-encoded.
fn find_param(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    url::form_urlencoded::byte_serialize(t.as_bytes()).collect()
}

/// Seconds into its recording when event `r` happened: the gateway's `at`, or else (events from
/// before it wrote one) the time since the recording's first event. The player opens a moment
/// at the first screen at or after it (a command pasted all at once is echoed just after).
fn moment_of(r: &crate::audit::AuditRecord, first_ms: u64) -> f64 {
    r.data
        .get("at")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0)
        .unwrap_or_else(|| r.time.saturating_sub(first_ms) as f64 / 1000.0)
}

/// A command of a recording, with its offset into it.
pub(crate) struct Moment {
    pub at: String,
    pub secs: f64,
    pub text: String,
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ReplayPage<'a> {
    nav: Option<&'a Viewer>,
    id: String,
    session: String,
    title: String,
    pty: bool,
    screen: String,
    stream: String,
    duration: String,
    moments: Vec<Moment>,
    start: f64,
    find: String,
}

#[derive(Deserialize)]
pub struct ReplayQuery {
    t: Option<f64>,
    /// Text to show on screen: from `t` on, the player opens at the first screen showing it.
    find: Option<String>,
}

/// The commands of recording `id` in session `session`, with offsets from the recording's first
/// event.
async fn moments(b: &Broker, session: &str, id: &str, started: Option<u64>) -> Vec<Moment> {
    let q = AuditQuery {
        session: Some(session.to_string()),
        limit: Some(10_000),
        ..Default::default()
    };
    let Ok(records) = b.store.audit_search(&q).await else {
        return Vec::new();
    };
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.data.get("recording").and_then(Value::as_str) == Some(id))
        .collect();
    // The same origin as the session page's links: the recording's first event.
    let _ = started;
    let base = mine.first().map(|r| r.time).unwrap_or(0);
    mine.iter()
        .filter(|r| r.kind == "command")
        .map(|r| {
            let secs = moment_of(r, base);
            Moment {
                at: duration((secs * 1000.0) as u64),
                secs,
                text: sanitize(&text(&r.data, "command")),
            }
        })
        .collect()
}

pub async fn replay_page(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<ReplayQuery>,
) -> Response {
    let (rec, text) = match readable_recording(&b, &viewer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let replay = match build_replay(text).await {
        Ok(r) => r,
        Err(e) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&viewer),
                "This recording cannot be replayed",
                format!("{e}. Its events are still in the session's timeline."),
                "/console/sessions",
                "All sessions",
            );
        }
    };
    let session = id
        .rsplit_once("-c")
        .map(|(s, _)| s.to_string())
        .unwrap_or_else(|| id.clone());
    let moments = moments(&b, &session, &id, replay.started).await;
    render(&ReplayPage {
        nav: Some(&viewer),
        title: if replay.title.is_empty() {
            format!(
                "{} on {}",
                rec.engineer.clone().unwrap_or_default(),
                rec.cluster
            )
        } else {
            sanitize(&replay.title)
        },
        pty: replay.pty,
        screen: replay.last_screen.join("\n"),
        stream: replay.stream.clone(),
        duration: duration((replay.duration * 1000.0) as u64),
        moments,
        start: q.t.unwrap_or(-1.0),
        find: q.find.unwrap_or_default().chars().take(200).collect(),
        id,
        session,
    })
}

pub async fn replay_frames(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let (_, text) = match readable_recording(&b, &viewer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match build_replay(text).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
    }
}

/// One chain's state on the chain page.
pub(crate) struct ChainRow {
    pub source: String,
    pub ok: bool,
    pub events: String,
    pub signed_through: String,
    pub reported: String,
    pub verdict: String,
}

#[derive(Template)]
#[template(path = "chains.html")]
struct ChainsPage<'a> {
    nav: Option<&'a Viewer>,
    chains: Vec<ChainRow>,
    all_ok: bool,
}

/// Every source's chain verified now: intact, signed through which record, behind its reported
/// head. Reviewers only (a chain mixes the sessions of every customer of its gateway or edge).
pub async fn chains(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let allowed = crate::api::decide(&b, &viewer.caller, Action::ConsoleChains, Scope::None).await;
    if !matches!(allowed, Ok(Ok(()))) {
        return message(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "Not allowed",
            "Only the vendor's reviewers see the audit chains. Your sessions' events are on each session's page.".into(),
            "/console/",
            "Go to the overview",
        );
    }
    let result: anyhow::Result<Vec<ChainRow>> = async {
        let heads: std::collections::HashMap<String, u64> = b
            .store
            .audit_heads()
            .await?
            .into_iter()
            .map(|(s, n, _)| (s, n))
            .collect();
        let mut pinned: std::collections::HashMap<String, String> = b
            .store
            .audit_keys()
            .await?
            .into_iter()
            .map(|k| (k.source, k.public_key))
            .collect();
        if let Some(k) = b.store.broker_audit_key() {
            let mut k = k.clone();
            k.set_comment("");
            if let Ok(line) = k.to_openssh() {
                pinned.insert(crate::store::BROKER_SOURCE.to_string(), line);
            }
        }
        let mut sources = b.store.audit_sources().await?;
        for s in heads.keys() {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
        sources.sort();
        let mut rows = Vec::new();
        for s in sources {
            let chain = crate::chains::load(&b.store, &s, pinned.get(&s).cloned()).await?;
            let reported = heads.get(&s).copied();
            let v = tokio::task::spawn_blocking(move || {
                crate::chains::judge(&chain, reported, None, false)
            })
            .await?;
            rows.push(ChainRow {
                source: sanitize(&s),
                ok: v.ok,
                events: v.json["events"].to_string(),
                signed_through: v.json["signed_through"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
                reported: reported
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
                verdict: sanitize(&v.text),
            });
        }
        Ok(rows)
    }
    .await;
    match result {
        Ok(chains) => render(&ChainsPage {
            nav: Some(&viewer),
            all_ok: chains.iter().all(|c| c.ok),
            chains,
        }),
        Err(e) => api_error(&viewer, ApiError::Internal(e), "/console/"),
    }
}

/// The search form's fields (all optional).
#[derive(Deserialize, Default)]
pub struct SearchForm {
    #[serde(default)]
    q: String,
    #[serde(default)]
    engineer: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    before: String,
}

/// A search hit.
pub(crate) struct Hit {
    pub when: When,
    pub kind: String,
    pub engineer: String,
    pub ticket: String,
    pub place: String,
    pub text: String,
    pub session: Option<String>,
    pub replay: Option<String>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    nav: Option<&'a Viewer>,
    f: SearchForm,
    searched: bool,
    hits: Vec<Hit>,
    next: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Search the audit log by text and filters: the API's own search (same authorization), newest
/// first, each hit linked to its session and to its moment in the replay.
pub async fn search(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(f): Query<SearchForm>,
) -> Response {
    let searched = [&f.q, &f.engineer, &f.ticket, &f.cluster, &f.kind]
        .iter()
        .any(|v| !v.trim().is_empty());
    let mut hits = Vec::new();
    let mut next = None;
    if searched {
        let q = AuditQuery {
            q: non_empty(&f.q),
            engineer: non_empty(&f.engineer),
            ticket: non_empty(&f.ticket),
            cluster: non_empty(&f.cluster),
            kind: non_empty(&f.kind),
            // Newest first, in pages: a cursor when paging on, else the far future.
            before: non_empty(&f.before),
            limit: Some(50),
            ..Default::default()
        };
        let q = if q.q.is_none() && q.before.is_none() {
            AuditQuery {
                before: Some(format!("{}:~:0", crate::store::now_ms() + 60_000)),
                ..q
            }
        } else {
            q
        };
        let Json(v) = match crate::api::audit::search(
            State(b.clone()),
            viewer.caller.clone(),
            Query(q),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return api_error(&viewer, e, "/console/search"),
        };
        next = v["next"].as_str().map(str::to_string);
        for e in v["events"].as_array().into_iter().flatten() {
            let t = |k: &str| sanitize(&text(e, k));
            let main = MAIN_FIELDS
                .iter()
                .map(|k| t(k))
                .find(|s| !s.is_empty())
                .unwrap_or_default();
            let session = non_empty(&t("session"));
            let replay = e["recording"].as_str().and_then(|rec| {
                let at = e["at"].as_f64()?;
                let find = match e["command"].as_str().or(e["shown"].as_str()) {
                    Some(c) => format!("&find={}", find_param(c)),
                    None => String::new(),
                };
                Some(format!(
                    "/console/recordings/{}?t={at}{find}",
                    sanitize(rec)
                ))
            });
            hits.push(Hit {
                when: When::ms(e["time_ms"].as_u64().unwrap_or(0)),
                kind: t("kind").replace('_', " "),
                engineer: t("engineer"),
                ticket: t("ticket"),
                place: match (non_empty(&t("node")), non_empty(&t("cluster"))) {
                    (Some(n), Some(c)) => format!("{n}.{c}"),
                    (None, Some(c)) => c,
                    _ => String::new(),
                },
                text: main,
                session,
                replay,
            });
        }
    }
    render(&SearchPage {
        nav: Some(&viewer),
        f,
        searched,
        hits,
        next,
    })
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    nav: Option<&'a Viewer>,
    rows: Vec<crate::api::report::ReportRow>,
    chart: crate::api::report::Chart,
    chart_h: u32,
    clusters: Vec<String>,
    cluster: String,
    days: u64,
    query: String,
}

/// Who reached which node when, under which ticket, and what they did: for a customer's own
/// clusters (a reviewer: every cluster), as a page, CSV or JSON (`api::report` builds it).
pub async fn report(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(q): Query<crate::api::report::ReportQuery>,
) -> Response {
    let r = match crate::api::report::build(&b, &viewer.caller, &q).await {
        Ok(r) => r,
        Err(ApiError::NotFound(_)) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(&viewer),
                "Cluster not found",
                "No cluster with this name is yours to report on.".into(),
                "/console/report",
                "All your clusters",
            );
        }
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    if q.format == "csv" || q.format == "json" {
        return crate::api::report::download(&r, &q.format);
    }
    let cluster = q.cluster.trim().to_string();
    let days = r.days();
    render(&ReportPage {
        nav: Some(&viewer),
        query: format!(
            "cluster={}&days={days}",
            url::form_urlencoded::byte_serialize(cluster.as_bytes()).collect::<String>()
        ),
        chart: r.chart(),
        chart_h: crate::api::report::CHART_H,
        rows: r.rows,
        clusters: r.clusters,
        cluster,
        days,
    })
}
