//! The gateway's tunnels: it dials out to every configured edge (the customer opens no inbound
//! port), authenticates with a certificate from its host CA, keeps each tunnel up, replaces it
//! at half of its certificate's lifetime, and takes each engineer session the edge forwards
//! into it (`session::serve`) — until the gateway stops.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::keys::PublicKey;
use sallyport_ca::clock::now_secs;

use super::{Gateway, session};
use crate::config::EdgeTarget;
impl Gateway {
    /// The certificate this gateway shows the edge: its tunnel identity, from its host CA.
    fn tunnel_certificate(&self, now: u64) -> anyhow::Result<russh::keys::Certificate> {
        use russh::keys::ssh_key::certificate::{Builder, CertType};
        let mut b = Builder::new_with_random_nonce(
            &mut russh::keys::key::safe_rng(),
            self.host_key.public_key(),
            now.saturating_sub(60),
            now + self.cfg.tunnel_cert_secs,
        )?;
        b.serial(sallyport_ca::cert::random_serial())?;
        b.key_id(format!("sallyport-gateway:{}", self.id))?;
        b.cert_type(CertType::User)?;
        b.valid_principal(format!("gateway:{}", self.cluster))?;
        Ok(b.sign(&self.host_ca)?)
    }
}

/// Dial the edge and keep the tunnel up, reconnecting with backoff. At half of its
/// certificate's lifetime a tunnel is replaced: the new one (the edge's newest) takes new
/// sessions, the old one drains.
pub(super) async fn keep_tunnel(gw: Arc<Gateway>, edge: EdgeTarget) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match tunnel_once(&gw, &edge).await {
            Ok(Some(old)) => {
                tracing::info!(
                    edge = edge.address,
                    "renewing the tunnel's certificate: a new tunnel takes new sessions"
                );
                tokio::spawn(old.drain());
                backoff = Duration::from_millis(200);
                continue;
            }
            Ok(None) => {
                tracing::warn!(edge = edge.address, "tunnel closed; reconnecting");
                backoff = Duration::from_millis(200);
            }
            Err(e) => tracing::warn!(edge = edge.address, error = %e, "tunnel failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// A tunnel replaced by a newer one: it closes once no session runs through it, or just before
/// its certificate expires (the edge would drop it then).
struct Draining {
    handle: russh::client::Handle<TunnelClient>,
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    expires: u64,
    /// Closed this long before it expires at the latest.
    margin: u64,
}

impl Draining {
    async fn drain(self) {
        loop {
            if self.handle.is_closed() {
                return;
            }
            let open = self.sessions.load(std::sync::atomic::Ordering::SeqCst);
            let late = now_secs() + self.margin >= self.expires;
            if open == 0 || late {
                if late && open > 0 {
                    tracing::warn!(
                        sessions = open,
                        "closing a replaced tunnel whose certificate expires, with sessions still open"
                    );
                }
                let _ = self
                    .handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "sallyport gateway: tunnel replaced",
                        "",
                    )
                    .await;
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One tunnel: `Ok(None)` when it closed, `Ok(Some(_))` when its certificate is due for
/// renewal (it is still open, draining).
async fn tunnel_once(gw: &Arc<Gateway>, edge: &EdgeTarget) -> anyhow::Result<Option<Draining>> {
    let pinned = PublicKey::from_openssh(edge.host_key.trim())
        .context("edge host_key is not an OpenSSH public key")?;
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        preferred: crate::client_preferred(),
        ..Default::default()
    });
    let sessions: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let handler = TunnelClient {
        gw: gw.clone(),
        pinned,
        sessions: sessions.clone(),
    };
    let mut handle = russh::client::connect(config, edge.address.as_str(), handler).await?;
    let now = now_secs();
    let cert = gw.tunnel_certificate(now)?;
    let auth = handle
        .authenticate_openssh_cert(
            format!("gateway:{}", gw.cluster),
            Arc::new(gw.host_key.clone()),
            cert,
        )
        .await?;
    anyhow::ensure!(
        auth.success(),
        "the edge refused this gateway's certificate (valid from {} by this gateway's clock, \
         backdated 60 s): check that this gateway's clock agrees with the edge's, and that the \
         edge knows this cluster's host CA; the edge's log says which",
        now.saturating_sub(60)
    );
    handle.tcpip_forward("sallyport", 0).await?;
    tracing::info!(
        edge = edge.address,
        valid_for_secs = gw.cfg.tunnel_cert_secs,
        "tunnel up"
    );
    let renew_at = now + gw.cfg.tunnel_cert_secs / 2;
    // Wait until the connection ends or its certificate is due for renewal.
    while !handle.is_closed() {
        if now_secs() >= renew_at {
            return Ok(Some(Draining {
                handle,
                sessions,
                expires: now + gw.cfg.tunnel_cert_secs,
                margin: (gw.cfg.tunnel_cert_secs / 10).min(30),
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(None)
}

struct TunnelClient {
    gw: Arc<Gateway>,
    pinned: PublicKey,
    /// Engineer sessions running through this tunnel.
    sessions: Arc<std::sync::atomic::AtomicUsize>,
}

impl russh::client::Handler for TunnelClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key: k, .. } => {
                k.key_data() == self.pinned.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        })
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        connected_address: &str,
        _connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let host = connected_address.to_string();
        if self.gw.stopping.is_cancelled() {
            reply
                .reject(russh::ChannelOpenFailure::Other {
                    code: russh::ChannelOpenFailure::ConnectFailed.code(),
                    reason: "sallyport gateway: shutting down".to_string(),
                })
                .await;
            return Ok(());
        }
        let known = |gw: &Gateway| {
            crate::trust::split_target(&host)
                .is_some_and(|(node, cluster)| cluster == gw.cluster && gw.node(node).is_some())
        };
        let mut ok = known(&self.gw);
        if !ok {
            // A node added since the last refresh: ask the broker once more.
            if let Err(e) = self.gw.refresh_self().await {
                tracing::warn!(error = %e, "cannot refresh nodes from the broker");
            }
            ok = known(&self.gw);
        }
        if !ok {
            tracing::warn!(
                host,
                "the edge asked for a node this gateway does not serve"
            );
            reply
                .reject(russh::ChannelOpenFailure::Other {
                    code: russh::ChannelOpenFailure::ConnectFailed.code(),
                    reason: format!(
                        "sallyport: {host} is not a node of cluster {}",
                        self.gw.cluster
                    ),
                })
                .await;
            return Ok(());
        }
        let config = match self.gw.inner_config(&host) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a host certificate");
                reply
                    .reject(russh::ChannelOpenFailure::ResourceShortage)
                    .await;
                return Ok(());
            }
        };
        reply.accept().await;
        let peer = format!("{originator_address}:{originator_port}");
        let slot = crate::Slot::take(&self.sessions, usize::MAX);
        let gw = self.gw.clone();
        self.gw.tasks.spawn(async move {
            // Held while the session runs: a replaced tunnel waits for it.
            let _slot = slot;
            session::serve(gw, config, channel.into_stream(), host, peer).await;
        });
        Ok(())
    }
}
