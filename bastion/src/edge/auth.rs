//! Per-session MFA: the pending state after a certificate that asks for it, and the broker's
//! verdict on a TOTP code.

use std::net::IpAddr;

use sallyport_ca::CertIdentity;
use serde_json::json;

use super::Edge;

/// What the broker said about a per-session TOTP code.
pub(super) enum MfaVerdict {
    Verified,
    /// The code is wrong, was used before, or the engineer is locked out.
    Refused {
        code: &'static str,
        reason: String,
    },
    /// No answer: the connection is refused (fail closed).
    Unavailable(String),
}

impl Edge {
    /// Ask the broker whether `code` is the engineer's TOTP code now.
    pub(super) async fn verify_mfa(
        &self,
        id: &CertIdentity,
        code: &str,
        peer: Option<IpAddr>,
    ) -> MfaVerdict {
        let Some(client) = &self.authed else {
            return MfaVerdict::Unavailable(
                "this edge has no broker token (token_file) to check TOTP codes with".into(),
            );
        };
        let body = json!({
            "engineer": id.engineer(),
            "grant": id.grant(),
            "code": code,
            "ticket": id.ticket(),
            "cluster": id.cluster(),
            "source_ip": peer.map(|ip| ip.to_string()),
        });
        match client.post_json_status("/v1/mfa/verify", &body).await {
            Ok((status, v)) if status.is_success() && v["ok"] == json!(true) => {
                MfaVerdict::Verified
            }
            Ok((status, v)) => {
                let message = v["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string();
                match status.as_u16() {
                    400 | 401 => MfaVerdict::Refused {
                        code: "mfa_failed",
                        reason: message,
                    },
                    429 => MfaVerdict::Refused {
                        code: "mfa_locked_out",
                        reason: message,
                    },
                    _ => {
                        MfaVerdict::Unavailable(format!("the broker answered {status}: {message}"))
                    }
                }
            }
            Err(e) => MfaVerdict::Unavailable(format!("the broker did not answer: {e}")),
        }
    }
}

/// A certificate that passed and asks for per-session MFA, until the TOTP code is right.
pub(super) struct PendingMfa {
    /// The user name it was presented for: keyboard-interactive must name the same.
    pub(super) user: String,
    pub(super) id: CertIdentity,
    pub(super) failures: u32,
}

/// Wrong codes per connection before the edge stops asking.
pub(super) const MFA_TRIES: u32 = 3;
