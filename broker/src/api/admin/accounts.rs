//! Engineers' TOTP enrollment, approvers' and reviewers' accounts, and disabling either.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use secrecy::ExposeSecret;

use super::super::{Body, check_name, created};
use super::{admin_event, operator_only};
use crate::auth::{Caller, Role};
use crate::authz::Action;
use crate::directory::hash_argon2;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::Account;
use crate::totp;
use sallyport_api::admin::{DisableInput, Disabled, EnrollEngineer, Enrollment, NewAccount};

pub(super) async fn disable_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    Body(req): Body<DisableInput>,
) -> ApiResult<Json<Disabled>> {
    disable(&b, &caller, "engineer", &name, req.reason).await
}

pub(super) async fn enable_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<Disabled>> {
    enable(&b, &caller, "engineer", &name).await
}

pub(super) async fn disable_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    Body(req): Body<DisableInput>,
) -> ApiResult<Json<Disabled>> {
    disable(&b, &caller, "account", &name, req.reason).await
}

pub(super) async fn enable_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<Disabled>> {
    enable(&b, &caller, "account", &name).await
}

/// Disable an engineer or an account (`kind`): every login is refused until it is enabled, the
/// session tokens already issued are revoked and, for an engineer, every certificate (open
/// sessions end). Audited.
async fn disable(
    b: &Arc<Broker>,
    caller: &Caller,
    kind: &str,
    name: &str,
    reason: Option<String>,
) -> ApiResult<Json<Disabled>> {
    let action = if kind == "engineer" {
        Action::DisableEngineer
    } else {
        Action::DisableAccount
    };
    operator_only(b, caller, action).await?;
    check_name(kind, name)?;
    let reason = reason.unwrap_or_else(|| "disabled by the operator".into());
    if reason.len() > 1024 {
        return Err(ApiError::BadRequest(
            "the reason is longer than 1024 bytes".into(),
        ));
    }
    let principal = crate::auth::principal(kind, name);
    if !b
        .store
        .disable(&principal, &caller.label(), &reason)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "{kind} {name:?} is disabled already"
        )));
    }
    let revoked = if kind == "engineer" {
        // Its certificates, and its session tokens with them.
        crate::api::certs::revoke_and_audit(
            b,
            crate::store::RevokeScope::Engineer,
            name,
            &caller.label(),
            &reason,
        )
        .await?
        .len()
    } else {
        b.store.revoke_sessions(&principal).await?;
        0
    };
    let engineer = (kind == "engineer").then_some(name);
    admin_event(b, caller, action.name(), name, [None, None, None, engineer]).await?;
    Ok(Json(Disabled {
        certificates_revoked: Some(revoked as u64),
        reason: Some(reason),
        ..disabled(kind, name, true)
    }))
}

/// Enable a disabled engineer or account again. Audited.
async fn enable(
    b: &Arc<Broker>,
    caller: &Caller,
    kind: &str,
    name: &str,
) -> ApiResult<Json<Disabled>> {
    let action = if kind == "engineer" {
        Action::EnableEngineer
    } else {
        Action::EnableAccount
    };
    operator_only(b, caller, action).await?;
    check_name(kind, name)?;
    if !b.store.enable(&crate::auth::principal(kind, name)).await? {
        return Err(ApiError::NotFound(format!("a disabled {kind} {name:?}")));
    }
    let engineer = (kind == "engineer").then_some(name);
    admin_event(b, caller, action.name(), name, [None, None, None, engineer]).await?;
    Ok(Json(disabled(kind, name, false)))
}

/// `{"engineer": name}` or `{"account": name}`, disabled or not.
fn disabled(kind: &str, name: &str, disabled: bool) -> Disabled {
    let name = Some(name.to_string());
    let (engineer, account) = match kind {
        "engineer" => (name, None),
        _ => (None, name),
    };
    Disabled {
        engineer,
        account,
        disabled,
        reason: None,
        certificates_revoked: None,
    }
}

pub(super) async fn enroll_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<EnrollEngineer>,
) -> ApiResult<(axum::http::StatusCode, Json<Enrollment>)> {
    operator_only(&b, &caller, Action::EnrollEngineer).await?;
    check_name("engineer", &req.uid)?;
    let secret = totp::new_secret();
    b.store
        .set_engineer_totp(
            &req.uid,
            &b.totp_box.seal(&format!("engineer:{}", req.uid), &secret),
            req.replace,
        )
        .await?;
    admin_event(
        &b,
        &caller,
        "enroll_engineer_totp",
        &req.uid,
        [None, None, None, Some(&req.uid)],
    )
    .await?;
    Ok(created(Enrollment {
        otpauth_uri: totp::otpauth_uri(&secret, &req.uid),
        user: req.uid,
        totp_secret: secret,
    }))
}

pub(super) async fn create_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewAccount>,
) -> ApiResult<(axum::http::StatusCode, Json<Enrollment>)> {
    operator_only(&b, &caller, Action::CreateAccount).await?;
    check_name("user name", &req.username)?;
    let role = Role::parse(&req.role);
    match (role, &req.customer) {
        (Some(Role::Approver), Some(c)) => {
            if !b.store.customer_exists(c).await? {
                return Err(ApiError::NotFound(format!("customer {c:?}")));
            }
        }
        (Some(Role::Reviewer), None) => {}
        (Some(Role::Approver), None) => {
            return Err(ApiError::BadRequest(
                "an approver belongs to a customer: set `customer`".into(),
            ));
        }
        (Some(Role::Reviewer), Some(_)) => {
            return Err(ApiError::BadRequest(
                "a reviewer belongs to no customer".into(),
            ));
        }
        (Some(Role::Operator | Role::TicketSystem | Role::Edge | Role::Engineer) | None, _) => {
            return Err(ApiError::BadRequest(
                "role must be `approver` or `reviewer`".into(),
            ));
        }
    }
    let Some(role) = role else {
        return Err(ApiError::BadRequest(
            "role must be `approver` or `reviewer`".into(),
        ));
    };
    if req.password.expose_secret().chars().count() < 12 {
        return Err(ApiError::BadRequest(
            "the password must be at least 12 characters".into(),
        ));
    }
    let secret = totp::new_secret();
    let account = Account {
        username: req.username.clone(),
        role,
        customer: req.customer.clone(),
        password_hash: hash_argon2(req.password.expose_secret())?,
        totp_secret: b
            .totp_box
            .seal(&format!("account:{}", req.username), &secret),
    };
    b.store.create_account(&account).await?;
    admin_event(
        &b,
        &caller,
        &format!("create_{}", req.role),
        &req.username,
        [req.customer.as_deref(), None, None, None],
    )
    .await?;
    Ok(created(Enrollment {
        otpauth_uri: totp::otpauth_uri(&secret, &req.username),
        user: req.username,
        totp_secret: secret,
    }))
}
