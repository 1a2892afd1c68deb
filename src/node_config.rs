//! `sallyport admin node-config`: what a node needs so that its cluster's gateway can log in —
//! the gateways' node CA keys for sshd's `TrustedUserCAKeys`, one principals file per login
//! for `AuthorizedPrincipalsFile`, and the sshd_config lines naming them — as a script to run
//! as root on the node, or as JSON for configuration management.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(clap::Args, Debug)]
pub struct NodeConfigArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The cluster whose nodes this is for.
    #[arg(long)]
    pub cluster: String,
    /// A login the gateway may use on the node (repeat for several). Default: every login
    /// named by the cluster's approvals that are not withdrawn.
    #[arg(long = "login")]
    pub logins: Vec<String>,
    /// The directory on the node for the CA key and the principals files.
    #[arg(long, default_value = "/etc/ssh/sallyport")]
    pub dir: String,
    /// One JSON object instead of the script: node_ca_public_keys, logins, files (path →
    /// content), sshd_config.
    #[arg(long)]
    pub json: bool,
}

/// A login as sshd and the principals file name accept it: a Unix user name.
fn valid_login(login: &str) -> bool {
    let mut chars = login.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && login.len() <= 32
}

/// What the node needs, from the gateways and approvals the broker lists.
pub struct NodeConfig {
    pub cluster: String,
    pub ca_keys: Vec<String>,
    pub logins: Vec<String>,
    pub dir: String,
}

impl NodeConfig {
    /// From `GET /v1/clusters/{c}/gateways` and `GET /v1/approvals?cluster=c`; `logins` given
    /// on the command line win over the approvals'.
    pub fn from_broker(
        cluster: &str,
        gateways: &Value,
        approvals: &Value,
        logins: &[String],
        dir: &str,
    ) -> anyhow::Result<NodeConfig> {
        let ca_keys: Vec<String> = gateways
            .as_array()
            .context("the broker's gateway list is not a list")?
            .iter()
            .filter(|g| g["revoked_at"].is_null())
            .filter_map(|g| g["node_ca_public_key"].as_str())
            .map(|k| k.trim().to_string())
            .collect();
        if ca_keys.is_empty() {
            anyhow::bail!(
                "no gateway of cluster {cluster} has enrolled yet: enroll one (sallyport admin \
                 gateway enroll --cluster {cluster} ...), start it once, then run this again"
            );
        }
        let mut wanted: Vec<String> = if logins.is_empty() {
            approvals
                .as_array()
                .context("the broker's approval list is not a list")?
                .iter()
                .filter(|a| a["cluster"] == cluster && a["withdrawn_at"].is_null())
                .filter_map(|a| a["logins"].as_array())
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        } else {
            logins.to_vec()
        };
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            anyhow::bail!(
                "no approval of cluster {cluster} names a login yet: name the logins with \
                 --login (e.g. --login ubuntu)"
            );
        }
        if let Some(bad) = wanted.iter().find(|l| !valid_login(l)) {
            anyhow::bail!(
                "{bad:?} is not a Unix login name (lower-case letters, digits, _ . -; at most 32)"
            );
        }
        if !dir.starts_with('/') || dir.contains(['\'', '\n', ' ', '%']) {
            anyhow::bail!("--dir must be an absolute path without spaces, quotes or %");
        }
        Ok(NodeConfig {
            cluster: cluster.to_string(),
            ca_keys,
            logins: wanted,
            dir: dir.trim_end_matches('/').to_string(),
        })
    }

    fn ca_path(&self) -> String {
        format!("{}/node_ca.pub", self.dir)
    }

    /// The files to write: path → content.
    pub fn files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        files.insert(self.ca_path(), format!("{}\n", self.ca_keys.join("\n")));
        for login in &self.logins {
            files.insert(
                format!("{}/principals/{login}", self.dir),
                format!("{login}\n"),
            );
        }
        files
    }

    /// The sshd_config lines.
    pub fn sshd_config(&self) -> String {
        format!(
            "# sallyport: the gateway of cluster {} logs in with short-lived certificates of its\n\
             # node CA, for the logins listed under {}/principals.\n\
             TrustedUserCAKeys {}\n\
             AuthorizedPrincipalsFile {}/principals/%u\n",
            self.cluster,
            self.dir,
            self.ca_path(),
            self.dir
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "cluster": self.cluster,
            "node_ca_public_keys": self.ca_keys,
            "logins": self.logins,
            "files": self.files(),
            "sshd_config": self.sshd_config(),
        })
    }

    /// A POSIX shell script to run as root on each node.
    pub fn script(&self) -> String {
        let mut s = format!(
            "#!/bin/sh\n\
             # What a node of cluster {cluster} needs so that its sallyport gateway can log in\n\
             # (printed by `sallyport admin node-config --cluster {cluster}`). Run as root on\n\
             # each node. sshd refuses these files unless they and every directory above them\n\
             # are owned by root and not writable by group or others (StrictModes).\n\
             set -eu\n\
             install -d -o root -g root -m 0755 {dir} {dir}/principals\n",
            cluster = self.cluster,
            dir = self.dir,
        );
        for (path, content) in self.files() {
            s.push_str(&format!(
                "cat > {path} <<'SALLYPORT'\n{content}SALLYPORT\nchown root:root {path}\nchmod 0644 {path}\n"
            ));
        }
        s.push_str(&format!(
            "# sshd_config.d/*.conf is included first by Debian's and Ubuntu's sshd_config; \
             elsewhere put these\n# lines near the top of /etc/ssh/sshd_config.\n\
             install -d -m 0755 /etc/ssh/sshd_config.d\n\
             cat > /etc/ssh/sshd_config.d/sallyport.conf <<'SALLYPORT'\n{}SALLYPORT\n\
             sshd -t\n\
             systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null || pkill -HUP -x sshd\n\
             # Then register the node (its address and host key) at the broker, as the operator:\n\
             #   sallyport admin node {} NODE --address ADDRESS --host-key /etc/ssh/ssh_host_ed25519_key.pub\n",
            self.sshd_config(),
            self.cluster,
        ));
        s
    }
}

pub async fn run(args: NodeConfigArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let gateways = client
        .get(&format!("/v1/clusters/{}/gateways", enc(&args.cluster)))
        .await?;
    let approvals = if args.logins.is_empty() {
        client
            .get(&format!("/v1/approvals?cluster={}", enc(&args.cluster)))
            .await?
    } else {
        Value::Array(vec![])
    };
    let cfg = NodeConfig::from_broker(
        &args.cluster,
        &gateways,
        &approvals,
        &args.logins,
        &args.dir,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cfg.json())?);
    } else {
        print!("{}", cfg.script());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_come_from_live_approvals_and_must_be_unix_names() {
        let gws = json!([
            {"node_ca_public_key": "ssh-ed25519 AAAA1", "revoked_at": null},
            {"node_ca_public_key": "ssh-ed25519 AAAA2", "revoked_at": 5},
            {"node_ca_public_key": null, "revoked_at": null}
        ]);
        let approvals = json!([
            {"cluster": "c1", "logins": ["ubuntu", "deploy"], "withdrawn_at": null},
            {"cluster": "c1", "logins": ["root"], "withdrawn_at": 7},
            {"cluster": "c2", "logins": ["other"], "withdrawn_at": null},
            {"cluster": "c1", "logins": ["ubuntu"], "withdrawn_at": null}
        ]);
        let cfg =
            NodeConfig::from_broker("c1", &gws, &approvals, &[], "/etc/ssh/sallyport/").unwrap();
        assert_eq!(cfg.ca_keys, vec!["ssh-ed25519 AAAA1"]);
        assert_eq!(cfg.logins, vec!["deploy", "ubuntu"]);
        let files = cfg.files();
        assert_eq!(files["/etc/ssh/sallyport/principals/ubuntu"], "ubuntu\n");
        assert_eq!(
            files["/etc/ssh/sallyport/node_ca.pub"],
            "ssh-ed25519 AAAA1\n"
        );
        assert!(
            cfg.sshd_config()
                .contains("AuthorizedPrincipalsFile /etc/ssh/sallyport/principals/%u\n")
        );
        let script = cfg.script();
        assert!(script.contains("TrustedUserCAKeys /etc/ssh/sallyport/node_ca.pub\n"));
        assert!(
            !script.contains("AAAA2"),
            "a revoked gateway's CA is not trusted"
        );

        for bad in ["../etc", "a b", "Root", "x\ny", ""] {
            assert!(
                NodeConfig::from_broker("c1", &gws, &json!([]), &[bad.to_string()], "/d").is_err(),
                "{bad:?}"
            );
        }
        assert!(NodeConfig::from_broker("c1", &json!([]), &approvals, &[], "/d").is_err());
        assert!(NodeConfig::from_broker("c1", &gws, &json!([]), &[], "/d").is_err());
        assert!(NodeConfig::from_broker("c1", &gws, &approvals, &[], "relative").is_err());
    }
}
