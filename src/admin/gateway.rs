//! `sallyport admin gateway ...`: make a cluster's gateway (and its gateway.toml), list and
//! revoke them.

use anyhow::Context;
use sallyport_api::gateways::{Gateway, GatewayCreated, NewGateway};

use super::print;
use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(clap::Subcommand, Debug)]
pub enum GatewayCmd {
    /// Make a gateway for a cluster and write its gateway.toml (0600: it holds the one-time join
    /// token, valid 24 h): copy it into the customer's network and run
    /// `sallyport gateway --config gateway.toml` there (operator).
    Enroll {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        cluster: String,
        /// The gateway's name in the cluster (e.g. gw1).
        #[arg(long)]
        name: String,
        /// An edge's tunnel address (`host:port` of its `tunnel_listen`); repeat for several,
        /// each followed by its --edge-host-key.
        #[arg(long = "edge", required = true)]
        edges: Vec<String>,
        /// That edge's host public key: an OpenSSH line, or a file holding it (the edge's
        /// `data_dir/host_key.pub`), in the order of --edge.
        #[arg(long = "edge-host-key", required = true)]
        edge_host_keys: Vec<String>,
        /// The gateway's data directory, as the config will name it.
        #[arg(long, default_value = "data")]
        data_dir: String,
        /// Where to write gateway.toml (it is printed otherwise).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// List a cluster's gateways, revoked ones with when.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        cluster: String,
    },
    /// Revoke a gateway: the broker refuses it at once and the edges drop its tunnel.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// The gateway's id (`admin gateway list` shows it).
        id: String,
    },
}

/// A TOML string value.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

pub(super) async fn run(cmd: GatewayCmd) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Enroll {
            conn,
            cluster,
            name,
            edges,
            edge_host_keys,
            data_dir,
            out,
        } => {
            if edges.len() != edge_host_keys.len() {
                anyhow::bail!(
                    "give each --edge its --edge-host-key ({} edges, {} keys)",
                    edges.len(),
                    edge_host_keys.len()
                );
            }
            let mut keys = Vec::new();
            for k in &edge_host_keys {
                let line = if k.starts_with("ssh-") {
                    k.trim().to_string()
                } else {
                    std::fs::read_to_string(k)
                        .with_context(|| format!("reading the edge's host key from {k}"))?
                        .trim()
                        .to_string()
                };
                russh::keys::PublicKey::from_openssh(&line).with_context(|| {
                    format!("{k} is not an OpenSSH public key (the edge's data_dir/host_key.pub)")
                })?;
                keys.push(line);
            }
            if let Some(p) = &out
                && p.exists()
            {
                anyhow::bail!(
                    "{} exists already: name a new file (a join token is shown once)",
                    p.display()
                );
            }
            let broker = conn
                .broker
                .clone()
                .context("no broker: set SALLYPORT_BROKER or --broker")?;
            let v: GatewayCreated = conn
                .client()?
                .post_as(
                    &format!("/v1/clusters/{}/gateways", enc(&cluster)),
                    &NewGateway { name },
                )
                .await?;
            let token = &v.join_token;
            let mut text = format!(
                "# gateway {} of cluster {cluster}, made by `sallyport admin gateway enroll`.\n\
                 # The join token is used once, at the first start (until {}): keep this file 0600.\n\
                 data_dir = {}\nbroker = {}\njoin_token = {}\n",
                v.id,
                v.join_token_expires_at,
                toml_str(&data_dir),
                toml_str(&broker),
                toml_str(token),
            );
            if let Some(ca) = &conn.broker_ca {
                text.push_str(&format!(
                    "broker_ca = {}\n",
                    toml_str(&ca.display().to_string())
                ));
            }
            for (address, key) in edges.iter().zip(&keys) {
                text.push_str(&format!(
                    "\n[[edges]]\naddress = {}\nhost_key = {}\n",
                    toml_str(address),
                    toml_str(key)
                ));
            }
            match out {
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| {
                            format!("writing {} (it must not exist yet)", path.display())
                        })?;
                    f.write_all(text.as_bytes())?;
                    eprintln!(
                        "wrote {}: copy it to the gateway's host and run `sallyport gateway --config {}` there",
                        path.display(),
                        path.file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("gateway.toml")
                    );
                }
                None => print!("{text}"),
            }
        }
        GatewayCmd::List { conn, cluster } => {
            let path = format!("/v1/clusters/{}/gateways", enc(&cluster));
            let list: Vec<Gateway> = conn.client()?.get_as(&path).await?;
            print(&serde_json::to_value(list)?)?
        }
        GatewayCmd::Revoke { conn, id } => print(
            &conn
                .client()?
                .delete(&format!("/v1/gateways/{}", enc(&id)))
                .await?,
        )?,
    }
    Ok(())
}
