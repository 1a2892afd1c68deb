//! The edge's own identity at the broker: its name and token, the token's check at start and
//! while it runs, and the registration of its host key and address.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sallyport_api::ErrorDetail;
use sallyport_api::identity::{EdgeRegistered, EdgeSelf, Whoami};
use sallyport_audit::sanitize;

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
            let (audit_key, _) = sallyport_ca::keys::load_or_create_key(
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
        let body = EdgeSelf {
            host_key: line,
            address: self.cfg.public_address.clone(),
        };
        let answer = client.post_answer::<_, EdgeRegistered>("/v1/edge/self", &body);
        match answer.await {
            Ok((_, Ok(v))) => {
                if v.changed {
                    tracing::info!(
                        address = ?self.cfg.public_address,
                        host_key = %v.host_key_fingerprint,
                        "registered with the broker: engineers get this edge at their next login"
                    );
                }
            }
            Ok((status, Err(error))) => tracing::warn!(
                %status,
                error = ErrorDetail::message_or(error.as_ref(), "no message"),
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
        match client.get_answer::<Whoami>("/v1/whoami").await {
            Ok((_, Ok(who))) => {
                anyhow::ensure!(
                    matches!(&who, Whoami::Edge { name: n } if n == name),
                    "the token in token_file is a {} token named {}, not an edge token named {name}: \
                     make one with `sallyport admin token {name} --role edge`",
                    who.role(),
                    who.name(),
                );
                Ok(())
            }
            Ok((status, Err(error))) if status.as_u16() == 401 || status.as_u16() == 403 => {
                anyhow::bail!(
                    "the broker refuses the edge's token: {}",
                    ErrorDetail::message_or(error.as_ref(), "no message")
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
            if let Ok((status, Err(error))) = client.get_answer::<Whoami>("/v1/whoami").await
                && (status.as_u16() == 401 || status.as_u16() == 403)
            {
                return ErrorDetail::message_or(error.as_ref(), "no message");
            }
        }
    }
}
