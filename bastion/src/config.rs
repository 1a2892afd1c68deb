//! Configuration of the edge and the gateway (TOML; every key in docs/config.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Where engineers connect (their ProxyJump hop).
    pub listen: SocketAddr,
    /// Where gateways dial in to offer their tunnel.
    pub tunnel_listen: SocketAddr,
    /// Host key, KRL and CA caches.
    pub data_dir: PathBuf,
    /// The broker's URL (user CA keys, KRL, gateways' host CA keys).
    pub broker: String,
    #[serde(default)]
    pub broker_ca: Option<PathBuf>,
    /// The user CA keys to trust (OpenSSH lines). Set: only these, whatever the broker says.
    /// Empty: the broker's set, taken on first contact and then changed only when signed by a CA
    /// trusted already.
    #[serde(default)]
    pub user_ca_keys: Vec<String>,
    /// Seconds between KRL refreshes.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Most engineer connections at once (at least 1); past it a connection is told "too many
    /// connections" and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// An engineer connection with no traffic for this many seconds (at least 1) is closed.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// On SIGTERM, how long open engineer connections may go on (no new ones are accepted)
    /// before the edge disconnects them and exits; 0 disconnects them at once.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// An engineer connection not logged in (certificate and, when asked, TOTP code) within this
    /// many seconds is closed, so that slow or stalled clients cannot hold the connection slots.
    #[serde(default = "default_login_grace")]
    pub login_grace_secs: u64,
    /// The edge's name: the name of its API token, and its audit chain `edge:<name>`.
    #[serde(default)]
    pub name: Option<String>,
    /// A file (0600) holding the edge's API token (role `edge`, made by the operator). With it
    /// the edge spools its refusals and sessions as audit events, ships them to the broker and
    /// checks per-session TOTP codes there; without it, it only logs them.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `host:port` engineers dial to reach this edge (its `listen`, as seen from outside). With
    /// a token the edge registers it and its host key with the broker at start and every
    /// minute; the broker hands both to engineers at their next login (ProxyJump and the
    /// pinned key), so the broker config needs no `edge_host_keys` and no restart.
    #[serde(default)]
    pub public_address: Option<String>,
    /// Forwards (inner sessions to gateways) open at once through one engineer connection; past
    /// it a forward is refused and audited (`too_many_forwards`).
    #[serde(default = "default_forwards_per_connection")]
    pub max_forwards_per_connection: usize,
}

fn default_forwards_per_connection() -> usize {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTarget {
    /// host:port of the edge's tunnel listener.
    pub address: String,
    /// The edge's host public key (OpenSSH line), pinned.
    pub host_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Keys, enrollment, spool, recordings.
    pub data_dir: PathBuf,
    /// The broker's URL.
    pub broker: String,
    #[serde(default)]
    pub broker_ca: Option<PathBuf>,
    /// The user CA keys to trust (OpenSSH lines); see the edge's `user_ca_keys`.
    #[serde(default)]
    pub user_ca_keys: Vec<String>,
    /// The one-time join token (used at the first start only).
    #[serde(default)]
    pub join_token: Option<String>,
    /// The edges to keep a tunnel to.
    #[serde(default)]
    pub edges: Vec<EdgeTarget>,
    /// Lifetime of the per-session certificate for the node, seconds.
    #[serde(default = "default_session_cert_ttl")]
    pub session_cert_ttl_secs: u64,
    /// Seconds between KRL refreshes.
    #[serde(default = "default_gateway_refresh")]
    pub refresh_secs: u64,
    /// Seconds between refreshes of the cluster's nodes and the customer's policies.
    #[serde(default = "default_self_refresh")]
    pub config_refresh_secs: u64,
    /// Free bytes kept on the spool's file system: below it, new activity is refused, and the
    /// records that close sessions and channels still have room.
    #[serde(default = "default_spool_reserve")]
    pub spool_reserve_bytes: u64,
    /// Seconds a recording is kept on the gateway after the broker acknowledged it (0: deleted
    /// at once).
    #[serde(default)]
    pub recording_retention_secs: u64,
    /// Bytes of each direction of a channel without a pty (exec, a shell without a pty) kept in
    /// its recording; past it, the byte count and SHA-256 of the whole stream.
    #[serde(default = "default_stream_cap")]
    pub stream_record_cap_bytes: u64,
    /// Channels (sessions and port forwards) open at once in one engineer session; past it a
    /// channel is refused and audited (`too_many_channels`).
    #[serde(default = "default_channels_per_session")]
    pub max_channels_per_session: usize,
    /// Engineer sessions open at once through this gateway; past it a session is refused with a
    /// message and audited (`too_many_sessions`).
    #[serde(default = "default_sessions")]
    pub max_sessions: usize,
    /// Sessions of one engineer open at once through this gateway (`too_many_sessions_engineer`).
    #[serde(default = "default_sessions_per_engineer")]
    pub max_sessions_per_engineer: usize,
    /// A moderated session (its approval requires an observer) waits this long, seconds, for an
    /// approver of the customer to watch it before what it asked to run is refused.
    #[serde(default = "default_observer_wait_secs")]
    pub observer_wait_secs: u64,
    /// Lifetime of the host certificates this gateway shows engineers (one per node name),
    /// seconds; each is renewed when half of it has passed.
    #[serde(default = "default_cert_secs")]
    pub host_cert_secs: u64,
    /// Lifetime of the certificate this gateway shows the edge for its tunnel, seconds. At half
    /// of it a new tunnel with a new certificate takes the new sessions, and the old one closes
    /// once its sessions ended (at the latest when its certificate expires).
    #[serde(default = "default_cert_secs")]
    pub tunnel_cert_secs: u64,
}

fn default_cert_secs() -> u64 {
    86_400
}

fn default_sessions() -> usize {
    256
}

fn default_observer_wait_secs() -> u64 {
    600
}

fn default_sessions_per_engineer() -> usize {
    16
}

fn default_channels_per_session() -> usize {
    16
}

fn default_stream_cap() -> u64 {
    8 << 20
}

fn default_spool_reserve() -> u64 {
    16 << 20
}

fn default_self_refresh() -> u64 {
    30
}

fn default_refresh() -> u64 {
    10
}
/// Revocation must end open sessions within seconds: the gateway re-reads the KRL often.
fn default_gateway_refresh() -> u64 {
    2
}
fn default_max_connections() -> usize {
    1000
}
fn default_idle() -> u64 {
    600
}
/// Under Kubernetes' default 30 s between SIGTERM and SIGKILL, with room for the disconnects
/// and the last audit records.
fn default_shutdown_grace() -> u64 {
    25
}
/// Enough to type a TOTP code at the per-session prompt.
fn default_login_grace() -> u64 {
    120
}
fn default_session_cert_ttl() -> u64 {
    600
}

/// A config whose relative paths are taken relative to its file.
pub trait Paths {
    fn anchor_paths(&mut self, base: &Path);
}

fn anchor(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl Paths for EdgeConfig {
    fn anchor_paths(&mut self, base: &Path) {
        anchor(base, &mut self.data_dir);
        for p in [&mut self.broker_ca, &mut self.token_file]
            .into_iter()
            .flatten()
        {
            anchor(base, p);
        }
    }
}

impl Paths for GatewayConfig {
    fn anchor_paths(&mut self, base: &Path) {
        anchor(base, &mut self.data_dir);
        if let Some(p) = &mut self.broker_ca {
            anchor(base, p);
        }
    }
}

fn readable(what: &str, p: &Path, problems: &mut Vec<String>) {
    if let Err(e) = std::fs::File::open(p) {
        problems.push(format!("{what} {}: {e}", p.display()));
    }
}

/// `host:port`, with a host and a port other than 0.
fn host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn check_keys(what: &str, keys: &[String], problems: &mut Vec<String>) {
    for k in keys {
        if russh::keys::PublicKey::from_openssh(k.trim()).is_err() {
            problems.push(format!("{what}: {k:?} is not an OpenSSH public key line"));
        }
    }
}

impl EdgeConfig {
    /// What can be checked without creating or changing anything, each problem a sentence
    /// that says what to do: the edge refuses to start on any; `sallyport admin check` prints
    /// them.
    pub fn preflight(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = crate::broker_client::check_broker_url(&self.broker) {
            problems.push(format!("broker: {e:#}"));
        }
        if let Some(ca) = &self.broker_ca {
            readable("broker_ca", ca, &mut problems);
        }
        if self.listen == self.tunnel_listen && self.listen.port() != 0 {
            problems.push(format!(
                "listen and tunnel_listen are both {}: engineers and gateways need a port each",
                self.listen
            ));
        }
        check_keys("user_ca_keys", &self.user_ca_keys, &mut problems);
        if let Some(a) = &self.public_address {
            if !host_port(a) {
                problems.push(format!(
                    "public_address {a:?}: expected host:port (what engineers dial)"
                ));
            }
            if self.token_file.is_none() {
                problems.push(
                    "public_address is set but token_file is not: the edge registers it with its \
                     API token (role edge)"
                        .into(),
                );
            }
        }
        if let Err(e) = crate::private::check_data_dir(&self.data_dir, "edge's data_dir") {
            problems.push(format!("{e:#}"));
        }
        // The name and the token file, as the edge reads them at start.
        if let Err(e) = crate::edge::edge_identity(self) {
            problems.push(format!("{e:#}"));
        }
        problems
    }
}

impl GatewayConfig {
    /// What can be checked without creating or changing anything (see
    /// [`EdgeConfig::preflight`]).
    pub fn preflight(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = crate::broker_client::check_broker_url(&self.broker) {
            problems.push(format!("broker: {e:#}"));
        }
        if let Some(ca) = &self.broker_ca {
            readable("broker_ca", ca, &mut problems);
        }
        if self.host_cert_secs < 20 || self.tunnel_cert_secs < 20 {
            problems
                .push("host_cert_secs and tunnel_cert_secs must be at least 20 (seconds)".into());
        }
        check_keys("user_ca_keys", &self.user_ca_keys, &mut problems);
        if self.edges.is_empty() {
            problems.push(
                "no [[edges]]: name at least one edge (address = its tunnel_listen host:port, \
                 host_key = its data_dir/host_key.pub)"
                    .into(),
            );
        }
        for e in &self.edges {
            if !host_port(&e.address) {
                problems.push(format!(
                    "[[edges]] address {:?}: expected host:port",
                    e.address
                ));
            }
            check_keys(
                &format!("[[edges]] {} host_key", e.address),
                std::slice::from_ref(&e.host_key),
                &mut problems,
            );
        }
        if let Err(e) = crate::private::check_data_dir(&self.data_dir, "gateway's data_dir") {
            problems.push(format!("{e:#}"));
        }
        let enrolled = self.data_dir.join("enrollment.json").exists()
            && self.data_dir.join("credential").exists();
        if !enrolled && self.join_token.is_none() {
            problems.push(
                "this gateway is not enrolled: set join_token (`sallyport admin gateway enroll` \
                 writes a gateway.toml with one)"
                    .into(),
            );
        }
        problems
    }
}

/// Read a config file; every relative path in it is relative to the file, whatever the working
/// directory.
pub fn load<T: serde::de::DeserializeOwned + Paths>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cfg: T =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(base) = path.parent() {
        cfg.anchor_paths(base);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc").join("edge.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:2222\"\ntunnel_listen = \"127.0.0.1:2223\"\ndata_dir = \"data\"\n\
             broker = \"https://broker.example\"\nbroker_ca = \"/etc/ssl/ca.pem\"\ntoken_file = \"edge.token\"\n",
        )
        .unwrap();
        let cfg: EdgeConfig = load(&path).unwrap();
        let etc = dir.path().join("etc");
        assert_eq!(cfg.data_dir, etc.join("data"));
        assert_eq!(cfg.token_file, Some(etc.join("edge.token")));
        assert_eq!(cfg.broker_ca, Some(PathBuf::from("/etc/ssl/ca.pem")));
    }
}
