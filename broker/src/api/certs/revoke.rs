//! Revocation (`POST /v1/revocations`, and for the other areas that revoke) and the KRL that
//! says what is revoked (`GET /v1/krl`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use russh::keys::ssh_key::HashAlg;
use sallyport_api::certificates::{Revocations, RevokeRequest, Revoked};
use sallyport_ca::Krl;
use sallyport_ca::clock::now_secs;

use crate::api::{Body, permit};
use crate::audit::AuditEvent;
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{GrantRow, RevokeScope};

/// Revoke what matches and record it. The KRL served next includes it.
pub(crate) async fn revoke_and_audit(
    b: &Broker,
    scope: RevokeScope,
    value: &str,
    by: &str,
    reason: &str,
) -> ApiResult<Vec<GrantRow>> {
    if scope == RevokeScope::Engineer {
        // Their session tokens too: one obtained before cannot mint new certificates.
        b.store
            .revoke_sessions(&crate::auth::principal("engineer", value))
            .await?;
    }
    let grants = b.store.revoke(scope, value, reason).await?;
    let single = |f: fn(&GrantRow) -> &String| -> Option<String> {
        let first = grants.first().map(f)?;
        grants.iter().all(|g| f(g) == first).then(|| first.clone())
    };
    b.store
        .audit(&AuditEvent::Revoked {
            scope: scope.as_str().into(),
            target: value.into(),
            serials: grants.iter().map(|g| g.serial.clone()).collect(),
            by: by.into(),
            reason: reason.into(),
            engineer: single(|g| &g.engineer),
            ticket: single(|g| &g.ticket),
            cluster: single(|g| &g.cluster),
        })
        .await?;
    Ok(grants)
}

pub(super) async fn revoke(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<RevokeRequest>,
) -> ApiResult<Json<Revocations>> {
    // An approver revokes only what was issued for its own clusters.
    permit(&b, &caller, Action::Revoke, Scope::Unread).await?;
    let grants = b.store.grants_where(req.scope, &req.value).await?;
    let customers: Vec<&str> = grants.iter().map(|g| g.customer.as_str()).collect();
    permit(&b, &caller, Action::Revoke, Scope::Grants(&customers)).await?;
    if req.value.is_empty() || req.value.len() > 128 || req.reason.len() > 1024 {
        return Err(ApiError::BadRequest(
            "value must be 1-128 bytes and reason at most 1024".into(),
        ));
    }
    let grants = revoke_and_audit(&b, req.scope, &req.value, &caller.label(), &req.reason).await?;
    let revoked = grants
        .into_iter()
        .map(|g| Revoked {
            serial: g.serial,
            grant: g.id,
            engineer: g.engineer,
            key_id: g.key_id,
        })
        .collect();
    Ok(Json(Revocations { revoked }))
}

/// The KRL of every revoked certificate that has not expired yet, in OpenSSH's format.
pub async fn build_krl(b: &Broker) -> anyhow::Result<Vec<u8>> {
    let revoked = b.store.revoked_grants().await?;
    let version = revoked
        .iter()
        .map(|g| g.revoked_at.unwrap_or(0))
        .max()
        .unwrap_or(0);
    let mut krl = Krl::new(
        version
            .saturating_mul(1000)
            .saturating_add(revoked.len() as u64),
        now_secs(),
        "sallyport",
    )?;
    for g in &revoked {
        let Some(ca) = b
            .trusted
            .keys()
            .iter()
            .find(|k| k.fingerprint(HashAlg::Sha256).to_string() == g.ca_fingerprint)
        else {
            continue;
        };
        // By serial only: every certificate has its own random serial, and the KRL (served to
        // anyone) then names no engineer, ticket, grant or cluster.
        let serial: u64 = g.serial.parse()?;
        krl.revoke_serial(ca, serial)?;
    }
    Ok(krl.to_bytes()?)
}

pub(super) async fn krl(State(b): State<Arc<Broker>>) -> ApiResult<Response> {
    let bytes = build_krl(&b).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
