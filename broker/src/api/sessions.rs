//! Engineers' sessions as the gateways reported them: the list (live or all), watching one live,
//! and ending one. Reviewers and the operator see, watch and end every session; a customer
//! approver those on its own clusters. The cluster's gateway reads the ended ones every second
//! and disconnects them, and reads the watched ones every second and sends their recordings as
//! they grow.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_api::sessions::{
    LiveAck, LiveChannel, LiveChunk, LiveView, SessionSummary, Sessions, TerminateRequest,
    Termination, TerminationRequested, Terminations, Watches,
};
use sallyport_ca::clock::now_secs;
use serde::Deserialize;
use serde_json::Value;

use super::{Body, not_the_caller, permit, permit_or_hide};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::Caller;
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store;

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{session}/terminate", post(terminate))
        .route("/v1/sessions/{session}/live", get(live))
        .route("/v1/gateway/terminations", get(gateway_terminations))
        .route("/v1/gateway/watches", get(gateway_watches))
        .route("/v1/gateway/live", post(gateway_live))
}

/// The session `session` when the caller may see it: its cluster and the cluster's customer.
/// Another customer's session is "not found" (audited), as is one that does not exist.
pub(crate) async fn session_in_scope(
    b: &Broker,
    caller: &Caller,
    session: &str,
    action: Action,
) -> ApiResult<(String, String)> {
    const NOT_FOUND: &str = "a session with this id on a cluster you may see";
    permit(b, caller, action, Scope::Unread).await?;
    let not_found = || ApiError::NotFound(NOT_FOUND.into());
    if !sallyport_audit::writers::valid_session(session) {
        return Err(not_found());
    }
    let Some(cluster) = b.store.session_cluster(session).await? else {
        return Err(not_found());
    };
    let owner = b.store.cluster(&cluster).await?.map(|c| c.customer);
    let scope = Scope::Cluster {
        customer: owner.as_deref(),
        cluster: &cluster,
    };
    permit_or_hide(b, caller, action, scope, NOT_FOUND).await?;
    Ok((cluster, owner.unwrap_or_default()))
}

/// A session as the API shows it.
pub(crate) fn summary(s: store::SessionSummary) -> SessionSummary {
    let field = |k: &str| s.data.get(k).and_then(Value::as_str).map(str::to_string);
    SessionSummary {
        login: field("login"),
        peer: field("peer"),
        serial: field("serial"),
        live: s.ended_ms.is_none(),
        session: s.session,
        engineer: s.engineer,
        ticket: s.ticket,
        cluster: s.cluster,
        node: s.node,
        started_ms: s.started_ms,
        ended_ms: s.ended_ms,
        commands: s.commands,
    }
}

#[derive(Deserialize)]
pub(crate) struct ListSessions {
    #[serde(default)]
    pub(crate) live: bool,
    pub(crate) limit: Option<u64>,
}

pub(crate) async fn list_sessions(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ListSessions>,
) -> ApiResult<Json<Sessions>> {
    permit(&b, &caller, Action::ListSessions, Scope::None).await?;
    let list = b
        .store
        .session_summaries(customer_view(&caller), q.live, q.limit.unwrap_or(200))
        .await?;
    Ok(Json(Sessions {
        sessions: list.into_iter().map(summary).collect(),
    }))
}

pub(crate) async fn terminate(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
    Body(req): Body<TerminateRequest>,
) -> ApiResult<(StatusCode, Json<TerminationRequested>)> {
    const ACTION: Action = Action::TerminateSession;
    permit(&b, &caller, ACTION, Scope::Unread).await?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::BadRequest(
            "say why the session is ended (a reason of 1 to 500 bytes): the engineer and the audit log see it".into(),
        ));
    }
    let (cluster, customer) = session_in_scope(&b, &caller, &session, ACTION).await?;
    if b.store.session_ended(&session).await? {
        return Err(ApiError::Conflict("this session has already ended".into()));
    }
    let by = caller.label();
    let reason = sanitize(reason);
    if b.store
        .request_termination(&session, &cluster, &by, &reason)
        .await?
    {
        b.store
            .audit(&AuditEvent::SessionTerminationRequested {
                session: session.clone(),
                cluster: cluster.clone(),
                customer,
                by: by.clone(),
                reason: reason.clone(),
            })
            .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(TerminationRequested {
            session,
            cluster,
            requested_by: by,
            reason,
        }),
    ))
}

#[derive(Deserialize)]
struct Since {
    /// Unix seconds; default: the last ten minutes.
    since: Option<u64>,
}

/// The sessions of the calling gateway's cluster whose end was asked for.
async fn gateway_terminations(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<Since>,
) -> ApiResult<Json<Terminations>> {
    let cluster = gateway_cluster(&b, &caller, Action::GatewayTerminations).await?;
    let since = q.since.unwrap_or_else(|| now_secs().saturating_sub(600));
    let terminations = b
        .store
        .terminations(&cluster, since)
        .await?
        .into_iter()
        .map(|(session, by, reason)| Termination {
            session,
            by,
            reason,
        })
        .collect();
    Ok(Json(Terminations { terminations }))
}

/// Watch a session: what its terminals show now (the screen of each pty channel, the tail of
/// each other channel's output), from the recordings the gateway sends while anyone watches.
/// Each call keeps the watch alive; the first (and the first after a minute away) is audited
/// as `session_watched`.
pub(crate) async fn live(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
) -> ApiResult<Json<LiveView>> {
    let (cluster, customer) = session_in_scope(&b, &caller, &session, Action::WatchSession).await?;
    let ended = b.store.session_ended(&session).await?;
    let by = caller.label();
    if !ended && b.store.watch(&session, &cluster, &by).await? {
        b.store
            .audit(&AuditEvent::SessionWatched {
                session: session.clone(),
                cluster: cluster.clone(),
                customer,
                by,
            })
            .await?;
    }
    let recordings = b.store.live_recordings(&session).await?;
    let channels = tokio::task::spawn_blocking(move || {
        recordings
            .iter()
            .filter_map(|r| {
                let view =
                    crate::replay::replay(&format!("{}\n{}", r.header.trim_end(), r.text)).ok()?;
                let stream = tail(&view.stream, 64 << 10).to_string();
                Some(LiveChannel {
                    recording: r.recording.clone(),
                    pty: view.pty,
                    title: view.title,
                    width: view.width,
                    height: view.height,
                    rows: view.last_screen,
                    stream,
                    seconds: view.duration,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| anyhow::anyhow!("building the live view: {e}"))?;
    Ok(Json(LiveView {
        session,
        cluster,
        live: !ended,
        channels,
    }))
}

/// The last `max` bytes of `s`, from a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut from = s.len().saturating_sub(max);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// The sessions of the calling gateway's cluster someone watches now (`sessions`), and those
/// an approver of the customer watches (`observed`: a moderated session may start).
async fn gateway_watches(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<Watches>> {
    let cluster = gateway_cluster(&b, &caller, Action::GatewayWatches).await?;
    let watched = b.store.watched_sessions(&cluster).await?;
    let observed = watched
        .iter()
        .filter(|w| w.by_approver)
        .map(|w| w.session.clone())
        .collect();
    let sessions = watched.into_iter().map(|w| w.session).collect();
    Ok(Json(Watches { sessions, observed }))
}

async fn gateway_cluster(b: &Broker, caller: &Caller, action: Action) -> ApiResult<String> {
    permit(b, caller, action, Scope::None).await?;
    caller
        .gateway()
        .map(|(_, cluster)| cluster.to_string())
        .ok_or_else(|| not_the_caller(action))
}

/// A live chunk is at most this long (bytes).
const MAX_LIVE_CHUNK: usize = 256 << 10;

/// A gateway sends a watched session's recording as it grows. Only for a session of its own
/// cluster that someone watches; chunks follow each other exactly (409 with where the next
/// must start otherwise).
async fn gateway_live(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(c): Body<LiveChunk>,
) -> ApiResult<(StatusCode, Json<LiveAck>)> {
    const ACTION: Action = Action::GatewayLive;
    gateway_cluster(&b, &caller, ACTION).await?;
    let reported = if sallyport_audit::writers::valid_session(&c.session)
        && c.recording
            .strip_prefix(&format!("{}-c", c.session))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|d| d.is_ascii_digit()))
    {
        b.store.session_cluster(&c.session).await?
    } else {
        None
    };
    let scope = Scope::Session {
        cluster: reported.as_deref(),
    };
    permit(&b, &caller, ACTION, scope).await?;
    if c.data.len() > MAX_LIVE_CHUNK || c.header.len() > 4096 {
        return Err(ApiError::BadRequest(format!(
            "a live chunk is at most {MAX_LIVE_CHUNK} bytes and its header 4096"
        )));
    }
    if !(c.data.is_empty() || c.data.ends_with('\n')) || c.header.contains('\n') {
        return Err(ApiError::BadRequest(
            "a live chunk holds whole lines of the recording, and the header one line".into(),
        ));
    }
    if !b.store.is_watched(&c.session).await? {
        let ack = LiveAck {
            watched: false,
            next: None,
        };
        return Ok((StatusCode::CONFLICT, Json(ack)));
    }
    match b
        .store
        .live_append(&c.session, &c.recording, &c.header, c.at, &c.data)
        .await?
    {
        Ok(next) => Ok((StatusCode::OK, Json(watched(Some(next))))),
        Err(o) => Ok((StatusCode::CONFLICT, Json(watched(o.next)))),
    }
}

/// The answer to a chunk of a watched session: where the next chunk starts (`None`: at any
/// line).
fn watched(next: Option<u64>) -> LiveAck {
    LiveAck {
        watched: true,
        next: Some(next),
    }
}
