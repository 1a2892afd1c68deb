//! Recordings: a gateway uploads each recording once (streamed, size-limited, hashed; kept by
//! the broker's [`crate::recordings::RecordingStore`]); reviewers, the operator and the
//! customer's approvers read them back, audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sallyport_api::gateways::RecordingStored;
use serde::Deserialize;

use super::gateway_only;
use crate::api::{check_name, permit, permit_or_hide, refuse_by};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::recordings::Kept;
use crate::state::Broker;
use crate::store::Recording;

use sallyport_audit::writers::valid_session;
/// Session ids name files: `[A-Za-z0-9_-]{1,64}`, nothing else (the rule of subject fields).
use sallyport_ca::clock::now_secs;

fn check_session(s: &str) -> ApiResult<()> {
    if valid_session(s) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid session id {:?}: use letters, digits, '_' and '-' (at most 64)",
            sanitize(s)
        )))
    }
}

#[derive(Deserialize)]
pub(super) struct RecordingMeta {
    engineer: Option<String>,
    ticket: Option<String>,
    node: Option<String>,
    kind: Option<String>,
}

/// An optional name from the query, checked like every name.
fn optional_name(what: &str, v: &Option<String>) -> ApiResult<Option<String>> {
    match v {
        Some(v) => {
            check_name(what, v)?;
            Ok(Some(v.clone()))
        }
        None => Ok(None),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::Rejected(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the recording is larger than max_recording_bytes ({limit} bytes)"),
    )
}

pub(super) async fn upload_recording(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
    Query(meta): Query<RecordingMeta>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    const ACTION: Action = Action::UploadRecording;
    let (gateway, cluster) = gateway_only(&b, &caller, ACTION).await?;
    check_session(&session)?;
    let mut engineer = optional_name("engineer", &meta.engineer)?;
    let mut ticket = optional_name("ticket", &meta.ticket)?;
    let mut node = optional_name("node", &meta.node)?;
    let kind = optional_name("kind", &meta.kind)?.unwrap_or_else(|| "session".into());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/octet-stream" {
        return Err(ApiError::Rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the recording as Content-Type: application/octet-stream".into(),
        ));
    }
    let limit = b.cfg.max_recording_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    check_name("cluster", &cluster)?;
    let storing = b.recordings.storing();
    let received = storing.receive(&cluster, &session, body, limit).await?;
    let (size, sha256) = (received.size, received.sha256.clone());
    // What the query does not say, the gateway's own audit records of the session do.
    // A channel's recording is named `<session>-c<channel>`: its session's records say who.
    if engineer.is_none() || ticket.is_none() || node.is_none() {
        let source = format!("gateway:{gateway}");
        let of_session = session
            .rsplit_once("-c")
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .map(|(s, _)| s.to_string());
        for id in std::iter::once(session.clone()).chain(of_session) {
            match b.store.session_subjects(&source, &id).await {
                Ok(Some((e, t, n))) => {
                    engineer = engineer.or(e);
                    ticket = ticket.or(t);
                    node = node.or(n);
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let row = Recording {
        session: session.clone(),
        gateway: gateway.clone(),
        cluster: cluster.clone(),
        engineer,
        ticket,
        node,
        kind,
        size,
        sha256: sha256.clone(),
        // Set by the store that keeps it.
        path: String::new(),
        created_at: now_secs(),
        storage: storing.storage(),
    };
    let stored = storing.keep(row.clone(), received).await?;
    if let Kept::Existing(old) = stored {
        if old.cluster != cluster || old.sha256 != sha256 || old.size != size {
            return Err(refuse_by(
                &b,
                &caller.label(),
                ACTION.name(),
                &format!("a different recording of session {session} is already stored"),
                None,
                Some(&cluster),
                ApiError::Conflict(format!(
                    "a different recording of session {session} is already stored"
                )),
            )
            .await);
        }
        // The same bytes again (a retry): fine.
        let again = RecordingStored {
            session,
            size,
            sha256,
            stored: false,
        };
        return Ok(Json(again).into_response());
    }
    b.store
        .audit(&AuditEvent::RecordingStored {
            session: session.clone(),
            gateway,
            cluster,
            engineer: row.engineer.clone(),
            ticket: row.ticket.clone(),
            node: row.node.clone(),
            recording_kind: row.kind.clone(),
            size,
            sha256: sha256.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RecordingStored {
            session,
            size,
            sha256,
            stored: true,
        }),
    )
        .into_response())
}

pub(super) async fn download_recording(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
) -> ApiResult<Response> {
    const ACTION: Action = Action::ReadRecording;
    const NOT_FOUND: &str = "recording";
    permit(&b, &caller, ACTION, Scope::Unread).await?;
    check_session(&session)?;
    let Some(r) = b.store.recording(&session).await? else {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    };
    // A customer sees everything done on its own nodes.
    let owner = b.store.cluster(&r.cluster).await?.map(|c| c.customer);
    let scope = Scope::Cluster {
        customer: owner.as_deref(),
        cluster: &r.cluster,
    };
    permit_or_hide(&b, &caller, ACTION, scope, NOT_FOUND).await?;
    let Some(opened) = b.recordings.open(&r).await? else {
        return Err(ApiError::NotFound("recording file".into()));
    };
    b.store
        .audit(&AuditEvent::RecordingRead {
            session: r.session.clone(),
            by: caller.label(),
            cluster: r.cluster.clone(),
            engineer: r.engineer.clone(),
            ticket: r.ticket.clone(),
            node: r.node.clone(),
        })
        .await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(opened.reader));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, r.size.to_string()),
            (
                header::HeaderName::from_static("x-sallyport-sha256"),
                r.sha256.clone(),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_plain() {
        for ok in ["s-1", "ABC_def-09", &"x".repeat(64)] {
            assert!(valid_session(ok), "{ok}");
        }
        for bad in [
            "",
            "../../etc",
            "a/b",
            "a.cast",
            "..",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_session(bad), "{bad:?}");
        }
    }
}
