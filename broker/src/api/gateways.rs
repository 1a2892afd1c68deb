//! Gateways: the operator creates one per cluster (a one-time join token), the gateway enrolls
//! with it (bringing the public keys of the cluster's node CA and host CA, getting its
//! credential), then reads its configuration, ships its audit chain and uploads recordings.
//! Reviewers read recordings back; anyone may read a cluster's host CA keys (public keys).
//!
//! A gateway acts only for its own cluster and only on its own audit chain
//! (source `gateway:<id>`); every other endpoint refuses it, audited. An edge (API token of role
//! `edge`) ships its own chain (`edge:<name>`) through the same ingest, with the same checks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use russh::keys::PublicKey;
use russh::keys::ssh_key::{Algorithm, HashAlg};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::{admin_event, operator_only};
use super::{Body, check_name, created, refuse, refuse_by};
use crate::audit::{AuditEvent, AuditRecord, GENESIS, sanitize};
use crate::auth::{Caller, new_gateway_credential, new_join_token, random_id, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::recordings::Kept;
use crate::state::Broker;
use crate::store::{Gateway, IngestRefusal, Recording, now_secs};
use sallyport_audit::writers::Writer;

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

/// What an edge says of itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeSelf {
    /// The edge's SSH host public key (OpenSSH line): engineers pin it for the jump hop.
    host_key: String,
    /// `host:port` engineers dial (the edge's `public_address`), if it knows it.
    #[serde(default)]
    address: Option<String>,
}

/// An edge (API token of role edge) registers its host key and public address; engineers get
/// them at their next login (no broker restart after an edge's first start). A change is
/// audited (`admin_change`, action `edge_registered`, the key's fingerprint).
async fn register_edge(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<EdgeSelf>,
) -> ApiResult<Json<Value>> {
    let Caller::Edge { name } = &caller else {
        return Err(refuse(
            &b,
            &caller,
            "register_edge",
            "only an edge registers itself (an API token of role edge)",
            None,
            None,
        )
        .await);
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
    Ok(Json(
        json!({"name": name, "host_key_fingerprint": fingerprint, "address": req.address, "changed": changed}),
    ))
}

/// The gateway's id and cluster, when the caller is a gateway; everyone else is refused.
async fn gateway_only(b: &Broker, caller: &Caller, action: &str) -> ApiResult<(String, String)> {
    match caller {
        Caller::Gateway { id, cluster } => Ok((id.clone(), cluster.clone())),
        Caller::Operator { .. }
        | Caller::Reviewer { .. }
        | Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Edge { .. } => {
            Err(refuse(b, caller, action, "only a gateway may do this", None, None).await)
        }
    }
}

/// The audit chain a caller may write, and what bounds what it may say in it
/// ([`sallyport_audit::writers`]): a gateway writes `gateway:<id>` about its own cluster; an
/// edge writes `edge:<name>` about its own connections (of every cluster: engineers of all
/// clusters pass through it). Everyone else is refused.
async fn chain_writer(b: &Broker, caller: &Caller, action: &str) -> ApiResult<Writer> {
    match caller {
        Caller::Gateway { id, cluster } => Ok(Writer::Gateway {
            id: id.clone(),
            cluster: cluster.clone(),
        }),
        Caller::Edge { name } => Ok(Writer::Edge { name: name.clone() }),
        Caller::Operator { .. }
        | Caller::Reviewer { .. }
        | Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. } => Err(refuse(
            b,
            caller,
            action,
            "only a gateway or an edge may ship audit records",
            None,
            None,
        )
        .await),
    }
}

// --- the operator's side ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGateway {
    name: String,
}

async fn create_gateway(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
    Body(req): Body<NewGateway>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(&b, &caller, "create_gateway").await?;
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
    Ok(created(
        json!({"id": g.id, "name": g.name, "cluster": g.cluster, "join_token": token,
               "join_token_expires_at": g.created_at.saturating_add(b.cfg.gateway_join_token_ttl_secs)}),
    ))
}

async fn list_gateways(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Vec<Gateway>>> {
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound("cluster".into()));
    };
    match &caller {
        Caller::Operator { .. } | Caller::Reviewer { .. } => {}
        // The customer's admins put the node CA key into their nodes' TrustedUserCAKeys.
        Caller::Approver { customer, .. } if customer == &c.customer => {}
        Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Gateway { .. }
        | Caller::Edge { .. } => {
            return Err(refuse(
                &b,
                &caller,
                "list_gateways",
                "not allowed to list this cluster's gateways",
                None,
                Some(&c.id),
            )
            .await);
        }
    }
    Ok(Json(b.store.gateways(&c.id).await?))
}

async fn revoke_gateway(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Gateway>> {
    operator_only(&b, &caller, "revoke_gateway").await?;
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

// --- enrollment: the join token is the credential ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollInput {
    join_token: String,
    node_ca_public_key: String,
    host_ca_public_key: String,
    /// The key that will sign the gateway's audit chain (Ed25519, OpenSSH line).
    audit_public_key: String,
}

/// A CA public key sent by a gateway: one OpenSSH line, Ed25519, not a certificate. Returned
/// re-encoded without its comment (it ends up in engineers' known_hosts files).
fn ca_public_key(what: &str, line: &str) -> Result<(String, String), String> {
    let line = line.trim();
    if line.is_empty() || line.len() > 1024 || line.contains(['\n', '\r']) {
        return Err(format!("{what} must be one OpenSSH public key line"));
    }
    let mut key = PublicKey::from_openssh(line).map_err(|_| {
        format!("{what} is not an OpenSSH public key (a certificate is not accepted either)")
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(format!(
            "{what} is a {} key: the CA keys must be Ed25519 (ssh-ed25519)",
            key.algorithm()
        ));
    }
    key.set_comment("");
    let text = key
        .to_openssh()
        .map_err(|_| format!("{what} cannot be encoded"))?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok((text.trim().to_string(), fingerprint))
}

async fn enroll(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<EnrollInput>,
) -> ApiResult<Json<Value>> {
    const ACTION: &str = "enroll_gateway";
    let anonymous = format!("unknown-join-token@{}", peer.ip());
    let unknown = "unknown join token: ask the operator for a new one";
    if !req.join_token.starts_with("spj_") || req.join_token.len() > 128 {
        return Err(refuse_by(
            &b,
            &anonymous,
            ACTION,
            unknown,
            None,
            None,
            ApiError::Forbidden(unknown.into()),
        )
        .await);
    }
    let hash = token_hash(&req.join_token);
    let Some(g) = b.store.gateway_by_join_token(&hash).await? else {
        return Err(refuse_by(
            &b,
            &anonymous,
            ACTION,
            unknown,
            None,
            None,
            ApiError::Forbidden(unknown.into()),
        )
        .await);
    };
    let customer = b.store.cluster(&g.cluster).await?.map(|c| c.customer);
    let by = format!("gateway:{}", g.id);
    let refused = |reason: String, error: ApiError| {
        let b = b.clone();
        let by = by.clone();
        let g = g.clone();
        let customer = customer.clone();
        async move {
            refuse_by(
                &b,
                &by,
                ACTION,
                &reason,
                customer.as_deref(),
                Some(&g.cluster),
                error,
            )
            .await
        }
    };
    // Checked before the token is spent, so a wrong key does not burn it.
    let keys = ca_public_key("node_ca_public_key", &req.node_ca_public_key).and_then(|n| {
        let h = ca_public_key("host_ca_public_key", &req.host_ca_public_key)?;
        if n.0 == h.0 {
            return Err("the node CA and the host CA must be different keys".into());
        }
        let (_, a, _) = sallyport_ca::chainsig::audit_public_key(&req.audit_public_key)
            .map_err(|e| format!("audit_public_key: {e}"))?;
        if a == n.0 || a == h.0 {
            return Err(
                "audit_public_key must be a key of its own, not the node CA or the host CA".into(),
            );
        }
        if b.trusted.keys().iter().any(|k| {
            k.fingerprint(HashAlg::Sha256).to_string() == n.1
                || k.fingerprint(HashAlg::Sha256).to_string() == h.1
        }) {
            return Err("a gateway's CA key must not be the broker's user CA".into());
        }
        Ok((n, h))
    });
    let ((node_ca, node_fp), (host_ca, host_fp)) = match keys {
        Ok(k) => k,
        Err(reason) => return Err(refused(reason.clone(), ApiError::BadRequest(reason)).await),
    };
    let (_, audit_key, audit_fp) = sallyport_ca::chainsig::audit_public_key(&req.audit_public_key)
        .map_err(ApiError::BadRequest)?;
    if g.revoked_at.is_some() {
        let reason = "this gateway was revoked: ask the operator for a new one".to_string();
        return Err(refused(reason.clone(), ApiError::Forbidden(reason)).await);
    }
    let ttl = b.cfg.gateway_join_token_ttl_secs;
    if g.enrolled_at.is_none() && now_secs() > g.created_at.saturating_add(ttl) {
        let reason = format!(
            "this join token expired ({} h after it was made): ask the operator for a new gateway \
             and join token (POST /v1/clusters/{}/gateways)",
            ttl / 3600,
            g.cluster
        );
        return Err(refused(reason.clone(), ApiError::Forbidden(reason)).await);
    }
    let credential = new_gateway_credential();
    if !b
        .store
        .enroll_gateway(
            &hash,
            &node_ca,
            &host_ca,
            &token_hash(&credential),
            (&audit_key, &audit_fp),
        )
        .await
        .map_err(ApiError::Internal)?
    {
        let reason =
            "this join token was already used: a join token enrolls one gateway, once".to_string();
        return Err(refused(reason.clone(), ApiError::Forbidden(reason)).await);
    }
    b.store
        .audit(&AuditEvent::GatewayEnrolled {
            gateway: g.id.clone(),
            name: g.name.clone(),
            cluster: g.cluster.clone(),
            customer: customer.clone().unwrap_or_default(),
            node_ca: node_fp,
            host_ca: host_fp,
            audit_key: audit_fp.clone(),
            source_ip: Some(peer.ip().to_string()),
        })
        .await?;
    // The credential is shown once: only its hash is stored.
    Ok(Json(
        json!({"gateway": g.id, "cluster": g.cluster, "credential": credential,
               "audit_key_fingerprint": audit_fp}),
    ))
}

// --- public: what engineers' clients trust for `*.<cluster>` ---

async fn host_ca(
    State(b): State<Arc<Broker>>,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Value>> {
    check_name("cluster", &cluster)?;
    // An unknown cluster answers like a cluster without gateways: public callers cannot probe
    // which clusters (customers) exist.
    let keys = b.store.host_ca_keys(&cluster).await?;
    Ok(Json(
        json!({"cluster": cluster, "host_ca_public_keys": keys}),
    ))
}

// --- the gateway's side ---

async fn gateway_self(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<Value>> {
    let (id, cluster) = gateway_only(&b, &caller, "gateway_self").await?;
    let g = b
        .store
        .gateway(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("gateway".into()))?;
    let customer = b.store.cluster(&cluster).await?.map(|c| c.customer);
    // The customer's own policies: the gateway asks them with its own for every channel
    // request (each policy names the cluster it is about).
    let policies: Vec<Value> = match &customer {
        Some(c) => b
            .store
            .policies(c)
            .await?
            .into_iter()
            .map(|p| json!({"name": p.name, "body": p.body}))
            .collect(),
        None => Vec::new(),
    };
    let nodes: Vec<Value> = b
        .store
        .nodes(&cluster)
        .await?
        .into_iter()
        .map(|n| {
            json!({"name": n.name, "address": n.address, "port": n.port,
                   "host_keys": n.host_keys, "trust_on_first_use": n.trust_on_first_use})
        })
        .collect();
    let user_ca: Vec<String> = b
        .trusted
        .keys()
        .iter()
        .filter_map(|k| k.to_openssh().ok())
        .collect();
    Ok(Json(json!({
        "id": id,
        "name": g.name,
        "cluster": cluster,
        "customer": customer,
        "nodes": nodes,
        "policies": policies,
        "user_ca": user_ca,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestInput {
    #[serde(default)]
    records: Vec<AuditRecord>,
    /// The highest sequence number in the sender's spool: what the broker should hold once
    /// shipping catches up. Sent with every batch, and alone when a batch cannot be sent.
    #[serde(default)]
    head: Option<u64>,
    /// The sender's signature (armored SSHSIG) of its chain's head at the batch's last record:
    /// required with every non-empty batch.
    #[serde(default)]
    signature: Option<String>,
    /// The public key that made it (OpenSSH line): pinned at the chain's first signed batch when
    /// no key is pinned yet (an edge), else it must be the pinned one.
    #[serde(default)]
    public_key: Option<String>,
}

/// Store a batch of the caller's own chain (a gateway's or an edge's). The batch must be
/// consecutive and chained, and its first record must continue what is stored (or start the
/// chain at seq 1 from 64 zeros). Each record must be of a kind its writer may write, with
/// subject fields it may set ([`sallyport_audit::writers::check`]), and the batch's last record
/// must be signed by the chain's pinned key. Records already stored identically are
/// acknowledged again; a different record at a stored sequence number is a fork: 409, audited.
/// A refusal names the record and the reason, is audited, and stores nothing.
async fn ingest(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<IngestInput>,
) -> ApiResult<Json<Value>> {
    const ACTION: &str = "audit_ingest";
    let writer = chain_writer(&b, &caller, ACTION).await?;
    let source = writer.source();
    let cluster = match &writer {
        Writer::Gateway { cluster, .. } => Some(cluster.clone()),
        Writer::Edge { .. } => None,
    };
    let records = req.records;
    if let Some(head) = req.head {
        b.store.report_audit_head(&source, head).await?;
    }
    let refused = |reason: String, error: ApiError| {
        let b = b.clone();
        let caller = caller.clone();
        let cluster = cluster.clone();
        async move {
            refuse_by(
                &b,
                &caller.label(),
                ACTION,
                &reason,
                None,
                cluster.as_deref(),
                error,
            )
            .await
        }
    };
    if records.iter().any(|r| r.source != source) {
        return Err(refuse(
            &b,
            &caller,
            ACTION,
            &format!("a gateway or an edge may only write its own chain (source {source:?})"),
            None,
            cluster.as_deref(),
        )
        .await);
    }
    for r in &records {
        let bad = |m: String| ApiError::BadRequest(format!("record {}: {m}", r.seq));
        if r.seq == 0 {
            return Err(bad("sequence numbers start at 1".into()));
        }
        if r.compute_hash() != r.hash {
            return Err(bad("hash does not match the record's contents".into()));
        }
        // What this source may say: its kinds, its subject fields, valid names, its own
        // cluster (a gateway) or its own connections (an edge).
        if let Err(why) = sallyport_audit::writers::check(&writer, &r.kind, &r.data) {
            let reason = format!("record {} of {source} refused: {why}", r.seq);
            return Err(refused(reason.clone(), ApiError::Forbidden(reason)).await);
        }
    }
    for w in records.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(ApiError::BadRequest(format!(
                "record {} follows record {}: send consecutive records in order",
                w[1].seq, w[0].seq
            )));
        }
    }
    let fork = |seq: u64, why: &str| {
        let b = b.clone();
        let caller = caller.clone();
        let cluster = cluster.clone();
        let reason = format!("record {seq} of {source} {why}");
        async move {
            refuse_by(
                &b,
                &caller.label(),
                ACTION,
                &reason,
                None,
                cluster.as_deref(),
                ApiError::Conflict(reason.clone()),
            )
            .await
        }
    };
    for w in records.windows(2) {
        if w[1].prev_hash != w[0].hash {
            return Err(fork(
                w[1].seq,
                "does not continue the record before it (prev_hash)",
            )
            .await);
        }
    }
    if let Some(first) = records.first() {
        let want = if first.seq == 1 {
            Some(GENESIS.to_string())
        } else {
            b.store.audit_hash(&source, first.seq - 1).await?
        };
        match want {
            None => {
                let head = b.store.audit_head(&source).await?.map_or(0, |(s, _)| s);
                return Err(ApiError::Conflict(format!(
                    "the broker holds {source} through record {head}: send from record {}",
                    head + 1
                )));
            }
            Some(h) if h != first.prev_hash => {
                return Err(fork(
                    first.seq,
                    "does not continue the stored chain (prev_hash): the chain forks",
                )
                .await);
            }
            Some(_) => {}
        }
    }
    // The batch's last record, signed by the chain's key: it covers the whole batch (and every
    // stored record before it) through the hash chain checked above.
    let signature = match records.last() {
        Some(last) => {
            match check_signature(&b, &source, last, &req.signature, &req.public_key).await? {
                Ok(sig) => Some(sig),
                Err((reason, error)) => return Err(refused(reason, error).await),
            }
        }
        None => None,
    };
    let stored = match b.store.ingest(&records).await {
        Ok(n) => n,
        Err(e) => match e.downcast_ref::<IngestRefusal>() {
            Some(IngestRefusal::Fork { seq, .. }) => {
                return Err(fork(*seq, "differs from the stored one: the chain forks").await);
            }
            Some(IngestRefusal::BadHash { seq, .. }) => {
                return Err(ApiError::BadRequest(format!(
                    "record {seq}: hash does not match the record's contents"
                )));
            }
            None => return Err(ApiError::Internal(e)),
        },
    };
    if let (Some(last), Some(signature)) = (records.last(), signature) {
        b.store
            .store_signature(&source, last.seq, &last.hash, &signature)
            .await?;
    }
    // Every stored record's predecessor was stored first, so the head is contiguous from 1.
    let head = b.store.audit_head(&source).await?.map_or(0, |(s, _)| s);
    Ok(Json(
        json!({"stored": stored, "acknowledged_through": head}),
    ))
}

/// Check the signature of a batch's last record against the key pinned for `source` (pinned
/// here, audited, when the chain has none yet: an edge's first signed batch, or a gateway
/// enrolled before chains were signed). `Ok(Err((reason, answer)))`: refused.
async fn check_signature(
    b: &Broker,
    source: &str,
    last: &AuditRecord,
    signature: &Option<String>,
    public_key: &Option<String>,
) -> ApiResult<Result<String, (String, ApiError)>> {
    use sallyport_ca::chainsig::{audit_public_key, verify_head};
    let bad = |m: String| Ok(Err((m.clone(), ApiError::BadRequest(m))));
    let forbidden = |m: String| Ok(Err((m.clone(), ApiError::Forbidden(m))));
    let seq = last.seq;
    let Some(signature) = signature else {
        return bad(format!(
            "record {seq}: the batch is not signed: a batch of {source} carries the signature of \
             its last record by the chain's key (signature, public_key)"
        ));
    };
    if signature.len() > 4096 {
        return bad(format!("record {seq}: the signature is too long"));
    }
    let offered = match public_key.as_deref().map(audit_public_key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return bad(format!("record {seq}: public_key: {e}")),
    };
    let pinned = b.store.audit_key(source).await?;
    let (key, to_pin) = match (pinned, offered) {
        (Some((line, fp)), offered) => {
            if let Some((_, offered_line, offered_fp)) = &offered
                && *offered_line != line
            {
                return forbidden(format!(
                    "record {seq}: the batch is signed by the key {offered_fp}, not by the key \
                     pinned for {source} ({fp})"
                ));
            }
            let Ok((key, _, _)) = audit_public_key(&line) else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "the key pinned for {source} does not parse"
                )));
            };
            (key, None)
        }
        (None, Some((key, line, fp))) => (key, Some((line, fp))),
        (None, None) => {
            return bad(format!(
                "record {seq}: no key is pinned for {source} yet: send the chain's public_key \
                 with the batch"
            ));
        }
    };
    if let Err(e) = verify_head(&key, source, seq, &last.hash, signature) {
        return forbidden(format!(
            "record {seq}: the signature of {source}'s head does not hold: {e}"
        ));
    }
    if let Some((line, fp)) = to_pin {
        if b.store
            .pin_audit_key(source, &line, &fp, "first_batch")
            .await?
        {
            b.store
                .audit(&AuditEvent::AuditKeyPinned {
                    chain: source.to_string(),
                    fingerprint: fp,
                    pinned_by: "first_batch".into(),
                })
                .await?;
        } else if b.store.audit_key(source).await?.map(|(l, _)| l) != Some(line) {
            return forbidden(format!(
                "record {seq}: another key was pinned for {source} meanwhile"
            ));
        }
    }
    Ok(Ok(signature.clone()))
}

// --- recordings ---

/// Session ids name files: `[A-Za-z0-9_-]{1,64}`, nothing else (the rule of subject fields).
use sallyport_audit::writers::valid_session;

fn check_session(s: &str) -> ApiResult<()> {
    if valid_session(s) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid session id {:?}: use letters, digits, '_' and '-' (at most 64)",
            sanitize(s)
        )))
    }
}

#[derive(Deserialize)]
struct RecordingMeta {
    engineer: Option<String>,
    ticket: Option<String>,
    node: Option<String>,
    kind: Option<String>,
}

/// An optional name from the query, checked like every name.
fn optional_name(what: &str, v: &Option<String>) -> ApiResult<Option<String>> {
    match v {
        Some(v) => {
            check_name(what, v)?;
            Ok(Some(v.clone()))
        }
        None => Ok(None),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::Rejected(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the recording is larger than max_recording_bytes ({limit} bytes)"),
    )
}

async fn upload_recording(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
    Query(meta): Query<RecordingMeta>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    const ACTION: &str = "upload_recording";
    let (gateway, cluster) = gateway_only(&b, &caller, ACTION).await?;
    check_session(&session)?;
    let mut engineer = optional_name("engineer", &meta.engineer)?;
    let mut ticket = optional_name("ticket", &meta.ticket)?;
    let mut node = optional_name("node", &meta.node)?;
    let kind = optional_name("kind", &meta.kind)?.unwrap_or_else(|| "session".into());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/octet-stream" {
        return Err(ApiError::Rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the recording as Content-Type: application/octet-stream".into(),
        ));
    }
    let limit = b.cfg.max_recording_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    check_name("cluster", &cluster)?;
    let storing = b.recordings.storing();
    let received = storing.receive(&cluster, &session, body, limit).await?;
    let (size, sha256) = (received.size, received.sha256.clone());
    // What the query does not say, the gateway's own audit records of the session do.
    // A channel's recording is named `<session>-c<channel>`: its session's records say who.
    if engineer.is_none() || ticket.is_none() || node.is_none() {
        let source = format!("gateway:{gateway}");
        let of_session = session
            .rsplit_once("-c")
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .map(|(s, _)| s.to_string());
        for id in std::iter::once(session.clone()).chain(of_session) {
            match b.store.session_subjects(&source, &id).await {
                Ok(Some((e, t, n))) => {
                    engineer = engineer.or(e);
                    ticket = ticket.or(t);
                    node = node.or(n);
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let row = Recording {
        session: session.clone(),
        gateway: gateway.clone(),
        cluster: cluster.clone(),
        engineer,
        ticket,
        node,
        kind,
        size,
        sha256: sha256.clone(),
        // Set by the store that keeps it.
        path: String::new(),
        created_at: now_secs(),
        storage: storing.storage(),
    };
    let stored = storing.keep(row.clone(), received).await?;
    if let Kept::Existing(old) = stored {
        if old.cluster != cluster || old.sha256 != sha256 || old.size != size {
            return Err(refuse_by(
                &b,
                &caller.label(),
                ACTION,
                &format!("a different recording of session {session} is already stored"),
                None,
                Some(&cluster),
                ApiError::Conflict(format!(
                    "a different recording of session {session} is already stored"
                )),
            )
            .await);
        }
        // The same bytes again (a retry): fine.
        return Ok(Json(
            json!({"session": session, "size": size, "sha256": sha256, "stored": false}),
        )
        .into_response());
    }
    b.store
        .audit(&AuditEvent::RecordingStored {
            session: session.clone(),
            gateway,
            cluster,
            engineer: row.engineer.clone(),
            ticket: row.ticket.clone(),
            node: row.node.clone(),
            recording_kind: row.kind.clone(),
            size,
            sha256: sha256.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"session": session, "size": size, "sha256": sha256, "stored": true})),
    )
        .into_response())
}

async fn download_recording(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(session): Path<String>,
) -> ApiResult<Response> {
    let own = match &caller {
        Caller::Reviewer { .. } | Caller::Operator { .. } => None,
        // A customer sees everything done on its own nodes.
        Caller::Approver { customer, .. } => Some(customer.clone()),
        Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Gateway { .. }
        | Caller::Edge { .. } => {
            return Err(refuse(
                &b,
                &caller,
                "read_recording",
                "only reviewers, the operator and the customer's approvers may read recordings",
                None,
                None,
            )
            .await);
        }
    };
    check_session(&session)?;
    let Some(r) = b.store.recording(&session).await? else {
        return Err(ApiError::NotFound("recording".into()));
    };
    if !super::in_scope(
        &b,
        &caller,
        own.as_deref(),
        &r.cluster,
        "read_recording",
        "a recording of another customer's cluster",
    )
    .await?
    {
        return Err(ApiError::NotFound("recording".into()));
    }
    let Some(opened) = b.recordings.open(&r).await? else {
        return Err(ApiError::NotFound("recording file".into()));
    };
    b.store
        .audit(&AuditEvent::RecordingRead {
            session: r.session.clone(),
            by: caller.label(),
            cluster: r.cluster.clone(),
            engineer: r.engineer.clone(),
            ticket: r.ticket.clone(),
            node: r.node.clone(),
        })
        .await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(opened.reader));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, r.size.to_string()),
            (
                header::HeaderName::from_static("x-sallyport-sha256"),
                r.sha256.clone(),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_plain() {
        for ok in ["s-1", "ABC_def-09", &"x".repeat(64)] {
            assert!(valid_session(ok), "{ok}");
        }
        for bad in [
            "",
            "../../etc",
            "a/b",
            "a.cast",
            "..",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_session(bad), "{bad:?}");
        }
    }

    #[test]
    fn ca_keys_must_be_ed25519_lines() {
        let k = sallyport_ca::keys::generate_ed25519("gw node ca").unwrap();
        let line = k.public_key().to_openssh().unwrap();
        let (text, _) = ca_public_key("k", &line).unwrap();
        assert!(
            text.starts_with("ssh-ed25519 ") && !text.contains("gw node ca"),
            "{text}"
        );
        assert!(ca_public_key("k", "garbage").is_err());
        assert!(ca_public_key("k", &format!("{line}\n{line}")).is_err());
    }
}
