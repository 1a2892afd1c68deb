//! A cluster's nodes: where the gateway connects, and the host keys it accepts.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::super::{Body, check_name, created, permit};
use super::{admin_event, operator_only};
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store;
use sallyport_api::admin::{NewNode, Node, NodeChange};

/// At most this many host keys per node (one per key type is the usual).
const MAX_HOST_KEYS: usize = 16;

fn check_address(address: &str) -> ApiResult<()> {
    if address.is_empty()
        || address.len() > 253
        || address.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest("invalid node address".into()));
    }
    Ok(())
}

/// The node's host keys as the gateway compares them: each a real OpenSSH public key (no
/// certificate, no private key), written `<algorithm> <base64>` without its comment, once each.
pub(crate) fn check_host_keys(lines: &[String]) -> ApiResult<Vec<String>> {
    if lines.len() > MAX_HOST_KEYS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_HOST_KEYS} host keys per node"
        )));
    }
    let mut keys: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let line = line.trim();
        let algorithm = line.split_whitespace().next().unwrap_or_default();
        if algorithm.ends_with("-cert-v01@openssh.com") {
            return Err(ApiError::BadRequest(format!(
                "host key {n} is an SSH certificate, not a public key: register the node's host \
                 public key (its ssh_host_*_key.pub), or the CA that signs its host certificates \
                 as the cluster's node_host_ca"
            )));
        }
        let key = russh::keys::PublicKey::from_openssh(line).map_err(|_| {
            ApiError::BadRequest(format!(
                "host key {n} is not an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`, \
                 as in the node's /etc/ssh/ssh_host_ed25519_key.pub)"
            ))
        })?;
        if let russh::keys::Algorithm::Other(_) = key.algorithm() {
            return Err(ApiError::BadRequest(format!(
                "host key {n} is of an unknown type ({})",
                crate::audit::sanitize(algorithm)
            )));
        }
        let bare = russh::keys::PublicKey::new(key.key_data().clone(), "")
            .to_openssh()
            .map_err(|_| ApiError::BadRequest(format!("host key {n} cannot be written")))?;
        if !keys.contains(&bare) {
            keys.push(bare);
        }
    }
    Ok(keys)
}

pub(super) async fn create_node(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
    Body(req): Body<NewNode>,
) -> ApiResult<(axum::http::StatusCode, Json<Node>)> {
    operator_only(&b, &caller, Action::CreateNode).await?;
    check_name("node", &req.name)?;
    check_address(&req.address)?;
    let host_keys = check_host_keys(&req.host_keys)?;
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&cluster)
        )));
    };
    let n = store::Node {
        cluster: c.id.clone(),
        name: req.name,
        address: req.address,
        port: req.port,
        host_keys,
        trust_on_first_use: req.trust_on_first_use,
    };
    b.store.create_node(&n).await?;
    admin_event(
        &b,
        &caller,
        "create_node",
        &n.name,
        [Some(&c.customer), Some(&c.id), Some(&n.name), None],
    )
    .await?;
    Ok(created(n))
}

/// Change a node: its address or port, its registered host keys (replaced as a whole), whether
/// the gateway may trust its key on first use. What is not named stays.
pub(super) async fn update_node(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path((cluster, node)): Path<(String, String)>,
    Body(req): Body<NodeChange>,
) -> ApiResult<Json<Node>> {
    operator_only(&b, &caller, Action::UpdateNode).await?;
    if let Some(a) = &req.address {
        check_address(a)?;
    }
    let host_keys = req.host_keys.as_deref().map(check_host_keys).transpose()?;
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&cluster)
        )));
    };
    let Some(mut n) = b.store.node(&c.id, &node).await? else {
        return Err(ApiError::NotFound(format!(
            "node {:?} of cluster {}",
            crate::audit::sanitize(&node),
            c.id
        )));
    };
    if let Some(a) = req.address {
        n.address = a;
    }
    if let Some(p) = req.port {
        n.port = p;
    }
    if let Some(k) = host_keys {
        n.host_keys = k;
    }
    if let Some(t) = req.trust_on_first_use {
        n.trust_on_first_use = t;
    }
    if !b.store.update_node(&n).await? {
        return Err(ApiError::NotFound(format!("node {:?}", n.name)));
    }
    admin_event(
        &b,
        &caller,
        "update_node",
        &n.name,
        [Some(&c.customer), Some(&c.id), Some(&n.name), None],
    )
    .await?;
    Ok(Json(n))
}

pub(super) async fn list_nodes(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Vec<Node>>> {
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound("cluster".into()));
    };
    let scope = Scope::Cluster {
        customer: Some(&c.customer),
        cluster: &c.id,
    };
    permit(&b, &caller, Action::ListNodes, scope).await?;
    let nodes = b.store.nodes(&c.id).await?;
    Ok(Json(nodes))
}
