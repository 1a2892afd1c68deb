//! The error body of every refusal: `{"error": {"code": "...", "message": "..."}}`, with the
//! reasons of a denied certificate (`"reasons": [{"code", "message"}]`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What went wrong, for programs: `bad_request`, `denied`, `locked_out`, `not_found`...
    pub code: String,
    /// What went wrong and what to do about it, for people.
    pub message: String,
    /// Why a certificate was denied (code `denied`), each in words; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<Reason>>,
}

/// One reason of a denial, as the policy decision gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                reasons: None,
            },
        }
    }

    /// A client reading an error answer's body: `Err` when it is not JSON at all, `Ok(None)`
    /// when it is JSON of another shape (not the broker's, or a proxy's), else the error.
    pub fn read(body: &[u8]) -> Result<Option<ErrorDetail>, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        Ok(serde_json::from_value::<ErrorBody>(value)
            .ok()
            .map(|b| b.error))
    }
}

impl ErrorDetail {
    /// The message of an error read with [`ErrorBody::read`], or `otherwise`.
    pub fn message_or(error: Option<&ErrorDetail>, otherwise: &str) -> String {
        error.map_or_else(|| otherwise.to_string(), |e| e.message.clone())
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_round_trip_as_the_broker_writes_them() {
        for v in [
            json!({"error": {"code": "not_found", "message": "ticket not found"}}),
            json!({"error": {"code": "denied", "message": "a; b", "reasons": [
                {"code": "ticket_closed", "message": "a"},
                {"code": "not_assigned", "message": "b"},
            ]}}),
        ] {
            let body: ErrorBody = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&body).unwrap(), v);
        }
        let denied: ErrorBody = serde_json::from_value(json!({"error": {"code": "denied",
            "message": "m", "reasons": [{"code": "c", "message": "m"}]}}))
        .unwrap();
        assert_eq!(denied.error.reasons.unwrap()[0].code, "c");
    }

    #[test]
    fn a_client_reads_the_error_or_says_it_is_not_one() {
        let e = ErrorBody::read(br#"{"error": {"code": "locked_out", "message": "wait"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("locked_out", "wait")
        );
        assert_eq!(e.to_string(), "wait (locked_out)");
        assert_eq!(ErrorBody::read(br#"{"ok": false}"#).unwrap(), None);
        assert!(ErrorBody::read(b"<html>bad gateway</html>").is_err());
        assert_eq!(ErrorDetail::message_or(None, "no message"), "no message");
        assert_eq!(ErrorDetail::message_or(Some(&e), "no message"), "wait");
    }
}
