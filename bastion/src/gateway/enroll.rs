//! Enrollment: once, with the operator's one-time join token, the gateway sends the broker the
//! public halves of the keys it made here (node CA, host CA, audit key) and keeps the credential
//! it gets back; later starts read both from the data_dir.

use std::path::Path;

use anyhow::Context;
use russh::keys::PrivateKey;
use serde_json::json;

use super::Enrollment;
use crate::broker_client::BrokerClient;
use crate::config::GatewayConfig;

pub(super) async fn enroll(
    cfg: &GatewayConfig,
    dir: &Path,
    anon: &BrokerClient,
    node_ca: &PrivateKey,
    host_ca: &PrivateKey,
    audit_key: &PrivateKey,
) -> anyhow::Result<(Enrollment, String)> {
    let state = dir.join("enrollment.json");
    let cred_path = dir.join("credential");
    if state.exists() && cred_path.exists() {
        let e: Enrollment = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
        let cred = std::fs::read_to_string(&cred_path)?.trim().to_string();
        return Ok((e, cred));
    }
    let token = cfg.join_token.clone().context(
        "this gateway is not enrolled: set join_token (made by the operator) in the config",
    )?;
    let body = json!({
        "join_token": token,
        "node_ca_public_key": node_ca.public_key().to_openssh()?,
        "host_ca_public_key": host_ca.public_key().to_openssh()?,
        "audit_public_key": audit_key.public_key().to_openssh()?,
    });
    let v = anon
        .post_json("/v1/gateways/enroll", &body)
        .await
        .context("enrolling at the broker")?;
    let e = Enrollment {
        gateway: v["gateway"].as_str().context("no gateway id")?.to_string(),
        cluster: v["cluster"].as_str().context("no cluster")?.to_string(),
    };
    let cred = v["credential"]
        .as_str()
        .context("no credential")?
        .to_string();
    write_secret(&cred_path, cred.as_bytes())?;
    crate::trust::write_atomic(&state, serde_json::to_string(&e)?.as_bytes())?;
    tracing::info!(gateway = e.gateway, cluster = e.cluster, "enrolled");
    Ok((e, cred))
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
