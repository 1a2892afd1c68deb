//! Errors of the broker and their HTTP shape: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sallyport_api::{ErrorBody, Reason};
use sallyport_ca::policy::DenyReason;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("{0}")]
    LoginFailed(String),
    /// A per-session TOTP code was refused (401).
    #[error("{0}")]
    MfaFailed(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("access denied")]
    Denied(Vec<DenyReason>),
    #[error("{0} not found")]
    NotFound(String),
    /// Well-formed but refused as asked (a webhook URL that is not https, an unknown event).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed attempts; try again in {0} seconds")]
    Locked(u64),
    #[error("{0}")]
    Unavailable(String),
    /// The request could not be read (malformed JSON, too large, wrong content type).
    #[error("{1}")]
    Rejected(StatusCode, String),
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return ApiError::Conflict("it already exists".into());
            }
            if db.is_foreign_key_violation() {
                return ApiError::BadRequest("it refers to something that does not exist".into());
            }
        }
        if store_unavailable(&e) {
            return store_unavailable_error(&e);
        }
        ApiError::from(anyhow::Error::from(e))
    }
}

/// What a caller is told while the store cannot be reached: nothing was decided, try again.
pub const STORE_UNAVAILABLE: &str =
    "the broker's store (database) is unavailable; nothing was issued, try again shortly";

/// The store cannot be reached — down, restarting after a crash, a connection cut — as opposed
/// to a query it refused: the request fails closed with 503, and the pool reconnects by itself
/// once the store is back.
fn store_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 57P: the server shut down, crashed or is starting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

fn store_unavailable_error(e: &sqlx::Error) -> ApiError {
    tracing::warn!(error = %e, "the store is unavailable");
    ApiError::Unavailable(STORE_UNAVAILABLE.into())
}

/// An internal error, unless the store refused the input's text (also when its error arrives
/// wrapped, from a store function that answers anyhow::Error).
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let refused = e.chain().any(|c| {
            matches!(c.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Database(db)) if refused_text(db.as_ref()))
        });
        let unavailable = e.chain().find_map(|c| {
            c.downcast_ref::<sqlx::Error>()
                .filter(|e| store_unavailable(e))
        });
        if refused {
            ApiError::BadRequest(REFUSED_TEXT.into())
        } else if let Some(e) = unavailable {
            store_unavailable_error(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::LoginFailed(_) => "login_failed",
            ApiError::MfaFailed(_) => "mfa_failed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Denied(_) => "denied",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Conflict(_) => "conflict",
            ApiError::Locked(_) => "locked_out",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Rejected(s, _) if *s == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            ApiError::Rejected(..) => "bad_request",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::LoginFailed(_) | ApiError::MfaFailed(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) | ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Rejected(s, _) => *s,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// PostgreSQL refuses a NUL character in text (SQLite stores it): on both, a refusal of the
/// input, not an internal error.
const REFUSED_TEXT: &str =
    "text with a NUL character (or bytes that are not UTF-8) is not accepted";

fn refused_text(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some("22021")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            // The detail goes to the log, never to the client.
            tracing::error!(error = ?e, "internal error");
        }
        let mut body = ErrorBody::new(self.code(), self.to_string());
        if let ApiError::Denied(reasons) = &self {
            body.error.message = reasons
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            body.error.reasons = Some(
                reasons
                    .iter()
                    .map(|r| Reason {
                        code: r.code.clone(),
                        message: r.message.clone(),
                    })
                    .collect(),
            );
        }
        (self.status(), Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The store out of reach is 503 with a message saying so; other store errors stay internal.
    #[test]
    fn a_store_out_of_reach_is_503_and_other_store_errors_are_internal() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: Vec<(sqlx::Error, StatusCode)> = vec![
            (sqlx::Error::Io(refused()), StatusCode::SERVICE_UNAVAILABLE),
            (sqlx::Error::PoolTimedOut, StatusCode::SERVICE_UNAVAILABLE),
            (sqlx::Error::PoolClosed, StatusCode::SERVICE_UNAVAILABLE),
            (sqlx::Error::WorkerCrashed, StatusCode::SERVICE_UNAVAILABLE),
            (sqlx::Error::RowNotFound, StatusCode::INTERNAL_SERVER_ERROR),
            (
                sqlx::Error::Protocol("odd".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, want) in cases {
            let what = e.to_string();
            let direct = ApiError::from(e);
            assert_eq!(direct.status(), want, "{what}");
            if want == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(direct.to_string(), STORE_UNAVAILABLE);
            }
        }
        // Wrapped by a store function that answers anyhow::Error.
        let wrapped = anyhow::Error::from(sqlx::Error::Io(refused())).context("reading a ticket");
        assert_eq!(
            ApiError::from(wrapped).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
