//! The HTTP API under `/v1/`. One `router()` per module; errors are
//! `{"error": {"code": "...", "message": "..."}}`.

mod admin;
pub(crate) mod approvals;
pub(crate) mod audit;
mod certs;
pub(crate) mod export;
mod gateways;
mod jump;
pub mod login;
pub mod report;
pub(crate) mod sessions;
pub mod stream;
mod tickets;
pub(crate) mod webhooks;

#[cfg(test)]
mod openapi_check;
#[cfg(test)]
mod properties;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::auth::Caller;
use crate::authz::{Action, Answer, Refusal, Scope, authorize};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;

/// The OpenAPI document, kept next to the code it describes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// JSON body whose rejections speak the API's error shape.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => Err(ApiError::Rejected(rej.status(), rej.body_text())),
        }
    }
}

pub fn router(state: Arc<Broker>) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(sallyport_api::health::Health::ok()) }),
        )
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .route("/v1/login", post(login::engineer_login))
        .route("/v1/accounts/login", post(login::account_login))
        .route("/v1/mfa/verify", post(login::verify_session_mfa))
        .merge(admin::router())
        .merge(tickets::router())
        .merge(approvals::router())
        .merge(certs::router())
        .merge(audit::router())
        .merge(export::router())
        .merge(stream::router())
        .merge(gateways::router(state.cfg.max_ingest_bytes))
        .merge(sessions::router())
        .merge(report::router())
        .merge(webhooks::router())
        .merge(crate::web::router())
        .fallback(|| async { ApiError::NotFound("this API path".into()).into_response() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(json_refusals))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Every request runs in a span (`request{method path}`: never the query string, which may
/// carry a cursor or a search), so that what a handler logs says which request it served; the
/// status and duration are logged at debug level.
async fn request_span(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
    );
    let start = std::time::Instant::now();
    async move {
        let resp = next.run(req).await;
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = start.elapsed().as_millis() as u64,
            "answered"
        );
        resp
    }
    .instrument(span)
    .await
}

/// Ask [`authorize`] and audit a refusal that says so: `Ok(Err(refusal))` when the caller may
/// not (the caller answers it), `Err` only when the audit event could not be written.
pub(crate) async fn decide(
    b: &Broker,
    caller: &Caller,
    action: Action,
    scope: Scope<'_>,
) -> Result<Result<(), Refusal>, ApiError> {
    let Err(r) = authorize(caller, action, scope) else {
        return Ok(Ok(()));
    };
    match r.answer {
        Answer::Forbidden | Answer::Hidden => {
            let event = crate::audit::AuditEvent::Refused {
                by: caller.label(),
                action: action.name().into(),
                reason: r.reason.to_string(),
                customer: r.customer.clone(),
                cluster: r.cluster.clone(),
            };
            b.store.audit(&event).await.map_err(ApiError::Internal)?;
        }
        Answer::Unseen => {}
    }
    Ok(Err(r))
}

/// [`decide`], answering a refusal: 403 with its reason, or "`hidden` not found".
pub(crate) async fn permit_or_hide(
    b: &Broker,
    caller: &Caller,
    action: Action,
    scope: Scope<'_>,
    hidden: &str,
) -> ApiResult<()> {
    match decide(b, caller, action, scope).await? {
        Ok(()) => Ok(()),
        Err(r) => Err(match r.answer {
            Answer::Forbidden => ApiError::Forbidden(r.reason.into_owned()),
            Answer::Hidden | Answer::Unseen => ApiError::NotFound(hidden.into()),
        }),
    }
}

/// [`decide`] for an action whose refusals are all 403 with their reason.
pub(crate) async fn permit(
    b: &Broker,
    caller: &Caller,
    action: Action,
    scope: Scope<'_>,
) -> ApiResult<()> {
    permit_or_hide(b, caller, action, scope, "it").await
}

/// The authorization table allowed `action` to a caller that is not who the handler needs (a
/// gateway, an engineer...): a mistake in the table, answered as an internal error.
pub(crate) fn not_the_caller(action: Action) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "{} was allowed to a caller of another kind",
        action.name()
    ))
}

/// Refuse with an audit event: the caller may not do this.
pub(crate) async fn refuse(
    b: &Broker,
    caller: &Caller,
    action: &str,
    reason: &str,
    customer: Option<&str>,
    cluster: Option<&str>,
) -> ApiError {
    refuse_by(
        b,
        &caller.label(),
        action,
        reason,
        customer,
        cluster,
        ApiError::Forbidden(reason.into()),
    )
    .await
}

/// Whether `caller` may do `action` on `cluster` (its customer read here). A refusal is audited
/// when the table says so; the caller answers it (a page: "not found").
pub(crate) async fn on_cluster(
    b: &Broker,
    caller: &Caller,
    action: Action,
    cluster: &str,
) -> Result<bool, ApiError> {
    let owner = b.store.cluster(cluster).await?.map(|c| c.customer);
    let scope = Scope::Cluster {
        customer: owner.as_deref(),
        cluster,
    };
    Ok(decide(b, caller, action, scope).await?.is_ok())
}

/// Record a `Refused` event by `by` (a caller's label, or who presented an unknown secret) and
/// answer with `error`.
pub(crate) async fn refuse_by(
    b: &Broker,
    by: &str,
    action: &str,
    reason: &str,
    customer: Option<&str>,
    cluster: Option<&str>,
    error: ApiError,
) -> ApiError {
    let event = crate::audit::AuditEvent::Refused {
        by: by.into(),
        action: action.into(),
        reason: reason.into(),
        customer: customer.map(str::to_string),
        cluster: cluster.map(str::to_string),
    };
    if let Err(e) = b.store.audit(&event).await {
        return ApiError::Internal(e);
    }
    error
}

/// Audit a refusal anyone may repeat, at most once a minute per `key` (the next one counts
/// those in between).
pub(crate) async fn throttled(
    b: &Broker,
    key: &str,
    event: impl FnOnce(&str) -> crate::audit::AuditEvent,
    reason: &str,
) -> Result<(), ApiError> {
    if let Some(n) = b.refusals.allow(key, sallyport_ca::clock::now_secs()) {
        b.store
            .audit(&event(&crate::throttle::with_repeats(reason, n)))
            .await?;
    }
    Ok(())
}

/// Names of customers, clusters, nodes, groups and logins: what may appear in certificates,
/// key ids and file names. Letters, digits, `.`, `_`, `-`; at most 64; no leading punctuation.
pub(crate) fn check_name(what: &str, v: &str) -> Result<(), ApiError> {
    if crate::directory::valid_uid(v) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {:?}: use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)",
            crate::audit::sanitize(v)
        )))
    }
}

pub(crate) fn created<T: serde::Serialize>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(v))
}

/// Every answer of the API under `/v1/` is JSON, refusals in the error shape
/// (`{"error": {"code", "message"}}`), also those no handler wrote: axum's extractors answer a
/// query string or a path segment they cannot read, a wrong method or a wrong content type in
/// plain text (or with no body at all). Those become the same refusal, with axum's message.
async fn json_refusals(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let api = req.uri().path().starts_with("/v1/");
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || !status.is_client_error() || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // axum's rejection texts are one line; anything longer is not one of them.
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_string()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "bad_request",
    };
    parts.headers.remove(CONTENT_TYPE);
    parts.headers.remove(CONTENT_LENGTH);
    let body = Json(sallyport_api::ErrorBody::new(code, message));
    (parts, body).into_response()
}
