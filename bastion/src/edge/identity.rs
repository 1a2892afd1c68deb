//! The edge's own identity at the broker: its name and token, the token's check at start and
//! while it runs, and the registration of its host key and address.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sallyport_audit::sanitize;
use serde_json::json;

use crate::broker_client::BrokerClient;
use crate::config::EdgeConfig;
use crate::spool::Spool;
use sallyport_audit::writers::{EdgeKind, Writer};

use super::Edge;

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

/// The edge's audit spool.
type EdgeSpool = Arc<Spool<EdgeKind>>;

/// With a name and a token: the edge's audit spool (source `edge:<name>`, signed with the key in
/// `data_dir/audit_key`) and the broker client carrying its token; without, neither.
pub(super) fn spool_and_client(
    cfg: &EdgeConfig,
    broker: &BrokerClient,
) -> anyhow::Result<(Option<EdgeSpool>, Option<BrokerClient>)> {
    Ok(match edge_identity(cfg)? {
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
    })
}

/// The edge's API token, from a file only its owner may read.
pub(super) fn read_token_file(path: &Path) -> anyhow::Result<String> {
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

impl Edge {
    /// Tell the broker this edge's host key and public address (`POST /v1/edge/self`).
    pub(super) async fn register(&self, host_key: &russh::keys::PublicKey) {
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

    /// At start: the token must be an edge token of this edge's name (else its records would be
    /// refused forever). A broker that does not answer is not fatal.
    pub(super) async fn check_token(&self) -> anyhow::Result<()> {
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
    pub(super) async fn token_revoked(self: Arc<Self>) -> String {
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
}
