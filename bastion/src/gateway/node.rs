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
    /// No SSH connection to the node: refused, timed out, or the handshake failed.
    Unreachable(anyhow::Error),
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
            NodeError::Unreachable(_) => "unreachable",
            NodeError::CertificateRefused { .. } => "certificate_refused",
            NodeError::Other(_) => "error",
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
            NodeError::Unreachable(e) => {
                format!("the gateway cannot reach node {node}: {e:#}")
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
            NodeError::Unreachable(e) | NodeError::Other(e) => write!(f, "{e:#}"),
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

/// Connect to `node` as `login`, for session `sid` of `engineer` on `ticket`; `fields` are the
/// session's audit fields, for the events about the node's host key.
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
    let refused = Arc::new(Mutex::new(None));
    let handler = NodeClient {
        known: gw.cfg.data_dir.join("known_nodes"),
        name: node.name.clone(),
        cluster: gw.cluster.clone(),
        address: addr.clone(),
        host_keys: node.host_keys.clone(),
        trust_on_first_use: node.trust_on_first_use,
        spool: gw.spool.clone(),
        fields,
        refused: refused.clone(),
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        russh::client::connect(config, addr.as_str(), handler),
    )
    .await
    .map_err(|_| NodeError::Unreachable(anyhow::anyhow!("{addr} did not answer within 10 s")))?;
    if let Some(r) = refused.lock().ok().and_then(|mut r| r.take()) {
        return Err(NodeError::KeyRefused(r));
    }
    let mut handle = connected
        .map_err(|e| NodeError::Unreachable(anyhow::Error::new(e).context(addr.clone())))?;
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
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let k = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(k.public)
    }

    fn line(k: &PublicKey) -> String {
        k.to_openssh().unwrap()
    }

    #[test]
    fn the_node_key_verdicts() {
        let (a, b) = (key(1), key(2));
        let fa = fingerprint(&a);
        let fb = fingerprint(&b);
        let changed = |expected: Vec<String>, registered| Verdict::Changed {
            expected,
            registered,
        };
        // (registered, trust on first use, pinned, presented, verdict)
        type Case<'a> = (
            Vec<String>,
            bool,
            Option<&'a PublicKey>,
            &'a PublicKey,
            Verdict,
        );
        let cases: Vec<Case> = vec![
            (vec![line(&a)], false, None, &a, Verdict::Registered),
            (
                vec![line(&b), line(&a)],
                false,
                None,
                &a,
                Verdict::Registered,
            ),
            (
                vec![line(&a)],
                false,
                None,
                &b,
                changed(vec![fa.clone()], true),
            ),
            // Registered keys win over the pin and over trust on first use.
            (
                vec![line(&a)],
                true,
                Some(&b),
                &b,
                changed(vec![fa.clone()], true),
            ),
            (vec![line(&a)], true, Some(&b), &a, Verdict::Registered),
            // An unreadable registered key matches nothing, and still refuses the rest.
            (
                vec!["garbage".into()],
                true,
                None,
                &a,
                changed(vec![], true),
            ),
            (vec![], false, None, &a, Verdict::NoRegisteredKey),
            (vec![], false, Some(&a), &a, Verdict::NoRegisteredKey),
            (vec![], true, None, &a, Verdict::FirstUse),
            (vec![], true, Some(&a), &a, Verdict::Pinned),
            (vec![], true, Some(&b), &a, changed(vec![fb.clone()], false)),
        ];
        for (i, (registered, tofu, pinned, presented, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                judge(&registered, tofu, pinned, presented),
                want,
                "case {i}"
            );
        }
    }
}
