//! A recording's replay page and its frames, read only by a viewer who may see its cluster.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::text;
use crate::audit::sanitize;
use crate::authz::Action;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::AuditQuery;
use crate::web::{Viewer, api_error, duration, message, render};

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
pub(super) fn find_param(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    url::form_urlencoded::byte_serialize(t.as_bytes()).collect()
}

/// Seconds into its recording when event `r` happened: the gateway's `at`, or else (events from
/// before it wrote one) the time since the recording's first event. The player opens a moment
/// at the first screen at or after it (a command pasted all at once is echoed just after).
pub(super) fn moment_of(r: &crate::audit::AuditRecord, first_ms: u64) -> f64 {
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
        .filter(|r| crate::audit::is_whole_command(r))
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
