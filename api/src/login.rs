//! `POST /v1/login` (engineers), `POST /v1/accounts/login` (approvers and reviewers) and
//! `POST /v1/mfa/verify` (an edge checking an engineer's per-session TOTP code).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The body of both logins.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    #[serde(serialize_with = "crate::secret::expose")]
    pub password: SecretString,
    /// The current TOTP code.
    pub totp: String,
}

/// A session: its token (a JWT) and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub user: String,
    pub role: String,
    pub groups: Vec<String>,
    pub customer: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    pub engineer: String,
    #[serde(serialize_with = "crate::secret::expose")]
    pub code: SecretString,
    /// The grant of the certificate the engineer connected with: a code is checked only for an
    /// engineer holding a live certificate, so an edge credential cannot spend anyone's codes.
    pub grant: String,
    /// What the edge read from the certificate and the connection, for the audit event.
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub source_ip: Option<std::net::IpAddr>,
}

/// The code was right (a wrong one is an error answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaVerified {
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn login_bodies_round_trip() {
        let v = json!({"user": "alice", "password": "pw", "totp": "123456"});
        let req: LoginRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(req.password.expose_secret(), "pw");
        assert!(
            !format!("{req:?}").contains("pw\""),
            "the password is not printed"
        );
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
        assert!(
            serde_json::from_value::<LoginRequest>(
                json!({"user": "a", "password": "p", "totp": "1", "x": 1})
            )
            .is_err(),
            "unknown fields are refused"
        );
        for v in [
            json!({"token": "t", "expires_at": 1, "user": "alice", "role": "engineer",
                   "groups": ["g"], "customer": null}),
            json!({"token": "t", "expires_at": 1, "user": "acme-approver", "role": "approver",
                   "groups": [], "customer": "acme"}),
        ] {
            let r: LoginResponse = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
    }

    #[test]
    fn mfa_bodies_round_trip() {
        let v = json!({"engineer": "alice", "code": "123456", "grant": "g1", "ticket": "SUP-1",
                       "cluster": "acme-prod", "source_ip": "127.0.0.1"});
        let req: MfaVerifyRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
        let bare: MfaVerifyRequest =
            serde_json::from_value(json!({"engineer": "a", "code": "1", "grant": "g"})).unwrap();
        assert_eq!(bare.source_ip, None);
        let ok: MfaVerified = serde_json::from_value(json!({"ok": true})).unwrap();
        assert_eq!(serde_json::to_value(ok).unwrap(), json!({"ok": true}));
    }
}
