//! The gateways' tunnels: the tunnels by cluster and the sessions forwarded into each, and the
//! dropping of a tunnel whose gateway was revoked or whose certificate expired. The gateways'
//! listener is `tunnel_server.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Disconnect;
use russh::server::Handle;
use serde_json::{Value, json};

use sallyport_audit::writers::EdgeKind;
use sallyport_ca::clock::now_secs;

use super::Edge;

/// A gateway's tunnel: (its id, the connection, the fingerprint of the host CA that signed the
/// gateway's certificate, when that certificate expires).
pub(super) type Tunnel = (u64, Handle, String, u64);

/// The tunnels offered by gateways, by cluster, and the engineers' sessions forwarded into each.
#[derive(Default)]
pub struct Tunnels {
    /// Per cluster.
    pub(super) by_cluster: Mutex<HashMap<String, Vec<Tunnel>>>,
    pub(super) next: AtomicU64,
    /// Per tunnel id, the sessions forwarded into it now (by forward id): their `edge_session`
    /// event's fields, so that a dropped tunnel names the sessions it cut.
    pub(super) forwards: Mutex<HashMap<u64, HashMap<u64, crate::Fields>>>,
    pub(super) next_forward: AtomicU64,
    /// Tunnels the edge dropped itself (revoked, expired), with what their engineers are told;
    /// kept while sessions forwarded into them are listed.
    pub(super) dropped: Mutex<HashMap<u64, String>>,
}

/// A session forwarded into a tunnel, listed while it lasts.
pub(super) struct Forwarded {
    pub(super) tunnels: Arc<Tunnels>,
    pub(super) tunnel: u64,
    pub(super) id: u64,
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        if let Ok(mut m) = self.tunnels.forwards.lock()
            && let Some(of) = m.get_mut(&self.tunnel)
        {
            of.remove(&self.id);
            if of.is_empty() {
                m.remove(&self.tunnel);
                if let Ok(mut d) = self.tunnels.dropped.lock() {
                    d.remove(&self.tunnel);
                }
            }
        }
    }
}

impl Tunnels {
    pub(super) fn add(&self, cluster: &str, handle: Handle, ca: String, expires: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_cluster.lock() {
            m.entry(cluster.to_string())
                .or_default()
                .push((id, handle, ca, expires));
        }
        id
    }

    /// Every tunnel: (cluster, its id, the tunnel, its host CA's fingerprint, its certificate's
    /// expiry).
    pub(super) fn all(&self) -> Vec<(String, u64, Handle, String, u64)> {
        self.by_cluster
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(c, v)| {
                        v.iter().map(|(id, h, ca, expires)| {
                            (c.clone(), *id, h.clone(), ca.clone(), *expires)
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// List a session forwarded into tunnel `tunnel` (`session`: its `edge_session` fields) for
    /// as long as the returned guard lives.
    pub(super) fn forwarded(self: &Arc<Self>, tunnel: u64, session: &Value) -> Forwarded {
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.forwards.lock() {
            m.entry(tunnel)
                .or_default()
                .insert(id, crate::Fields::new(session));
        }
        Forwarded {
            tunnels: self.clone(),
            tunnel,
            id,
        }
    }

    /// The sessions forwarded into tunnel `tunnel` now (their `edge_session` fields).
    /// What the engineers of a tunnel the edge dropped itself are told; `None`: the edge did
    /// not drop it (the gateway went away).
    pub(super) fn dropped_message(&self, tunnel: u64) -> Option<String> {
        self.dropped.lock().ok()?.get(&tunnel).cloned()
    }

    pub(super) fn sessions_in(&self, tunnel: u64) -> Vec<Value> {
        self.forwards
            .lock()
            .map(|m| {
                let mut v: Vec<(u64, Value)> = m
                    .get(&tunnel)
                    .map(|of| of.iter().map(|(i, s)| (*i, s.value())).collect())
                    .unwrap_or_default();
                v.sort_by_key(|(i, _)| *i);
                v.into_iter().map(|(_, s)| s).collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn remove(&self, cluster: &str, id: u64) {
        if let Ok(mut m) = self.by_cluster.lock()
            && let Some(v) = m.get_mut(cluster)
        {
            v.retain(|(i, _, _, _)| *i != id);
        }
    }

    /// The tunnels of a cluster (id, tunnel), newest first.
    pub(super) fn of(&self, cluster: &str) -> Vec<(u64, Handle)> {
        self.by_cluster
            .lock()
            .map(|m| {
                m.get(cluster)
                    .map(|v| {
                        v.iter()
                            .rev()
                            .map(|(id, h, _, _)| (*id, h.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    pub fn count(&self, cluster: &str) -> usize {
        self.of(cluster).len()
    }

    /// Tunnels of all clusters.
    pub(super) fn total(&self) -> usize {
        self.by_cluster
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

impl Edge {
    /// Drop the tunnels of gateways whose host CA the broker no longer lists (the gateway was
    /// revoked), every 2 s; while the broker does not answer, tunnels stay.
    pub(super) async fn drop_revoked_tunnels_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Per cluster, the fingerprints the broker lists now; `None` while it does not answer.
            let mut listed: HashMap<String, Option<Vec<String>>> = HashMap::new();
            for (cluster, id, tunnel, ca, expires) in self.tunnels.all() {
                // A tunnel lives no longer than its certificate (the gateway renews it before).
                if expires <= now_secs() {
                    tracing::warn!(
                        cluster,
                        host_ca = ca,
                        "dropping a tunnel whose certificate expired"
                    );
                    self.drop_tunnel(
                        &cluster,
                        id,
                        &tunnel,
                        &ca,
                        "tunnel_expired",
                        "the gateway's tunnel certificate expired: its tunnel was dropped",
                        "sallyport edge: the tunnel's certificate expired",
                    )
                    .await;
                    continue;
                }
                if !listed.contains_key(&cluster) {
                    let fps = self.fetch_host_cas(&cluster).await.ok().map(|keys| {
                        keys.iter()
                            .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
                            .collect()
                    });
                    listed.insert(cluster.clone(), fps);
                }
                if listed
                    .get(&cluster)
                    .is_some_and(|fps| fps.as_ref().is_some_and(|fps| !fps.contains(&ca)))
                {
                    tracing::warn!(
                        cluster,
                        host_ca = ca,
                        "dropping the tunnel of a revoked gateway"
                    );
                    self.drop_tunnel(
                        &cluster,
                        id,
                        &tunnel,
                        &ca,
                        "gateway_revoked",
                        "the gateway's host CA is no longer trusted by the broker (the gateway was \
                         revoked): its tunnel was dropped",
                        "sallyport edge: this gateway was revoked",
                    )
                    .await;
                }
            }
        }
    }

    /// Drop a gateway's tunnel at once, then audit it: an `edge_refused` naming the sessions it
    /// cut (`sessions`: their connection, engineer, ticket, node and address), and an
    /// `edge_disconnected` per cut session (with its engineer, ticket and node, so that each
    /// ticket's record says how its session ended, even when the gateway, revoked, can no longer
    /// write to the broker).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn drop_tunnel(
        &self,
        cluster: &str,
        id: u64,
        tunnel: &Handle,
        ca: &str,
        code: &str,
        reason: &str,
        message: &str,
    ) {
        let cut = self.tunnels.sessions_in(id);
        if !cut.is_empty()
            && let Ok(mut d) = self.tunnels.dropped.lock()
        {
            d.insert(id, message.to_string());
        }
        let _ = tunnel
            .disconnect(
                Disconnect::ByApplication,
                message.to_string(),
                String::new(),
            )
            .await;
        let listed: Vec<Value> = cut
            .iter()
            .map(|s| {
                json!({
                    "connection": s["connection"],
                    "engineer": s["engineer"],
                    "ticket": s["ticket"],
                    "node": s["node"],
                    "source_ip": s["source_ip"],
                    "key_id": s["key_id"],
                })
            })
            .collect();
        self.audit(
            EdgeKind::EdgeRefused,
            json!({"edge": self.cfg.name, "code": code, "cluster": cluster, "host_ca": ca,
                   "reason": reason, "sessions_cut": cut.len(), "sessions": listed}),
        )
        .await;
        for session in cut {
            let mut event = session;
            crate::merge(
                &mut event,
                json!({
                    "code": code,
                    "reason": format!("{reason}; this session through it was cut"),
                    "host_ca": ca,
                }),
            );
            self.audit(EdgeKind::EdgeDisconnected, event).await;
        }
    }
}
