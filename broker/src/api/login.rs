//! Logins: engineers (directory bind + groups + TOTP) and local accounts (approvers and
//! reviewers: argon2 password + TOTP), and the per-session TOTP check an edge asks for when a
//! certificate carries `mfa@sallyport.dev`. Each TOTP step is accepted once (login and session
//! checks share the table, so a code used for one is refused for the other); failures count
//! toward one lockout per user; every outcome is an AuditEvent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Body, check_name, refuse};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::Caller;
use crate::directory::{DirectoryError, valid_uid, verify_argon2};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::now_secs;
use crate::totp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: SecretString,
    pub totp: String,
}

#[derive(Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: u64,
    pub user: String,
    pub role: String,
    pub groups: Vec<String>,
    pub customer: Option<String>,
}

enum Failure {
    /// Counted toward the lockout.
    Counted(ApiError, &'static str),
    /// Not the user's fault (directory down): not counted.
    Uncounted(ApiError, &'static str),
}

/// Check a TOTP code and spend its step. Errors name what to do next.
/// `stored` is the TOTP secret as the store holds it (sealed for `subject`).
async fn spend_totp(b: &Broker, subject: &str, stored: &str, code: &str) -> Result<(), Failure> {
    let secret = match b.totp_box.open(subject, stored) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(subject, error = %e, "a TOTP secret does not open");
            return Err(Failure::Uncounted(
                ApiError::Unavailable(
                    "your TOTP secret cannot be read by this broker (its totp_key_file differs \
                     from the one that sealed it): tell the operator"
                        .into(),
                ),
                "totp_unreadable",
            ));
        }
    };
    let Some(step) = totp::check(&secret, code, now_secs(), b.cfg.login.totp_skew) else {
        return Err(Failure::Counted(
            ApiError::LoginFailed(
                "wrong TOTP code: type the current code from your authenticator".into(),
            ),
            "bad_totp",
        ));
    };
    match b.store.use_totp_step(subject, step).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::Counted(
            ApiError::LoginFailed("this TOTP code was already used: wait for the next code".into()),
            "totp_replayed",
        )),
        Err(e) => Err(Failure::Uncounted(ApiError::from(e), "internal")),
    }
}

pub async fn engineer_login(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let shown = sanitize(&req.user);
    let fail = |code: &str, reason: &str| AuditEvent::LoginFailed {
        engineer: shown.clone(),
        code: code.into(),
        reason: reason.into(),
        source_ip: Some(peer.ip().to_string()),
    };
    if !valid_uid(&req.user) {
        b.store
            .audit(&fail(
                "invalid_user_name",
                "user name has characters that are not allowed",
            ))
            .await?;
        return Err(ApiError::BadRequest(
            "invalid user name: use letters, digits, '.', '_' and '-' only".into(),
        ));
    }
    let subject = crate::auth::principal("engineer", &req.user);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this engineer"))
            .await?;
        return Err(ApiError::Forbidden(
            "your access is disabled: ask the operator to enable you".into(),
        ));
    }
    if let Some(wait) = reserve_attempt(&b, &subject).await? {
        b.store
            .audit(&fail("locked_out", "too many failed attempts"))
            .await?;
        return Err(ApiError::Locked(wait));
    }
    let outcome: Result<Vec<String>, Failure> = async {
        let groups = match b.directory.authenticate(&req.user, &req.password).await {
            Ok(g) => g,
            Err(DirectoryError::BadCredentials) => {
                return Err(Failure::Counted(
                    ApiError::LoginFailed(DirectoryError::BadCredentials.to_string()),
                    "bad_credentials",
                ));
            }
            Err(e @ DirectoryError::Unavailable(_)) => {
                if let DirectoryError::Unavailable(detail) = &e {
                    tracing::warn!(detail = %detail, "directory unavailable");
                }
                return Err(Failure::Uncounted(
                    ApiError::Unavailable(e.to_string()),
                    "directory_unavailable",
                ));
            }
        };
        let secret = match b.store.engineer_totp(&req.user).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Failure::Counted(
                    ApiError::LoginFailed(
                        "no TOTP is enrolled for you: ask the operator to enroll you".into(),
                    ),
                    "totp_not_enrolled",
                ));
            }
            Err(e) => return Err(Failure::Uncounted(e.into(), "internal")),
        };
        spend_totp(&b, &subject, &secret, &req.totp).await?;
        Ok(groups)
    }
    .await;
    match outcome {
        Ok(groups) => {
            b.store.clear_failures(&subject).await?;
            let (token, exp) = b
                .jwt
                .issue(&req.user, "engineer", groups.clone(), None, true)?;
            b.store
                .audit(&AuditEvent::LoginSucceeded {
                    engineer: req.user.clone(),
                    groups: groups.clone(),
                    source_ip: Some(peer.ip().to_string()),
                })
                .await?;
            Ok(Json(LoginResponse {
                token,
                expires_at: exp,
                user: req.user,
                role: "engineer".into(),
                groups,
                customer: None,
            }))
        }
        Err(Failure::Counted(err, code)) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(err)
        }
        Err(Failure::Uncounted(err, code)) => {
            b.store
                .release_attempt(&subject, b.cfg.login.max_failures)
                .await?;
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(err)
        }
    }
}

/// Before anything is checked, take one attempt for `subject`: it counts as a failure until it
/// succeeds, atomically across replicas, so parallel guesses cannot all be checked before the
/// lockout counts them. `Some(seconds to wait)` when locked out: then nothing is checked.
async fn reserve_attempt(b: &Broker, subject: &str) -> ApiResult<Option<u64>> {
    if let Some(wait) = b.store.locked_for(subject).await? {
        return Ok(Some(wait));
    }
    let max = b.cfg.login.max_failures;
    let n = b
        .store
        .record_failure(subject, max, b.cfg.login.lockout_secs)
        .await?;
    Ok((n > max).then_some(b.cfg.login.lockout_secs))
}

pub async fn account_login(
    State(b): State<Arc<Broker>>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let shown = sanitize(&req.user);
    let fail = |code: &str, reason: &str| AuditEvent::AccountLoginFailed {
        account: shown.clone(),
        code: code.into(),
        reason: reason.into(),
    };
    if !valid_uid(&req.user) {
        b.store
            .audit(&fail(
                "invalid_user_name",
                "user name has characters that are not allowed",
            ))
            .await?;
        return Err(ApiError::BadRequest(
            "invalid user name: use letters, digits, '.', '_' and '-' only".into(),
        ));
    }
    let subject = crate::auth::principal("account", &req.user);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this account"))
            .await?;
        return Err(ApiError::Forbidden(
            "this account is disabled: ask the operator to enable it".into(),
        ));
    }
    if let Some(wait) = reserve_attempt(&b, &subject).await? {
        b.store
            .audit(&fail("locked_out", "too many failed attempts"))
            .await?;
        return Err(ApiError::Locked(wait));
    }
    let account = b.store.account(&req.user).await?;
    let password_ok = match &account {
        Some(a) => verify_argon2(&a.password_hash, req.password.expose_secret()),
        None => {
            let _ = crate::directory::hash_argon2(req.password.expose_secret());
            false
        }
    };
    let outcome = match (&account, password_ok) {
        (Some(a), true) => spend_totp(&b, &subject, &a.totp_secret, &req.totp).await,
        _ => Err(Failure::Counted(
            ApiError::LoginFailed("wrong user name or password".into()),
            "bad_credentials",
        )),
    };
    match (outcome, account) {
        (Ok(()), Some(a)) => {
            b.store.clear_failures(&subject).await?;
            let (token, exp) =
                b.jwt
                    .issue(&a.username, &a.role, vec![], a.customer.clone(), true)?;
            b.store
                .audit(&AuditEvent::AccountLoginSucceeded {
                    account: a.username.clone(),
                    role: a.role.clone(),
                    customer: a.customer.clone(),
                })
                .await?;
            Ok(Json(LoginResponse {
                token,
                expires_at: exp,
                user: a.username,
                role: a.role,
                groups: vec![],
                customer: a.customer,
            }))
        }
        (Err(Failure::Counted(err, code)), _) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(err)
        }
        (Err(Failure::Uncounted(err, code)), _) => {
            b.store
                .release_attempt(&subject, b.cfg.login.max_failures)
                .await?;
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(err)
        }
        (Ok(()), None) => Err(ApiError::LoginFailed("wrong user name or password".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    pub engineer: String,
    pub code: SecretString,
    /// What the edge read from the certificate and the connection, for the audit event.
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub source_ip: Option<std::net::IpAddr>,
}

/// `POST /v1/mfa/verify` (edges only): check an engineer's TOTP code for one SSH session.
/// The same check as at login: the enrolled secret, each step once (subject `engineer:<uid>`,
/// shared with login), failures counted toward the same lockout. 200 `{"ok": true}`, 401 with
/// what went wrong, 429 while locked out; every outcome is audited.
pub async fn verify_session_mfa(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<MfaVerifyRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    const ACTION: &str = "verify_session_mfa";
    match &caller {
        Caller::Edge { .. } => {}
        Caller::Operator { .. }
        | Caller::Reviewer { .. }
        | Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Gateway { .. } => {
            return Err(refuse(
                &b,
                &caller,
                ACTION,
                "only an edge may check per-session TOTP codes",
                None,
                None,
            )
            .await);
        }
    }
    for (what, v) in [("ticket", &req.ticket), ("cluster", &req.cluster)] {
        if let Some(v) = v {
            check_name(what, v)?;
        }
    }
    let by = caller.label();
    let shown = sanitize(&req.engineer);
    let source_ip = req.source_ip.map(|ip| ip.to_string());
    let fail = |code: &str, reason: &str| AuditEvent::SessionMfaFailed {
        engineer: shown.clone(),
        code: code.into(),
        reason: reason.into(),
        by: by.clone(),
        ticket: req.ticket.clone(),
        cluster: req.cluster.clone(),
        source_ip: source_ip.clone(),
    };
    if !valid_uid(&req.engineer) {
        b.store
            .audit(&fail(
                "invalid_engineer",
                "engineer name has characters that are not allowed",
            ))
            .await?;
        return Err(ApiError::BadRequest(
            "invalid engineer name: use letters, digits, '.', '_' and '-' only".into(),
        ));
    }
    let subject = crate::auth::principal("engineer", &req.engineer);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this engineer"))
            .await?;
        return Err(ApiError::MfaFailed(
            "this engineer's access is disabled".into(),
        ));
    }
    if let Some(wait) = reserve_attempt(&b, &subject).await? {
        b.store
            .audit(&fail("locked_out", "too many failed attempts"))
            .await?;
        return Err(ApiError::Locked(wait));
    }
    let outcome = match b.store.engineer_totp(&req.engineer).await {
        Ok(Some(secret)) => spend_totp(&b, &subject, &secret, req.code.expose_secret()).await,
        Ok(None) => Err(Failure::Counted(
            ApiError::LoginFailed(
                "no TOTP is enrolled for this engineer: ask the operator to enroll them".into(),
            ),
            "totp_not_enrolled",
        )),
        Err(e) => Err(Failure::Uncounted(e.into(), "internal")),
    };
    // The login's messages, as a per-session MFA error.
    let as_mfa = |e: ApiError| match e {
        ApiError::LoginFailed(m) => ApiError::MfaFailed(m),
        other => other,
    };
    match outcome {
        Ok(()) => {
            b.store.clear_failures(&subject).await?;
            b.store
                .audit(&AuditEvent::SessionMfaVerified {
                    engineer: req.engineer.clone(),
                    by: by.clone(),
                    ticket: req.ticket.clone(),
                    cluster: req.cluster.clone(),
                    source_ip: source_ip.clone(),
                })
                .await?;
            Ok(Json(serde_json::json!({"ok": true})))
        }
        Err(Failure::Counted(err, code)) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(as_mfa(err))
        }
        Err(Failure::Uncounted(err, code)) => {
            b.store
                .release_attempt(&subject, b.cfg.login.max_failures)
                .await?;
            b.store.audit(&fail(code, &err.to_string())).await?;
            Err(as_mfa(err))
        }
    }
}
