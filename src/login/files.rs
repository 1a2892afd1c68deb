//! What `sallyport login` writes under SALLYPORT_HOME: the private key and certificate, the
//! ssh_config block that jumps through the cluster's edge(s), and the known_hosts lines that pin
//! the edges and the cluster's host CA.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use sallyport_api::certificates::Issued;

use super::Certificate;

pub struct Written {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn write_files(
    home: &Path,
    key: &russh::keys::PrivateKey,
    certificate: &Certificate,
) -> anyhow::Result<Written> {
    let issued = &certificate.body;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .with_context(|| format!("creating {}", home.display()))?;
    let cluster = issued.cluster.as_str();
    // The broker checked the name; check again before it becomes a file name.
    if !cluster
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || cluster.starts_with('.')
    {
        bail!("the broker sent an unusable cluster name");
    }
    let key_path = home.join(cluster);
    let cert_path = home.join(format!("{cluster}-cert.pub"));
    let known_hosts = home.join("known_hosts");
    // Everything the broker sent for the files is checked before any file is written.
    let host_cas = match certificate.host_cas_sent {
        true => Some(host_ca_keys(&issued.host_ca_public_keys)?),
        false => None,
    };
    let edge = edge_block(cluster, issued, &key_path, &cert_path, &known_hosts)?;
    let edge_keys = host_ca_keys(&issued.edge_host_keys)?;
    let pem = key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
    write_private(&key_path, pem.as_bytes())?;
    write_private(
        &home.join(format!("{cluster}.pub")),
        format!("{}\n", key.public_key().to_openssh()?).as_bytes(),
    )?;
    write_private(
        &cert_path,
        format!("{}\n", issued.certificate.trim()).as_bytes(),
    )?;
    let login = issued.logins.first().map_or("root", String::as_str);
    write_known_hosts(&known_hosts, cluster, host_cas)?;
    if let Some((alias, _)) = &edge
        && !edge_keys.is_empty()
    {
        pin_edge(&known_hosts, alias, &edge_keys)?;
    }
    // One block per cluster, rewritten at each login.
    let ssh_config = home.join("ssh_config");
    let existing = std::fs::read_to_string(&ssh_config).unwrap_or_default();
    let begin = format!("# sallyport {cluster} begin");
    let end = format!("# sallyport {cluster} end");
    let mut kept = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if line == begin {
            skipping = true;
        } else if line == end {
            skipping = false;
        } else if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    // The negation keeps the edge aliases (of this or another cluster) out of the cluster
    // blocks, whatever the cluster names are. OpenSSH gives the jump hop only `-F`, so the
    // edge's own block lives in this file too.
    let (proxy_jump, edge_host) = match &edge {
        Some((alias, block)) => (format!("    ProxyJump {alias}\n"), block.clone()),
        None => (String::new(), String::new()),
    };
    kept.push_str(&format!(
        "{begin}\nHost *.{cluster} !{EDGE_ALIAS_PREFIX}*\n    User {login}\n    IdentityFile {}\n    CertificateFile {}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n{proxy_jump}{edge_host}{end}\n",
        key_path.display(),
        cert_path.display(),
        known_hosts.display(),
    ));
    write_private(&ssh_config, kept.as_bytes())?;
    Ok(Written {
        key: key_path,
        cert: cert_path,
        ssh_config,
        known_hosts,
    })
}

/// The host alias of a cluster's edge in ssh_config: `sallyport-edge-<cluster>`.
const EDGE_ALIAS_PREFIX: &str = "sallyport-edge-";

/// A host CA key from the broker as a known_hosts key: one Ed25519 public key (not a
/// certificate), re-encoded without its comment, so nothing else reaches the file.
fn host_ca_key(line: &str) -> anyhow::Result<String> {
    let mut key = russh::keys::PublicKey::from_openssh(line.trim())
        .ok()
        .filter(|k| {
            k.algorithm() == russh::keys::ssh_key::Algorithm::Ed25519
                && !line.contains(['\n', '\r'])
        })
        .context("the broker sent an unusable host CA key")?;
    key.set_comment("");
    Ok(key.to_openssh()?.trim().to_string())
}

/// Host keys the broker sent (the cluster's host CAs, the edges'), each checked.
fn host_ca_keys(keys: &[String]) -> anyhow::Result<Vec<String>> {
    keys.iter().map(|k| host_ca_key(k)).collect()
}

/// Pin the edge's host keys under its alias (the ssh_config block sets `HostKeyAlias`),
/// replacing earlier lines for that alias.
fn pin_edge(path: &Path, alias: &str, keys: &[String]) -> anyhow::Result<()> {
    let prefix = format!("{alias} ");
    let mut out: String = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    for k in keys {
        out.push_str(&format!("{prefix}{k}\n"));
    }
    write_private(path, out.as_bytes())
}

/// Replace this cluster's `@cert-authority *.<cluster>` lines with one per host CA key;
/// other clusters' lines (and anything else) stay. `None` leaves the file as it is.
fn write_known_hosts(path: &Path, cluster: &str, keys: Option<Vec<String>>) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(path).ok();
    let Some(keys) = keys else {
        if existing.is_none() {
            write_private(
                path,
                b"# @cert-authority lines for the clusters you were granted\n",
            )?;
        }
        return Ok(());
    };
    let prefix = format!("@cert-authority *.{cluster} ");
    let mut out = String::new();
    match existing {
        Some(text) => {
            for line in text.lines().filter(|l| !l.starts_with(&prefix)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        None => out.push_str("# @cert-authority lines for the clusters you were granted\n"),
    }
    for k in keys {
        out.push_str(&format!("{prefix}{k}\n"));
    }
    write_private(path, out.as_bytes())
}

/// When the broker names an edge: the alias to jump through and its `Host` block (the same key
/// and certificate; the edge's user is the engineer).
pub(super) fn edge_block(
    cluster: &str,
    issued: &Issued,
    key: &Path,
    cert: &Path,
    known_hosts: &Path,
) -> anyhow::Result<Option<(String, String)>> {
    let Some(edge) = issued.edge.as_deref() else {
        return Ok(None);
    };
    // Every address is checked (and written back from its parts) before it reaches the file:
    // ssh runs ProxyCommand through the shell.
    let mut edges = Vec::new();
    for address in std::iter::once(edge).chain(issued.edges.iter().map(String::as_str)) {
        let (host, port) = sallyport_broker::config::split_host_port(address)
            .map_err(|e| anyhow::anyhow!("the broker sent an unusable edge address: {e}"))?;
        if !edges.contains(&(host.clone(), port)) {
            edges.push((host, port));
        }
    }
    let (host, port) = edges[0].clone();
    let engineer = Some(issued.engineer.as_str())
        .filter(|e| sallyport_broker::directory::valid_uid(e))
        .context("the broker sent an unusable engineer name")?;
    let alias = format!("{EDGE_ALIAS_PREFIX}{cluster}");
    // Several edges: ssh reaches the jump hop through `sallyport connect`, which tries them in
    // turn; every edge's host key is pinned under the one alias.
    let proxy = if edges.len() > 1 {
        let addresses: Vec<String> = edges
            .iter()
            .map(|(h, p)| match h.contains(':') {
                true => format!("[{h}]:{p}"),
                false => format!("{h}:{p}"),
            })
            .collect();
        format!(
            "    ProxyCommand {} connect {}\n",
            this_program(),
            addresses.join(" ")
        )
    } else {
        String::new()
    };
    let block = format!(
        "Host {alias}\n    HostName {host}\n    Port {port}\n{proxy}    HostKeyAlias {alias}\n    User {engineer}\n    IdentityFile {}\n    CertificateFile {}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n",
        key.display(),
        cert.display(),
        known_hosts.display(),
    );
    Ok(Some((alias, block)))
}

/// This program as ssh_config's ProxyCommand names it: its full path when that is plain
/// (ssh runs the command through the shell and expands `%` in it), else `sallyport` from PATH.
fn this_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .filter(|p| {
            p.starts_with('/')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'))
        })
        .unwrap_or_else(|| "sallyport".to_string())
}
