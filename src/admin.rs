//! `sallyport admin ...`: the operator's, approvers' and ticket system's commands over the API.

use std::io::Read;

use anyhow::Context;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;

/// `--host-key` values as key lines: a value naming a file stands for the keys in it (one a
/// line; blank lines and `#` comments skipped). The broker checks each.
fn host_key_lines(values: &[String]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for v in values {
        let path = std::path::Path::new(v);
        if !v.trim_start().starts_with("ssh-")
            && !v.trim_start().starts_with("ecdsa-")
            && path.is_file()
        {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading host keys from {v}"))?;
            lines.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        } else {
            lines.push(v.trim().to_string());
        }
    }
    Ok(lines)
}

/// `admin token ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCmd {
    /// Revoke an API token by its id (from `admin tokens`): it stops working at once, and its
    /// later uses are refused and audited (operator).
    Revoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Make a new operator token and print it with its SHA-256 for the broker config
    /// (or hash a token read from standard input with --stdin).
    HashToken {
        #[arg(long)]
        stdin: bool,
    },
    /// Hash an engineer's password for the embedded directory file (`password_argon2`): asked
    /// twice on a terminal, or read from standard input with --stdin. Prints an `[[engineer]]`
    /// entry when --uid is given.
    HashPassword {
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        stdin: bool,
        /// The engineer's user name: print a whole `[[engineer]]` entry.
        #[arg(long)]
        uid: Option<String>,
        /// The engineer's groups, for the entry (repeatable).
        #[arg(long = "group", requires = "uid")]
        groups: Vec<String>,
    },
    /// Create a customer (operator).
    Customer {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a cluster of a customer (operator).
    Cluster {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        customer: String,
    },
    /// Add a node to a cluster, with its SSH host keys (operator). The gateway refuses a node whose key is
    /// not registered, unless --trust-on-first-use lets it pin the first key it sees (audited).
    Node {
        #[command(flatten)]
        conn: Conn,
        cluster: String,
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// The node's SSH host public key: an OpenSSH line (`ssh-ed25519 AAAA...`) or a file of
        /// them (the node's /etc/ssh/ssh_host_ed25519_key.pub). Repeatable.
        #[arg(long = "host-key", value_name = "KEY_OR_FILE")]
        host_keys: Vec<String>,
        /// Without a registered key, let the gateway pin the first key the node shows (audited
        /// as node_key_pinned) instead of refusing it.
        #[arg(long)]
        trust_on_first_use: bool,
    },
    /// Change a node (operator): its address or port, its registered host keys (--host-key replaces them
    /// all; --clear-host-keys removes them), or trust on first use.
    NodeUpdate {
        #[command(flatten)]
        conn: Conn,
        cluster: String,
        name: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// The node's SSH host public key: an OpenSSH line or a file of them. Repeatable;
        /// replaces the registered keys.
        #[arg(long = "host-key", value_name = "KEY_OR_FILE")]
        host_keys: Vec<String>,
        /// Remove every registered host key.
        #[arg(long, conflicts_with = "host_keys")]
        clear_host_keys: bool,
        /// Let the gateway pin a node's first key when none is registered (`true` or `false`).
        #[arg(long, value_name = "BOOL")]
        trust_on_first_use: Option<bool>,
    },
    /// A cluster's gateways: make one and its ready gateway.toml, list, revoke (operator).
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Print what a cluster's nodes need to let its gateway in: the gateways' node CA key
    /// (sshd TrustedUserCAKeys), a principals file per login (AuthorizedPrincipalsFile) and
    /// the sshd_config lines, as a script to run as root on each node, or --json (operator,
    /// reviewer, or an approver of the cluster's customer).
    NodeConfig(crate::node_config::NodeConfigArgs),
    /// Check a broker, edge or gateway config before starting it: the checks the process
    /// makes at start, touching nothing (no data directory, key, database or connection is
    /// made). Exit status 0 only when it would start (no token needed).
    Check(crate::check::CheckArgs),
    /// Enroll an engineer's TOTP; prints the secret once (operator).
    Engineer {
        #[command(flatten)]
        conn: Conn,
        uid: String,
        /// Replace an existing enrollment.
        #[arg(long)]
        replace: bool,
    },
    /// Create an approver (with --customer) or reviewer account; the password is read from stdin
    /// (operator).
    Account {
        #[command(flatten)]
        conn: Conn,
        username: String,
        #[arg(long, value_parser = ["approver", "reviewer"])]
        role: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Create an API token for a role; prints it once (operator). `admin token revoke ID`
    /// revokes one.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Token {
        #[command(subcommand)]
        action: Option<TokenCmd>,
        #[command(flatten)]
        conn: Conn,
        #[arg(required = true)]
        name: Option<String>,
        #[arg(long, required = true, value_parser = ["operator", "reviewer", "approver", "ticket_system", "edge"])]
        role: Option<String>,
        /// The customer an approver's or a ticket system's token belongs to.
        #[arg(long)]
        customer: Option<String>,
        /// A ticket-system token that writes every customer's tickets (the vendor's own
        /// ticket system), instead of --customer.
        #[arg(long, conflicts_with = "customer")]
        all_customers: bool,
    },
    /// Disable an engineer or an account: no login until enabled; their session tokens (and an
    /// engineer's certificates) are revoked at once (operator).
    Disable {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        who: Who,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled engineer or account again (operator).
    Enable {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        who: Who,
    },
    /// List the API tokens (never their secrets), revoked ones with when (operator).
    Tokens {
        #[command(flatten)]
        conn: Conn,
    },
    /// The older name of `admin token revoke`.
    #[command(hide = true)]
    TokenRevoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Create or update a ticket (ticket-system token, or operator).
    Ticket {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        customer: String,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        assignee: String,
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value = "")]
        title: String,
    },
    /// Approve an access group for a cluster (the customer's approver).
    Approve {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        group: String,
        /// Logins on the nodes (repeatable).
        #[arg(long = "login", required = true)]
        logins: Vec<String>,
        #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
        max_session: std::time::Duration,
        /// How long the approval stands.
        #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
        #[arg(long)]
        just_in_time: bool,
        /// Distinct approvers who must approve each just-in-time request (a quorum, 1-5).
        #[arg(long, default_value_t = 1, requires = "just_in_time")]
        approvers_required: u64,
        #[arg(long)]
        per_session_mfa: bool,
        /// Each session waits at the gateway until an approver of the customer watches it.
        #[arg(long)]
        observer_required: bool,
        #[arg(long)]
        port_forwarding: bool,
        /// CIDR the engineer may connect from (repeatable).
        #[arg(long = "source-network")]
        source_networks: Vec<String>,
    },
    /// Withdraw an approval, revoking its certificates (the customer's approver).
    Withdraw {
        #[command(flatten)]
        conn: Conn,
        approval: String,
    },
    /// List approvals (the customer's approver: its own; operator and reviewer: all).
    Approvals {
        #[command(flatten)]
        conn: Conn,
    },
    /// List pending access requests (the customer's approver: its own; operator and reviewer:
    /// all).
    Requests {
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve or deny an access request (the customer's approver, never the requester).
    Decide {
        #[command(flatten)]
        conn: Conn,
        request: String,
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        reason: Option<String>,
        /// Approve only this login of those asked for (repeat for several; default: all).
        #[arg(long = "login", conflicts_with = "deny")]
        logins: Vec<String>,
        /// Approve a shorter certificate lifetime than asked for (e.g. 15m).
        #[arg(long, conflicts_with = "deny", value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Revoke certificates by serial, grant, engineer, approval or ticket (operator, reviewer,
    /// or the customer's approver for its own clusters).
    Revoke {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_parser = ["serial", "grant", "engineer", "approval", "ticket"])]
        scope: String,
        value: String,
        #[arg(long)]
        reason: String,
    },
    /// Save a customer's own forbid policy (Cedar) from a file (the customer's approver).
    Policy {
        #[command(flatten)]
        conn: Conn,
        customer: String,
        name: String,
        file: std::path::PathBuf,
    },
}

/// An engineer or an account, by name.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Who {
    /// An engineer (their directory uid).
    #[arg(long)]
    engineer: Option<String>,
    /// An approver or reviewer account.
    #[arg(long)]
    account: Option<String>,
}

impl Who {
    fn path(&self) -> String {
        match (&self.engineer, &self.account) {
            (Some(e), _) => format!("/v1/engineers/{e}"),
            (None, Some(a)) => format!("/v1/accounts/{a}"),
            (None, None) => String::new(),
        }
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

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

async fn gateway_cmd(cmd: GatewayCmd) -> anyhow::Result<()> {
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
            let v = conn
                .client()?
                .post(
                    &format!("/v1/clusters/{}/gateways", enc(&cluster)),
                    &json!({"name": name}),
                )
                .await?
                .1;
            let token = v["join_token"]
                .as_str()
                .context("the broker sent no join token")?;
            let mut text = format!(
                "# gateway {} of cluster {cluster}, made by `sallyport admin gateway enroll`.\n\
                 # The join token is used once, at the first start (until {}): keep this file 0600.\n\
                 data_dir = {}\nbroker = {}\njoin_token = {}\n",
                v["id"].as_str().unwrap_or_default(),
                v["join_token_expires_at"],
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
        GatewayCmd::List { conn, cluster } => print(
            &conn
                .client()?
                .get(&format!("/v1/clusters/{}/gateways", enc(&cluster)))
                .await?,
        )?,
        GatewayCmd::Revoke { conn, id } => print(
            &conn
                .client()?
                .delete(&format!("/v1/gateways/{}", enc(&id)))
                .await?,
        )?,
    }
    Ok(())
}

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Gateway(c) => gateway_cmd(c).await?,
        AdminCmd::NodeConfig(args) => crate::node_config::run(args).await?,
        AdminCmd::Check(args) => crate::check::run(args)?,
        AdminCmd::HashToken { stdin } => {
            let token = if stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s.trim().to_string()
            } else {
                sallyport_broker::auth::new_api_token()
            };
            anyhow::ensure!(token.starts_with("spt_"), "tokens start with spt_");
            if !stdin {
                println!("token:                 {token}");
            }
            println!(
                "operator_token_sha256 = \"{}\"",
                sallyport_broker::auth::token_hash(&token)
            );
        }
        AdminCmd::HashPassword { stdin, uid, groups } => {
            let password = if stdin {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                s.trim_end_matches(['\n', '\r']).to_string()
            } else {
                let first = rpassword::prompt_password("password: ")?;
                let again = rpassword::prompt_password("again: ")?;
                anyhow::ensure!(
                    first == again,
                    "the two passwords differ: nothing was hashed"
                );
                first
            };
            anyhow::ensure!(
                password.chars().count() >= 12,
                "the password is shorter than 12 characters: choose a longer one"
            );
            for name in uid.iter().chain(&groups) {
                anyhow::ensure!(
                    crate::valid_name(name),
                    "invalid name {name:?}: use letters, digits, '.', '_' and '-'"
                );
            }
            let hash = sallyport_broker::directory::hash_argon2(&password)?;
            match uid {
                Some(uid) => println!(
                    "[[engineer]]\nuid = \"{uid}\"\npassword_argon2 = \"{hash}\"\ngroups = {groups:?}"
                ),
                None => println!("{hash}"),
            }
        }
        AdminCmd::Customer { conn, id, name } => {
            print(
                &conn
                    .client()?
                    .post("/v1/customers", &json!({"id": id, "name": name}))
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Cluster { conn, id, customer } => {
            print(
                &conn
                    .client()?
                    .post("/v1/clusters", &json!({"id": id, "customer": customer}))
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Node {
            conn,
            cluster,
            name,
            address,
            port,
            host_keys,
            trust_on_first_use,
        } => {
            let path = format!("/v1/clusters/{}/nodes", enc(&cluster));
            let body = json!({"name": name, "address": address, "port": port,
                              "host_keys": host_key_lines(&host_keys)?,
                              "trust_on_first_use": trust_on_first_use});
            print(&conn.client()?.post(&path, &body).await?.1)?;
        }
        AdminCmd::NodeUpdate {
            conn,
            cluster,
            name,
            address,
            port,
            host_keys,
            clear_host_keys,
            trust_on_first_use,
        } => {
            let path = format!("/v1/clusters/{}/nodes/{}", enc(&cluster), enc(&name));
            let mut body = json!({});
            if let Some(a) = address {
                body["address"] = json!(a);
            }
            if let Some(p) = port {
                body["port"] = json!(p);
            }
            if clear_host_keys || !host_keys.is_empty() {
                body["host_keys"] = json!(host_key_lines(&host_keys)?);
            }
            if let Some(t) = trust_on_first_use {
                body["trust_on_first_use"] = json!(t);
            }
            anyhow::ensure!(
                body.as_object().is_some_and(|o| !o.is_empty()),
                "nothing to change: name --address, --port, --host-key, --clear-host-keys or --trust-on-first-use"
            );
            print(&conn.client()?.patch(&path, &body).await?)?;
        }
        AdminCmd::Engineer { conn, uid, replace } => {
            print(
                &conn
                    .client()?
                    .post("/v1/engineers", &json!({"uid": uid, "replace": replace}))
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Account {
            conn,
            username,
            role,
            customer,
        } => {
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("reading the password from standard input")?;
            let body = json!({"username": username, "role": role, "customer": customer, "password": pw.trim_end_matches(['\n', '\r'])});
            print(&conn.client()?.post("/v1/accounts", &body).await?.1)?;
        }
        AdminCmd::Token {
            action: Some(TokenCmd::Revoke { conn, id }),
            ..
        }
        | AdminCmd::TokenRevoke { conn, id } => {
            print(
                &conn
                    .client()?
                    .delete(&format!("/v1/tokens/{}", enc(&id)))
                    .await?,
            )?;
        }
        AdminCmd::Token {
            action: None,
            conn,
            name,
            role,
            customer,
            all_customers,
        } => {
            let (Some(name), Some(role)) = (name, role) else {
                anyhow::bail!("admin token needs a NAME and --role (or `admin token revoke ID`)");
            };
            print(
                &conn
                    .client()?
                    .post(
                        "/v1/tokens",
                        &json!({"name": name, "role": role, "customer": customer,
                                "all_customers": all_customers}),
                    )
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Disable { conn, who, reason } => {
            let path = format!("{}/disable", who.path());
            print(
                &conn
                    .client()?
                    .post(&path, &json!({"reason": reason}))
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Enable { conn, who } => {
            let path = format!("{}/enable", who.path());
            print(&conn.client()?.post(&path, &json!({})).await?.1)?;
        }
        AdminCmd::Tokens { conn } => {
            print(&conn.client()?.get("/v1/tokens").await?)?;
        }
        AdminCmd::Ticket {
            conn,
            id,
            customer,
            cluster,
            assignee,
            status,
            title,
        } => {
            let body = json!({"customer": customer, "cluster": cluster, "assignee": assignee, "status": status, "title": title});
            print(
                &conn
                    .client()?
                    .put(&format!("/v1/tickets/{}", enc(&id)), &body)
                    .await?,
            )?;
        }
        AdminCmd::Approve {
            conn,
            cluster,
            group,
            logins,
            max_session,
            valid_for,
            just_in_time,
            approvers_required,
            per_session_mfa,
            observer_required,
            port_forwarding,
            source_networks,
        } => {
            let body = json!({
                "cluster": cluster, "group": group, "logins": logins,
                "max_session_secs": max_session.as_secs(),
                "valid_until": crate::now() + valid_for.as_secs(),
                "just_in_time": just_in_time, "per_session_mfa": per_session_mfa,
                "port_forwarding": port_forwarding, "source_networks": source_networks,
                "approvers_required": approvers_required,
                "observer_required": observer_required,
            });
            print(&conn.client()?.post("/v1/approvals", &body).await?.1)?;
        }
        AdminCmd::Withdraw { conn, approval } => {
            print(
                &conn
                    .client()?
                    .delete(&format!("/v1/approvals/{}", enc(&approval)))
                    .await?,
            )?;
        }
        AdminCmd::Approvals { conn } => print(&conn.client()?.get("/v1/approvals").await?)?,
        AdminCmd::Requests { conn } => print(
            &conn
                .client()?
                .get("/v1/access-requests?status=pending")
                .await?,
        )?,
        AdminCmd::Decide {
            conn,
            request,
            approve,
            deny: _,
            reason,
            logins,
            ttl,
        } => {
            let path = format!("/v1/access-requests/{}/decision", enc(&request));
            let mut body = json!({"approve": approve, "reason": reason});
            if !logins.is_empty() {
                body["logins"] = json!(logins);
            }
            if let Some(ttl) = ttl {
                body["ttl_secs"] = json!(ttl.as_secs());
            }
            print(&conn.client()?.post(&path, &body).await?.1)?;
        }
        AdminCmd::Revoke {
            conn,
            scope,
            value,
            reason,
        } => {
            print(
                &conn
                    .client()?
                    .post(
                        "/v1/revocations",
                        &json!({"scope": scope, "value": value, "reason": reason}),
                    )
                    .await?
                    .1,
            )?;
        }
        AdminCmd::Policy {
            conn,
            customer,
            name,
            file,
        } => {
            let body = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let path = format!("/v1/customers/{}/policies/{}", enc(&customer), enc(&name));
            print(&conn.client()?.put(&path, &json!({"body": body})).await?)?;
        }
    }
    Ok(())
}
