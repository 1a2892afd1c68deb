//! Per-session MFA: after a certificate that asks for it, keyboard-interactive asks for a TOTP
//! code, which the broker checks (`POST /v1/mfa/verify`). What a request and a verdict lead to
//! are the pure `code_step`, `verdict_step` and `mfa_verdict`.

use std::net::IpAddr;

use russh::server::{Auth, Response};
use russh::{MethodKind, MethodSet};
use sallyport_api::ErrorDetail;
use sallyport_api::SecretString;
use sallyport_api::login::{MfaVerified, MfaVerifyRequest};
use sallyport_ca::CertIdentity;
use serde_json::json;

use super::Edge;
use super::handler::EngineerHandler;

/// What the broker said about a per-session TOTP code.
#[derive(Debug, PartialEq)]
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

/// The verdict in the broker's answer to `POST /v1/mfa/verify`: its status, its `ok` and its
/// error message.
pub(super) fn mfa_verdict(status: u16, ok: bool, message: &str) -> MfaVerdict {
    match status {
        200..=299 if ok => MfaVerdict::Verified,
        400 | 401 => MfaVerdict::Refused {
            code: "mfa_failed",
            reason: message.to_string(),
        },
        429 => MfaVerdict::Refused {
            code: "mfa_locked_out",
            reason: message.to_string(),
        },
        _ => MfaVerdict::Unavailable(format!(
            "the broker answered {}: {message}",
            status_text(status)
        )),
    }
}

/// A status as `reqwest::StatusCode` shows it ("401 Unauthorized").
fn status_text(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string())
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
        let body = MfaVerifyRequest {
            engineer: id.engineer().to_string(),
            code: SecretString::from(code.to_string()),
            grant: id.grant().to_string(),
            ticket: Some(id.ticket().to_string()),
            cluster: Some(id.cluster().to_string()),
            source_ip: peer,
        };
        let answer = client.post_answer::<_, MfaVerified>("/v1/mfa/verify", &body);
        match answer.await {
            Ok((status, Ok(v))) => mfa_verdict(status.as_u16(), v.ok, "no message"),
            Ok((status, Err(error))) => mfa_verdict(
                status.as_u16(),
                false,
                &ErrorDetail::message_or(error.as_ref(), "no message"),
            ),
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

/// What a keyboard-interactive request leads to.
#[derive(Debug, PartialEq)]
pub(super) enum CodeStep {
    /// Refused without a word: no certificate asks for a code on this connection.
    Reject,
    /// Refused, and no code is asked for any more: another user name than the certificate's.
    OtherUser,
    /// Ask for the code.
    Prompt,
    /// Nothing typed (a client in batch mode cannot prompt): refused without asking the broker,
    /// so it does not count toward the engineer's lockout, and not asked again (`mfa_no_code`).
    NoCode,
    /// Ask the broker about this code.
    Check(String),
}

/// `pending_user`: the user name of the certificate that asks for a code, if one does;
/// `answer`: `None` before the prompt, else the first answer (if any).
pub(super) fn code_step(
    pending_user: Option<&str>,
    user: &str,
    answer: Option<Option<&[u8]>>,
) -> CodeStep {
    let Some(pending_user) = pending_user else {
        return CodeStep::Reject;
    };
    if pending_user != user {
        return CodeStep::OtherUser;
    }
    let Some(answer) = answer else {
        return CodeStep::Prompt;
    };
    let code: String = answer
        .map(|b| String::from_utf8_lossy(b).trim().chars().take(64).collect())
        .unwrap_or_default();
    if code.is_empty() {
        CodeStep::NoCode
    } else {
        CodeStep::Check(code)
    }
}

/// What the broker's verdict on a code leads to, after `failures` wrong codes before it.
#[derive(Debug, PartialEq)]
pub(super) enum VerdictStep {
    Accept,
    /// Refused (audited with this code); another code may be typed.
    Retry {
        code: &'static str,
        reason: String,
    },
    /// Refused (audited with this code), and no code is asked for any more.
    Stop {
        code: &'static str,
        reason: String,
    },
}

pub(super) fn verdict_step(verdict: MfaVerdict, failures: u32) -> VerdictStep {
    match verdict {
        MfaVerdict::Verified => VerdictStep::Accept,
        MfaVerdict::Refused { code, reason }
            if failures + 1 >= MFA_TRIES || code == "mfa_locked_out" =>
        {
            VerdictStep::Stop { code, reason }
        }
        MfaVerdict::Refused { code, reason } => VerdictStep::Retry { code, reason },
        MfaVerdict::Unavailable(reason) => VerdictStep::Stop {
            code: "mfa_unavailable",
            reason: format!("the per-session TOTP code cannot be checked: {reason}"),
        },
    }
}

/// Keyboard-interactive, offered again to type another code.
fn another_code() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::KeyboardInteractive][..])),
        partial_success: false,
    }
}

impl EngineerHandler {
    pub(super) async fn on_keyboard_interactive(
        &mut self,
        user: &str,
        response: Option<Response<'_>>,
    ) -> Auth {
        self.auth_request(user);
        let answer = response.map(|mut r| r.next());
        let step = code_step(
            self.pending_mfa.as_ref().map(|p| p.user.as_str()),
            user,
            answer.as_ref().map(|a| a.as_deref()),
        );
        // Only for a connection whose certificate passed and asks for it, under the same name.
        let code = match step {
            CodeStep::Check(code) => code,
            CodeStep::Reject => {
                tracing::debug!(peer = ?self.peer, "keyboard-interactive without a certificate: refused");
                return Auth::reject();
            }
            CodeStep::OtherUser => {
                self.pending_mfa = None;
                return Auth::reject();
            }
            CodeStep::Prompt => {
                let Some(pending) = &self.pending_mfa else {
                    return Auth::reject();
                };
                let prompt = format!("TOTP code for {}: ", pending.id.engineer());
                return Auth::Partial {
                    name: "sallyport per-session MFA".into(),
                    instructions: format!(
                        "Ticket {} on {} asks for a TOTP code for each session.",
                        pending.id.ticket(),
                        pending.id.cluster()
                    )
                    .into(),
                    prompts: vec![(prompt.into(), false)].into(),
                };
            }
            CodeStep::NoCode => {
                let key_id = self.pending_mfa.as_ref().map(|p| p.id.key_id().to_string());
                tracing::warn!(peer = ?self.peer, user, key_id, "no per-session TOTP code was typed: refused");
                self.refused(
                    key_id.as_deref(),
                    "mfa_no_code",
                    "the certificate asks for a per-session TOTP code and none was typed (ssh in \
                     batch mode cannot prompt for it)",
                    json!({}),
                )
                .await;
                self.pending_mfa = None;
                return Auth::reject();
            }
        };
        let Some(pending) = &self.pending_mfa else {
            return Auth::reject();
        };
        let key_id = pending.id.key_id().to_string();
        let failures = pending.failures;
        let verdict = self
            .edge
            .verify_mfa(&pending.id, &code, self.peer.map(|p| p.ip()))
            .await;
        match &verdict {
            MfaVerdict::Verified => {}
            MfaVerdict::Refused { code, reason } => {
                tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "per-session TOTP code refused at the edge")
            }
            MfaVerdict::Unavailable(reason) => {
                tracing::error!(peer = ?self.peer, user, key_id, reason, "cannot check the per-session TOTP code: refused")
            }
        }
        match verdict_step(verdict, failures) {
            VerdictStep::Accept => {
                let Some(p) = self.pending_mfa.take() else {
                    return Auth::reject();
                };
                tracing::info!(peer = ?self.peer, user, engineer = p.id.engineer(), ticket = p.id.ticket(), cluster = p.id.cluster(), "engineer authenticated at the edge (certificate and per-session TOTP)");
                self.authenticated(p.id);
                Auth::Accept
            }
            VerdictStep::Retry { code, reason } => {
                self.refused(Some(&key_id), code, &reason, json!({})).await;
                if let Some(p) = self.pending_mfa.as_mut() {
                    p.failures += 1;
                }
                another_code()
            }
            VerdictStep::Stop { code, reason } => {
                self.refused(Some(&key_id), code, &reason, json!({})).await;
                self.pending_mfa = None;
                Auth::reject()
            }
        }
    }
}
