//! The web console at `/console/`: server-rendered pages (askama templates compiled into the
//! binary, assets embedded) for customer approvers and the vendor's reviewers.
//!
//! - Login with password + TOTP, or password + passkey (WebAuthn, `passkeys.js`; the password
//!   is checked before a challenge is issued), through the API's account check (same lockouts
//!   and audit events); passkeys are added and removed on `/console/account`; the
//!   session is server-side (`console_sessions`): the cookie holds a random token (HttpOnly,
//!   SameSite=Strict, `Path=/console`, `Secure` under HTTPS), the store its SHA-256. A session
//!   ends at logout, after `[console] idle_secs` unused, `session_secs` after its login, and
//!   when the operator disables the account or revokes its sessions.
//! - Every state-changing form carries the session's CSRF token (checked in constant time) and
//!   a cross-site `Origin` is refused; the login form carries a nonce bound to a cookie.
//! - Every page and action goes through the API's own handlers with the viewer as the
//!   [`Caller`], so a page can never show or change more than the API allows that account.
//! - Strict headers on every response: a CSP allowing only 'self' (no inline script or style),
//!   `frame-ancestors 'none'`, nosniff, no referrer to other sites, no caching.

mod account;
mod pages;
mod policies;
mod session;
mod webhooks;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::Broker;

pub use session::{COOKIE, Viewer};

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");
const PLAYER_JS: &str = include_str!("../../assets/player.js");
const LIVE_JS: &str = include_str!("../../assets/live.js");
const PASSKEYS_JS: &str = include_str!("../../assets/passkeys.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::overview))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route(
            "/console/login/passkey/start",
            post(session::passkey_login_start),
        )
        .route(
            "/console/login/passkey/finish",
            post(session::passkey_login_finish),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/account", get(account::account))
        .route(
            "/console/account/passkeys/start",
            post(account::register_start),
        )
        .route(
            "/console/account/passkeys/finish",
            post(account::register_finish),
        )
        .route(
            "/console/account/passkeys/{passkey}/remove",
            post(account::remove),
        )
        .route("/console/sessions", get(pages::sessions))
        .route("/console/sessions/{session}", get(pages::session_page))
        .route("/console/sessions/{session}/watch", get(pages::watch_page))
        .route(
            "/console/sessions/{session}/bundle",
            get(pages::session_bundle),
        )
        .route("/console/sessions/{session}/live", get(pages::watch_data))
        .route(
            "/console/sessions/{session}/terminate",
            post(pages::terminate_session),
        )
        .route(
            "/console/sessions/{session}/unseal",
            post(pages::unseal_hidden_input),
        )
        .route("/console/chains", get(pages::chains))
        .route(
            "/console/policies",
            get(policies::policies).post(policies::save),
        )
        .route("/console/policies/{name}/delete", post(policies::delete))
        .route("/console/report", get(pages::report))
        .route("/console/search", get(pages::search))
        .route("/console/requests", get(pages::requests))
        .route(
            "/console/requests/{request}/decision",
            post(pages::decide_request),
        )
        .route(
            "/console/approvals",
            get(pages::approvals).post(pages::create_approval),
        )
        .route(
            "/console/approvals/{approval}/withdraw",
            get(pages::withdraw_page).post(pages::withdraw_approval),
        )
        .route(
            "/console/webhooks",
            get(webhooks::webhooks).post(webhooks::create),
        )
        .route("/console/webhooks/{webhook}/delete", post(webhooks::delete))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/assets/player.js", get(player_js))
        .route("/console/assets/live.js", get(live_js))
        .route("/console/assets/passkeys.js", get(passkeys_js))
        .route("/console/recordings/{recording}", get(pages::replay_page))
        .route(
            "/console/recordings/{recording}/frames",
            get(pages::replay_frames),
        )
        .route("/console/{*rest}", get(|| async { not_found() }))
        .layer(middleware::from_fn(headers))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    script(JS)
}

async fn player_js() -> impl IntoResponse {
    script(PLAYER_JS)
}

async fn live_js() -> impl IntoResponse {
    script(LIVE_JS)
}

async fn passkeys_js() -> impl IntoResponse {
    script(PASSKEYS_JS)
}

fn script(text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
}

/// The security headers of every console response.
async fn headers(req: axum::extract::Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/console/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A page, or the error page when the template fails.
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>This page could not be shown. Try again; if it persists, tell the operator (the broker's log says why).</p>".to_string()),
            )
                .into_response()
        }
    }
}

/// A page that says what went wrong and what to do next.
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct MessagePage<'a> {
    pub nav: Option<&'a Viewer>,
    pub title: &'a str,
    pub message: String,
    pub next_href: &'a str,
    pub next_label: &'a str,
}

pub(crate) fn message(
    status: StatusCode,
    viewer: Option<&Viewer>,
    title: &str,
    message: String,
    next_href: &str,
    next_label: &str,
) -> Response {
    let mut r = render(&MessagePage {
        nav: viewer,
        title,
        message,
        next_href,
        next_label,
    });
    *r.status_mut() = status;
    r
}

pub(crate) fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        None,
        "Not found",
        "There is no such page in the console.".into(),
        "/console/",
        "Go to the overview",
    )
}

/// An API error shown as a page: the API's own message, its status, a way on.
pub(crate) fn api_error(viewer: &Viewer, e: ApiError, back: &str) -> Response {
    let status = e.status();
    let title = match &e {
        ApiError::Forbidden(_) | ApiError::Denied(_) => "Not allowed",
        ApiError::NotFound(_) => "Not found",
        ApiError::BadRequest(_) | ApiError::Unprocessable(_) | ApiError::Rejected(..) => {
            "Check the form"
        }
        ApiError::Conflict(_) => "Already done",
        ApiError::Internal(_) => "Something went wrong",
        _ => "Refused",
    };
    let text = match &e {
        ApiError::Internal(err) => {
            tracing::error!(error = ?err, "internal error in the console");
            "The broker could not do this. Try again; if it persists, tell the operator (the broker's log says why).".to_string()
        }
        other => other.to_string(),
    };
    message(status, Some(viewer), title, text, back, "Back")
}

/// Unix milliseconds as a `<time>` element's parts: RFC 3339 (UTC) and a short UTC text; the
/// console's script shows it in the viewer's local time with the UTC text on hover.
#[derive(Debug, Clone)]
pub(crate) struct When {
    pub iso: String,
    pub text: String,
}

impl When {
    pub fn ms(ms: u64) -> When {
        let iso = crate::timefmt::seconds(ms);
        let text = format!("{} UTC", iso.trim_end_matches('Z').replacen('T', " ", 1));
        When { iso, text }
    }

    pub fn secs(s: u64) -> When {
        When::ms(s.saturating_mul(1000))
    }
}

/// A duration as people read it: `42 s`, `3 min 5 s`, `2 h 10 min`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        let w = When::ms(1_780_000_000_123);
        assert_eq!(w.iso, "2026-05-28T20:26:40Z");
        assert_eq!(w.text, "2026-05-28 20:26:40 UTC");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(duration(7_800_000), "2 h 10 min");
    }

    #[test]
    fn the_csp_allows_only_self_and_no_framing() {
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(CSP.contains("script-src 'self'"));
        assert!(!CSP.contains("unsafe-inline"));
        assert!(!CSP.contains("http"));
    }
}
