//! The gateway: inside the customer's network. It enrolls once with a one-time join token
//! (generating the cluster's node CA and host CA here; private keys never leave), dials out to
//! every configured edge and keeps that tunnel up, and for each session terminates the inner SSH
//! connection with a host certificate for the node's name, checks the engineer's certificate
//! again, connects to the node with a per-session certificate and records everything. On
//! SIGTERM it stops gracefully ([`run`]): no new session, the open ones ended (each writing its
//! `session_ended`), the audit spool shipped, then it exits.

mod enroll;
mod live;
mod node;
mod recorder;
mod rules;
mod session;
mod tunnel;

pub use recorder::REST_AFTER;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use russh::keys::PrivateKey;
use sallyport_api::gateways::GatewaySelf;
use sallyport_api::sessions::Terminations;
use sallyport_ca::clock::now_secs;
use sallyport_ca::policy::Engine;
use sallyport_ca::seal::SealKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker_client::BrokerClient;
use crate::config::GatewayConfig;
use crate::spool::Spool;
use crate::throttle::Throttle;
use crate::trust::Trust;
use rules::{PolicyCache, Rules};
use sallyport_audit::writers::{ChainKind, GatewayKind, Writer};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub gateway: String,
    pub cluster: String,
}

/// A node of the cluster, as the broker lists it.
pub use sallyport_api::gateways::GatewayNode as NodeEntry;

pub struct Gateway {
    /// The config the gateway started with; the limits a SIGHUP changed since are in `limits`.
    pub cfg: GatewayConfig,
    /// The limits a SIGHUP may change (see [`Gateway::reload`]).
    limits: std::sync::RwLock<GatewayLimits>,
    /// The broker's hidden-input key (see [`sallyport_ca::seal`]).
    seal_key: std::sync::RwLock<Option<SealKey>>,
    pub id: String,
    pub cluster: String,
    pub node_ca: PrivateKey,
    pub host_ca: PrivateKey,
    /// The key behind every host certificate this gateway presents.
    pub host_key: PrivateKey,
    pub trust: Arc<Trust>,
    pub broker: BrokerClient,
    pub spool: Arc<Spool<GatewayKind>>,
    pub nodes: Mutex<HashMap<String, NodeEntry>>,
    /// The policy engine asked for every channel request (base policies of `policies/`).
    engine: Engine,
    /// The customer's own policies, from the broker (cached in `policies.json`).
    rules: Mutex<Rules>,
    /// Server configs per node name (each with its own host certificate), with the time the
    /// certificate is renewed (unix seconds).
    inner_configs: Mutex<HashMap<String, (Arc<russh::server::Config>, u64)>>,
    /// Engineer sessions open now, in all and per engineer (`max_sessions`,
    /// `max_sessions_per_engineer`).
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    engineer_sessions: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicUsize>>>,
    /// Sessions a reviewer or a customer approver ended, by session id: (who, why). Read from
    /// the broker every second; each open session's watcher disconnects its own.
    terminations: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// Sessions a reviewer or a customer approver watches now (read every second).
    watched: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Of those, the ones an approver of the customer watches (a moderated session may start).
    observed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Refusals an engineer can repeat past a limit (channels of a session, sessions), audited a
    /// few times a minute per session or engineer and code (`crate::throttle`).
    refusals: Throttle<(GatewayKind, serde_json::Value)>,
    /// One refresh from the broker at a time: two sessions to a node added since the last
    /// refresh each ask for one, and the answers must be applied in the order they were read.
    refreshing: tokio::sync::Mutex<()>,
    /// The engineer sessions' tasks (and what they leave to end on the node): the wait for them
    /// when the gateway stops.
    tasks: TaskTracker,
    /// Cancelled when the gateway stops: no new session, and every open one is ended.
    stopping: CancellationToken,
}

/// A refusal past a limit is written at most this many times per key (a session and a code, or
/// an engineer and a code) per `REFUSAL_WINDOW_SECS`; the others are counted into the last one,
/// written when the window or the session ends.
const REFUSALS_PER_WINDOW: u32 = 5;
const REFUSAL_WINDOW_SECS: u64 = 60;
/// The cached hidden-input key, for a start without the broker.
const HIDDEN_INPUT_KEY_FILE: &str = "hidden_input_key.pub";

/// Why a session was refused past a limit: (code, reason, limit).
pub type OverLimit = (&'static str, String, usize);

impl Gateway {
    /// An approver of the customer watches session `sid` now (a reviewer of the vendor
    /// watching does not count: the customer asked for one of its own).
    pub fn is_observed(&self, sid: &str) -> bool {
        self.observed.lock().is_ok_and(|w| w.contains(sid))
    }

    /// Who ended session `sid`, and why, when a reviewer or an approver did.
    pub fn termination(&self, sid: &str) -> Option<(String, String)> {
        self.terminations
            .lock()
            .ok()
            .and_then(|t| t.get(sid).cloned())
    }

    /// Read the sessions of this cluster whose end was asked for (the last ten minutes).
    async fn refresh_terminations(&self) -> anyhow::Result<()> {
        let v: Terminations = self.broker.get_as("/v1/gateway/terminations").await?;
        let mut fresh = HashMap::new();
        for t in v.terminations {
            if !t.session.is_empty() {
                fresh.insert(t.session, (t.by, t.reason));
            }
        }
        if let Ok(mut t) = self.terminations.lock() {
            *t = fresh;
        }
        Ok(())
    }

    /// Write a refusal past a limit, unless more than a few of its `key` were written this
    /// minute (then it is counted into a later event; see [`Throttle`]).
    pub async fn audit_repeatable(&self, key: &str, kind: GatewayKind, data: serde_json::Value) {
        let mut item = (kind, data);
        if let Some(n) = self.refusals.admit(key, now_secs(), &item) {
            crate::throttle::note_suppressed(&mut item.1, n);
            if let Err(e) = self.spool.append(kind, item.1).await {
                tracing::error!(error = %e, "audit spool unwritable");
            }
        }
    }

    /// Write the refusals folded in under the keys starting with `prefix` (a session that
    /// ended), or, without a prefix, those whose window ended.
    pub async fn flush_refusals(&self, prefix: Option<&str>) {
        let folded = match prefix {
            Some(p) => self.refusals.take(p),
            None => self.refusals.due(now_secs()),
        };
        for f in folded {
            let (kind, mut data) = f.data;
            crate::throttle::note_suppressed(&mut data, f.others);
            if let Err(e) = self.spool.append(kind, data).await {
                tracing::error!(error = %e, "audit spool unwritable");
            }
        }
    }

    /// The config keys [`Gateway::reload`] applies; the others need a restart.
    pub const RELOADABLE: &'static [&'static str] = &[
        "max_sessions",
        "max_sessions_per_engineer",
        "max_channels_per_session",
    ];

    pub(crate) fn limits(&self) -> GatewayLimits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a config read again on SIGHUP and checked whole (`Err`: it did not load or check):
    /// the limits in [`Gateway::RELOADABLE`] hold for new sessions and channels. Audited as
    /// `gateway_config_reloaded` (the keys applied and those that need a restart) or, when the
    /// config is not usable and nothing changed, `gateway_config_reload_refused`.
    pub async fn reload(
        &self,
        new: Result<GatewayConfig, String>,
        applied: &[String],
        restart: &[String],
    ) -> anyhow::Result<()> {
        let fields = json!({"cluster": self.cluster, "gateway": self.id});
        let cfg = match new {
            Ok(cfg) => cfg,
            Err(problems) => {
                let mut data = fields;
                data["reason"] = json!(problems);
                self.spool
                    .append(GatewayKind::GatewayConfigReloadRefused, data)
                    .await?;
                anyhow::bail!("the new config is not usable, nothing changed: {problems}");
            }
        };
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = GatewayLimits::of(&cfg);
        let mut data = fields;
        data["applied"] = json!(applied);
        data["needs_restart"] = json!(restart);
        self.spool
            .append(GatewayKind::GatewayConfigReloaded, data)
            .await?;
        Ok(())
    }

    /// The slots one engineer session holds while it is open, or why it is refused.
    pub fn session_slots(&self, engineer: &str) -> Result<Vec<crate::Slot>, OverLimit> {
        let limits = self.limits();
        let limit = limits.max_sessions;
        let all = crate::Slot::take(&self.sessions, limit).ok_or_else(|| {
            (
                "too_many_sessions",
                format!("this gateway serves at most {limit} sessions at once; try again later"),
                limit,
            )
        })?;
        let limit = limits.max_sessions_per_engineer;
        let mine = {
            // Taken under the lock: an entry is forgotten (no session open) only while nobody
            // can be taking a slot of it.
            let mut m = self
                .engineer_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            m.retain(|_, c| c.load(std::sync::atomic::Ordering::SeqCst) > 0);
            crate::Slot::take(m.entry(engineer.to_string()).or_default(), limit)
        };
        let mine = mine.ok_or_else(|| {
            (
                "too_many_sessions_engineer",
                format!(
                    "at most {limit} sessions of one engineer at once through this gateway: close one first"
                ),
                limit,
            )
        })?;
        Ok(vec![all, mine])
    }
}

/// What a SIGHUP can change while the gateway runs; every other key needs a restart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayLimits {
    pub max_sessions: usize,
    pub max_sessions_per_engineer: usize,
    pub max_channels_per_session: usize,
}

impl GatewayLimits {
    fn of(cfg: &GatewayConfig) -> GatewayLimits {
        GatewayLimits {
            max_sessions: cfg.max_sessions,
            max_sessions_per_engineer: cfg.max_sessions_per_engineer,
            max_channels_per_session: cfg.max_channels_per_session,
        }
    }
}

/// Enroll at first start, then load identity, keys and the cluster's view.
pub async fn open(cfg: GatewayConfig) -> anyhow::Result<Arc<Gateway>> {
    let problems = cfg.preflight();
    anyhow::ensure!(
        problems.is_empty(),
        "the gateway config is not usable:\n  - {}",
        problems.join("\n  - ")
    );
    let dir = cfg.data_dir.clone();
    crate::private::open_data_dir(&dir, "gateway's data_dir")?;
    let (node_ca, _) =
        sallyport_ca::keys::load_or_create_key(&dir.join("node_ca"), "sallyport node CA")?;
    let (host_ca, _) =
        sallyport_ca::keys::load_or_create_key(&dir.join("host_ca"), "sallyport host CA")?;
    let (host_key, _) = sallyport_ca::keys::load_or_create_key(
        &dir.join("host_key"),
        "sallyport gateway host key",
    )?;
    // Signs the head of the gateway's audit chain with every batch it ships; the broker pins
    // its public key at enrollment.
    let (audit_key, _) = sallyport_ca::keys::load_or_create_key(
        &dir.join("audit_key"),
        "sallyport gateway audit key",
    )?;
    let anon = BrokerClient::new(&cfg.broker, cfg.broker_ca.as_deref(), None)?;
    let (enrollment, credential) =
        enroll::enroll(&cfg, &dir, &anon, &node_ca, &host_ca, &audit_key).await?;
    let broker = anon.with_token(credential);
    let trust = Trust::load(&dir, crate::trust::pinned_cas(&cfg.user_ca_keys)?);
    tracing::info!(
        source = format!("gateway:{}", enrollment.gateway),
        audit_key = %audit_key.public_key().fingerprint(russh::keys::ssh_key::HashAlg::Sha256),
        "this gateway signs its audit chain with this key: record its fingerprint for `sallyport audit verify --keys`"
    );
    let spool = Spool::open(
        &dir.join("spool"),
        Writer::Gateway {
            id: enrollment.gateway.clone(),
            cluster: enrollment.cluster.clone(),
        },
        audit_key,
    )?;
    spool.set_reserve(cfg.spool_reserve_bytes);
    let gw = Arc::new(Gateway {
        id: enrollment.gateway,
        cluster: enrollment.cluster,
        node_ca,
        host_ca,
        host_key,
        trust,
        broker,
        spool,
        nodes: Mutex::new(HashMap::new()),
        engine: Engine::new().context("the shipped channel policies do not load")?,
        rules: Mutex::new(Rules {
            source: None,
            customer: String::new(),
            policies: Ok(Vec::new()),
        }),
        inner_configs: Mutex::new(HashMap::new()),
        sessions: Arc::default(),
        engineer_sessions: Mutex::new(HashMap::new()),
        terminations: std::sync::Mutex::new(HashMap::new()),
        watched: std::sync::Mutex::default(),
        observed: std::sync::Mutex::default(),
        refusals: Throttle::new(REFUSAL_WINDOW_SECS, REFUSALS_PER_WINDOW),
        refreshing: tokio::sync::Mutex::new(()),
        tasks: TaskTracker::new(),
        stopping: CancellationToken::new(),
        limits: std::sync::RwLock::new(GatewayLimits::of(&cfg)),
        seal_key: std::sync::RwLock::new(None),
        cfg,
    });
    if let Err(e) = gw.refresh_self().await {
        tracing::warn!(error = %e, "broker unreachable at start; using cached nodes");
        if let Ok(text) = std::fs::read_to_string(dir.join("nodes.json"))
            && let Ok(nodes) = serde_json::from_str::<Vec<NodeEntry>>(&text)
        {
            gw.set_nodes(nodes);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("policies.json"))
            && let Ok(cache) = serde_json::from_str::<PolicyCache>(&text)
        {
            gw.set_rules(cache);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(HIDDEN_INPUT_KEY_FILE)) {
            gw.set_seal_key(Some(&text));
        }
    }
    if let Err(e) = gw.trust.refresh(&gw.broker).await {
        tracing::warn!(error = %e, "broker unreachable at start; using cached CA keys and KRL");
    }
    Ok(gw)
}

impl Gateway {
    fn set_nodes(&self, nodes: Vec<NodeEntry>) {
        if let Ok(mut m) = self.nodes.lock() {
            *m = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        }
    }

    async fn refresh_self(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let v: GatewaySelf = self.broker.get_as("/v1/gateway/self").await?;
        let cache = PolicyCache {
            customer: v.customer.unwrap_or_default(),
            policies: v.policies,
        };
        crate::trust::write_atomic(
            &self.cfg.data_dir.join("nodes.json"),
            serde_json::to_string(&v.nodes)?.as_bytes(),
        )?;
        crate::trust::write_atomic(
            &self.cfg.data_dir.join("policies.json"),
            serde_json::to_string(&cache)?.as_bytes(),
        )?;
        if let Some(key) = &v.hidden_input_key {
            crate::trust::write_atomic(
                &self.cfg.data_dir.join(HIDDEN_INPUT_KEY_FILE),
                key.as_bytes(),
            )?;
        }
        self.set_nodes(v.nodes);
        self.set_rules(cache);
        self.set_seal_key(v.hidden_input_key.as_deref());
        Ok(())
    }

    /// Take the broker's hidden-input key; one that does not parse is kept out (pty channels
    /// are then refused), never replaced by nothing in silence.
    fn set_seal_key(&self, text: Option<&str>) {
        let Some(text) = text else {
            return;
        };
        match SealKey::parse(text) {
            Ok(key) => {
                if let Ok(mut k) = self.seal_key.write() {
                    if k.as_ref() != Some(&key) {
                        tracing::info!(key = key.id(), "hidden input is sealed to this key");
                    }
                    *k = Some(key);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the broker's hidden-input key does not parse: pty channels are refused");
                if let Ok(mut k) = self.seal_key.write() {
                    *k = None;
                }
            }
        }
    }

    /// The key to seal hidden input to, once the broker (or the cache) gave one.
    pub(crate) fn seal_key(&self) -> Option<SealKey> {
        self.seal_key.read().ok().and_then(|k| k.clone())
    }

    pub fn node(&self, name: &str) -> Option<NodeEntry> {
        self.nodes.lock().ok().and_then(|m| m.get(name).cloned())
    }

    /// The inner server's config for `<node>.<cluster>`: a host certificate for that name.
    /// Renewed once half of its lifetime (`host_cert_secs`) has passed.
    fn inner_config(&self, host: &str) -> anyhow::Result<Arc<russh::server::Config>> {
        let now = now_secs();
        if let Some((c, _)) = self
            .inner_configs
            .lock()
            .ok()
            .and_then(|m| m.get(host).cloned())
            .filter(|(_, renew_at)| now < *renew_at)
        {
            return Ok(c);
        }
        let lifetime = self.cfg.host_cert_secs;
        let cert = sallyport_ca::cert::build_host_cert(
            &self.host_ca,
            self.host_key.public_key(),
            &[host.to_string()],
            now.saturating_sub(60),
            now + lifetime,
            &format!("sallyport-gateway:{}:{host}", self.id),
        )?;
        let cfg = Arc::new(crate::server_config(
            vec![self.host_key.clone()],
            vec![cert],
            Duration::from_secs(3600),
        ));
        if let Ok(mut m) = self.inner_configs.lock() {
            m.insert(host.to_string(), (cfg.clone(), now + lifetime / 2));
        }
        tracing::info!(host, valid_for_secs = lifetime, "new host certificate");
        Ok(cfg)
    }
}

mod open_sessions;

impl Gateway {
    fn open_sessions_dir(&self) -> std::path::PathBuf {
        self.cfg.data_dir.join("sessions")
    }

    /// An engineer was let in: mark the session open (see `open_sessions`).
    pub(crate) fn session_opened(&self, sid: &str, fields: &serde_json::Value) {
        open_sessions::mark(&self.open_sessions_dir(), sid, fields);
    }

    /// The session's `session_ended` is in the spool.
    pub(crate) fn session_closed(&self, sid: &str) {
        open_sessions::unmark(&self.open_sessions_dir(), sid);
    }
}

/// Run the gateway until `shutdown` resolves.
pub async fn run(
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Recordings a stopped gateway left open are finished first, then uploaded like any other.
    for (kind, data) in recorder::recover_unfinished(&gw.cfg.data_dir.join("recordings")) {
        let mut data = data;
        data["cluster"] = json!(gw.cluster);
        if let Some(session) = data["recording"]
            .as_str()
            .and_then(|r| r.rsplit_once("-c"))
            .map(|(s, _)| s.to_string())
        {
            data["session"] = json!(session);
        }
        tracing::warn!(kind = kind.as_str(), recording = %data["recording"], "finished a recording left by a stopped gateway");
        gw.spool.append(kind, data).await?;
    }
    // Sessions a stopped gateway left open (killed, or its spool unwritable at their end): their
    // `session_ended` is written now, so that no session is left without an end.
    for (sid, mut data) in open_sessions::left(&gw.open_sessions_dir()) {
        crate::merge(
            &mut data,
            json!({"ended_at_restart": true,
                   "reason": "the gateway stopped while the session was open; ended at its next start"}),
        );
        tracing::warn!(
            session = sid,
            "ended a session left open by a stopped gateway"
        );
        gw.spool.append(GatewayKind::SessionEnded, data).await?;
        gw.session_closed(&sid);
    }
    tokio::spawn(crate::spool::ship(gw.spool.clone(), gw.broker.clone()));
    tokio::spawn(recorder::upload_forever(
        gw.cfg.data_dir.join("recordings"),
        gw.broker.clone(),
        Duration::from_secs(gw.cfg.recording_retention_secs),
    ));
    tokio::spawn(gw.trust.clone().refresh_forever(
        gw.broker.clone(),
        Duration::from_secs(gw.cfg.refresh_secs.max(1)),
        Some(crate::trust::CaAudit {
            spool: gw.spool.clone(),
            kind: GatewayKind::UserCasRefused,
            fields: json!({"cluster": gw.cluster, "gateway": gw.id}),
        }),
    ));
    {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(gw.cfg.config_refresh_secs.max(1))).await;
                if let Err(e) = gw.refresh_self().await {
                    tracing::debug!(error = %e, "cannot refresh nodes");
                }
            }
        });
    }
    {
        // Refusals folded in under a key whose window ended are written (every few seconds).
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                gw.flush_refusals(None).await;
            }
        });
    }
    {
        // Sessions ended by a reviewer or an approver end within about two seconds.
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = gw.refresh_terminations().await {
                    tracing::debug!(error = %e, "cannot read ended sessions");
                }
            }
        });
    }
    live::spawn(gw.clone());
    for edge in gw.cfg.edges.clone() {
        tokio::spawn(tunnel::keep_tunnel(gw.clone(), edge));
    }
    tracing::info!(gateway = gw.id, cluster = gw.cluster, "gateway running");
    shutdown.await;
    stop(&gw).await;
    Ok(())
}

/// How long the open sessions may take to end when the gateway stops, and the broker to take
/// the last audit records.
const STOP_WAIT: Duration = Duration::from_secs(10);
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// Stop gracefully: no new session; every open one told so and disconnected, what it ran on the
/// node ended, and its `session_ended` written; then the audit spool shipped to the broker.
async fn stop(gw: &Gateway) {
    tracing::info!(
        sessions = gw.tasks.len(),
        "gateway shutting down: no new sessions; ending the open ones"
    );
    gw.stopping.cancel();
    gw.tasks.close();
    if tokio::time::timeout(STOP_WAIT, gw.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = gw.tasks.len(),
            "sessions still ending when the gateway stops"
        );
    }
    // Whatever refusals are still folded in are written now, with their counts.
    gw.flush_refusals(Some("")).await;
    if shipped(&gw.spool, FLUSH_WAIT).await {
        tracing::info!("gateway stopped: the broker has every audit record");
    } else {
        tracing::warn!(
            "gateway stopped; the broker did not take its last audit records in time: they \
             stay spooled and are shipped at the next start"
        );
    }
}

/// Wait (at most `within`) until the broker has acknowledged every record written to `spool`;
/// `false` when it has not.
async fn shipped(spool: &Spool<GatewayKind>, within: Duration) -> bool {
    let last = spool.head();
    let deadline = std::time::Instant::now() + within;
    while spool.acked() < last {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
