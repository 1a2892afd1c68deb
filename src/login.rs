//! `sallyport login`: generate a key pair here (the private key never leaves this machine), log
//! in (password + TOTP), name the ticket, wait for a just-in-time approval if one is needed, and
//! write key, certificate, ssh_config and known_hosts under SALLYPORT_HOME.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sallyport_api::certificates::{IssueRequest, Issued};
use sallyport_api::login::{LoginRequest, LoginResponse};
use sallyport_api::requests::{AccessRequest, IssuePending, RequestStatus};
use sallyport_ca::clock::now_secs;
use serde_json::json;

use crate::client::{ApiFailure, Client, enc, read_as};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The broker's URL (https://; http:// only to this machine).
    #[arg(long, env = "SALLYPORT_BROKER")]
    pub broker: String,
    /// Your directory (LDAP) user name.
    #[arg(long, env = "USER")]
    pub user: String,
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long)]
    pub password_stdin: bool,
    /// The current TOTP code (prompted for when not given).
    #[arg(long)]
    pub totp: Option<String>,
    /// The support ticket this access is for, e.g. SUP-1234.
    #[arg(long)]
    pub ticket: String,
    /// The cluster, when the ticket's own cluster is not meant.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Logins to ask for (repeatable); default: every login the approval allows.
    #[arg(long = "login")]
    pub logins: Vec<String>,
    /// Ask for a shorter certificate lifetime, e.g. `30m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// How long to wait for a customer approver when the approval is just-in-time.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// PEM file of the CA that signed the broker's certificate (pins it).
    #[arg(long, env = "SALLYPORT_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn home() -> PathBuf {
    match std::env::var_os("SALLYPORT_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => {
            let base = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            base.join(".sallyport")
        }
    }
}

fn read_password(args: &LoginArgs) -> anyhow::Result<secrecy::SecretString> {
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(pw.into());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password: use --password-stdin");
    }
    let pw = rpassword::prompt_password(format!("password for {}: ", args.user))?;
    Ok(pw.into())
}

fn read_totp(args: &LoginArgs) -> anyhow::Result<String> {
    if let Some(c) = &args.totp {
        return Ok(c.trim().to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the TOTP code: use --totp CODE");
    }
    eprint!("TOTP code: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    // Check the broker URL (no plain http:// off this machine) and the pinned CA before asking
    // for any secret.
    let mut client = Client::new(&args.broker, None, args.broker_ca.as_deref())?;
    let password = read_password(&args)?;
    let code = read_totp(&args)?;

    let key =
        sallyport_ca::keys::generate_ed25519(&format!("sallyport {} {}", args.user, args.ticket))?;
    let public = key.public_key().to_openssh()?;

    let login = LoginRequest {
        user: args.user.clone(),
        password,
        totp: code,
    };
    let session: LoginResponse = client
        .post_as("/v1/login", &login)
        .await
        .map_err(|e| explain(e, "log in"))?;
    client.set_token(session.token);

    let body = IssueRequest {
        public_key: public,
        ticket: args.ticket.clone(),
        cluster: args.cluster.clone(),
        logins: (!args.logins.is_empty()).then(|| args.logins.clone()),
        ttl_secs: args.ttl.map(|ttl| ttl.as_secs()),
    };
    let issued = issue_waiting(&client, &body, args.wait, args.json).await?;
    let written = write_files(&home(), &key, &issued)?;
    let agent = add_to_agent(&written.key, &issued.body);
    if args.json {
        let mut out = serde_json::to_value(&issued.body)?;
        out["key_file"] = json!(written.key);
        out["certificate_file"] = json!(written.cert);
        out["ssh_config"] = json!(written.ssh_config);
        out["known_hosts"] = json!(written.known_hosts);
        out["agent"] = json!(agent);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let issued = &issued.body;
        let left = issued.valid_before.saturating_sub(now_secs());
        println!(
            "certificate for {} on {} (ticket {}), logins {}, valid for {}",
            issued.engineer,
            issued.cluster,
            issued.ticket,
            issued.logins.join(","),
            humantime::format_duration(Duration::from_secs(left)),
        );
        println!("  key          {}", written.key.display());
        println!("  certificate  {}", written.cert.display());
        println!("  ssh config   {}", written.ssh_config.display());
        match agent {
            Some(true) => println!("  loaded into ssh-agent for the certificate's lifetime"),
            Some(false) => println!("  (ssh-agent refused the key; use the files above)"),
            None => {}
        }
        println!(
            "next: ssh -F {} <node>.{}",
            written.ssh_config.display(),
            issued.cluster
        );
        println!(
            "      (or add `Include {}` to ~/.ssh/config)",
            written.ssh_config.display()
        );
    }
    Ok(())
}

/// Turn a broker error into words that say what to do next.
fn explain(e: anyhow::Error, what: &str) -> anyhow::Error {
    match e.downcast::<ApiFailure>() {
        Ok(ApiFailure(f)) => {
            let mut msg = format!("could not {what}: {}", f.message);
            if let Some(reasons) = &f.reasons {
                msg = format!("could not {what}, refused because:");
                for r in reasons {
                    msg.push_str(&format!("\n  - {}", r.message));
                }
            }
            anyhow::anyhow!(msg)
        }
        Err(e) => e,
    }
}

/// The certificate the broker issued, and whether it sent the cluster's host CA keys at all
/// (an older broker does not: known_hosts is then left as it is).
pub struct Certificate {
    pub body: Issued,
    pub host_cas_sent: bool,
}

async fn issue_waiting(
    client: &Client,
    body: &IssueRequest,
    wait: Duration,
    quiet: bool,
) -> anyhow::Result<Certificate> {
    const PATH: &str = "/v1/certificates";
    let start = std::time::Instant::now();
    let mut body = body.clone();
    // The reason an approver gave with a decision, shown when the broker then refuses.
    let mut said: Option<String> = None;
    loop {
        let (status, v) = match client.post(PATH, &body).await {
            Ok(r) => r,
            Err(e) => {
                let e = explain(e, "get a certificate");
                return Err(match said.take() {
                    Some(s) => anyhow::anyhow!("{e:#}\n  {s}"),
                    None => e,
                });
            }
        };
        if status != reqwest::StatusCode::ACCEPTED {
            let host_cas_sent = v.get("host_ca_public_keys").is_some_and(|k| !k.is_null());
            return Ok(Certificate {
                body: read_as(PATH, v)?,
                host_cas_sent,
            });
        }
        let pending: IssuePending = read_as(PATH, v)?;
        let id = pending.request.id.clone();
        // The last request already gave its certificate: say why this one waits again.
        if !quiet && pending.used_request.is_some() {
            let m: String = pending
                .message
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            eprintln!("{m}");
        }
        // Wait for a customer approver, showing progress.
        let mut votes = String::new();
        loop {
            let elapsed = start.elapsed();
            if elapsed > wait {
                if !quiet {
                    eprintln!();
                }
                bail!(
                    "no decision on access request {id} after {}: ask the customer's approver to decide it, then run login again",
                    humantime::format_duration(Duration::from_secs(wait.as_secs()))
                );
            }
            if !quiet {
                eprint!(
                    "\rwaiting for a customer approver to decide access request {id} ({}s{votes})   ",
                    elapsed.as_secs()
                );
                std::io::stderr().flush().ok();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let r: AccessRequest = client
                .get_as(&format!("/v1/access-requests/{}", enc(&id)))
                .await?;
            if r.status == RequestStatus::Pending {
                // A quorum: show how many approvers said yes so far.
                if r.approvers_required > 1 {
                    votes = format!(
                        ", approved by {} of {}",
                        r.approved_by.len(),
                        r.approvers_required
                    );
                }
                continue;
            }
            // Approved, maybe narrowed: the certificate is asked for on the terms the
            // approvers approved (asking for more would be a new request).
            if r.status == RequestStatus::Approved
                && (r.logins != pending.request.logins || r.ttl_secs != pending.request.ttl_secs)
            {
                if !quiet {
                    eprintln!(
                        "\nthe approver narrowed access request {id}: logins {}, at most {}",
                        r.logins.join(", "),
                        humantime::format_duration(Duration::from_secs(r.ttl_secs))
                    );
                }
                body.logins = Some(r.logins.clone());
                body.ttl_secs = Some(r.ttl_secs);
            }
            said = r
                .reason
                .as_deref()
                .map(|t| t.chars().filter(|c| !c.is_control()).collect::<String>())
                .filter(|t| !t.trim().is_empty())
                .map(|t| {
                    let who = r.decided_by.as_deref().unwrap_or("the approver");
                    let who: String = who.chars().filter(|c| !c.is_control()).collect();
                    format!("{who} said: {t}")
                });
            break;
        }
        if !quiet {
            eprintln!();
        }
    }
}

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
fn edge_block(
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

/// Load key + certificate into a running ssh-agent for the certificate's lifetime.
fn add_to_agent(key: &Path, issued: &Issued) -> Option<bool> {
    std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty())?;
    let left = issued.valid_before.saturating_sub(now_secs()).max(1);
    let status = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg("-t")
        .arg(left.to_string())
        .arg(key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    Some(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(edge: Option<&str>, edges: &[&str]) -> Issued {
        Issued {
            certificate: String::new(),
            serial: "1".into(),
            key_id: "k".into(),
            grant: "g".into(),
            engineer: "alice".into(),
            ticket: "SUP-1".into(),
            customer: "acme".into(),
            cluster: "acme-prod".into(),
            logins: vec!["ubuntu".into()],
            valid_after: 1,
            valid_before: 2,
            permit_port_forwarding: false,
            per_session_mfa: false,
            edge: edge.map(Into::into),
            edges: edges.iter().map(|e| e.to_string()).collect(),
            host_ca_public_keys: vec![],
            edge_host_keys: vec![],
        }
    }

    fn block(i: &Issued) -> anyhow::Result<Option<(String, String)>> {
        let p = Path::new("/h");
        edge_block("acme-prod", i, p, p, p)
    }

    #[test]
    fn the_jump_hop_for_one_edge_or_several() {
        assert!(block(&issued(None, &[])).unwrap().is_none());
        // One edge (an older broker sends no `edges`, a newer one the same address): no proxy.
        for i in [
            issued(Some("edge.example:2222"), &[]),
            issued(Some("edge.example:2222"), &["edge.example:2222"]),
        ] {
            let (alias, text) = block(&i).unwrap().unwrap();
            assert_eq!(alias, "sallyport-edge-acme-prod");
            assert!(
                text.contains("HostName edge.example\n    Port 2222\n"),
                "{text}"
            );
            assert!(!text.contains("ProxyCommand"), "{text}");
        }
        // Several: tried in turn through `sallyport connect`, IPv6 bracketed again.
        let (_, text) = block(&issued(
            Some("a.example:22"),
            &["a.example:22", "[2001:db8::1]:2222"],
        ))
        .unwrap()
        .unwrap();
        assert!(
            text.contains(" connect a.example:22 [2001:db8::1]:2222\n"),
            "{text}"
        );
    }

    #[test]
    fn an_edge_address_that_could_reach_the_shell_is_refused() {
        for bad in [
            "a.example:22; touch /tmp/x",
            "$(id):22",
            "a.example:22 b.example:22",
            "%h:22",
            "a.example",
        ] {
            let err = block(&issued(Some("a.example:22"), &[bad])).unwrap_err();
            assert!(
                err.to_string().contains("unusable edge address"),
                "{bad}: {err}"
            );
        }
    }
}
