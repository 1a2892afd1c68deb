//! Console sessions: login (password + TOTP, or password + passkey), the viewer of each request, CSRF, logout.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, RequestPartsExt};
use sallyport_ca::clock::now_secs;
use secrecy::SecretString;
use serde::Deserialize;

use super::{message, render};
use crate::audit::AuditEvent;
use crate::auth::{Caller, Role, digest_eq, principal, random_id, token_hash};
use crate::authz::{self, Action, Scope};
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::ConsoleSession;

/// The console session's cookie.
pub const COOKIE: &str = "sallyport_console";
/// The login form's nonce cookie (login CSRF: a form posted from elsewhere has no nonce).
const LOGIN_COOKIE: &str = "sallyport_login";

/// Who is looking at a console page: an approver (of one customer) or a reviewer.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub account: String,
    pub role: Role,
    pub customer: Option<String>,
    pub csrf: String,
    /// The same caller the API sees for this account.
    pub caller: Caller,
    token_sha256: String,
}

impl Viewer {
    /// Whether the viewer may do this kind of action (what a page offers); the action itself
    /// is decided again, on what it is about, by the handler that does it.
    pub fn may(&self, action: Action) -> bool {
        authz::allows(&self.caller, action, Scope::Unread)
    }

    /// The console's page of every audit chain (the menu links it only for those who may).
    pub fn may_read_chains(&self) -> bool {
        self.may(Action::ConsoleChains)
    }

    /// A session's evidence bundle (an export of the audit log).
    pub fn may_export(&self) -> bool {
        self.may(Action::ExportAudit)
    }

    pub fn may_open_hidden_input(&self) -> bool {
        self.may(Action::OpenHiddenInput)
    }

    /// The customer whose data this viewer may see; `None`: every customer's.
    pub fn scope(&self) -> Option<&str> {
        authz::customer_view(&self.caller)
    }

    /// The form's CSRF token is this session's (constant time).
    pub fn check_csrf(&self, sent: &str) -> bool {
        digest_eq(&token_hash(sent), &token_hash(&self.csrf))
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure(b: &Broker) -> &'static str {
    if b.cfg.tls.is_some() { "; Secure" } else { "" }
}

fn set_cookie(b: &Broker, name: &str, value: &str, path: &str) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict{}",
        secure(b)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(b: &Broker, name: &str, path: &str) -> HeaderValue {
    let v = format!(
        "{name}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(b)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// No usable session: to the login page (and the dead cookie dropped).
pub struct LoginFirst {
    clear: Option<HeaderValue>,
}

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        let mut r = Redirect::to("/console/login").into_response();
        if let Some(c) = self.clear {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        r
    }
}

impl FromRequestParts<Arc<Broker>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, b: &Arc<Broker>) -> Result<Viewer, Response> {
        let Some(token) = cookie(&parts.headers, COOKIE).filter(|t| !t.is_empty()) else {
            return Err(LoginFirst { clear: None }.into_response());
        };
        let hash = token_hash(token);
        let peer = parts
            .extract::<ConnectInfo<SocketAddr>>()
            .await
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        match live_session(b, &hash).await {
            Ok(Ok(s)) => {
                let caller = match (s.role, &s.customer) {
                    (Role::Approver, Some(customer)) => Caller::Approver {
                        name: s.account.clone(),
                        customer: customer.clone(),
                    },
                    (Role::Reviewer, _) => Caller::Reviewer {
                        name: s.account.clone(),
                    },
                    (Role::Approver, None)
                    | (Role::Operator | Role::TicketSystem | Role::Edge | Role::Engineer, _) => {
                        return Err(dead(b, &hash, &peer, "the account has no console role").await);
                    }
                };
                if let Err(e) = b.store.touch_console_session(&hash).await {
                    return Err(ApiError::from(e).into_response());
                }
                Ok(Viewer {
                    account: s.account,
                    role: s.role,
                    customer: s.customer,
                    csrf: s.csrf,
                    caller,
                    token_sha256: hash,
                })
            }
            Ok(Err(why)) => Err(dead(b, &hash, &peer, why).await),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// A session that may be used now, or why not.
async fn live_session(
    b: &Broker,
    hash: &str,
) -> Result<Result<ConsoleSession, &'static str>, ApiError> {
    let Some(s) = b.store.console_session(hash).await? else {
        return Ok(Err("unknown or ended console session"));
    };
    let now = now_secs();
    if now >= s.expires_at {
        return Ok(Err("the console session expired"));
    }
    if now >= s.last_seen.saturating_add(b.cfg.console.idle_secs) {
        return Ok(Err("the console session was idle too long"));
    }
    let who = principal(s.role.as_str(), &s.account);
    if b.store.is_disabled(&who).await? {
        return Ok(Err("the account is disabled"));
    }
    if b.store
        .sessions_revoked_at(&who)
        .await?
        .is_some_and(|at| s.created_at <= at)
    {
        return Ok(Err("the account's sessions were revoked"));
    }
    Ok(Ok(s))
}

/// A cookie that no longer opens the console: ended, audited (at most once a minute per source
/// address), and the browser sent to log in.
async fn dead(b: &Broker, hash: &str, peer: &str, why: &str) -> Response {
    let _ = b.store.end_console_session(hash).await;
    if let Some(n) = b
        .refusals
        .allow(&format!("console_session:{peer}"), now_secs())
    {
        let _ = b
            .store
            .audit(&AuditEvent::Refused {
                by: format!("console:{peer}"),
                action: "console_session".into(),
                reason: crate::throttle::with_repeats(why, n),
                customer: None,
                cluster: None,
            })
            .await;
    }
    LoginFirst {
        clear: Some(clear_cookie(b, COOKIE, "/console")),
    }
    .into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    nonce: &'a str,
    user: &'a str,
    error: Option<String>,
}

fn login_form(b: &Broker, status: StatusCode, user: &str, error: Option<String>) -> Response {
    let nonce = random_id();
    let mut r = render(&LoginPage {
        nonce: &nonce,
        user,
        error,
    });
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(b, LOGIN_COOKIE, &nonce, "/console/login"),
    );
    r
}

pub async fn login_page(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, COOKIE)
        && matches!(live_session(&b, &token_hash(token)).await, Ok(Ok(_)))
    {
        return Redirect::to("/console/").into_response();
    }
    login_form(&b, StatusCode::OK, "", None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp: String,
    #[serde(default)]
    nonce: String,
}

pub async fn login(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let nonce_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !f.nonce.is_empty() && digest_eq(&token_hash(c), &token_hash(&f.nonce)));
    if !nonce_ok {
        return login_form(
            &b,
            StatusCode::FORBIDDEN,
            "",
            Some(
                "This login form expired or was sent from another site. Enter your details again."
                    .into(),
            ),
        );
    }
    let user = f.user.trim();
    let account = match crate::api::login::authenticate_account(
        &b,
        peer,
        user,
        &SecretString::from(f.password),
        f.totp.trim(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let status = e.status();
            let text = match &e {
                    ApiError::Internal(_) => {
                        "The broker could not check your login. Try again; if it persists, tell the operator.".to_string()
                    }
                    ApiError::LoginFailed(_) => {
                        "Wrong user name, password or code. Check them and try again (the code changes every 30 seconds and each one works once).".to_string()
                    }
                    other => other.to_string(),
                };
            let shown = crate::audit::sanitize(user);
            return login_form(&b, status, &shown, Some(text));
        }
    };
    if !console_role(&account) {
        return login_form(
            &b,
            StatusCode::FORBIDDEN,
            "",
            Some("This account cannot use the console.".into()),
        );
    }
    match open_session(&b, &account).await {
        Ok(cookies) => {
            let mut r = Redirect::to("/console/").into_response();
            for c in cookies {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

/// A new console session for an account that proved who it is: its cookie, and the login
/// form's nonce cookie cleared.
async fn open_session(
    b: &Broker,
    account: &crate::store::Account,
) -> Result<[HeaderValue; 2], ApiError> {
    let token = format!("spc_{}{}", random_id(), random_id());
    let now = now_secs();
    let s = ConsoleSession {
        account: account.username.clone(),
        role: account.role,
        customer: account.customer.clone(),
        csrf: random_id(),
        created_at: now,
        last_seen: now,
        expires_at: now + b.cfg.console.session_secs,
    };
    let _ = b
        .store
        .sweep_console_sessions(b.cfg.console.idle_secs)
        .await;
    b.store
        .create_console_session(&token_hash(&token), &s)
        .await?;
    Ok([
        set_cookie(b, COOKIE, &token, "/console"),
        clear_cookie(b, LOGIN_COOKIE, "/console/login"),
    ])
}

/// The account may use the console: an approver of a customer, or a reviewer.
fn console_role(account: &crate::store::Account) -> bool {
    match (account.role, &account.customer) {
        (Role::Approver, Some(_)) | (Role::Reviewer, _) => true,
        (Role::Approver, None)
        | (Role::Operator | Role::TicketSystem | Role::Edge | Role::Engineer, _) => false,
    }
}

/// The login form's nonce, as its cookie holds it, when the request carries the same one.
fn login_nonce(headers: &HeaderMap, sent: &str) -> Option<String> {
    cookie(headers, LOGIN_COOKIE)
        .filter(|c| !sent.is_empty() && digest_eq(&token_hash(c), &token_hash(sent)))
        .map(token_hash)
}

const LOGIN_EXPIRED: &str = "This login form expired or was sent from another site. Reload the page and enter your details again.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyStart {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    nonce: String,
}

/// `POST /console/login/passkey/start` (JSON, from the login page's script): the password is
/// checked first, under the same lockouts and audit as a login with a code; only then is a
/// challenge issued for the account's passkeys, bound to this login form, single-use and
/// short-lived. 200 `{ceremony, publicKey}`.
pub async fn passkey_login_start(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Json(f): axum::Json<PasskeyStart>,
) -> Response {
    let Some(nonce) = login_nonce(&headers, &f.nonce) else {
        return ApiError::Forbidden(LOGIN_EXPIRED.into()).into_response();
    };
    let user = f.user.trim();
    let account = match crate::api::login::check_account(
        &b,
        peer,
        user,
        crate::api::login::Proof::Password {
            password: &f.password,
        },
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let no_passkey = |why: &str| AuditEvent::AccountLoginFailed {
        account: account.username.clone(),
        code: "no_passkey".into(),
        reason: why.into(),
    };
    let keys = match b.store.passkeys_of(&account.username).await {
        Ok(k) => k,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if keys.is_empty() || !console_role(&account) {
        let why = if keys.is_empty() {
            "no passkey is registered for this account: log in with the code from your \
             authenticator app, then add a passkey on your account page"
        } else {
            "this account cannot use the console"
        };
        if let Err(e) = b.store.audit(&no_passkey(why)).await {
            return ApiError::Internal(e).into_response();
        }
        return ApiError::Conflict(why.into()).into_response();
    }
    let challenge = match b
        .passkeys
        .start_login(&keys.into_iter().map(|k| k.passkey).collect::<Vec<_>>())
    {
        Ok(c) => c,
        Err(e) => return ApiError::Internal(anyhow::anyhow!(e)).into_response(),
    };
    let ceremony = crate::store::Ceremony {
        id: random_id(),
        kind: "login".into(),
        account: account.username.clone(),
        name: None,
        nonce_sha256: Some(nonce),
        state: challenge.state,
        expires_at: now_secs() + b.cfg.console.passkey_ceremony_secs,
    };
    if let Err(e) = b.store.add_ceremony(&ceremony).await {
        return ApiError::from(e).into_response();
    }
    axum::Json(serde_json::json!({
        "ceremony": ceremony.id,
        "publicKey": challenge.options["publicKey"],
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFinish {
    #[serde(default)]
    user: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    credential: serde_json::Value,
}

/// `POST /console/login/passkey/finish` (JSON): the passkey's answer to the challenge. Checked
/// under the login's lockouts; every outcome audited; on success the session cookie is set and
/// the answer is `{"redirect": "/console/"}`.
pub async fn passkey_login_finish(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Json(f): axum::Json<PasskeyFinish>,
) -> Response {
    let Some(nonce) = login_nonce(&headers, &f.nonce) else {
        return ApiError::Forbidden(LOGIN_EXPIRED.into()).into_response();
    };
    let account = match crate::api::login::check_account(
        &b,
        peer,
        f.user.trim(),
        crate::api::login::Proof::Passkey {
            ceremony: &f.ceremony,
            nonce_sha256: &nonce,
            answer: &f.credential,
        },
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if !console_role(&account) {
        return ApiError::Forbidden("This account cannot use the console.".into()).into_response();
    }
    match open_session(&b, &account).await {
        Ok(cookies) => {
            let mut r = axum::Json(serde_json::json!({"redirect": "/console/"})).into_response();
            for c in cookies {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// A state-changing request is this session's own: its form's CSRF token matches and, when the
/// browser names an `Origin`, it is this broker's.
pub fn form_refused(viewer: &Viewer, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    let origin_ok = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        (Some(_), None) => false,
        (None, _) => true,
    };
    if origin_ok && !csrf.is_empty() && viewer.check_csrf(csrf) {
        return None;
    }
    Some(message(
        StatusCode::FORBIDDEN,
        Some(viewer),
        "Form refused",
        "This form was not sent from this console page (its security token is missing or old). Go back, reload the page and send it again.".into(),
        "/console/",
        "Go to the overview",
    ))
}

/// Audit a refused form (no CSRF token, another site) under the viewer's name.
pub async fn refuse_form(b: &Broker, viewer: &Viewer, action: &str) {
    let _ = b
        .store
        .audit(&AuditEvent::Refused {
            by: viewer.caller.label(),
            action: action.into(),
            reason: "a console form without this session's CSRF token or from another origin"
                .into(),
            customer: viewer.customer.clone(),
            cluster: None,
        })
        .await;
}

pub async fn logout(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, "console_logout").await;
        return r;
    }
    if let Err(e) = b.store.end_console_session(&viewer.token_sha256).await {
        return ApiError::from(e).into_response();
    }
    if let Err(e) = b
        .store
        .audit(&AuditEvent::ConsoleLogout {
            account: viewer.account.clone(),
            role: viewer.role.as_str().into(),
            customer: viewer.customer.clone(),
        })
        .await
    {
        return ApiError::Internal(e).into_response();
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&b, COOKIE, "/console"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("sallyport_console_x=evil; sallyport_console=good; other=1"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("good"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
