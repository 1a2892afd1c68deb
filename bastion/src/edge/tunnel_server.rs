//! The gateways' listener: a gateway authenticates with a certificate signed by its cluster's
//! host CA (principal `gateway:<cluster>`, the CA keys as the broker lists them) and asks for a
//! remote forward, which lists its connection as a tunnel of its cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::{Certificate, PublicKey};
use russh::server::{Auth, Server, Session};
use sallyport_ca::clock::now_secs;

use sallyport_api::gateways::HostCa;
use serde_json::json;

use super::Edge;
use crate::trust::split_target;

impl Edge {
    /// The host CA keys the broker lists for `cluster` now, kept as the last copy.
    pub(super) async fn fetch_host_cas(&self, cluster: &str) -> anyhow::Result<Vec<PublicKey>> {
        let v: HostCa = self
            .broker
            .get_as(&format!("/v1/clusters/{cluster}/host-ca"))
            .await?;
        let keys: Vec<PublicKey> = v
            .host_ca_public_keys
            .iter()
            .filter_map(|k| PublicKey::from_openssh(k).ok())
            .collect();
        if let Ok(mut m) = self.host_cas.lock() {
            m.insert(cluster.to_string(), keys.clone());
        }
        Ok(keys)
    }

    /// The host CA keys of `cluster`: the broker's answer, or the last copy while it is down.
    pub(super) async fn cluster_host_cas(&self, cluster: &str) -> Vec<PublicKey> {
        match self.fetch_host_cas(cluster).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, cluster, "cannot ask the broker for host CA keys; using the last copy");
                self.host_cas
                    .lock()
                    .ok()
                    .and_then(|m| m.get(cluster).cloned())
                    .unwrap_or_default()
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct TunnelServer(pub(super) Arc<Edge>);

impl Server for TunnelServer {
    type Handler = TunnelHandler;
    fn new_client(&mut self, peer: Option<SocketAddr>) -> TunnelHandler {
        TunnelHandler {
            edge: self.0.clone(),
            peer,
            cluster: None,
            ca: None,
            expires: 0,
            registered: None,
        }
    }
}

pub struct TunnelHandler {
    pub(super) edge: Arc<Edge>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) cluster: Option<String>,
    /// The fingerprint of the host CA that signed the gateway's certificate.
    pub(super) ca: Option<String>,
    /// When the gateway's certificate expires.
    pub(super) expires: u64,
    pub(super) registered: Option<u64>,
}

impl Drop for TunnelHandler {
    fn drop(&mut self) {
        if let (Some(c), Some(id)) = (&self.cluster, self.registered) {
            self.edge.tunnels.remove(c, id);
            tracing::info!(cluster = c, "gateway tunnel closed");
        }
    }
}

impl russh::server::Handler for TunnelHandler {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let Some(cluster) = user.strip_prefix("gateway:") else {
            return Ok(Auth::reject());
        };
        if split_target(&format!("x.{cluster}")).is_none() {
            return Ok(Auth::reject());
        }
        let cas = self.edge.cluster_host_cas(cluster).await;
        let fps: Vec<_> = cas
            .iter()
            .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256))
            .collect();
        let ok = !fps.is_empty()
            && cert.cert_type() == russh::keys::ssh_key::certificate::CertType::User
            && cert.validate_at(now_secs(), fps.iter()).is_ok()
            && cert.valid_principals().iter().any(|p| p == user);
        if ok {
            tracing::info!(peer = ?self.peer, cluster, key_id = cert.key_id(), "gateway authenticated");
            self.cluster = Some(cluster.to_string());
            self.expires = cert.valid_before();
            self.ca = Some(
                cert.signature_key()
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string(),
            );
            Ok(Auth::Accept)
        } else {
            tracing::warn!(peer = ?self.peer, cluster, "gateway certificate refused");
            Ok(Auth::reject())
        }
    }

    /// A gateway's certificate russh refused itself: outside its validity window by this edge's
    /// clock (the gateway signs it with its own clock, backdated 60 s), or a CA signature that
    /// does not verify. Logged and audited (`edge_refused`, code `gateway_certificate`, a few
    /// a minute per cluster) with what the two clocks say, so the operator knows which to fix.
    async fn auth_certificate_refused(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<(), Self::Error> {
        let now = now_secs();
        let reason = if now < cert.valid_after() {
            format!(
                "the gateway's certificate is not valid yet by this edge's clock (valid from {}, \
                 now {now}): the gateway's clock is ahead of the edge's; check both clocks",
                cert.valid_after()
            )
        } else if now >= cert.valid_before() {
            format!(
                "the gateway's certificate expired by this edge's clock (valid until {}, now \
                 {now}): check both clocks",
                cert.valid_before()
            )
        } else {
            "the gateway's certificate has a CA signature that does not verify".to_string()
        };
        let cluster = user.strip_prefix("gateway:").unwrap_or_default();
        tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), reason, "gateway certificate refused");
        self.edge
            .audit_repeatable(
                &format!("tunnel:{cluster}:gateway_certificate"),
                json!({"code": "gateway_certificate", "reason": reason,
                       "key_id": cert.key_id(), "cluster": cluster,
                       "peer": self.peer.map(|p| p.to_string())}),
            )
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(cluster) = &self.cluster else {
            return Ok(false);
        };
        if self.registered.is_none() {
            let ca = self.ca.clone().unwrap_or_default();
            self.registered = Some(self.edge.tunnels.add(
                cluster,
                session.handle(),
                ca,
                self.expires,
            ));
            tracing::info!(cluster, "gateway tunnel up");
        }
        Ok(true)
    }
}
