//! Logins: engineers (directory bind + groups + TOTP) and local accounts (approvers and
//! reviewers: argon2 password + TOTP), and the per-session TOTP check an edge asks for when a
//! certificate carries `mfa@sallyport.dev`. Each TOTP step is accepted once (login and session
//! checks share the table, so a code used for one is refused for the other); failures count
//! toward one lockout per user; every outcome is an AuditEvent. The lockout counters are in
//! `attempt.rs`, the accounts' logins in `account.rs`, the per-session check in `mfa.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};

use super::{Body, throttled};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::Role;
use crate::directory::{DirectoryError, valid_uid};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::totp;

mod account;
mod attempt;
mod mfa;

pub(crate) use account::{Proof, authenticate_account, check_account};
use attempt::Attempt;
pub use mfa::verify_session_mfa;
pub use sallyport_api::login::{LoginRequest, LoginResponse};
use sallyport_ca::clock::now_secs;

pub(super) enum Failure {
    /// Counted toward the lockout.
    Counted(ApiError, &'static str),
    /// Not the user's fault (directory down): not counted. The audit event's reason is the
    /// third field (what went wrong in the operator's terms), the answer the error.
    Uncounted(ApiError, &'static str, String),
}

impl Failure {
    pub(super) fn uncounted(err: ApiError, code: &'static str) -> Failure {
        let reason = err.to_string();
        Failure::Uncounted(err, code, reason)
    }
}

/// Check a TOTP code and spend its step. Errors name what to do next.
/// `stored` is the TOTP secret as the store holds it (sealed for `subject`).
pub(super) async fn spend_totp(
    b: &Broker,
    subject: &str,
    stored: &str,
    code: &str,
) -> Result<(), Failure> {
    let secret = match b.totp_box.open(subject, stored) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(subject, error = %e, "a TOTP secret does not open");
            let message = match e {
                crate::secretbox::SealError::NotSealed => {
                    "your TOTP secret is stored in clear, which this broker never writes (someone \
                     changed the database): it is refused; tell the operator"
                }
                _ => {
                    "your TOTP secret cannot be read by this broker (its totp_key_file differs \
                     from the one that sealed it): tell the operator"
                }
            };
            return Err(Failure::uncounted(
                ApiError::Unavailable(message.into()),
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
        Err(e) => Err(Failure::uncounted(ApiError::from(e), "internal")),
    }
}

/// A user name with characters that are not allowed is refused (400), and audited through
/// `fail` as `invalid_user_name` as often as the refusal throttle lets one address be.
async fn check_user_name(
    b: &Broker,
    peer: SocketAddr,
    user: &str,
    fail: impl Fn(&str, &str) -> AuditEvent,
) -> ApiResult<()> {
    if valid_uid(user) {
        return Ok(());
    }
    throttled(
        b,
        &format!("invalid:{}", peer.ip()),
        |why| fail("invalid_user_name", why),
        "user name has characters that are not allowed",
    )
    .await?;
    Err(ApiError::BadRequest(
        "invalid user name: use letters, digits, '.', '_' and '-' only".into(),
    ))
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
    check_user_name(&b, peer, &req.user, &fail).await?;
    let subject = crate::auth::principal("engineer", &req.user);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this engineer"))
            .await?;
        return Err(ApiError::Forbidden(
            "your access is disabled: ask the operator to enable you".into(),
        ));
    }
    let attempt = Attempt::new(&b, &subject, &peer.ip().to_string());
    attempt.reserve(&b, |why| fail("locked_out", why)).await?;
    let outcome: Result<Vec<String>, Failure> = async {
        let groups = match b.directory().authenticate(&req.user, &req.password).await {
            Ok(g) => g,
            Err(e @ (DirectoryError::BadCredentials | DirectoryError::NotInDirectory)) => {
                return Err(Failure::Counted(
                    ApiError::LoginFailed(DirectoryError::BadCredentials.to_string()),
                    e.code(),
                ));
            }
            Err(e @ (DirectoryError::Unavailable(_) | DirectoryError::Tls(_))) => {
                tracing::warn!(detail = %e.detail(), "directory unavailable");
                return Err(Failure::Uncounted(
                    ApiError::Unavailable(e.to_string()),
                    e.code(),
                    e.detail(),
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
            Err(e) => return Err(Failure::uncounted(e.into(), "internal")),
        };
        spend_totp(&b, &subject, &secret, &req.totp).await?;
        Ok(groups)
    }
    .await;
    match outcome {
        Ok(groups) => {
            attempt.succeeded(&b).await?;
            let (token, exp) =
                b.jwt
                    .issue(&req.user, Role::Engineer, groups.clone(), None, true)?;
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
                role: Role::Engineer.as_str().into(),
                groups,
                customer: None,
            }))
        }
        Err(Failure::Counted(err, code)) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            attempt.failed(&b, None).await?;
            Err(err)
        }
        Err(Failure::Uncounted(err, code, reason)) => {
            attempt.release(&b).await?;
            b.store.audit(&fail(code, &reason)).await?;
            Err(err)
        }
    }
}

pub async fn account_login(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let a = authenticate_account(&b, peer, &req.user, &req.password, &req.totp).await?;
    let (token, exp) = b
        .jwt
        .issue(&a.username, a.role, vec![], a.customer.clone(), true)?;
    Ok(Json(LoginResponse {
        token,
        expires_at: exp,
        user: a.username,
        role: a.role.as_str().into(),
        groups: vec![],
        customer: a.customer,
    }))
}
