//! Enrollment: a gateway brings the public keys of its cluster's node CA and host CA and its
//! audit key with the one-time join token, and gets its credential.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use russh::keys::PublicKey;
use russh::keys::ssh_key::{Algorithm, HashAlg};

use crate::api::{Body, refuse_by};
use crate::audit::AuditEvent;
use crate::auth::{new_gateway_credential, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use sallyport_api::gateways::{EnrollRequest, Enrolled};
use sallyport_ca::clock::now_secs;

// --- enrollment: the join token is the credential ---

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

pub(super) async fn enroll(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<EnrollRequest>,
) -> ApiResult<Json<Enrolled>> {
    const ACTION: &str = "enroll_gateway";
    let anonymous = format!("unknown-join-token@{}", peer.ip());
    let unknown = "unknown join token: ask the operator for a new one";
    // A token not in sallyport's form is not looked up; either way it is unknown.
    let well_formed = req.join_token.starts_with("spj_") && req.join_token.len() <= 128;
    let hash = token_hash(&req.join_token);
    let found = match well_formed {
        true => b.store.gateway_by_join_token(&hash).await?,
        false => None,
    };
    let Some(g) = found else {
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
    Ok(Json(Enrolled {
        gateway: g.id,
        cluster: g.cluster,
        credential,
        audit_key_fingerprint: audit_fp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
