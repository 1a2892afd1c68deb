//! `sallyport admin ...`: the operator's, approvers' and ticket system's commands over the API.

mod gateway;
mod local;

use anyhow::Context;
use sallyport_api::admin::{
    Cluster, DisableInput, EnrollEngineer, NewAccount, NewCustomer, NewNode, NewToken, NodeChange,
};
use sallyport_api::approvals::{ApprovalInput, PolicyInput};
use sallyport_api::requests::Decision;
use sallyport_api::tickets::TicketInput;
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;
pub use gateway::GatewayCmd;

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

/// POSTs `body` to the broker at `path` and prints its answer.
async fn post_print<B: serde::Serialize>(conn: &Conn, path: &str, body: &B) -> anyhow::Result<()> {
    print(&conn.client()?.post(path, body).await?.1)
}

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Gateway(c) => gateway::run(c).await?,
        AdminCmd::NodeConfig(args) => crate::node_config::run(args).await?,
        AdminCmd::Check(args) => crate::check::run(args)?,
        AdminCmd::HashToken { stdin } => local::hash_token(stdin)?,
        AdminCmd::HashPassword { stdin, uid, groups } => local::hash_password(stdin, uid, groups)?,
        AdminCmd::Customer { conn, id, name } => {
            post_print(&conn, "/v1/customers", &NewCustomer { id, name }).await?;
        }
        AdminCmd::Cluster { conn, id, customer } => {
            post_print(&conn, "/v1/clusters", &Cluster { id, customer }).await?;
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
            let body = NewNode {
                name,
                address,
                port,
                host_keys: local::host_key_lines(&host_keys)?,
                trust_on_first_use,
            };
            post_print(&conn, &path, &body).await?;
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
            let body = NodeChange {
                address,
                port,
                host_keys: match clear_host_keys || !host_keys.is_empty() {
                    true => Some(local::host_key_lines(&host_keys)?),
                    false => None,
                },
                trust_on_first_use,
            };
            anyhow::ensure!(
                !body.is_empty(),
                "nothing to change: name --address, --port, --host-key, --clear-host-keys or --trust-on-first-use"
            );
            print(&conn.client()?.patch(&path, &body).await?)?;
        }
        AdminCmd::Engineer { conn, uid, replace } => {
            post_print(&conn, "/v1/engineers", &EnrollEngineer { uid, replace }).await?;
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
            let body = NewAccount {
                username,
                role,
                customer,
                password: pw.trim_end_matches(['\n', '\r']).to_string().into(),
            };
            post_print(&conn, "/v1/accounts", &body).await?;
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
            post_print(
                &conn,
                "/v1/tokens",
                &NewToken {
                    name,
                    role,
                    customer,
                    all_customers,
                },
            )
            .await?;
        }
        AdminCmd::Disable { conn, who, reason } => {
            let path = format!("{}/disable", who.path());
            post_print(&conn, &path, &DisableInput { reason }).await?;
        }
        AdminCmd::Enable { conn, who } => {
            let path = format!("{}/enable", who.path());
            post_print(&conn, &path, &json!({})).await?;
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
            let body = TicketInput {
                customer,
                cluster,
                assignee,
                status,
                title,
            };
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
            let body = ApprovalInput {
                cluster,
                group,
                logins,
                max_session_secs: max_session.as_secs(),
                valid_until: now_secs() + valid_for.as_secs(),
                valid_from: None,
                just_in_time,
                per_session_mfa,
                observer_required,
                port_forwarding,
                source_networks,
                approvers_required,
            };
            post_print(&conn, "/v1/approvals", &body).await?;
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
            let body = Decision {
                approve,
                reason,
                logins: (!logins.is_empty()).then_some(logins),
                ttl_secs: ttl.map(|ttl| ttl.as_secs()),
            };
            post_print(&conn, &path, &body).await?;
        }
        AdminCmd::Revoke {
            conn,
            scope,
            value,
            reason,
        } => {
            post_print(
                &conn,
                "/v1/revocations",
                &json!({"scope": scope, "value": value, "reason": reason}),
            )
            .await?;
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
            print(&conn.client()?.put(&path, &PolicyInput { body }).await?)?;
        }
    }
    Ok(())
}
