//! Issuing certificates (the policy decision, then the CA), revocation, and the KRL.
//!
//! The issuance in `issue.rs` (its refusals, audited, in `denied.rs`); revocation and the KRL
//! in `revoke.rs`; the certificates' list and the CA keys here.

mod denied;
mod issue;
mod revoke;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::permit;
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::GrantRow;
use issue::issue;
pub(crate) use revoke::revoke_and_audit;
use revoke::{krl, revoke};

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/certificates", post(issue).get(list_certificates))
        .route("/v1/revocations", post(revoke))
        .route("/v1/krl", get(krl))
        .route("/v1/ca", get(ca_keys))
}

use sallyport_api::certificates::CaKeys;
pub use sallyport_api::certificates::{IssueRequest, Issued};

#[derive(Deserialize)]
struct ListCerts {
    engineer: Option<String>,
}

async fn list_certificates(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ListCerts>,
) -> ApiResult<Json<Vec<GrantRow>>> {
    permit(&b, &caller, Action::ListCertificates, Scope::None).await?;
    // An engineer sees its own; reviewers and the operator whose they ask for.
    let engineer = caller.engineer().map(str::to_string).or(q.engineer);
    Ok(Json(b.store.live_grants(engineer.as_deref()).await?))
}

async fn ca_keys(State(b): State<Arc<Broker>>) -> ApiResult<Json<CaKeys>> {
    let signing = b
        .user_ca
        .public_key()
        .to_openssh()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let trusted: Vec<String> = b
        .trusted
        .keys()
        .iter()
        .filter_map(|k| k.to_openssh().ok())
        .collect();
    // Signed by the CA that signs certificates now: edges and gateways take a changed set only
    // when a CA they trust already vouches for it.
    let signature = b
        .trusted
        .sign(&b.user_ca)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(CaKeys {
        user_ca: signing,
        trusted_user_cas: trusted,
        signature,
    }))
}
