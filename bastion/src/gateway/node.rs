//! The gateway's connection to a node: a russh client authenticated with a fresh per-session
//! certificate from the cluster's node CA (principal = the login, minutes of validity, key id
//! naming session, engineer and ticket, so the node's own sshd log names the ticket too).
//!
//! Node host keys are pinned on first use in `data_dir/known_nodes` and refused if they change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::{PrivateKey, PublicKey};
use sallyport_ca::SessionKeyId;

use super::{Gateway, NodeEntry};

pub struct NodeClient {
    known: PathBuf,
    name: String,
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
        Ok(pin(&self.known, &self.name, key).unwrap_or(false))
    }
}

/// Trust on first use: `true` if `key` is the one pinned for `name` (or was just pinned).
fn pin(path: &PathBuf, name: &str, key: &PublicKey) -> anyhow::Result<bool> {
    let line_key = key.to_openssh()?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if let Some((_, k)) = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == name)
    {
        let pinned = PublicKey::from_openssh(k.trim())?;
        if pinned.key_data() != key.key_data() {
            tracing::error!(
                node = name,
                "the node's host key changed: refusing (remove its line from known_nodes if this was expected)"
            );
            return Ok(false);
        }
        return Ok(true);
    }
    use std::io::Write;
    let mut f = crate::private::open_append(path)?;
    writeln!(f, "{name} {line_key}")?;
    f.sync_all()?;
    Ok(true)
}

/// Connect to `node` as `login`, for session `sid` of `engineer` on `ticket`.
pub async fn connect(
    gw: &Arc<Gateway>,
    node: &NodeEntry,
    login: &str,
    sid: &str,
    engineer: &str,
    ticket: &str,
    permit_port_forwarding: bool,
) -> anyhow::Result<russh::client::Handle<NodeClient>> {
    let key: PrivateKey = sallyport_ca::keys::generate_ed25519("sallyport session")?;
    let now = crate::now();
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
    let handler = NodeClient {
        known: gw.cfg.data_dir.join("known_nodes"),
        name: node.name.clone(),
    };
    let addr = format!("{}:{}", node.address, node.port);
    let mut handle = tokio::time::timeout(
        Duration::from_secs(10),
        russh::client::connect(config, addr.as_str(), handler),
    )
    .await
    .context("the node did not answer in time")??;
    let auth = handle
        .authenticate_openssh_cert(login, Arc::new(key), cert)
        .await?;
    anyhow::ensure!(
        auth.success(),
        "the node refused the session certificate for {login}"
    );
    Ok(handle)
}
