//! `GET /v1/audit/stream`: the audit log as NDJSON, one event per line, first the events stored
//! after the cursor, then each new one as it is stored (the store is read every second, so every
//! replica sees what any replica stored). Each line carries the cursor to resume after it;
//! `since=` that cursor gives exactly the rest. `format=ocsf` gives OCSF events (`crate::ocsf`),
//! `native` (the default) the events as `audit search --json` prints them. `follow=false` ends
//! the response once it has caught up (what `audit export --format ocsf` reads).
//!
//! Reviewers and the operator read every customer's events; a customer's approver only those on
//! its own clusters (as search). The caller's credential is checked again every second: a token
//! revoked, or an account disabled, ends its stream with an error line.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sallyport_api::audit::StreamEvent;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::audit::flatten;
use super::permit;
use crate::audit::AuditRecord;
use crate::auth::Caller;
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{Page, Round, StreamCursor, StreamFilter, merge_round};

/// The response header naming the cursor the response starts after.
pub const CURSOR_HEADER: &str = "x-sallyport-cursor";

/// Records read per source in one round.
const PAGE: u64 = 500;
/// How long a stream that caught up waits before reading the store again.
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

pub fn router() -> Router<Arc<Broker>> {
    Router::new().route("/v1/audit/stream", get(stream))
}

/// What a line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As `audit search --json` prints an event, with `cursor`.
    Native,
    /// An OCSF event, with the cursor at `unmapped.cursor`.
    Ocsf,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Format, ApiError> {
        match s.unwrap_or("native") {
            "native" => Ok(Format::Native),
            "ocsf" => Ok(Format::Ocsf),
            other => Err(ApiError::BadRequest(format!(
                "format {:?} is not one this broker writes: use format=native or format=ocsf",
                crate::audit::sanitize(other)
            ))),
        }
    }

    /// One line (with its newline) for `r`, resumable at `cursor`.
    pub fn line(self, r: &AuditRecord, cursor: &StreamCursor) -> String {
        let mut s = match self {
            Format::Native => serde_json::to_string(&StreamEvent {
                cursor: cursor.to_string(),
                event: flatten(r),
            })
            .unwrap_or_default(),
            Format::Ocsf => {
                let mut v = crate::ocsf::event(r);
                v["unmapped"]["cursor"] = Value::String(cursor.to_string());
                v.to_string()
            }
        };
        s.push('\n');
        s
    }
}

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    /// A cursor from an earlier line (resume after it), `now` (only what is stored from now
    /// on), or nothing (from the beginning).
    since: Option<String>,
    format: Option<String>,
    /// `false`: end once caught up.
    follow: Option<bool>,
    engineer: Option<String>,
    ticket: Option<String>,
    cluster: Option<String>,
    node: Option<String>,
    session: Option<String>,
    kind: Option<String>,
    source: Option<String>,
    customer: Option<String>,
    /// Unix ms, inclusive.
    from: Option<u64>,
    /// Unix ms, exclusive.
    until: Option<u64>,
}

async fn stream(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    const ACTION: Action = Action::StreamAudit;
    permit(&b, &caller, ACTION, Scope::Unread).await?;
    let format = Format::parse(q.format.as_deref())?;
    // A customer's approver reads only its own customer's events.
    if let Some(asked) = &q.customer {
        permit(&b, &caller, ACTION, Scope::Customer(asked)).await?;
    }
    let customer = customer_view(&caller).map(str::to_string).or(q.customer);
    let filter = StreamFilter {
        engineer: q.engineer,
        ticket: q.ticket,
        cluster: q.cluster,
        node: q.node,
        session: q.session,
        kind: q.kind,
        source: q.source,
        customer,
        from_ms: q.from,
        until_ms: q.until,
    };
    let cursor = match q.since.as_deref().map(str::trim) {
        None | Some("") => StreamCursor::default(),
        Some("now") => StreamCursor(b.store.audit_source_heads().await?.into_iter().collect()),
        Some(c) => StreamCursor::parse(c).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    let follow = q.follow.unwrap_or(true);
    let auth = headers.get(header::AUTHORIZATION).cloned();
    // Where this response starts (`now` resolved): a client that loses the connection before
    // the first line resumes here.
    let start =
        HeaderValue::from_str(&cursor.to_string()).map_err(|e| ApiError::Internal(e.into()))?;
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(run(b, auth, filter, format, cursor, follow, writer));
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::HeaderName::from_static(CURSOR_HEADER), start),
        ],
        body,
    )
        .into_response())
}

/// Read rounds and write their lines until the reader goes away, the credential stops being
/// valid, or (not following) the stream caught up.
async fn run(
    b: Arc<Broker>,
    auth: Option<HeaderValue>,
    filter: StreamFilter,
    format: Format,
    mut cursor: StreamCursor,
    follow: bool,
    mut w: tokio::io::DuplexStream,
) {
    let mut checked = std::time::Instant::now();
    loop {
        // A reader that went away (the response's body dropped) ends the stream even when
        // there is nothing to write: an empty write fails once the other half is gone.
        if w.write(&[]).await.is_err() {
            tracing::info!("audit stream ended: its reader went away");
            return;
        }
        if checked.elapsed() >= POLL {
            checked = std::time::Instant::now();
            if let Err(e) = still_allowed(&b, auth.as_ref()).await {
                let _ = w.write_all(error_line(&e).as_bytes()).await;
                return;
            }
        }
        let round = match read_round(&b, &cursor, &filter).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "audit stream: reading the store failed");
                let e = ApiError::Unavailable(
                    "the broker could not read the audit log: resume with since= the last \
                     line's cursor"
                        .into(),
                );
                let _ = w.write_all(error_line(&e).as_bytes()).await;
                return;
            }
        };
        for (r, c) in &round.lines {
            if w.write_all(format.line(r, c).as_bytes()).await.is_err() {
                tracing::info!("audit stream ended: its reader went away");
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
        cursor = round.cursor;
        if round.full {
            continue;
        }
        if !follow {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One round over every source: what each has after the cursor.
async fn read_round(
    b: &Broker,
    cursor: &StreamCursor,
    filter: &StreamFilter,
) -> anyhow::Result<Round> {
    let mut pages = Vec::new();
    for (source, head) in b.store.audit_source_heads().await? {
        if filter.source.as_ref().is_some_and(|s| *s != source) {
            continue;
        }
        let after = cursor.get(&source);
        if head <= after {
            continue;
        }
        let records = b
            .store
            .audit_stream_page(&source, after, head, filter, PAGE)
            .await?;
        let full = records.len() as u64 >= PAGE;
        let reach = match records.last() {
            Some(last) if full => last.seq,
            _ => head,
        };
        pages.push(Page {
            source,
            records,
            reach,
            full,
        });
    }
    Ok(merge_round(cursor.clone(), pages))
}

/// The stream's credential, checked again as the request's was (a revoked token, a disabled
/// account or an expired console session fail, and are audited as at any request).
async fn still_allowed(b: &Arc<Broker>, auth: Option<&HeaderValue>) -> Result<(), ApiError> {
    let mut req = axum::http::Request::builder().uri("/v1/audit/stream");
    if let Some(v) = auth {
        req = req.header(header::AUTHORIZATION, v.clone());
    }
    let (mut parts, ()) = req
        .body(())
        .map_err(|e| ApiError::Internal(e.into()))?
        .into_parts();
    Caller::from_request_parts(&mut parts, b).await.map(|_| ())
}

/// The API's error shape, as a last line.
fn error_line(e: &ApiError) -> String {
    let mut s = serde_json::to_string(&sallyport_api::ErrorBody::new(e.code(), e.to_string()))
        .unwrap_or_default();
    s.push('\n');
    s
}
