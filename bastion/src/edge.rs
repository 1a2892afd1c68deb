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
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use russh::keys::{Certificate, HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Response, Server, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet};
use sallyport_audit::sanitize;
use sallyport_ca::{CertIdentity, KeyId, check_user_cert};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};

use crate::broker_client::BrokerClient;
use crate::config::EdgeConfig;
use crate::spool::Spool;
use crate::throttle::{Throttle, source_key};
use crate::trust::{Trust, split_target};
use sallyport_audit::writers::{ChainKind, EdgeKind, Writer};

/// A gateway's tunnel: (its id, the connection, the fingerprint of the host CA that signed the
/// gateway's certificate, when that certificate expires).
type Tunnel = (u64, Handle, String, u64);

/// The tunnels offered by gateways, by cluster, and the engineers' sessions forwarded into each.
#[derive(Default)]
pub struct Tunnels {
    /// Per cluster.
    by_cluster: Mutex<HashMap<String, Vec<Tunnel>>>,
    next: AtomicU64,
    /// Per tunnel id, the sessions forwarded into it now (by forward id): their `edge_session`
    /// event's fields, so that a dropped tunnel names the sessions it cut.
    forwards: Mutex<HashMap<u64, HashMap<u64, Value>>>,
    next_forward: AtomicU64,
}

/// A session forwarded into a tunnel, listed while it lasts.
struct Forwarded {
    tunnels: Arc<Tunnels>,
    tunnel: u64,
    id: u64,
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        if let Ok(mut m) = self.tunnels.forwards.lock()
            && let Some(of) = m.get_mut(&self.tunnel)
        {
            of.remove(&self.id);
            if of.is_empty() {
                m.remove(&self.tunnel);
            }
        }
    }
}

impl Tunnels {
    fn add(&self, cluster: &str, handle: Handle, ca: String, expires: u64) -> u64 {
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
    fn all(&self) -> Vec<(String, u64, Handle, String, u64)> {
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
    fn forwarded(self: &Arc<Self>, tunnel: u64, session: Value) -> Forwarded {
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.forwards.lock() {
            m.entry(tunnel).or_default().insert(id, session);
        }
        Forwarded {
            tunnels: self.clone(),
            tunnel,
            id,
        }
    }

    /// The sessions forwarded into tunnel `tunnel` now (their `edge_session` fields).
    fn sessions_in(&self, tunnel: u64) -> Vec<Value> {
        self.forwards
            .lock()
            .map(|m| {
                let mut v: Vec<(u64, Value)> = m
                    .get(&tunnel)
                    .map(|of| of.iter().map(|(i, s)| (*i, s.clone())).collect())
                    .unwrap_or_default();
                v.sort_by_key(|(i, _)| *i);
                v.into_iter().map(|(_, s)| s).collect()
            })
            .unwrap_or_default()
    }

    fn remove(&self, cluster: &str, id: u64) {
        if let Ok(mut m) = self.by_cluster.lock()
            && let Some(v) = m.get_mut(cluster)
        {
            v.retain(|(i, _, _, _)| *i != id);
        }
    }

    /// The tunnels of a cluster (id, tunnel), newest first.
    fn of(&self, cluster: &str) -> Vec<(u64, Handle)> {
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
    fn total(&self) -> usize {
        self.by_cluster
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

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
    /// Open engineer connections (counted by their tasks).
    open: watch::Sender<usize>,
    /// Set on shutdown: no new forwards.
    draining: AtomicBool,
    /// Set when the grace period is over: every connection's task disconnects it.
    stop: watch::Sender<bool>,
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

/// Connections answered "too many connections" at once, past `max_connections`; past this too,
/// a connection is closed without a word (a flood must not cost a key exchange each).
const MAX_REFUSING: usize = 64;
/// How long a connection refused for being full may take to name its key (for the audit).
const FULL_REFUSAL_WITHIN: Duration = Duration::from_secs(10);
/// After telling a connection it is being closed, how long the edge waits for it to go.
const DISCONNECT_WAIT: Duration = Duration::from_secs(3);
/// russh's own inactivity timer is only a backstop past `idle_timeout_secs` (it closes without
/// a word, and the client's answers to the edge's keepalives reset it).
const IDLE_BACKSTOP: Duration = Duration::from_secs(30);
/// A refusal anyone can repeat is written at most this many times per key (a connection and a
/// code once logged in; before, a source address and a code) per `REFUSAL_WINDOW_SECS`; the
/// others are counted into the last one, written when the window or the connection ends.
const REFUSALS_PER_WINDOW: u32 = 5;
const REFUSAL_WINDOW_SECS: u64 = 60;

fn full_message(max: usize) -> String {
    format!("sallyport edge: too many connections (at most {max} at once), try again later")
}

/// The edge's name and API token, from `name` and `token_file`; `None` when it has no token.
pub(crate) fn edge_identity(cfg: &EdgeConfig) -> anyhow::Result<Option<(String, String)>> {
    let path = match (&cfg.name, &cfg.token_file) {
        (_, None) => return Ok(None),
        (None, Some(_)) => anyhow::bail!(
            "token_file is set but name is not: set `name` to the name of the edge's API token"
        ),
        (Some(_), Some(path)) => path,
    };
    let name = cfg.name.clone().unwrap_or_default();
    anyhow::ensure!(
        sallyport_audit::valid_name(&name),
        "invalid edge name {:?}: use letters, digits, '.', '_' and '-' (at most 64)",
        sanitize(&name)
    );
    Ok(Some((name, read_token_file(path)?)))
}

/// The edge's API token, from a file only its owner may read.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the edge's token_file {}", path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "the edge's token_file {} is not a file",
        path.display()
    );
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the edge's token_file {} has mode {mode:04o}: it holds an API token and must be readable \
         by its owner only (chmod 600 {})",
        path.display(),
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the edge's token_file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.starts_with("spt_") && !token.contains(char::is_whitespace),
        "the edge's token_file {} does not hold an API token (spt_...): the operator makes one \
         with `sallyport admin token <edge name> --role edge`",
        path.display()
    );
    Ok(token.to_string())
}

/// What the broker said about a per-session TOTP code.
enum MfaVerdict {
    Verified,
    /// The code is wrong, was used before, or the engineer is locked out.
    Refused {
        code: &'static str,
        reason: String,
    },
    /// No answer: the connection is refused (fail closed).
    Unavailable(String),
}

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
        let (spool, authed) = match edge_identity(&cfg)? {
            Some((name, token)) => {
                // Signs the head of the edge's audit chain with every batch it ships; the broker
                // pins its public key at the edge's first signed batch.
                let audit_key = crate::load_or_create_key(
                    &cfg.data_dir.join("audit_key"),
                    "sallyport edge audit key",
                )?;
                tracing::info!(
                    source = format!("edge:{name}"),
                    audit_key = %audit_key.public_key().fingerprint(russh::keys::ssh_key::HashAlg::Sha256),
                    "this edge signs its audit chain with this key: record its fingerprint for `sallyport audit verify --keys`"
                );
                (
                    Some(Spool::open(
                        &cfg.data_dir.join("spool"),
                        Writer::Edge { name },
                        audit_key,
                    )?),
                    Some(broker.with_token(token)),
                )
            }
            None => (None, None),
        };
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
            open: watch::Sender::new(0),
            draining: AtomicBool::new(false),
            stop: watch::Sender::new(false),
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
        *self.open.borrow()
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

    /// Write a refusal anyone can repeat, unless more than a few of its `key` were written
    /// this minute (then it is counted into a later event; see [`Throttle`]).
    async fn audit_repeatable(&self, key: &str, data: Value) {
        if self.spool.is_none() {
            return;
        }
        let mut data = data;
        if let Some(n) = self.refusals.admit(key, crate::now(), &data) {
            crate::throttle::note_suppressed(&mut data, n);
            self.audit(EdgeKind::EdgeRefused, data).await;
        }
    }

    /// Write the refusals folded in under the keys starting with `prefix` (a connection that
    /// ended; `""`: every key), or, without a prefix, those whose window ended.
    async fn flush_refusals(&self, prefix: Option<&str>) {
        let folded = match prefix {
            Some(p) => self.refusals.take(p),
            None => self.refusals.due(crate::now()),
        };
        for f in folded {
            self.audit(EdgeKind::EdgeRefused, f.into_event()).await;
        }
    }

    /// Ask the broker whether `code` is the engineer's TOTP code now.
    async fn verify_mfa(&self, id: &CertIdentity, code: &str, peer: Option<IpAddr>) -> MfaVerdict {
        let Some(client) = &self.authed else {
            return MfaVerdict::Unavailable(
                "this edge has no broker token (token_file) to check TOTP codes with".into(),
            );
        };
        let body = json!({
            "engineer": id.engineer(),
            "grant": id.grant(),
            "code": code,
            "ticket": id.ticket(),
            "cluster": id.cluster(),
            "source_ip": peer.map(|ip| ip.to_string()),
        });
        match client.post_json_status("/v1/mfa/verify", &body).await {
            Ok((status, v)) if status.is_success() && v["ok"] == json!(true) => {
                MfaVerdict::Verified
            }
            Ok((status, v)) => {
                let message = v["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string();
                match status.as_u16() {
                    400 | 401 => MfaVerdict::Refused {
                        code: "mfa_failed",
                        reason: message,
                    },
                    429 => MfaVerdict::Refused {
                        code: "mfa_locked_out",
                        reason: message,
                    },
                    _ => {
                        MfaVerdict::Unavailable(format!("the broker answered {status}: {message}"))
                    }
                }
            }
            Err(e) => MfaVerdict::Unavailable(format!("the broker did not answer: {e}")),
        }
    }

    /// At start: the token must be an edge token of this edge's name (else its records would be
    /// refused forever). A broker that does not answer is not fatal.
    /// Tell the broker this edge's host key and public address (`POST /v1/edge/self`).
    async fn register(&self, host_key: &russh::keys::PublicKey) {
        let Some(client) = &self.authed else { return };
        let line = match host_key.to_openssh() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the host key");
                return;
            }
        };
        let body = json!({"host_key": line, "address": self.cfg.public_address});
        match client.post_json_status("/v1/edge/self", &body).await {
            Ok((status, v)) if status.is_success() => {
                if v["changed"] == true {
                    tracing::info!(
                        address = ?self.cfg.public_address,
                        host_key = %v["host_key_fingerprint"],
                        "registered with the broker: engineers get this edge at their next login"
                    );
                }
            }
            Ok((status, v)) => tracing::warn!(
                %status,
                error = %v["error"]["message"],
                "the broker refused the edge's registration"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot register with the broker; retrying in a minute")
            }
        }
    }

    async fn check_token(&self) -> anyhow::Result<()> {
        let (Some(client), Some(name)) = (&self.authed, &self.cfg.name) else {
            return Ok(());
        };
        match client.get_json_status("/v1/whoami").await {
            Ok((status, v)) if status.is_success() => {
                anyhow::ensure!(
                    v["role"] == "edge" && v["name"] == name.as_str(),
                    "the token in token_file is a {} token named {}, not an edge token named {name}: \
                     make one with `sallyport admin token {name} --role edge`",
                    v["role"].as_str().unwrap_or("?"),
                    v["name"].as_str().unwrap_or("?"),
                );
                Ok(())
            }
            Ok((status, v)) if status.as_u16() == 401 || status.as_u16() == 403 => {
                anyhow::bail!(
                    "the broker refuses the edge's token: {}",
                    v["error"]["message"].as_str().unwrap_or("no message")
                )
            }
            Ok((status, _)) => {
                tracing::warn!(%status, "cannot check the edge's token at the broker now");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable: cannot check the edge's token now");
                Ok(())
            }
        }
    }

    /// Resolves (with the broker's word) once the broker refuses this edge's token: a revoked
    /// edge stops. Asked every `refresh_secs`; a broker that does not answer changes nothing.
    async fn token_revoked(self: Arc<Self>) -> String {
        let Some(client) = self.authed.clone() else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(self.cfg.refresh_secs.max(1))).await;
            if let Ok((status, v)) = client.get_json_status("/v1/whoami").await
                && (status.as_u16() == 401 || status.as_u16() == 403)
            {
                return v["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string();
            }
        }
    }

    /// Drop the tunnels of gateways whose host CA the broker no longer lists (the gateway was
    /// revoked), every 2 s; while the broker does not answer, tunnels stay.
    async fn drop_revoked_tunnels_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Per cluster, the fingerprints the broker lists now; `None` while it does not answer.
            let mut listed: HashMap<String, Option<Vec<String>>> = HashMap::new();
            for (cluster, id, tunnel, ca, expires) in self.tunnels.all() {
                // A tunnel lives no longer than its certificate (the gateway renews it before).
                if expires <= crate::now() {
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
    async fn drop_tunnel(
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

    /// The host CA keys the broker lists for `cluster` now, kept as the last copy.
    async fn fetch_host_cas(&self, cluster: &str) -> anyhow::Result<Vec<PublicKey>> {
        let v = self
            .broker
            .get_json(&format!("/v1/clusters/{cluster}/host-ca"))
            .await?;
        let keys: Vec<PublicKey> = v["host_ca_public_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .filter_map(|k| PublicKey::from_openssh(k).ok())
            .collect();
        if let Ok(mut m) = self.host_cas.lock() {
            m.insert(cluster.to_string(), keys.clone());
        }
        Ok(keys)
    }

    /// The host CA keys of `cluster`: the broker's answer, or the last copy while it is down.
    async fn cluster_host_cas(&self, cluster: &str) -> Vec<PublicKey> {
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

/// Run the edge until `shutdown` resolves.
pub async fn run(
    edge: Arc<Edge>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let host_key =
        crate::load_or_create_key(&edge.cfg.data_dir.join("host_key"), "sallyport edge")?;
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
    let engineers = TcpListener::bind(edge.cfg.listen).await?;
    let gateways = TcpListener::bind(edge.cfg.tunnel_listen).await?;
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

/// How a shutdown went.
struct Stopped {
    /// Every engineer connection ended by itself within the grace period.
    drained: bool,
    /// Connections still open when the grace period ended (then disconnected).
    disconnected: usize,
    took: Duration,
}

/// Accept engineer connections until `shutdown`; then close the listener, let open connections
/// go on for the grace period, and disconnect what is left.
async fn serve_engineers(
    edge: Arc<Edge>,
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Stopped {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tokio::spawn(engineer_connection(edge.clone(), socket, peer, config.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, say: not a reason to stop serving the others.
                    tracing::warn!(error = %e, "cannot accept an engineer connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // From here on a new connection is refused by the system (and a TCP load balancer's health
    // check fails), while the open ones go on.
    drop(listener);
    let began = Instant::now();
    edge.draining.store(true, Ordering::SeqCst);
    let grace = Duration::from_secs(edge.cfg.shutdown_grace_secs);
    let open = edge.open_connections();
    tracing::info!(
        connections = open,
        grace_secs = grace.as_secs(),
        "edge shutting down: no new connections; open ones may go on for the grace period"
    );
    edge.audit(
        EdgeKind::EdgeShutdown,
        json!({
            "edge": edge.cfg.name,
            "connections": open,
            "grace_secs": grace.as_secs(),
        }),
    )
    .await;
    let mut open_rx = edge.open.subscribe();
    let drained = tokio::time::timeout(grace, open_rx.wait_for(|n| *n == 0))
        .await
        .is_ok();
    let disconnected = edge.open_connections();
    if !drained {
        tracing::info!(
            connections = disconnected,
            "grace period over: disconnecting the remaining engineer connections"
        );
    }
    edge.stop.send_replace(true);
    let _ = tokio::time::timeout(
        DISCONNECT_WAIT + Duration::from_secs(1),
        open_rx.wait_for(|n| *n == 0),
    )
    .await;
    Stopped {
        drained,
        disconnected,
        took: began.elapsed(),
    }
}

/// Counts an engineer connection as open while it lives.
struct OpenGuard(Arc<Edge>);

impl OpenGuard {
    fn new(edge: &Arc<Edge>) -> OpenGuard {
        edge.open.send_modify(|n| *n += 1);
        OpenGuard(edge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What one engineer connection's task and its handler share.
struct Conn {
    /// Names the connection in its events (`connection`): `c-` and 12 hex digits.
    id: String,
    started: Instant,
    /// Milliseconds after `started` of the last sign of the engineer: a byte forwarded either
    /// way, or an authentication, channel or global request.
    last_active: AtomicU64,
    /// The handler asks the connection's task to end the connection (the edge is full).
    kick: Notify,
    /// An authentication request reached the handler.
    auth_seen: AtomicBool,
    /// This connection's `edge_full` refusal was audited.
    full_audited: AtomicBool,
    /// The authenticated engineer's audit fields, for `edge_disconnected`.
    who: Mutex<Option<Value>>,
    /// Forwards open (or being opened) through this connection.
    forwards: Arc<AtomicUsize>,
    /// The certificate that passed, re-checked every second against the KRL and its validity
    /// for as long as the connection lasts.
    cert: Mutex<Option<russh::keys::Certificate>>,
}

impl Conn {
    fn new() -> Conn {
        let mut b = [0u8; 6];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b);
        Conn {
            id: format!("c-{}", hex::encode(b)),
            started: Instant::now(),
            last_active: AtomicU64::new(0),
            kick: Notify::new(),
            auth_seen: AtomicBool::new(false),
            full_audited: AtomicBool::new(false),
            who: Mutex::new(None),
            forwards: Arc::default(),
            cert: Mutex::new(None),
        }
    }

    /// The throttle key of this connection's refusals of `code` (see [`Throttle`]).
    fn refusal_key(&self, code: &str) -> String {
        format!("{}:{code}", self.id)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_active.load(Ordering::Relaxed),
        ))
    }

    fn who(&self) -> Option<Value> {
        self.who.lock().ok().and_then(|w| w.clone())
    }

    /// Why the authenticated connection's certificate no longer holds, if it does not.
    fn cert_lapsed(&self, trust: &Trust) -> Option<Close> {
        let guard = self.cert.lock().ok()?;
        let cert = guard.as_ref()?;
        if trust.is_revoked(cert) {
            Some(Close::Revoked)
        } else if cert.valid_before() <= crate::now() {
            Some(Close::Expired)
        } else {
            None
        }
    }
}

/// Why the edge itself ends a connection.
#[derive(Clone, Copy, PartialEq)]
enum Close {
    Full,
    Idle,
    Shutdown,
    /// Not logged in within `login_grace_secs`.
    NotLoggedIn,
    /// The certificate was revoked (the KRL) while the connection was open.
    Revoked,
    /// The certificate expired while the connection was open.
    Expired,
}

/// One engineer connection: its SSH session (russh's task), watched for the edge being full,
/// idleness and the end of the grace period.
async fn engineer_connection(
    edge: Arc<Edge>,
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
) {
    let _open = OpenGuard::new(&edge);
    let permit = edge.slots.clone().try_acquire_owned().ok();
    let full = permit.is_none();
    let _refusing = if full {
        match edge.refusing.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(%peer, "edge full, and busy refusing others: connection closed without a word");
                return;
            }
        }
    } else {
        None
    };
    let conn = Arc::new(Conn::new());
    let handler = EngineerHandler {
        edge: edge.clone(),
        peer: Some(peer),
        login: String::new(),
        identity: None,
        pending_mfa: None,
        mfa_session_used: false,
        certificate_seen: false,
        conn: conn.clone(),
        permit,
    };
    // A refused connection gets a short while to name its key; others the idle timeout.
    let limit = if full {
        FULL_REFUSAL_WITHIN
    } else {
        edge.idle_timeout()
    };
    let mut stop = edge.stop.subscribe();
    // A second handle on the socket, to cut it when the session cannot be ended politely.
    let (socket, killer) = match socket.into_std().and_then(|std| {
        let killer = std.try_clone()?;
        Ok((TcpStream::from_std(std)?, killer))
    }) {
        Ok((socket, killer)) => (socket, Some(killer)),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot take a second handle on a connection");
            return;
        }
    };
    let login_grace = Duration::from_secs(edge.limits().login_grace_secs.max(1));
    let login_deadline = tokio::time::Instant::now() + login_grace;
    let setup_limit = if full { limit } else { limit.min(login_grace) };
    let session = match tokio::time::timeout(
        setup_limit,
        russh::server::run_stream(config, socket, handler),
    )
    .await
    {
        Ok(Ok(session)) => Some(session),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "engineer connection setup failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "engineer connection did not finish the SSH handshake in time");
            if !full {
                edge.audit_repeatable(
                    &unauthenticated_key(Some(peer.ip()), "login_timeout"),
                    json!({
                        "edge": edge.cfg.name,
                        "code": "login_timeout",
                        "reason": format!(
                            "sallyport edge: not logged in within {} s, disconnected \
                             (login_grace_secs); the SSH handshake did not finish",
                            login_grace.as_secs()
                        ),
                        "authentication_tried": false,
                        "connection": conn.id,
                        "source_ip": peer.ip().to_string(),
                        "peer": peer.to_string(),
                    }),
                )
                .await;
            }
            None
        }
    };
    if let Some(mut session) = session {
        let handle = session.handle();
        let close = loop {
            let left = limit.saturating_sub(conn.idle_for());
            tokio::select! {
                r = &mut session => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "engineer connection ended");
                    }
                    break None;
                }
                () = conn.kick.notified() => break Some(Close::Full),
                () = tokio::time::sleep_until(login_deadline), if conn.who().is_none() && !full => {
                    if conn.who().is_none() {
                        break Some(Close::NotLoggedIn);
                    }
                }
                () = tokio::time::sleep(left) => {
                    if conn.idle_for() >= limit {
                        break Some(if full { Close::Full } else { Close::Idle });
                    }
                }
                _ = stop.wait_for(|s| *s) => break Some(Close::Shutdown),
                // Every second (the guard of an arm is only read when the loop turns, so this
                // one always runs): the certificate of a logged-in connection still holds.
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if conn.who().is_some()
                        && let Some(lapsed) = conn.cert_lapsed(&edge.trust)
                    {
                        break Some(lapsed);
                    }
                }
            }
        };
        if let Some(close) = close {
            let (code, message) = match close {
                Close::Full => (
                    Disconnect::TooManyConnections,
                    full_message(edge.cfg.max_connections),
                ),
                Close::Idle => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: no traffic for {} s, disconnected (idle_timeout_secs)",
                        limit.as_secs()
                    ),
                ),
                Close::Shutdown => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: shutting down, disconnected after a grace period of {} s; \
                         connect again",
                        edge.cfg.shutdown_grace_secs
                    ),
                ),
                Close::NotLoggedIn => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: not logged in within {} s, disconnected (login_grace_secs)",
                        login_grace.as_secs()
                    ),
                ),
                Close::Revoked => (
                    Disconnect::ByApplication,
                    "sallyport edge: your certificate was revoked, disconnected".to_string(),
                ),
                Close::Expired => (
                    Disconnect::ByApplication,
                    "sallyport edge: your certificate expired, disconnected: log in again"
                        .to_string(),
                ),
            };
            if close == Close::NotLoggedIn {
                tracing::info!(%peer, "disconnecting a connection that did not log in in time");
                edge.audit_repeatable(
                    &unauthenticated_key(Some(peer.ip()), "login_timeout"),
                    json!({
                        "edge": edge.cfg.name,
                        "code": "login_timeout",
                        "reason": message,
                        "authentication_tried": conn.auth_seen.load(Ordering::SeqCst),
                        "connection": conn.id,
                        "source_ip": peer.ip().to_string(),
                        "peer": peer.to_string(),
                    }),
                )
                .await;
            }
            if close != Close::Full && close != Close::NotLoggedIn {
                let what = match close {
                    Close::Idle => "idle_timeout",
                    Close::Revoked => "revoked",
                    Close::Expired => "expired",
                    Close::Shutdown | Close::Full | Close::NotLoggedIn => "shutdown",
                };
                match conn.who() {
                    // Only an authenticated connection is worth an audit event.
                    Some(mut event) => {
                        tracing::info!(%peer, engineer = event["engineer"].as_str(), reason = what, "disconnecting an engineer connection");
                        crate::merge(
                            &mut event,
                            json!({
                                "edge": edge.cfg.name,
                                "source_ip": peer.ip().to_string(),
                                "peer": peer.to_string(),
                                "code": what,
                                "reason": message,
                                "idle_secs": conn.idle_for().as_secs(),
                            }),
                        );
                        edge.audit(EdgeKind::EdgeDisconnected, event).await;
                    }
                    None => {
                        tracing::info!(%peer, reason = what, "disconnecting an unauthenticated connection")
                    }
                }
            }
            let ended = tokio::time::timeout(DISCONNECT_WAIT, async {
                let _ = handle.disconnect(code, message, String::new()).await;
                let _ = (&mut session).await;
            })
            .await;
            // A client that never finished the handshake cannot be sent a disconnect: cut the
            // socket under russh's task, which then ends.
            if ended.is_err()
                && let Some(k) = &killer
            {
                let _ = k.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    // A full edge's refusal of a client that never named a key (or gave up first).
    if full
        && conn.auth_seen.load(Ordering::SeqCst)
        && !conn.full_audited.swap(true, Ordering::SeqCst)
    {
        tracing::warn!(%peer, "edge full: connection refused");
        edge.audit_repeatable(
            &unauthenticated_key(Some(peer.ip()), "edge_full"),
            json!({
                "edge": edge.cfg.name,
                "code": "edge_full",
                "reason": full_reason(edge.cfg.max_connections),
                "max_connections": edge.cfg.max_connections,
                "key_id": null,
                "engineer": null, "ticket": null, "grant": null, "cluster": null,
                "login": null,
                "connection": conn.id,
                "source_ip": peer.ip().to_string(),
                "peer": peer.to_string(),
            }),
        )
        .await;
    }
    // This connection's refusals that were folded in are written now, with their counts.
    edge.flush_refusals(Some(&format!("{}:", conn.id))).await;
}

/// The throttle key of a refusal of `code` before login: the source address (see [`Throttle`]).
fn unauthenticated_key(ip: Option<IpAddr>, code: &str) -> String {
    format!("src:{}:{code}", source_key(ip))
}

fn full_reason(max: usize) -> String {
    format!(
        "the edge is full: {max} engineer connections (max_connections) are open; try again later"
    )
}

/// A certificate that passed and asks for per-session MFA, until the TOTP code is right.
struct PendingMfa {
    /// The user name it was presented for: keyboard-interactive must name the same.
    user: String,
    id: CertIdentity,
    failures: u32,
}

/// Wrong codes per connection before the edge stops asking.
const MFA_TRIES: u32 = 3;

pub struct EngineerHandler {
    edge: Arc<Edge>,
    peer: Option<SocketAddr>,
    /// The user name of the last authentication request, made safe for the log.
    login: String,
    /// Set only when the connection is authenticated: the certificate passed and, when it asks
    /// for it, the TOTP code too.
    identity: Option<CertIdentity>,
    pending_mfa: Option<PendingMfa>,
    /// A TOTP code opens one session: set once a forward was opened under per-session MFA.
    mfa_session_used: bool,
    /// A certificate reached the edge's check on this connection (its refusal is audited).
    certificate_seen: bool,
    /// Shared with the connection's task: activity, identity, and the request to end it.
    conn: Arc<Conn>,
    /// `None` when the edge is full: every authentication is then refused.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

const EDGE_MESSAGE: &str = "This is sallyport's edge: it opens no shell. Reach a node through it, e.g.\r\n  ssh -F ~/.sallyport/ssh_config <node>.<cluster>\r\n(`sallyport login` writes that configuration.)\r\n";

/// The subject fields named by a certificate's key id, when it is sallyport's.
fn key_id_subjects(key_id: &str) -> Value {
    match key_id.parse::<KeyId>() {
        Ok(k) => json!({
            "engineer": k.engineer(),
            "ticket": k.ticket(),
            "grant": k.grant(),
            "cluster": k.cluster(),
        }),
        Err(_) => json!({"engineer": null, "ticket": null, "grant": null, "cluster": null}),
    }
}

impl EngineerHandler {
    /// The fields every event of this connection has.
    fn connection_fields(&self) -> Value {
        json!({
            "edge": self.edge.cfg.name,
            "connection": self.conn.id,
            "login": self.login,
            "source_ip": self.peer.map(|p| p.ip().to_string()),
            "peer": self.peer.map(|p| p.to_string()),
        })
    }

    /// An `edge_refused` event: `key_id` names the engineer, ticket and cluster when it parses.
    fn refusal(&self, key_id: Option<&str>, code: &str, reason: &str, extra: Value) -> Value {
        let mut v = self.connection_fields();
        crate::merge(
            &mut v,
            json!({"code": code, "reason": reason, "key_id": key_id.map(sanitize)}),
        );
        crate::merge(&mut v, key_id_subjects(key_id.unwrap_or_default()));
        crate::merge(&mut v, extra);
        v
    }

    /// Audit a refusal: a few per minute per code and connection once logged in, per code and
    /// source address before (see [`Throttle`]).
    async fn refused(&self, key_id: Option<&str>, code: &str, reason: &str, extra: Value) {
        let data = self.refusal(key_id, code, reason, extra);
        self.edge
            .audit_repeatable(&self.refusal_key(code), data)
            .await;
    }

    /// The throttle key of a refusal of `code` on this connection.
    fn refusal_key(&self, code: &str) -> String {
        if self.identity.is_some() {
            self.conn.refusal_key(code)
        } else {
            unauthenticated_key(self.peer.map(|p| p.ip()), code)
        }
    }

    /// The edge is full: audit it (once per connection, naming the key the client offered),
    /// and have the connection's task disconnect it with the message the banner showed.
    async fn refuse_full(&mut self, key_id: Option<&str>, extra: Value) -> Auth {
        if !self.conn.full_audited.swap(true, Ordering::SeqCst) {
            tracing::warn!(peer = ?self.peer, login = self.login, key_id, "edge full: connection refused");
            let max = self.edge.cfg.max_connections;
            let mut extra = extra;
            crate::merge(&mut extra, json!({"max_connections": max}));
            self.refused(key_id, "edge_full", &full_reason(max), extra)
                .await;
        }
        self.conn.kick.notify_one();
        Auth::reject()
    }

    /// An authentication request: a sign of life (and, when the edge is full, a client that
    /// reached authentication, whose refusal is audited even if it names no key).
    fn auth_request(&mut self, user: &str) {
        self.login = crate::sanitize_login(user);
        self.conn.auth_seen.store(true, Ordering::SeqCst);
        self.conn.touch();
    }

    /// The connection is authenticated as `id`: remember who, for `edge_disconnected`.
    fn authenticated(&mut self, id: CertIdentity) {
        if let Ok(mut who) = self.conn.who.lock() {
            *who = Some(json!({
                "connection": self.conn.id,
                "login": self.login,
                "key_id": id.key_id().to_string(),
                "engineer": id.engineer(),
                "ticket": id.ticket(),
                "grant": id.grant(),
                "cluster": id.cluster(),
                "serial": id.serial().to_string(),
            }));
        }
        self.identity = Some(id);
    }

    /// Audit a shell, exec or subsystem request on the edge itself, and answer with the message.
    async fn refuse_shell(
        &mut self,
        channel: ChannelId,
        request: &str,
        extra: Value,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.conn.touch();
        let key_id = self.identity.as_ref().map(|i| i.key_id().to_string());
        tracing::warn!(peer = ?self.peer, login = self.login, key_id, request, "refused: the edge opens no shell");
        let mut extra = extra;
        crate::merge(&mut extra, json!({"request": request}));
        self.refused(
            key_id.as_deref(),
            "no_shell_on_edge",
            "the edge opens no shell: reach a node through it",
            extra,
        )
        .await;
        refuse_shell(channel, session)
    }
}

impl russh::server::Handler for EngineerHandler {
    type Error = russh::Error;

    /// When the edge is full, the engineer reads why before anything else.
    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .permit
            .is_none()
            .then(|| format!("{}\r\n", full_message(self.edge.cfg.max_connections))))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        self.certificate_seen = true;
        self.pending_mfa = None;
        let key_id = cert.key_id().to_string();
        let serial = json!({"serial": cert.serial().to_string()});
        if self.permit.is_none() {
            return Ok(self.refuse_full(Some(&key_id), serial).await);
        }
        let trust = &self.edge.trust;
        let result = check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        );
        if result.is_ok()
            && let Ok(mut kept) = self.conn.cert.lock()
        {
            *kept = Some(cert.clone());
        }
        match result {
            Ok(id) if id.per_session_mfa() && self.edge.authed.is_none() => {
                let reason = "the certificate asks for per-session MFA, and this edge has no \
                              broker token (token_file) to check TOTP codes with";
                tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), "certificate refused at the edge: {reason}");
                self.refused(Some(&key_id), "mfa_unavailable", reason, serial)
                    .await;
                Ok(Auth::reject())
            }
            Ok(id) if id.per_session_mfa() => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "certificate accepted at the edge; asking for the per-session TOTP code");
                self.identity = None;
                self.pending_mfa = Some(PendingMfa {
                    user: user.to_string(),
                    id,
                    failures: 0,
                });
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: true,
                })
            }
            Ok(id) => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "engineer authenticated at the edge");
                self.authenticated(id);
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), code = refusal.code(), reason = %refusal, "certificate refused at the edge");
                self.refused(Some(&key_id), refusal.code(), &refusal.to_string(), serial)
                    .await;
                Ok(Auth::reject())
            }
        }
    }

    /// A certificate russh refused itself (expired, not yet valid, or a CA signature that does
    /// not verify): refused whatever happens here; audited once per connection with the code our
    /// own check gives (a certificate from an untrusted CA is called that, an expired one of
    /// ours `expired`). The client has not proven it holds the key yet.
    async fn auth_certificate_refused(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<(), Self::Error> {
        self.auth_request(user);
        if self.certificate_seen || self.permit.is_none() {
            return Ok(());
        }
        self.certificate_seen = true;
        let trust = &self.edge.trust;
        let (code, reason) = match check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        ) {
            Err(refusal) => (refusal.code().to_string(), refusal.to_string()),
            // russh's clock and ours disagree by a second at the edge of the window.
            Ok(_) => (
                "outside_validity".to_string(),
                "the certificate is outside its validity window".to_string(),
            ),
        };
        let key_id = cert.key_id().to_string();
        tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "certificate refused at the edge");
        self.refused(
            Some(&key_id),
            &code,
            &reason,
            json!({"serial": cert.serial().to_string(), "key_ownership": "not proven"}),
        )
        .await;
        Ok(())
    }

    /// A plain key (not a certificate) whose signature verified. Refused; audited when no
    /// certificate reached the edge's check on this connection.
    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        if self.permit.is_none() {
            let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
            return Ok(self
                .refuse_full(None, json!({"fingerprint": fingerprint}))
                .await);
        }
        if !self.certificate_seen {
            let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
            tracing::warn!(peer = ?self.peer, user, fingerprint, "plain key refused at the edge: no valid certificate was presented");
            let public_key = key
                .public_key
                .to_openssh()
                .ok()
                .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
            self.refused(
                None,
                "not_a_certificate",
                "only sallyport certificates are accepted: a plain key was offered without a \
                 certificate; run `sallyport login`",
                json!({"fingerprint": fingerprint, "public_key": public_key}),
            )
            .await;
            // One event per connection is enough.
            self.certificate_seen = true;
        }
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        // Only for a connection whose certificate passed and asks for it, under the same name.
        let Some(pending) = &self.pending_mfa else {
            tracing::debug!(peer = ?self.peer, "keyboard-interactive without a certificate: refused");
            return Ok(Auth::reject());
        };
        if pending.user != user {
            self.pending_mfa = None;
            return Ok(Auth::reject());
        }
        let Some(mut response) = response else {
            let prompt = format!("TOTP code for {}: ", pending.id.engineer());
            return Ok(Auth::Partial {
                name: "sallyport per-session MFA".into(),
                instructions: format!(
                    "Ticket {} on {} asks for a TOTP code for each session.",
                    pending.id.ticket(),
                    pending.id.cluster()
                )
                .into(),
                prompts: vec![(prompt.into(), false)].into(),
            });
        };
        let code: String = response
            .next()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim()
                    .chars()
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        let key_id = pending.id.key_id().to_string();
        if code.is_empty() {
            // No answer (a client in batch mode cannot prompt): refused without asking the
            // broker, so it does not count toward the engineer's lockout, and not asked again.
            tracing::warn!(peer = ?self.peer, user, key_id, "no per-session TOTP code was typed: refused");
            self.refused(
                Some(&key_id),
                "mfa_no_code",
                "the certificate asks for a per-session TOTP code and none was typed (ssh in \
                 batch mode cannot prompt for it)",
                json!({}),
            )
            .await;
            self.pending_mfa = None;
            return Ok(Auth::reject());
        }
        let peer_ip = self.peer.map(|p| p.ip());
        let verdict = self.edge.verify_mfa(&pending.id, &code, peer_ip).await;
        match verdict {
            MfaVerdict::Verified => {
                let Some(p) = self.pending_mfa.take() else {
                    return Ok(Auth::reject());
                };
                tracing::info!(peer = ?self.peer, user, engineer = p.id.engineer(), ticket = p.id.ticket(), cluster = p.id.cluster(), "engineer authenticated at the edge (certificate and per-session TOTP)");
                self.authenticated(p.id);
                Ok(Auth::Accept)
            }
            MfaVerdict::Refused { code, reason } => {
                tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "per-session TOTP code refused at the edge");
                self.refused(Some(&key_id), code, &reason, json!({})).await;
                let failures = match self.pending_mfa.as_mut() {
                    Some(p) => {
                        p.failures += 1;
                        p.failures
                    }
                    None => MFA_TRIES,
                };
                if failures >= MFA_TRIES || code == "mfa_locked_out" {
                    self.pending_mfa = None;
                    return Ok(Auth::reject());
                }
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: false,
                })
            }
            MfaVerdict::Unavailable(reason) => {
                tracing::error!(peer = ?self.peer, user, key_id, reason, "cannot check the per-session TOTP code: refused");
                self.refused(
                    Some(&key_id),
                    "mfa_unavailable",
                    &format!("the per-session TOTP code cannot be checked: {reason}"),
                    json!({}),
                )
                .await;
                self.pending_mfa = None;
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
        self.conn.touch();
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_shell(channel, "shell", json!({}), session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = sanitize(&String::from_utf8_lossy(data));
        self.refuse_shell(channel, "exec", json!({"command": command}), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_shell(
            channel,
            "subsystem",
            json!({"subsystem": sanitize(name)}),
            session,
        )
        .await
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.conn.touch();
        let key_id = self.identity.as_ref().map(|i| i.key_id().to_string());
        tracing::warn!(peer = ?self.peer, login = self.login, "refused: remote forwarding on the edge");
        self.refused(
            key_id.as_deref(),
            "forward_on_edge",
            "the edge does not forward ports: only direct-tcpip to <node>.<cluster>:22",
            json!({"target": sanitize(&format!("{address}:{port}"))}),
        )
        .await;
        Ok(false)
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
        self.conn.touch();
        let Some(id) = &self.identity else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let key_id = id.key_id().to_string();
        let target = sanitize(&format!("{host}:{port}"));
        if self.edge.draining.load(Ordering::SeqCst) {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                "refused: the edge is shutting down"
            );
            self.refused(
                Some(&key_id),
                "shutting_down",
                "the edge is shutting down: it opens no new forwards; connect again",
                json!({"target": target}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        }
        let Some((node, cluster)) = split_target(host).filter(|_| port == 22) else {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                port,
                "refused: not a <node>.<cluster> name on port 22"
            );
            self.refused(
                Some(&key_id),
                "bad_target",
                "the edge forwards only to <node>.<cluster>:22",
                json!({"target": target}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if cluster != id.cluster() {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                port,
                cert_cluster = id.cluster(),
                "refused: the certificate is for another cluster or port"
            );
            let reason = format!(
                "the certificate is for another cluster ({}), not {cluster}",
                id.cluster()
            );
            self.refused(
                Some(&key_id),
                "other_cluster",
                &reason,
                json!({"target": target, "target_cluster": cluster}),
            )
            .await;
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        // Per-session MFA means per session: one code, one forward. A second session through
        // this connection (ControlMaster, `ssh -J` reusing a jump connection) needs a new
        // connection and a new code.
        if id.per_session_mfa() && self.mfa_session_used {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                "refused: a per-session TOTP code opens one session"
            );
            self.refused(
                Some(&key_id),
                "mfa_session_used",
                "per-session MFA: a TOTP code opens one session; connect again (without a shared \
                 ControlMaster connection to the edge) and enter a new code",
                json!({"target": target}),
            )
            .await;
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let limit = self.edge.limits().max_forwards_per_connection;
        let Some(slot) = crate::Slot::take(&self.conn.forwards, limit) else {
            tracing::warn!(
                engineer = id.engineer(),
                limit,
                "refused: too many forwards"
            );
            self.refused(
                Some(&key_id),
                "too_many_forwards",
                &format!("at most {limit} sessions at once through one connection to the edge"),
                json!({"target": target, "limit": limit}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        if id.per_session_mfa() {
            self.mfa_session_used = true;
        }
        let tunnels = self.edge.tunnels.of(cluster);
        // The originator the gateway sees is the engineer's address as the edge saw it, not what
        // the client claims: the gateway checks `source-address` against it again.
        let (originator, originator_port) = match self.peer {
            Some(p) => (p.ip().to_string(), u32::from(p.port())),
            None => (originator_address.to_string(), originator_port),
        };
        let host = host.to_string();
        let engineer = id.engineer().to_string();
        let mut session_event = self.connection_fields();
        crate::merge(
            &mut session_event,
            json!({
                "engineer": id.engineer(),
                "ticket": id.ticket(),
                "grant": id.grant(),
                "cluster": id.cluster(),
                "node": node,
                "target": target,
                "key_id": key_id,
                "serial": id.serial().to_string(),
                "per_session_mfa": id.per_session_mfa(),
            }),
        );
        let no_tunnel_reason = format!("no gateway of cluster {cluster} is connected to this edge");
        let no_tunnel = self.refusal(
            Some(&key_id),
            "no_tunnel",
            &no_tunnel_reason,
            json!({"target": target}),
        );
        // Tunnels are up, but every gateway refused the node (one it does not serve, or one it
        // cannot take now): a different fault from a missing tunnel.
        let gateway_refused_reason = format!(
            "the gateway of cluster {cluster} refused {node} (a node it does not serve, or it \
             cannot take a session now)"
        );
        let gateway_refused = self.refusal(
            Some(&key_id),
            "gateway_refused",
            &gateway_refused_reason,
            json!({"target": target}),
        );
        let (no_tunnel_key, gateway_refused_key) = (
            self.refusal_key("no_tunnel"),
            self.refusal_key("gateway_refused"),
        );
        let edge = self.edge.clone();
        let conn = self.conn.clone();
        // Opening the tunnel channel waits on the gateway's connection: never inside this
        // connection's loop.
        tokio::spawn(async move {
            // Held for as long as the forward is open (or being opened).
            let _slot = slot;
            let any_tunnel = !tunnels.is_empty();
            for (tunnel_id, tunnel) in tunnels {
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
                        // Written before any byte passes; no record, no forward (fail closed).
                        if !edge
                            .audit(EdgeKind::EdgeSession, session_event.clone())
                            .await
                        {
                            let _ = inner.close().await;
                            reply.reject(ChannelOpenFailure::ResourceShortage).await;
                            return;
                        }
                        // Listed under its tunnel while it lasts: a dropped tunnel names it.
                        let _listed = edge.tunnels.forwarded(tunnel_id, session_event);
                        reply.accept().await;
                        pipe(channel, inner, conn.clone()).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, host, "a tunnel refused the channel; trying the next")
                    }
                }
            }
            // The engineer's ssh prints the reason: "channel 0: open failed: connect failed:
            // sallyport: ...".
            let reason = if any_tunnel {
                tracing::warn!(
                    engineer,
                    host,
                    "every tunnel of this cluster refused the node"
                );
                edge.audit_repeatable(&gateway_refused_key, gateway_refused)
                    .await;
                gateway_refused_reason
            } else {
                tracing::warn!(engineer, host, "no tunnel to this cluster's gateway");
                edge.audit_repeatable(&no_tunnel_key, no_tunnel).await;
                no_tunnel_reason
            };
            reply
                .reject(ChannelOpenFailure::Other {
                    code: ChannelOpenFailure::ConnectFailed.code(),
                    reason: format!("sallyport: {reason}"),
                })
                .await;
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

/// Copy both ways until both sides are done; every byte read either way is activity of `conn`.
async fn pipe<A, B>(a: Channel<A>, b: Channel<B>, conn: Arc<Conn>)
where
    A: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
    B: From<(ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
{
    let mut a = Touching {
        inner: a.into_stream(),
        conn: conn.clone(),
    };
    let mut b = Touching {
        inner: b.into_stream(),
        conn,
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %e, "pipe ended");
    }
}

/// A stream whose reads count as activity of a connection (for the idle timeout).
struct Touching<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touching<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
            ca: None,
            expires: 0,
            registered: None,
        }
    }
}

pub struct TunnelHandler {
    edge: Arc<Edge>,
    peer: Option<SocketAddr>,
    cluster: Option<String>,
    /// The fingerprint of the host CA that signed the gateway's certificate.
    ca: Option<String>,
    /// When the gateway's certificate expires.
    expires: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(dir: &Path, name: Option<&str>, token_file: Option<&Path>) -> EdgeConfig {
        EdgeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tunnel_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("data"),
            broker: "http://127.0.0.1:1".into(),
            broker_ca: None,
            user_ca_keys: vec![],
            refresh_secs: 10,
            max_connections: 10,
            idle_timeout_secs: 600,
            shutdown_grace_secs: 25,
            login_grace_secs: 120,
            name: name.map(str::to_string),
            token_file: token_file.map(Path::to_path_buf),
            public_address: None,
            max_forwards_per_connection: 10,
        }
    }

    #[test]
    fn the_token_file_must_be_the_owners_only_and_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.token");
        std::fs::write(&file, "spt_abc\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file))).unwrap(),
            Some(("edge1".to_string(), "spt_abc".to_string()))
        );
        // A name is needed with a token, and must be a plain name.
        let err = edge_identity(&cfg(dir.path(), None, Some(&file)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("set `name`"), "{err}");
        assert!(edge_identity(&cfg(dir.path(), Some("a b/c"), Some(&file))).is_err());
        // Not a token; no such file.
        std::fs::write(&file, "password\n").unwrap();
        let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spt_"), "{err}");
        assert!(
            edge_identity(&cfg(
                dir.path(),
                Some("edge1"),
                Some(&dir.path().join("missing"))
            ))
            .is_err()
        );
        // Without a token file the edge runs (and only logs).
        assert_eq!(
            edge_identity(&cfg(dir.path(), Some("edge1"), None)).unwrap(),
            None
        );
        assert!(
            Edge::new(cfg(dir.path(), None, None))
                .unwrap()
                .spool
                .is_none()
        );
    }

    #[test]
    fn limits_must_be_usable_and_the_grace_period_has_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), None, None);
        c.idle_timeout_secs = 0;
        let err = Edge::new(c).err().unwrap().to_string();
        assert!(err.contains("idle_timeout_secs"), "{err}");
        let mut c = cfg(dir.path(), None, None);
        c.max_connections = 0;
        let err = Edge::new(c).err().unwrap().to_string();
        assert!(err.contains("max_connections"), "{err}");
        let mut c = cfg(dir.path(), None, None);
        c.idle_timeout_secs = 1;
        assert_eq!(Edge::new(c).unwrap().idle_timeout(), Duration::from_secs(1));
        let parsed: EdgeConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbroker = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                parsed.max_connections,
                parsed.idle_timeout_secs,
                parsed.shutdown_grace_secs
            ),
            (1000, 600, 25)
        );
    }

    #[test]
    fn key_ids_name_the_subjects_only_when_they_are_sallyports() {
        let v = key_id_subjects("sallyport:eng=alice;ticket=SUP-1;grant=g-1;cluster=acme-prod");
        assert_eq!(v["engineer"], "alice");
        assert_eq!(v["ticket"], "SUP-1");
        assert_eq!(v["cluster"], "acme-prod");
        let v = key_id_subjects("sallyport:eng=al ice;ticket=x;grant=y;cluster=z");
        assert!(v["engineer"].is_null(), "{v}");
        assert!(key_id_subjects("anything")["cluster"].is_null());
    }
}
