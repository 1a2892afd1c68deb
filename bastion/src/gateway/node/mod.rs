//! The node's host key is checked before anything is sent to it (`judge`, pure): against the
//! keys the operator registered for the node when there are any (they win over any pin);
//! otherwise, only when the node allows trust on first use, against the key pinned in
//! `data_dir/known_nodes`, pinning (and auditing, `node_key_pinned`) the first one. Every
//! refusal is audited (`node_key_refused`, code `no_registered_key` or `node_key_changed`) and
//! told to the engineer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PublicKeyOrCertificate;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::SessionKeyId;
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};

use super::{Gateway, NodeEntry};
use crate::spool::Spool;

/// What the gateway makes of the key a node shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One of the keys the operator registered.
    Registered,
    /// The key pinned at its first use.
    Pinned,
    /// No key registered nor pinned, and trust on first use allowed: pin this one.
    FirstUse,
    /// Neither registered nor pinned, and no trust on first use.
    NoRegisteredKey,
    /// Not the key registered (or pinned): `expected` are the fingerprints it should have been.
    Changed {
        expected: Vec<String>,
        registered: bool,
    },
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Decide on `presented` (pure). `registered` are the operator's keys for the node, as the
/// broker sent them (an unreadable one matches nothing, but still counts: fail closed).
pub fn judge(
    registered: &[String],
    trust_on_first_use: bool,
    pinned: Option<&PublicKey>,
    presented: &PublicKey,
) -> Verdict {
    if !registered.is_empty() {
        let keys: Vec<PublicKey> = registered
            .iter()
            .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
            .collect();
        if keys.iter().any(|k| k.key_data() == presented.key_data()) {
            return Verdict::Registered;
        }
        return Verdict::Changed {
            expected: keys.iter().map(fingerprint).collect(),
            registered: true,
        };
    }
    if !trust_on_first_use {
        return Verdict::NoRegisteredKey;
    }
    match pinned {
        Some(p) if p.key_data() == presented.key_data() => Verdict::Pinned,
        Some(p) => Verdict::Changed {
            expected: vec![fingerprint(p)],
            registered: false,
        },
        None => Verdict::FirstUse,
    }
}

/// The node's host key was refused: the code audited and what the engineer reads.
#[derive(Debug, Clone)]
pub struct KeyRefusal {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyRefusal {}

pub struct NodeClient {
    known: PathBuf,
    name: String,
    cluster: String,
    address: String,
    host_keys: Vec<String>,
    trust_on_first_use: bool,
    spool: Arc<Spool<GatewayKind>>,
    /// The session's audit fields.
    fields: Value,
    /// Set when the key was refused, for `connect` to return.
    refused: Arc<Mutex<Option<KeyRefusal>>>,
}

impl NodeClient {
    async fn audit(&self, kind: GatewayKind, extra: Value) -> bool {
        let mut d = self.fields.clone();
        crate::merge(&mut d, extra);
        match self.spool.append(kind, d).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit spool unwritable: refusing the node");
                false
            }
        }
    }

    async fn refuse(&self, code: &'static str, message: String, extra: Value) -> bool {
        tracing::error!(node = self.name, code, "{message}");
        let mut detail = json!({"code": code, "reason": message, "address": self.address});
        crate::merge(&mut detail, extra);
        self.audit(GatewayKind::NodeKeyRefused, detail).await;
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(KeyRefusal { code, message });
        }
        false
    }

    async fn check(&self, key: &PublicKey) -> bool {
        let presented = fingerprint(key);
        let pinned = match read_pin(&self.known, &self.name) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .refuse(
                        "known_nodes_unreadable",
                        format!(
                            "the gateway cannot read the host key it pinned for {} ({e}); refusing to connect, nothing ran on the node. Tell the operator",
                            self.name
                        ),
                        json!({"fingerprint": presented}),
                    )
                    .await;
            }
        };
        let (name, cluster) = (&self.name, &self.cluster);
        match judge(
            &self.host_keys,
            self.trust_on_first_use,
            pinned.as_ref(),
            key,
        ) {
            Verdict::Registered | Verdict::Pinned => true,
            Verdict::FirstUse => {
                // Audited before the pin is written: a key is never trusted unrecorded.
                let line = PublicKey::new(key.key_data().clone(), "")
                    .to_openssh()
                    .unwrap_or_default();
                if !self
                    .audit(
                        GatewayKind::NodeKeyPinned,
                        json!({"fingerprint": presented, "host_key": line, "address": self.address}),
                    )
                    .await
                {
                    return self.refuse("audit_unavailable", format!("the gateway cannot write its audit log, so it does not trust {name}'s host key on first use; nothing ran on the node. Tell the operator"), json!({"fingerprint": presented})).await;
                }
                match write_pin(&self.known, name, &line) {
                    Ok(()) => true,
                    Err(e) => self.refuse("known_nodes_unwritable", format!("the gateway cannot pin {name}'s host key ({e}); refusing to connect, nothing ran on the node. Tell the operator"), json!({"fingerprint": presented})).await,
                }
            }
            Verdict::NoRegisteredKey => {
                self.refuse(
                    "no_registered_key",
                    format!(
                        "{name} has no registered host key, so the gateway cannot tell it from an impostor; nothing ran on the node. \
                         Ask the operator to register it (sallyport admin node-update {cluster} {name} --host-key /etc/ssh/ssh_host_ed25519_key.pub)"
                    ),
                    json!({"fingerprint": presented}),
                )
                .await
            }
            Verdict::Changed {
                expected,
                registered,
            } => {
                let message = if registered {
                    format!(
                        "the host key of {name} ({presented}) is not the one registered for it ({}); refusing to connect, nothing ran on the node. \
                         Tell the operator: the node may have been replaced, or something is in the way",
                        expected.join(", ")
                    )
                } else {
                    format!(
                        "the host key of {name} ({presented}) changed since it was trusted on first use ({}); refusing to connect, nothing ran on the node. \
                         Tell the operator: register the node's key (sallyport admin node-update {cluster} {name} --host-key ...) if the change was expected",
                        expected.join(", ")
                    )
                };
                self.refuse(
                    "node_key_changed",
                    message,
                    json!({"fingerprint": presented, "expected": expected,
                           "expected_from": if registered { "registered" } else { "pinned" }}),
                )
                .await
            }
        }
    }
}

impl russh::client::Handler for NodeClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        Ok(self.check(key).await)
    }
}

/// The key pinned for `name` in `known_nodes` (`<name> <key>` lines), if any.
fn read_pin(path: &std::path::Path, name: &str) -> anyhow::Result<Option<PublicKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == name)
    {
        Some((_, k)) => Ok(Some(PublicKey::from_openssh(k.trim())?)),
        None => Ok(None),
    }
}

fn write_pin(path: &std::path::Path, name: &str, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = crate::private::open_append(path)?;
    writeln!(f, "{name} {line}")?;
    f.sync_all()?;
    Ok(())
}

/// Why a connection to the node failed.
#[derive(Debug)]
pub enum NodeError {
    /// Its host key was refused (audited already); the message is for the engineer.
    KeyRefused(KeyRefusal),
    /// The node is not one this gateway serves (not registered for its cluster).
    Unknown(String),
    /// No SSH connection to the node: refused, timed out, or the handshake failed, after
    /// `attempts` tries (see [`connect`] for which failures are tried again).
    Unreachable {
        error: anyhow::Error,
        attempts: u32,
    },
    /// The node's sshd refused the session certificate for this login (its
    /// TrustedUserCAKeys or AuthorizedPrincipalsFile do not let it in).
    CertificateRefused {
        login: String,
    },
    Other(anyhow::Error),
}

impl NodeError {
    /// The audit code of a failure (the `code` of `node_unreachable`).
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::KeyRefused(r) => r.code,
            NodeError::Unknown(_) => "unknown_node",
            NodeError::Unreachable { .. } => "unreachable",
            NodeError::CertificateRefused { .. } => "certificate_refused",
            NodeError::Other(_) => "error",
        }
    }

    /// How many connections to the node were tried, when that is what failed.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            NodeError::Unreachable { attempts, .. } => Some(*attempts),
            NodeError::KeyRefused(_)
            | NodeError::Unknown(_)
            | NodeError::CertificateRefused { .. }
            | NodeError::Other(_) => None,
        }
    }

    /// What the engineer reads (and the audit event's `reason`): what the gateway saw, and
    /// for the node's admins what to check.
    pub fn message(&self, node: &str) -> String {
        match self {
            NodeError::KeyRefused(r) => r.message.clone(),
            NodeError::Unknown(_) => format!(
                "node {node} is not registered in this cluster (sallyport admin node lists \
                 and adds nodes)"
            ),
            NodeError::Unreachable { error, attempts } => {
                let tries = if *attempts == 1 {
                    "attempt"
                } else {
                    "attempts"
                };
                format!("the gateway cannot reach node {node} ({attempts} {tries}): {error:#}")
            }
            NodeError::CertificateRefused { login } => format!(
                "node {node} refused the session certificate for {login}: its sshd must trust \
                 the gateway's node CA (TrustedUserCAKeys) and list {login} in its principals \
                 file (sallyport admin node-config prints both)"
            ),
            NodeError::Other(e) => format!("the connection to node {node} failed: {e:#}"),
        }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::KeyRefused(r) => r.fmt(f),
            NodeError::Unknown(node) => write!(f, "unknown node {node}"),
            NodeError::Unreachable { error: e, .. } | NodeError::Other(e) => write!(f, "{e:#}"),
            NodeError::CertificateRefused { login } => {
                write!(f, "the node refused the session certificate for {login}")
            }
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for NodeError {
    fn from(e: E) -> Self {
        NodeError::Other(e.into())
    }
}

/// The whole time a connection to a node may take, all attempts and pauses included.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);
/// At most this many connections to a node per session. sshd drops connections past its
/// `MaxStartups` (10:30:100 by default: from 10 unauthenticated connections on, 30% of new ones,
/// rising to all at 100) before it sends its banner; a burst of sessions meets that.
const CONNECT_ATTEMPTS: u32 = 5;
/// The pause before the second attempt, doubled before each further one (0.2, 0.4, 0.8, 1.6 s,
/// each drawn between half and all of it so that a burst does not come back all at once): at
/// most 3 s of pauses in all, the rest of [`CONNECT_BUDGET`] for the attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The pause after failed attempt `attempt` (1-based) given `jitter` in [0, 1): between half and
/// all of [`FIRST_BACKOFF`] doubled `attempt - 1` times (pure).
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Whether a failed connection may be tried again: only when the node refused or dropped the
/// TCP connection before the SSH handshake was over (sshd past `MaxStartups`, a restarting
/// sshd). Anything the node said in SSH (a version, algorithms, a key, a signature) is final
/// (pure). A refused host key never gets here: it is final before this is asked.
fn worth_retrying(e: &russh::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        // The node closed the connection before its banner (`read_ssh_id` read nothing), or
        // during the key exchange.
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Connect to `node` as `login`, for session `sid` of `engineer` on `ticket`; `fields` are the
/// session's audit fields, for the events about the node's host key.
///
/// A connection the node refuses or drops before the SSH handshake is over is tried again (at
/// most [`CONNECT_ATTEMPTS`] in [`CONNECT_BUDGET`], with growing, jittered pauses; each retry is
/// logged). Nothing else is: not a refused host key, not a refused certificate, not anything
/// said in SSH. The session certificate is minted once, before the first attempt.
#[allow(clippy::too_many_arguments)]
pub async fn connect(
    gw: &Arc<Gateway>,
    node: &NodeEntry,
    login: &str,
    sid: &str,
    engineer: &str,
    ticket: &str,
    permit_port_forwarding: bool,
    fields: Value,
) -> Result<russh::client::Handle<NodeClient>, NodeError> {
    let key: PrivateKey = sallyport_ca::keys::generate_ed25519("sallyport session")?;
    let now = now_secs();
    let key_id = SessionKeyId::new(sid, engineer, ticket)?;
    let cert = sallyport_ca::cert::build_session_cert(
        &gw.node_ca,
        key.public_key(),
        login,
        &key_id,
        now.saturating_sub(60),
        now + gw.cfg.session_cert_ttl_secs.max(60),
        permit_port_forwarding,
    )?;
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        nodelay: true,
        preferred: crate::client_preferred(),
        ..Default::default()
    });
    let addr = format!("{}:{}", node.address, node.port);
    let deadline = tokio::time::Instant::now() + CONNECT_BUDGET;
    let mut attempts = 0;
    let mut handle = loop {
        attempts += 1;
        let refused = Arc::new(Mutex::new(None));
        let handler = NodeClient {
            known: gw.cfg.data_dir.join("known_nodes"),
            name: node.name.clone(),
            cluster: gw.cluster.clone(),
            address: addr.clone(),
            host_keys: node.host_keys.clone(),
            trust_on_first_use: node.trust_on_first_use,
            spool: gw.spool.clone(),
            fields: fields.clone(),
            refused: refused.clone(),
        };
        let connected = tokio::time::timeout_at(
            deadline,
            russh::client::connect(config.clone(), addr.as_str(), handler),
        )
        .await
        .map_err(|_| NodeError::Unreachable {
            error: anyhow::anyhow!(
                "{addr} did not answer within {} s",
                CONNECT_BUDGET.as_secs()
            ),
            attempts,
        })?;
        if let Some(r) = refused.lock().ok().and_then(|mut r| r.take()) {
            return Err(NodeError::KeyRefused(r));
        }
        let e = match connected {
            Ok(handle) => break handle,
            Err(e) => e,
        };
        let pause = backoff(attempts, rand::random::<f64>());
        if attempts >= CONNECT_ATTEMPTS
            || !worth_retrying(&e)
            || tokio::time::Instant::now() + pause >= deadline
        {
            return Err(NodeError::Unreachable {
                error: anyhow::Error::new(e).context(addr.clone()),
                attempts,
            });
        }
        tracing::warn!(
            node = node.name,
            address = addr,
            attempt = attempts,
            of = CONNECT_ATTEMPTS,
            retry_in_ms = pause.as_millis() as u64,
            error = %e,
            "the node dropped the connection before the SSH handshake was over; trying again"
        );
        tokio::time::sleep(pause).await;
    };
    if attempts > 1 {
        tracing::info!(
            node = node.name,
            address = addr,
            attempts,
            "connected to the node"
        );
    }
    let auth = handle
        .authenticate_openssh_cert(login, Arc::new(key), cert)
        .await?;
    if !auth.success() {
        return Err(NodeError::CertificateRefused {
            login: login.to_string(),
        });
    }
    Ok(handle)
}

#[cfg(test)]
mod tests;
