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

use super::{Body, check_name, permit, throttled};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::{Caller, Role};
use crate::authz::{Action, Scope};
use crate::directory::{DirectoryError, valid_uid, verify_argon2};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{RevokeScope, now_secs};
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
    /// Not the user's fault (directory down): not counted. The audit event's reason is the
    /// third field (what went wrong in the operator's terms), the answer the error.
    Uncounted(ApiError, &'static str, String),
}

impl Failure {
    fn uncounted(err: ApiError, code: &'static str) -> Failure {
        let reason = err.to_string();
        Failure::Uncounted(err, code, reason)
    }
}

/// Check a TOTP code and spend its step. Errors name what to do next.
/// `stored` is the TOTP secret as the store holds it (sealed for `subject`).
async fn spend_totp(b: &Broker, subject: &str, stored: &str, code: &str) -> Result<(), Failure> {
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
        throttled(
            &b,
            &format!("invalid:{}", peer.ip()),
            |why| fail("invalid_user_name", why),
            "user name has characters that are not allowed",
        )
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

/// The lockout counters one attempt takes: the user from this source address, the source
/// address over all users, and the user over all addresses, each with its own limit. Someone
/// guessing from one address is stopped by the first two after a few tries without locking the
/// user out anywhere else; guessing one user from many addresses is bounded by the third.
struct Attempt {
    counters: Vec<Counter>,
    principal: String,
    source: String,
    /// The counters this attempt brought to their limit (it begins their lockout).
    reached: std::sync::Mutex<Vec<&'static str>>,
}

struct Counter {
    subject: String,
    /// How the `refusal_burst` event names it.
    name: &'static str,
    max: i64,
    /// What a success does to it. A user's counters start again from nothing; the source
    /// address's counter only gets this attempt back, so that anyone with a valid account cannot
    /// reset an address's count between someone's guesses by logging in from it. It forgets
    /// instead after `lockout_secs` without a failure.
    kind: CounterKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CounterKind {
    User,
    Source,
}

impl Attempt {
    fn new(b: &Broker, principal: &str, source: &str) -> Attempt {
        let l = &b.cfg.login;
        let counter = |subject: String, name: &'static str, max: i64, kind: CounterKind| Counter {
            subject,
            name,
            max,
            kind,
        };
        Attempt {
            counters: vec![
                counter(
                    format!("{principal}@{source}"),
                    "user_from_address",
                    l.max_failures,
                    CounterKind::User,
                ),
                counter(
                    format!("source:{source}"),
                    "address",
                    l.max_failures_per_source,
                    CounterKind::Source,
                ),
                counter(
                    principal.to_string(),
                    "user",
                    l.max_failures_per_user,
                    CounterKind::User,
                ),
            ],
            principal: principal.to_string(),
            source: source.to_string(),
            reached: Default::default(),
        }
    }

    /// This attempt failed: when it was the one that brought a counter to its limit, a lockout
    /// begins — a burst of refusals, audited (and notified) once per lockout as
    /// `refusal_burst`.
    async fn failed(&self, b: &Broker, customer: Option<&str>) -> ApiResult<()> {
        let reached = std::mem::take(&mut *self.reached.lock().unwrap_or_else(|p| p.into_inner()));
        for name in reached {
            let Some(c) = self.counters.iter().find(|c| c.name == name) else {
                continue;
            };
            b.store
                .audit(&AuditEvent::RefusalBurst {
                    principal: sanitize(&self.principal),
                    // The address's counter is about every user from it, not this one.
                    engineer: (c.kind == CounterKind::User)
                        .then(|| self.principal.strip_prefix("engineer:"))
                        .flatten()
                        .map(str::to_string),
                    customer: customer.map(str::to_string),
                    source_ip: (c.kind == CounterKind::Source || c.name == "user_from_address")
                        .then(|| self.source.clone()),
                    counter: c.name.into(),
                    failures: u64::try_from(c.max).unwrap_or(0),
                    locked_secs: b.cfg.login.lockout_secs,
                })
                .await?;
        }
        Ok(())
    }

    /// Before anything is checked, take one attempt on every counter: it counts as a failure
    /// until it succeeds, atomically across replicas, so parallel guesses cannot all be checked
    /// before the lockout counts them. Locked out: nothing is checked, the refusal is audited
    /// (`locked`, throttled) and the error says how long to wait.
    async fn reserve(&self, b: &Broker, locked: impl FnOnce(&str) -> AuditEvent) -> ApiResult<()> {
        match self.take(b).await? {
            None => Ok(()),
            Some(wait) => {
                throttled(
                    b,
                    &self.counters[0].subject,
                    locked,
                    "too many failed attempts",
                )
                .await?;
                Err(ApiError::Locked(wait))
            }
        }
    }

    /// One attempt on every counter; `Some(seconds to wait)` when locked out.
    async fn take(&self, b: &Broker) -> ApiResult<Option<u64>> {
        for c in &self.counters {
            if let Some(wait) = b.store.locked_for(&c.subject).await? {
                return Ok(Some(wait));
            }
        }
        let lockout = b.cfg.login.lockout_secs;
        let mut locked = None;
        for c in &self.counters {
            let forget_after = match c.kind {
                CounterKind::User => None,
                CounterKind::Source => Some(lockout),
            };
            let n = b
                .store
                .record_failure(&c.subject, c.max, lockout, forget_after)
                .await?;
            if n > c.max {
                locked = Some(lockout);
            } else if n == c.max {
                self.reached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c.name);
            }
        }
        Ok(locked)
    }

    /// Not the user's fault (the directory did not answer): give the attempt back.
    async fn release(&self, b: &Broker) -> ApiResult<()> {
        for c in &self.counters {
            b.store.release_attempt(&c.subject, c.max).await?;
        }
        Ok(())
    }

    /// It succeeded: the user's failures in a row start again from nothing; the source
    /// address's count only gets this attempt back.
    async fn succeeded(&self, b: &Broker) -> ApiResult<()> {
        for c in &self.counters {
            match c.kind {
                CounterKind::User => b.store.clear_failures(&c.subject).await?,
                CounterKind::Source => b.store.release_attempt(&c.subject, c.max).await?,
            }
        }
        Ok(())
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

/// What an approver or reviewer proves at login, besides the user name.
pub(crate) enum Proof<'a> {
    /// Password and the current TOTP code: a login.
    Totp {
        password: &'a SecretString,
        code: &'a str,
    },
    /// The password alone, before a passkey challenge is issued (or to add a passkey): not a
    /// login. Success gives the attempt back and is not audited; failures are, as at login.
    Password { password: &'a SecretString },
    /// A passkey's answer to the login challenge `ceremony`, issued (after the password) to the
    /// browser whose login form had the nonce with this SHA-256: a login.
    Passkey {
        ceremony: &'a str,
        nonce_sha256: &'a str,
        answer: &'a serde_json::Value,
    },
}

/// An approver's or reviewer's password and TOTP code checked (the API's and the console's
/// login): lockouts, a disabled account, each outcome audited. The account on success.
pub(crate) async fn authenticate_account(
    b: &Broker,
    peer: SocketAddr,
    user: &str,
    password: &SecretString,
    totp_code: &str,
) -> ApiResult<crate::store::Account> {
    check_account(
        b,
        peer,
        user,
        Proof::Totp {
            password,
            code: totp_code,
        },
    )
    .await
}

/// An account's proof checked under the login's lockouts (per user, per address, both), a
/// disabled account refused, each outcome audited (`account_login_succeeded` names the
/// method). The account on success.
pub(crate) async fn check_account(
    b: &Broker,
    peer: SocketAddr,
    user: &str,
    proof: Proof<'_>,
) -> ApiResult<crate::store::Account> {
    let shown = sanitize(user);
    let fail = |code: &str, reason: &str| AuditEvent::AccountLoginFailed {
        account: shown.clone(),
        code: code.into(),
        reason: reason.into(),
    };
    if !valid_uid(user) {
        throttled(
            b,
            &format!("invalid:{}", peer.ip()),
            |why| fail("invalid_user_name", why),
            "user name has characters that are not allowed",
        )
        .await?;
        return Err(ApiError::BadRequest(
            "invalid user name: use letters, digits, '.', '_' and '-' only".into(),
        ));
    }
    let subject = crate::auth::principal("account", user);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this account"))
            .await?;
        return Err(ApiError::Forbidden(
            "this account is disabled: ask the operator to enable it".into(),
        ));
    }
    let attempt = Attempt::new(b, &subject, &peer.ip().to_string());
    attempt.reserve(b, |why| fail("locked_out", why)).await?;
    let account = b.store.account(user).await?;
    let password_ok = |password: &SecretString| match &account {
        Some(a) => verify_argon2(&a.password_hash, password.expose_secret()),
        None => {
            let _ = crate::directory::hash_argon2(password.expose_secret());
            false
        }
    };
    let bad_credentials = || {
        Failure::Counted(
            ApiError::LoginFailed("wrong user name or password".into()),
            "bad_credentials",
        )
    };
    let outcome: Result<Option<&'static str>, Failure> = match (proof, &account) {
        (Proof::Totp { password, code }, Some(a)) if password_ok(password) => {
            spend_totp(b, &subject, &a.totp_secret, code)
                .await
                .map(|()| Some("totp"))
        }
        (Proof::Password { password }, Some(_)) if password_ok(password) => Ok(None),
        (Proof::Totp { .. } | Proof::Password { .. }, _) => Err(bad_credentials()),
        (
            Proof::Passkey {
                ceremony,
                nonce_sha256,
                answer,
            },
            Some(a),
        ) => passkey_answer(b, a, ceremony, nonce_sha256, answer)
            .await
            .map(|()| Some("passkey")),
        (Proof::Passkey { .. }, None) => Err(bad_credentials()),
    };
    match (outcome, account) {
        (Ok(None), Some(a)) => {
            // The password alone: not a login; the attempt is given back.
            attempt.release(b).await?;
            Ok(a)
        }
        (Ok(Some(method)), Some(a)) => {
            attempt.succeeded(b).await?;
            b.store
                .audit(&AuditEvent::AccountLoginSucceeded {
                    account: a.username.clone(),
                    role: a.role.as_str().into(),
                    customer: a.customer.clone(),
                    method: Some(method.into()),
                })
                .await?;
            Ok(a)
        }
        (Err(Failure::Counted(err, code)), account) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            attempt
                .failed(b, account.as_ref().and_then(|a| a.customer.as_deref()))
                .await?;
            Err(err)
        }
        (Err(Failure::Uncounted(err, code, reason)), _) => {
            attempt.release(b).await?;
            b.store.audit(&fail(code, &reason)).await?;
            Err(err)
        }
        (Ok(_), None) => Err(ApiError::LoginFailed("wrong user name or password".into())),
    }
}

/// A passkey's answer to a login challenge: the challenge taken (once), issued for this account
/// and this browser and not expired; the credential this account's; the signature, origin, user
/// verification and counter checked; the credential's counter stored.
async fn passkey_answer(
    b: &Broker,
    account: &crate::store::Account,
    ceremony: &str,
    nonce_sha256: &str,
    answer: &serde_json::Value,
) -> Result<(), Failure> {
    let counted = |code: &'static str, msg: &str| {
        Err(Failure::Counted(ApiError::LoginFailed(msg.into()), code))
    };
    let c = match b.store.take_ceremony(ceremony, "login").await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return counted(
                "passkey_challenge_unknown",
                "this passkey challenge was already used or never issued: start the passkey \
                 login again",
            );
        }
        Err(e) => return Err(Failure::uncounted(e.into(), "internal")),
    };
    if c.account != account.username
        || !c
            .nonce_sha256
            .as_deref()
            .is_some_and(|n| crate::auth::digest_eq(n, nonce_sha256))
    {
        return counted(
            "passkey_challenge_mismatch",
            "this passkey challenge was issued for another login: start the passkey login again",
        );
    }
    if now_secs() >= c.expires_at {
        let err = ApiError::LoginFailed(
            "this passkey challenge expired: start the passkey login again and use your passkey \
             within the time it asks for"
                .into(),
        );
        let reason = err.to_string();
        return Err(Failure::Uncounted(err, "passkey_challenge_expired", reason));
    }
    let credential = match crate::passkeys::Passkeys::answer_credential(answer) {
        Ok(id) => id,
        Err(e) => return counted(e.code(), &e.to_string()),
    };
    let row = match b.store.passkey_by_credential(&credential).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return counted(
                "unknown_passkey",
                "this passkey is not registered (it may have been removed): use another passkey \
                 or log in with your code",
            );
        }
        Err(e) => return Err(Failure::uncounted(e.into(), "internal")),
    };
    if row.account != account.username {
        return counted(
            "passkey_of_another_account",
            "this passkey belongs to another account: use one registered to yours",
        );
    }
    match b.passkeys.finish_login(&c.state, answer, &row.passkey) {
        Ok(v) if v.credential_id == row.credential_id => {
            if let Err(e) = b.store.passkey_used(&row.id, &v.passkey).await {
                return Err(Failure::uncounted(e.into(), "internal"));
            }
            Ok(())
        }
        Ok(_) => counted(
            "passkey_of_another_account",
            "this passkey belongs to another account: use one registered to yours",
        ),
        Err(e @ crate::passkeys::PasskeyError::Stored(_)) => {
            tracing::error!(error = %e, "a stored passkey or challenge does not read");
            Err(Failure::uncounted(
                ApiError::Internal(anyhow::anyhow!(e)),
                "passkey_unreadable",
            ))
        }
        Err(e) => counted(e.code(), &e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    pub engineer: String,
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

/// `POST /v1/mfa/verify` (edges only): check an engineer's TOTP code for one SSH session.
/// The same check as at login: the enrolled secret, each step once (subject `engineer:<uid>`,
/// shared with login), failures counted toward the same lockout. 200 `{"ok": true}`, 401 with
/// what went wrong, 429 while locked out; every outcome is audited.
pub async fn verify_session_mfa(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<MfaVerifyRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    permit(&b, &caller, Action::VerifySessionMfa, Scope::None).await?;
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
    let now = now_secs();
    let live = check_name("grant", &req.grant).is_ok()
        && b.store
            .grants_where(RevokeScope::Grant, &req.grant)
            .await?
            .iter()
            .any(|g| g.engineer == req.engineer && g.revoked_at.is_none() && g.valid_before > now);
    if !live {
        b.store
            .audit(&fail(
                "no_live_certificate",
                "the engineer holds no live certificate of this grant",
            ))
            .await?;
        return Err(ApiError::MfaFailed(
            "no live certificate of this engineer has this grant: a code is checked only for a connected engineer".into(),
        ));
    }
    // The engineer's own address when the edge says it, else the edge's name.
    let source = source_ip.clone().unwrap_or_else(|| by.clone());
    let attempt = Attempt::new(&b, &subject, &source);
    attempt.reserve(&b, |why| fail("locked_out", why)).await?;
    let outcome = match b.store.engineer_totp(&req.engineer).await {
        Ok(Some(secret)) => spend_totp(&b, &subject, &secret, req.code.expose_secret()).await,
        Ok(None) => Err(Failure::Counted(
            ApiError::LoginFailed(
                "no TOTP is enrolled for this engineer: ask the operator to enroll them".into(),
            ),
            "totp_not_enrolled",
        )),
        Err(e) => Err(Failure::uncounted(e.into(), "internal")),
    };
    // The login's messages, as a per-session MFA error.
    let as_mfa = |e: ApiError| match e {
        ApiError::LoginFailed(m) => ApiError::MfaFailed(m),
        other => other,
    };
    match outcome {
        Ok(()) => {
            attempt.succeeded(&b).await?;
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
            attempt.failed(&b, None).await?;
            Err(as_mfa(err))
        }
        Err(Failure::Uncounted(err, code, reason)) => {
            attempt.release(&b).await?;
            b.store.audit(&fail(code, &reason)).await?;
            Err(as_mfa(err))
        }
    }
}
