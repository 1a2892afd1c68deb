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

mod files;
use files::write_files;

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
mod tests;
