//! The edge: the public SSH endpoint. It authenticates engineers' certificates offline (trusted
//! user CA keys, validity, KRL, cluster), serves only `direct-tcpip` to `<node>.<cluster>:22` of
//! the certificate's own cluster, and pipes those bytes, unread, into a channel of the tunnel
//! that the cluster's gateway dialed out. The inner SSH connection is end to end between the
//! engineer and the gateway: the edge never sees the session's plaintext.
//!
//! When the certificate asks for per-session MFA (extension `mfa@sallyport.dev`, from an
//! approval with `per_session_mfa`), the certificate alone is a partial success: the engineer
//! must then answer a keyboard-interactive prompt with a TOTP code, which the broker checks
//! (`POST /v1/mfa/verify` with the certificate's grant; each step once, shared with login,
//! counted toward the login lockouts). If the broker cannot answer, the connection is refused
//! (fail closed). One code opens one session: a second forward through the same connection
//! (ControlMaster) is refused (`mfa_session_used`) and needs a new connection and a new code.
//!
//! With a name and an API token (`name`, `token_file`), every refusal (`edge_refused`) and every
//! forward (`edge_session`) is written to the edge's own hash-chained spool (`data_dir/spool`,
//! source `edge:<name>`) and shipped to the broker like a gateway's. Without them the edge only
//! logs, and refuses certificates that ask for per-session MFA (it cannot check the code).
//! Refusals anyone can repeat are written a few times a minute per connection (or, before login,
//! per source address) and code; the others are counted into a later event (`crate::throttle`).
//!
//! russh refuses a certificate that is expired or not yet valid (and one whose CA signature does
//! not verify) itself, before the client proves it holds the key; the vendored russh tells the
//! handler (`auth_certificate_refused`), and the edge audits it with the code of its own check
//! (`expired`, `untrusted_ca`, ...) and the key id. A plain key offered without any certificate is
//! audited as `not_a_certificate`, with the key's fingerprint.
//!
//! Gateways reach the edge on a second listener and authenticate with a certificate signed by
//! their cluster's host CA (principal `gateway:<cluster>`), whose public key the broker knows
//! from the gateway's enrollment.
//!
//! Limits. At most `max_connections` engineer connections at once: a further one gets the
//! message "sallyport edge: too many connections" (as the authentication banner, then as the
//! SSH disconnect reason) and an `edge_full` refusal. A connection through which no byte has
//! passed either way (and that made no request) for `idle_timeout_secs` is disconnected with a
//! message; one that has not logged in within `login_grace_secs` is disconnected and audited
//! (`login_timeout`). On shutdown (SIGTERM) the edge closes its engineer listener at once, lets
//! open connections go on for `shutdown_grace_secs` (refusing new forwards on them), then
//! disconnects what is left with a message and exits (a second signal cuts the grace short);
//! `edge_shutdown`, `edge_disconnected` and `edge_stopped` are audit events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::PublicKey;
use russh::server::Server;
use russh::{MethodKind, MethodSet};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker_client::BrokerClient;
use crate::config::EdgeConfig;
use crate::spool::Spool;
use crate::throttle::Throttle;
use crate::trust::Trust;
use sallyport_audit::writers::{ChainKind, EdgeKind};

mod auth;
mod conn;
mod cut;
mod forward;
mod handler;
mod identity;
mod listener;
mod mfa;
#[cfg(test)]
mod tests;
mod tunnel_server;
mod tunnels;

pub use handler::EngineerHandler;
pub(crate) use identity::edge_identity;
pub use tunnel_server::TunnelHandler;
pub use tunnels::Tunnels;

use listener::{MAX_REFUSING, REFUSAL_WINDOW_SECS, REFUSALS_PER_WINDOW, serve_engineers};
use tunnel_server::TunnelServer;

pub struct Edge {
    pub cfg: EdgeConfig,
    pub trust: Arc<Trust>,
    pub broker: BrokerClient,
    pub tunnels: Arc<Tunnels>,
    /// The edge's audit spool (`data_dir/spool`, source `edge:<name>`), when it has a token.
    pub spool: Option<Arc<Spool<EdgeKind>>>,
    /// The broker client carrying the edge's token (audit ingest, per-session MFA).
    authed: Option<BrokerClient>,
    /// Host CA keys of clusters, as the broker said last.
    host_cas: Mutex<HashMap<String, Vec<PublicKey>>>,
    /// One permit per engineer connection, `max_connections` in all.
    slots: Arc<Semaphore>,
    /// Connections being told "too many connections" at once (past it they are just closed).
    refusing: Arc<Semaphore>,
    /// The engineer connections' tasks: how many are open, and the wait for them on shutdown.
    connections: TaskTracker,
    /// Cancelled on shutdown: no new forwards.
    draining: CancellationToken,
    /// Cancelled when the grace period is over: every connection's task disconnects it.
    stop: CancellationToken,
    /// Refusals anyone can repeat, audited a few times a minute per connection or source
    /// address and code (`crate::throttle`).
    refusals: Throttle,
    /// The limits a SIGHUP may change (see [`Edge::reload`]).
    limits: std::sync::RwLock<EdgeLimits>,
}

/// What a SIGHUP can change while the edge runs; every other key needs a restart.
#[derive(Debug, Clone, Copy)]
struct EdgeLimits {
    max_forwards_per_connection: usize,
    login_grace_secs: u64,
}

impl EdgeLimits {
    fn of(cfg: &EdgeConfig) -> EdgeLimits {
        EdgeLimits {
            max_forwards_per_connection: cfg.max_forwards_per_connection,
            login_grace_secs: cfg.login_grace_secs,
        }
    }
}

/// How long a connection refused for being full may take to name its key (for the audit).
const FULL_REFUSAL_WITHIN: Duration = Duration::from_secs(10);
/// After telling a connection it is being closed, how long the edge waits for it to go.
const DISCONNECT_WAIT: Duration = Duration::from_secs(3);
/// russh's own inactivity timer is only a backstop past `idle_timeout_secs` (it closes without
/// a word, and the client's answers to the edge's keepalives reset it).
const IDLE_BACKSTOP: Duration = Duration::from_secs(30);

impl Edge {
    pub fn new(cfg: EdgeConfig) -> anyhow::Result<Arc<Edge>> {
        let problems = cfg.preflight();
        anyhow::ensure!(
            problems.is_empty(),
            "the edge config is not usable:\n  - {}",
            problems.join("\n  - ")
        );
        crate::private::open_data_dir(&cfg.data_dir, "edge's data_dir")?;
        let broker = BrokerClient::new(&cfg.broker, cfg.broker_ca.as_deref(), None)?;
        let (spool, authed) = identity::spool_and_client(&cfg, &broker)?;
        anyhow::ensure!(
            (1..=1_000_000).contains(&cfg.max_connections),
            "max_connections must be between 1 and 1000000, not {}",
            cfg.max_connections
        );
        anyhow::ensure!(
            cfg.idle_timeout_secs >= 1,
            "idle_timeout_secs must be at least 1"
        );
        let trust = Trust::load(&cfg.data_dir, crate::trust::pinned_cas(&cfg.user_ca_keys)?);
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        Ok(Arc::new(Edge {
            limits: std::sync::RwLock::new(EdgeLimits::of(&cfg)),
            cfg,
            trust,
            broker,
            tunnels: Arc::new(Tunnels::default()),
            spool,
            authed,
            host_cas: Mutex::new(HashMap::new()),
            slots,
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            connections: TaskTracker::new(),
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            refusals: Throttle::new(REFUSAL_WINDOW_SECS, REFUSALS_PER_WINDOW),
        }))
    }

    /// The config keys [`Edge::reload`] applies; the others need a restart.
    pub const RELOADABLE: &'static [&'static str] =
        &["max_forwards_per_connection", "login_grace_secs"];

    fn limits(&self) -> EdgeLimits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a config read again on SIGHUP and checked whole (`Err`: it did not load or check):
    /// the limits in [`Edge::RELOADABLE`] are taken for new connections and forwards. Audited
    /// as `edge_config_reloaded` (the keys applied and those that need a restart) or, when the
    /// config is not usable and nothing changed, `edge_config_reload_refused`.
    pub async fn reload(
        &self,
        new: Result<EdgeConfig, String>,
        applied: &[String],
        restart: &[String],
    ) -> anyhow::Result<()> {
        let cfg = match new {
            Ok(cfg) => cfg,
            Err(problems) => {
                self.audit(
                    EdgeKind::EdgeConfigReloadRefused,
                    json!({"edge": self.cfg.name, "reason": problems}),
                )
                .await;
                anyhow::bail!("the new config is not usable, nothing changed: {problems}");
            }
        };
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = EdgeLimits::of(&cfg);
        self.audit(
            EdgeKind::EdgeConfigReloaded,
            json!({"edge": self.cfg.name, "applied": applied, "needs_restart": restart}),
        )
        .await;
        Ok(())
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.idle_timeout_secs.max(1))
    }

    fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Wait (at most `within`) until the broker has every record of the edge's spool; `false`
    /// when it has not (they stay spooled and are shipped at the next start).
    async fn flush_audit(&self, within: Duration) -> bool {
        let (Some(spool), Some(_)) = (&self.spool, &self.authed) else {
            return true;
        };
        let last = spool.head();
        let deadline = Instant::now() + within;
        while spool.acked() < last {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Write an event to the edge's spool (durably) when it has one; `false` when that failed.
    pub async fn audit(&self, kind: EdgeKind, data: Value) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        match spool.append(kind, data).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, kind = kind.as_str(), "edge audit spool unwritable");
                false
            }
        }
    }
}

/// Run the edge until `shutdown` resolves, on the addresses of its config (`listen`,
/// `tunnel_listen`).
pub async fn run(
    edge: Arc<Edge>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let engineers = TcpListener::bind(edge.cfg.listen).await?;
    let gateways = TcpListener::bind(edge.cfg.tunnel_listen).await?;
    run_on(edge, engineers, gateways, shutdown).await
}

/// [`run`] on listeners bound already (e.g. on port 0, their addresses read before): engineers
/// on `engineers`, gateways' tunnels on `gateways`; `listen` and `tunnel_listen` of the config
/// are not used.
pub async fn run_on(
    edge: Arc<Edge>,
    engineers: TcpListener,
    gateways: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (host_key, _) = sallyport_ca::keys::load_or_create_key(
        &edge.cfg.data_dir.join("host_key"),
        "sallyport edge",
    )?;
    edge.check_token().await?;
    if edge.authed.is_some() {
        // Registered at start and every minute (a broker that was down, or a new database,
        // learns it again).
        let (edge, key) = (edge.clone(), host_key.public_key().clone());
        tokio::spawn(async move {
            loop {
                edge.register(&key).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    }
    match (&edge.spool, &edge.authed) {
        (Some(spool), Some(client)) => {
            tracing::info!(
                source = spool.source(),
                "edge audit spool shipping to the broker"
            );
            tokio::spawn(crate::spool::ship(spool.clone(), client.clone()));
        }
        _ => tracing::warn!(
            "no token_file: the edge's refusals and sessions are only logged, not audited at the \
             broker, and certificates that ask for per-session MFA are refused; set `name` and \
             `token_file` (an API token of role edge)"
        ),
    }
    if let Err(e) = edge.trust.refresh(&edge.broker).await {
        tracing::warn!(error = %e, "broker unreachable at start; using cached CA keys and KRL");
    }
    tokio::spawn(edge.trust.clone().refresh_forever(
        edge.broker.clone(),
        Duration::from_secs(edge.cfg.refresh_secs.max(1)),
        edge.spool.clone().map(|spool| crate::trust::CaAudit {
            spool,
            kind: EdgeKind::EdgeUserCasRefused,
            fields: json!({"edge": edge.cfg.name}),
        }),
    ));
    tokio::spawn(edge.clone().drop_revoked_tunnels_forever());
    {
        // Refusals folded in under a key whose window ended are written (every few seconds).
        let edge = edge.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                edge.flush_refusals(None).await;
            }
        });
    }
    // A revoked edge stops as on SIGTERM (no new forwards, open connections end after the grace
    // period) and exits with an error.
    let revoked: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let shutdown = {
        let edge = edge.clone();
        let revoked = revoked.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                why = edge.clone().token_revoked() => {
                    tracing::error!(reason = why, "the broker refuses this edge's token (revoked): the edge stops");
                    edge.audit(
                        EdgeKind::EdgeRefused,
                        json!({"edge": edge.cfg.name, "code": "edge_revoked",
                               "reason": format!("the broker refuses this edge's token ({why}): the edge stops")}),
                    )
                    .await;
                    *revoked.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                }
            }
        }
    };
    let idle = edge.idle_timeout();
    let mut engineer_cfg =
        crate::server_config(vec![host_key.clone()], vec![], idle + IDLE_BACKSTOP);
    // Keyboard-interactive carries the per-session TOTP code; it is honoured only after a
    // certificate that asks for it passed on the same connection.
    engineer_cfg.methods =
        MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]);
    let engineer_cfg = Arc::new(engineer_cfg);
    let mut tunnel_cfg = crate::server_config(vec![host_key], vec![], Duration::from_secs(3600));
    tunnel_cfg.inactivity_timeout = None;
    let tunnel_cfg = Arc::new(tunnel_cfg);
    tracing::info!(engineers = %engineers.local_addr()?, tunnels = %gateways.local_addr()?, "edge listening");
    let mut tun_server = TunnelServer(edge.clone());
    let tunnels = tun_server.run_on_socket(tunnel_cfg, &gateways);
    let tunnels_handle = tunnels.handle();
    // Gateways' tunnels stay up through the grace period: open sessions run in them.
    let stopped = tokio::select! {
        r = tunnels => {
            r?;
            return Ok(());
        }
        stopped = serve_engineers(edge.clone(), engineers, engineer_cfg, shutdown) => stopped,
    };
    tunnels_handle.shutdown("sallyport edge: shutting down".into());
    let deadline = Instant::now() + Duration::from_secs(2);
    while edge.tunnels.total() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        drained = stopped.drained,
        disconnected = stopped.disconnected,
        "edge stopped"
    );
    // Whatever refusals are still folded in are written now, with their counts.
    edge.flush_refusals(Some("")).await;
    edge.audit(
        EdgeKind::EdgeStopped,
        json!({
            "edge": edge.cfg.name,
            "drained": stopped.drained,
            "disconnected": stopped.disconnected,
            "shutdown_ms": stopped.took.as_millis() as u64,
        }),
    )
    .await;
    if let Some(why) = revoked.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!(
            "the broker refuses this edge's token ({why}): the edge stopped; give it a new token \
             (sallyport admin token <name> --role edge) if it should serve again"
        );
    }
    if !edge.flush_audit(Duration::from_secs(3)).await {
        tracing::warn!(
            "the broker did not take the edge's last audit records in time: they stay spooled \
             and are shipped at the next start"
        );
    }
    Ok(())
}
