//! The edge: the public SSH endpoint. It authenticates engineers' certificates offline (trusted
//! user CA keys, validity, KRL, cluster), serves only `direct-tcpip` to `<node>.<cluster>:22` of
//! the certificate's own cluster, and pipes those bytes, unread, into a channel of the tunnel
//! that the cluster's gateway dialed out. The inner SSH connection is end to end between the
//! engineer and the gateway: the edge never sees the session's plaintext.
//!
//! Gateways reach the edge on a second listener and authenticate with a certificate signed by
//! their cluster's host CA (principal `gateway:<cluster>`), whose public key the broker knows
//! from the gateway's enrollment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Certificate, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Server, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use sallyport_ca::{CertIdentity, check_user_cert};
use tokio::sync::Semaphore;

use crate::broker_client::BrokerClient;
use crate::config::EdgeConfig;
use crate::trust::{Trust, split_target};

/// The tunnels offered by gateways, by cluster.
#[derive(Default)]
pub struct Tunnels {
    by_cluster: Mutex<HashMap<String, Vec<(u64, Handle)>>>,
    next: AtomicU64,
}

impl Tunnels {
    fn add(&self, cluster: &str, handle: Handle) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_cluster.lock() {
            m.entry(cluster.to_string()).or_default().push((id, handle));
        }
        id
    }

    fn remove(&self, cluster: &str, id: u64) {
        if let Ok(mut m) = self.by_cluster.lock()
            && let Some(v) = m.get_mut(cluster)
        {
            v.retain(|(i, _)| *i != id);
        }
    }

    /// The tunnels of a cluster, newest first.
    fn of(&self, cluster: &str) -> Vec<Handle> {
        self.by_cluster
            .lock()
            .map(|m| {
                m.get(cluster)
                    .map(|v| v.iter().rev().map(|(_, h)| h.clone()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    pub fn count(&self, cluster: &str) -> usize {
        self.of(cluster).len()
    }
}

pub struct Edge {
    pub cfg: EdgeConfig,
    pub trust: Arc<Trust>,
    pub broker: BrokerClient,
    pub tunnels: Arc<Tunnels>,
    /// Host CA keys of clusters, as the broker said last.
    host_cas: Mutex<HashMap<String, Vec<PublicKey>>>,
    slots: Arc<Semaphore>,
}

impl Edge {
    pub fn new(cfg: EdgeConfig) -> anyhow::Result<Arc<Edge>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let broker = BrokerClient::new(&cfg.broker, cfg.broker_ca.as_deref(), None)?;
        let trust = Trust::load(&cfg.data_dir);
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        Ok(Arc::new(Edge {
            cfg,
            trust,
            broker,
            tunnels: Arc::new(Tunnels::default()),
            host_cas: Mutex::new(HashMap::new()),
            slots,
        }))
    }

    async fn cluster_host_cas(&self, cluster: &str) -> Vec<PublicKey> {
        let path = format!("/v1/clusters/{cluster}/host-ca");
        match self.broker.get_json(&path).await {
            Ok(v) => {
                let keys: Vec<PublicKey> = v["host_ca_public_keys"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|k| k.as_str())
                            .filter_map(|k| PublicKey::from_openssh(k).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                if let Ok(mut m) = self.host_cas.lock() {
                    m.insert(cluster.to_string(), keys.clone());
                }
                keys
            }
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

/// Run the edge until `shutdown` resolves.
pub async fn run(
    edge: Arc<Edge>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let host_key =
        crate::load_or_create_key(&edge.cfg.data_dir.join("host_key"), "sallyport edge")?;
    if let Err(e) = edge.trust.refresh(&edge.broker).await {
        tracing::warn!(error = %e, "broker unreachable at start; using cached CA keys and KRL");
    }
    tokio::spawn(edge.trust.clone().refresh_forever(
        edge.broker.clone(),
        Duration::from_secs(edge.cfg.refresh_secs.max(1)),
    ));
    let idle = Duration::from_secs(edge.cfg.idle_timeout_secs.max(10));
    let engineer_cfg = Arc::new(crate::server_config(vec![host_key.clone()], vec![], idle));
    let mut tunnel_cfg = crate::server_config(vec![host_key], vec![], Duration::from_secs(3600));
    tunnel_cfg.inactivity_timeout = None;
    let tunnel_cfg = Arc::new(tunnel_cfg);
    let engineers = tokio::net::TcpListener::bind(edge.cfg.listen).await?;
    let gateways = tokio::net::TcpListener::bind(edge.cfg.tunnel_listen).await?;
    tracing::info!(engineers = %engineers.local_addr()?, tunnels = %gateways.local_addr()?, "edge listening");
    let mut eng_server = EngineerServer(edge.clone());
    let mut tun_server = TunnelServer(edge.clone());
    let a = eng_server.run_on_socket(engineer_cfg, &engineers);
    let b = tun_server.run_on_socket(tunnel_cfg, &gateways);
    let handle_a = a.handle();
    let handle_b = b.handle();
    tokio::select! {
        r = a => r?,
        r = b => r?,
        _ = shutdown => {
            handle_a.shutdown("the edge is shutting down".into());
            handle_b.shutdown("the edge is shutting down".into());
        }
    }
    Ok(())
}

#[derive(Clone)]
struct EngineerServer(Arc<Edge>);

impl Server for EngineerServer {
    type Handler = EngineerHandler;
    fn new_client(&mut self, peer: Option<SocketAddr>) -> EngineerHandler {
        let permit = self.0.slots.clone().try_acquire_owned().ok();
        EngineerHandler {
            edge: self.0.clone(),
            peer,
            identity: None,
            _permit: permit,
        }
    }
}

pub struct EngineerHandler {
    edge: Arc<Edge>,
    peer: Option<SocketAddr>,
    identity: Option<CertIdentity>,
    /// `None` when the edge is full: every authentication is then refused.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

const EDGE_MESSAGE: &str = "This is sallyport's edge: it opens no shell. Reach a node through it, e.g.\r\n  ssh -F ~/.sallyport/ssh_config <node>.<cluster>\r\n(`sallyport login` writes that configuration.)\r\n";

impl russh::server::Handler for EngineerHandler {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        if self._permit.is_none() {
            tracing::warn!(peer = ?self.peer, "edge full: connection refused");
            return Ok(Auth::reject());
        }
        let trust = &self.edge.trust;
        let result = check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        );
        match result {
            Ok(id) => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "engineer authenticated at the edge");
                self.identity = Some(id);
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), code = refusal.code(), reason = %refusal, "certificate refused at the edge");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse_shell(channel, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse_shell(channel, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse_shell(channel, session)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(id) = &self.identity else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Some((_, cluster)) = split_target(host) else {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                "refused: not a <node>.<cluster> name"
            );
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if port != 22 || cluster != id.cluster() {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                port,
                cert_cluster = id.cluster(),
                "refused: the certificate is for another cluster or port"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let tunnels = self.edge.tunnels.of(cluster);
        let (host, originator) = (host.to_string(), originator_address.to_string());
        let engineer = id.engineer().to_string();
        // Opening the tunnel channel waits on the gateway's connection: never inside this
        // connection's loop.
        tokio::spawn(async move {
            for tunnel in tunnels {
                match tunnel
                    .channel_open_forwarded_tcpip(
                        host.clone(),
                        22,
                        originator.clone(),
                        originator_port,
                    )
                    .await
                {
                    Ok(inner) => {
                        reply.accept().await;
                        pipe(channel, inner).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, host, "a tunnel refused the channel; trying the next")
                    }
                }
            }
            tracing::warn!(engineer, host, "no tunnel to this cluster's gateway");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
        });
        Ok(())
    }
}

fn refuse_shell(channel: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
    session.channel_success(channel)?;
    session.extended_data(channel, 1, EDGE_MESSAGE.as_bytes().to_vec())?;
    session.exit_status_request(channel, 1)?;
    session.eof(channel)?;
    session.close(channel)
}

/// Copy both ways until both sides are done.
async fn pipe<A, B>(a: Channel<A>, b: Channel<B>)
where
    A: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
    B: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
{
    let mut a = a.into_stream();
    let mut b = b.into_stream();
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %e, "pipe ended");
    }
}

#[derive(Clone)]
struct TunnelServer(Arc<Edge>);

impl Server for TunnelServer {
    type Handler = TunnelHandler;
    fn new_client(&mut self, peer: Option<SocketAddr>) -> TunnelHandler {
        TunnelHandler {
            edge: self.0.clone(),
            peer,
            cluster: None,
            registered: None,
        }
    }
}

pub struct TunnelHandler {
    edge: Arc<Edge>,
    peer: Option<SocketAddr>,
    cluster: Option<String>,
    registered: Option<u64>,
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
            && cert.validate_at(crate::now(), fps.iter()).is_ok()
            && cert.valid_principals().iter().any(|p| p == user);
        if ok {
            tracing::info!(peer = ?self.peer, cluster, key_id = cert.key_id(), "gateway authenticated");
            self.cluster = Some(cluster.to_string());
            Ok(Auth::Accept)
        } else {
            tracing::warn!(peer = ?self.peer, cluster, "gateway certificate refused");
            Ok(Auth::reject())
        }
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
            self.registered = Some(self.edge.tunnels.add(cluster, session.handle()));
            tracing::info!(cluster, "gateway tunnel up");
        }
        Ok(true)
    }
}
