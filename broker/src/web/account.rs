//! The viewer's own account page: the passkeys that may stand in for the TOTP code at login —
//! listed, added (with the password typed again, so a stolen session cookie alone cannot add
//! one) and removed. Every change is an `admin_change` naming the account; every refusal a
//! `refused` event.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use sallyport_ca::clock::now_secs;
use secrecy::SecretString;
use serde::Deserialize;

use super::session::{CsrfForm, form_refused, refuse_form};
use super::{Viewer, When, api_error, message, render};
use crate::audit::AuditEvent;
use crate::auth::random_id;
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::{Ceremony, PasskeyRow};

struct PasskeyView {
    p: PasskeyRow,
    added: When,
    used: Option<When>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    nav: Option<&'a Viewer>,
    passkeys: Vec<PasskeyView>,
    rp_id: &'a str,
}

pub async fn account(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let passkeys = match b.store.passkeys_of(&viewer.account).await {
        Ok(p) => p,
        Err(e) => return api_error(&viewer, e.into(), "/console/"),
    };
    render(&AccountPage {
        nav: Some(&viewer),
        passkeys: passkeys
            .into_iter()
            .map(|p| PasskeyView {
                added: When::secs(p.created_at),
                used: p.last_used_at.map(When::secs),
                p,
            })
            .collect(),
        rp_id: &b.passkeys.rp.rp_id,
    })
}

/// A passkey's name: what its owner calls the device, plain text of at most 40 characters.
fn check_passkey_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 40
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "name the passkey after its device in at most 40 letters, digits, spaces and - _ . ' ( ) (e.g. \"Work laptop\")".into(),
        ))
    }
}

async fn refuse(b: &Broker, viewer: &Viewer, action: &str, err: ApiError) -> Response {
    if let Err(e) = b
        .store
        .audit(&AuditEvent::Refused {
            by: viewer.caller.label(),
            action: action.into(),
            reason: err.to_string(),
            customer: viewer.customer.clone(),
            cluster: None,
        })
        .await
    {
        return ApiError::Internal(e).into_response();
    }
    err.into_response()
}

const CSRF_REFUSED: &str = "this request was not sent from this console page (its security token is missing or old): reload the page and try again";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStart {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: SecretString,
}

/// `POST /console/account/passkeys/start` (JSON): the password typed again (checked under the
/// login's lockouts and audited like a login's), then a registration challenge, single-use and
/// short-lived. 200 `{ceremony, publicKey}`.
pub async fn register_start(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    viewer: Viewer,
    headers: HeaderMap,
    Json(f): Json<RegisterStart>,
) -> Response {
    const ACTION: &str = "register_passkey";
    if form_refused(&viewer, &headers, &f.csrf).is_some() {
        refuse_form(&b, &viewer, ACTION).await;
        return ApiError::Forbidden(CSRF_REFUSED.into()).into_response();
    }
    let name = f.name.trim();
    if let Err(e) = check_passkey_name(name) {
        return e.into_response();
    }
    if let Err(e) = crate::api::login::check_account(
        &b,
        peer,
        &viewer.account,
        crate::api::login::Proof::Password {
            password: &f.password,
        },
    )
    .await
    {
        let e = match e {
            ApiError::LoginFailed(_) => ApiError::Forbidden(
                "wrong password: type your account's password again to add a passkey".into(),
            ),
            other => other,
        };
        return refuse(&b, &viewer, ACTION, e).await;
    }
    let existing = match b.store.passkeys_of(&viewer.account).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if existing.iter().any(|p| p.name == name) {
        return ApiError::Conflict(format!(
            "you already have a passkey named {name:?}: choose another name"
        ))
        .into_response();
    }
    let ids: Vec<String> = existing.into_iter().map(|p| p.credential_id).collect();
    let challenge = match b.passkeys.start_registration(&viewer.account, &ids) {
        Ok(c) => c,
        Err(e) => return ApiError::Internal(anyhow::anyhow!(e)).into_response(),
    };
    let ceremony = Ceremony {
        id: random_id(),
        kind: "register".into(),
        account: viewer.account.clone(),
        name: Some(name.to_string()),
        nonce_sha256: None,
        state: challenge.state,
        expires_at: now_secs() + b.cfg.console.passkey_ceremony_secs,
    };
    if let Err(e) = b.store.add_ceremony(&ceremony).await {
        return ApiError::from(e).into_response();
    }
    Json(serde_json::json!({
        "ceremony": ceremony.id,
        "publicKey": challenge.options["publicKey"],
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    credential: serde_json::Value,
}

/// `POST /console/account/passkeys/finish` (JSON): the authenticator's new credential for the
/// challenge; stored and audited. 201 `{"id", "name"}`.
pub async fn register_finish(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    headers: HeaderMap,
    Json(f): Json<RegisterFinish>,
) -> Response {
    const ACTION: &str = "register_passkey";
    if form_refused(&viewer, &headers, &f.csrf).is_some() {
        refuse_form(&b, &viewer, ACTION).await;
        return ApiError::Forbidden(CSRF_REFUSED.into()).into_response();
    }
    let c = match b.store.take_ceremony(&f.ceremony, "register").await {
        Ok(Some(c)) if c.account == viewer.account => c,
        Ok(_) => {
            let e = ApiError::Conflict(
                "this passkey challenge was already used or never issued to you: start adding the passkey again".into(),
            );
            return refuse(&b, &viewer, ACTION, e).await;
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if now_secs() >= c.expires_at {
        let e = ApiError::Conflict(
            "this passkey challenge expired: start adding the passkey again".into(),
        );
        return refuse(&b, &viewer, ACTION, e).await;
    }
    let made = match b.passkeys.finish_registration(&c.state, &f.credential) {
        Ok(m) => m,
        Err(e) => {
            let e = ApiError::BadRequest(format!("{e}: the passkey was not added"));
            return refuse(&b, &viewer, ACTION, e).await;
        }
    };
    let name = c.name.unwrap_or_default();
    let row = PasskeyRow {
        id: format!("pk_{}", random_id()),
        account: viewer.account.clone(),
        name: name.clone(),
        credential_id: made.credential_id,
        passkey: made.passkey,
        created_at: now_secs(),
        last_used_at: None,
    };
    match b.store.add_passkey(&row).await {
        Ok(true) => {}
        Ok(false) => {
            let e = ApiError::Conflict("this passkey is already registered".into());
            return refuse(&b, &viewer, ACTION, e).await;
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    if let Err(e) = b.store.audit(&change(&viewer, ACTION, &row)).await {
        return ApiError::Internal(e).into_response();
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"id": row.id, "name": name})),
    )
        .into_response()
}

/// The audit event of a change to the viewer's passkeys.
fn change(viewer: &Viewer, action: &str, p: &PasskeyRow) -> AuditEvent {
    AuditEvent::AdminChange {
        action: action.into(),
        target: format!("{} passkey {} ({})", viewer.account, p.id, p.name),
        by: viewer.caller.label(),
        customer: viewer.customer.clone(),
        cluster: None,
        node: None,
        engineer: None,
    }
}

/// `POST /console/account/passkeys/{id}/remove` (form).
pub async fn remove(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    const ACTION: &str = "remove_passkey";
    if let Some(r) = form_refused(&viewer, &headers, &f.csrf) {
        refuse_form(&b, &viewer, ACTION).await;
        return r;
    }
    match b.store.remove_passkey(&viewer.account, &id).await {
        Ok(Some(p)) => {
            if let Err(e) = b.store.audit(&change(&viewer, ACTION, &p)).await {
                return api_error(&viewer, ApiError::Internal(e), "/console/account");
            }
            Redirect::to("/console/account").into_response()
        }
        Ok(None) => message(
            StatusCode::NOT_FOUND,
            Some(&viewer),
            "Not found",
            "You have no such passkey (it may have been removed already).".into(),
            "/console/account",
            "Back to your account",
        ),
        Err(e) => api_error(&viewer, e.into(), "/console/account"),
    }
}
