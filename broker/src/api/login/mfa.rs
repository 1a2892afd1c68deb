//! The per-session TOTP check an edge asks for when a certificate carries `mfa@sallyport.dev`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use secrecy::ExposeSecret;

use super::super::{Body, check_name, permit};
use super::{Attempt, Failure, spend_totp};
use crate::audit::{AuditEvent, sanitize};
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::directory::valid_uid;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::RevokeScope;
use sallyport_api::login::{MfaVerified, MfaVerifyRequest};
use sallyport_ca::clock::now_secs;

/// `POST /v1/mfa/verify` (edges only): check an engineer's TOTP code for one SSH session.
/// The same check as at login: the enrolled secret, each step once (subject `engineer:<uid>`,
/// shared with login), failures counted toward the same lockout. 200 `{"ok": true}`, 401 with
/// what went wrong, 429 while locked out; every outcome is audited.
pub async fn verify_session_mfa(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<MfaVerifyRequest>,
) -> ApiResult<Json<MfaVerified>> {
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
            Ok(Json(MfaVerified { ok: true }))
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
