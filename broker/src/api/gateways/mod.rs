//! Gateways: the operator creates one per cluster (a one-time join token), the gateway enrolls
//! with it (bringing the public keys of the cluster's node CA and host CA, getting its
//! credential), then reads its configuration, ships its audit chain and uploads recordings.
//! Reviewers read recordings back; anyone may read a cluster's host CA keys (public keys).
//!
//! A gateway acts only for its own cluster and only on its own audit chain
//! (source `gateway:<id>`); every other endpoint refuses it, audited. An edge (API token of role
//! `edge`) ships its own chain (`edge:<name>`) through the same ingest, with the same checks.

mod enroll;
mod ingest;
mod recordings;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use russh::keys::PublicKey;
use russh::keys::ssh_key::HashAlg;
use sallyport_api::gateways::{
    GatewayCreated, GatewayNode, GatewaySelf, HostCa, NamedPolicy, NewGateway,
};
use sallyport_api::identity::{EdgeRegistered, EdgeSelf};
use sallyport_ca::clock::now_secs;

use super::admin::{admin_event, operator_only};
use super::{Body, check_name, created, not_the_caller, permit};
use crate::audit::sanitize;
use crate::auth::{Caller, new_join_token, random_id, token_hash};
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::Gateway;
use enroll::enroll;
use ingest::ingest;
use recordings::{download_recording, upload_recording};

/// `ingest_limit`: the largest batch of audit records accepted (`max_ingest_bytes`).
pub fn router(ingest_limit: usize) -> Router<Arc<Broker>> {
    Router::new()
        .route(
            "/v1/clusters/{cluster}/gateways",
            post(create_gateway).get(list_gateways),
        )
        .route("/v1/clusters/{cluster}/host-ca", get(host_ca))
        .route("/v1/gateways/enroll", post(enroll))
        .route("/v1/gateways/{gateway}", delete(revoke_gateway))
        .route("/v1/gateway/self", get(gateway_self))
        .route("/v1/edge/self", post(register_edge))
        .route(
            "/v1/audit/records",
            // Batches of audit records have their own limit (max_ingest_bytes); senders size
            // their batches under it and halve them on 413.
            post(ingest).layer(axum::extract::DefaultBodyLimit::max(ingest_limit)),
        )
        .route(
            "/v1/recordings/{session}",
            put(upload_recording).get(download_recording),
        )
}

/// An edge (API token of role edge) registers its host key and public address; engineers get
/// them at their next login (no broker restart after an edge's first start). A change is
/// audited (`admin_change`, action `edge_registered`, the key's fingerprint).
async fn register_edge(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<EdgeSelf>,
) -> ApiResult<Json<EdgeRegistered>> {
    permit(&b, &caller, Action::RegisterEdge, Scope::None).await?;
    let Caller::Edge { name } = &caller else {
        return Err(not_the_caller(Action::RegisterEdge));
    };
    let key = PublicKey::from_openssh(req.host_key.trim()).map_err(|_| {
        ApiError::BadRequest(
            "host_key must be an OpenSSH public key line (the edge's data_dir/host_key.pub)".into(),
        )
    })?;
    let mut bare = key.clone();
    bare.set_comment("");
    let line = bare
        .to_openssh()
        .map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(a) = &req.address {
        crate::config::split_host_port(a).map_err(|_| {
            ApiError::BadRequest(format!(
                "address {:?}: expected host:port (what engineers dial)",
                sanitize(a)
            ))
        })?;
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let changed = b
        .store
        .register_edge(name, &line, req.address.as_deref())
        .await?;
    if changed {
        admin_event(
            &b,
            &caller,
            "edge_registered",
            &format!(
                "{name} host key {fingerprint} address {}",
                req.address.as_deref().unwrap_or("-")
            ),
            [None, None, None, None],
        )
        .await?;
    }
    Ok(Json(EdgeRegistered {
        name: name.clone(),
        host_key_fingerprint: fingerprint,
        address: req.address,
        changed,
    }))
}

/// The gateway's id and cluster, when the caller is a gateway; everyone else is refused.
pub(super) async fn gateway_only(
    b: &Broker,
    caller: &Caller,
    action: Action,
) -> ApiResult<(String, String)> {
    permit(b, caller, action, Scope::None).await?;
    caller
        .gateway()
        .map(|(id, cluster)| (id.to_string(), cluster.to_string()))
        .ok_or_else(|| not_the_caller(action))
}

// --- the operator's side ---

async fn create_gateway(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
    Body(req): Body<NewGateway>,
) -> ApiResult<(StatusCode, Json<GatewayCreated>)> {
    operator_only(&b, &caller, Action::CreateGateway).await?;
    check_name("gateway name", &req.name)?;
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            sanitize(&cluster)
        )));
    };
    let token = new_join_token();
    let g = Gateway {
        id: format!("gw-{}", &random_id()[..16]),
        cluster: c.id.clone(),
        name: req.name,
        created_at: now_secs(),
        enrolled_at: None,
        node_ca_public_key: None,
        host_ca_public_key: None,
        revoked_at: None,
    };
    b.store
        .create_gateway(&g, &token_hash(&token))
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => ApiError::Conflict(format!(
                "cluster {} already has a gateway named {}",
                g.cluster, g.name
            )),
            other => other,
        })?;
    admin_event(
        &b,
        &caller,
        "create_gateway",
        &g.id,
        [Some(&c.customer), Some(&c.id), None, None],
    )
    .await?;
    // The join token is shown once: only its hash is stored.
    Ok(created(GatewayCreated {
        join_token_expires_at: g
            .created_at
            .saturating_add(b.cfg.gateway_join_token_ttl_secs),
        id: g.id,
        name: g.name,
        cluster: g.cluster,
        join_token: token,
    }))
}

async fn list_gateways(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Vec<Gateway>>> {
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound("cluster".into()));
    };
    // The customer's admins put the node CA key into their nodes' TrustedUserCAKeys.
    let scope = Scope::Cluster {
        customer: Some(&c.customer),
        cluster: &c.id,
    };
    permit(&b, &caller, Action::ListGateways, scope).await?;
    let gateways = b.store.gateways(&c.id).await?;
    Ok(Json(gateways))
}

async fn revoke_gateway(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Gateway>> {
    operator_only(&b, &caller, Action::RevokeGateway).await?;
    let Some(g) = b.store.gateway(&id).await? else {
        return Err(ApiError::NotFound("gateway".into()));
    };
    if b.store.revoke_gateway(&g.id).await? {
        let customer = b.store.cluster(&g.cluster).await?.map(|c| c.customer);
        admin_event(
            &b,
            &caller,
            "revoke_gateway",
            &g.id,
            [customer.as_deref(), Some(&g.cluster), None, None],
        )
        .await?;
    }
    let g = b
        .store
        .gateway(&g.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("gateway".into()))?;
    Ok(Json(g))
}

// --- public: what engineers' clients trust for `*.<cluster>` ---

async fn host_ca(
    State(b): State<Arc<Broker>>,
    Path(cluster): Path<String>,
) -> ApiResult<Json<HostCa>> {
    check_name("cluster", &cluster)?;
    // An unknown cluster answers like a cluster without gateways: public callers cannot probe
    // which clusters (customers) exist.
    let host_ca_public_keys = b.store.host_ca_keys(&cluster).await?;
    Ok(Json(HostCa {
        cluster,
        host_ca_public_keys,
    }))
}

// --- the gateway's side ---

async fn gateway_self(
    State(b): State<Arc<Broker>>,
    caller: Caller,
) -> ApiResult<Json<GatewaySelf>> {
    let (id, cluster) = gateway_only(&b, &caller, Action::GatewaySelf).await?;
    let g = b
        .store
        .gateway(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("gateway".into()))?;
    let customer = b.store.cluster(&cluster).await?.map(|c| c.customer);
    // The customer's own policies: the gateway asks them with its own for every channel
    // request (each policy names the cluster it is about).
    let policies = match &customer {
        Some(c) => b
            .store
            .policies(c)
            .await?
            .into_iter()
            .map(|p| NamedPolicy {
                name: p.name,
                body: p.body,
            })
            .collect(),
        None => Vec::new(),
    };
    let nodes = b
        .store
        .nodes(&cluster)
        .await?
        .into_iter()
        .map(|n| GatewayNode {
            name: n.name,
            address: n.address,
            port: n.port,
            host_keys: n.host_keys,
            trust_on_first_use: n.trust_on_first_use,
        })
        .collect();
    let user_ca: Vec<String> = b
        .trusted
        .keys()
        .iter()
        .filter_map(|k| k.to_openssh().ok())
        .collect();
    Ok(Json(GatewaySelf {
        id,
        name: g.name,
        cluster,
        customer,
        nodes,
        policies,
        user_ca,
        hidden_input_key: Some(b.hidden_input.seal_key().to_text()),
    }))
}
