//! `sallyport admin ...`: the operator's, approvers' and ticket system's commands over the API.

use std::io::Read;

use anyhow::Context;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Make a new operator token and print it with its SHA-256 for the broker config
    /// (or hash a token read from standard input with --stdin).
    HashToken {
        #[arg(long)]
        stdin: bool,
    },
    /// Create a customer.
    Customer {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a cluster of a customer.
    Cluster {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        customer: String,
    },
    /// Add a node to a cluster.
    Node {
        #[command(flatten)]
        conn: Conn,
        cluster: String,
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
    /// Enroll an engineer's TOTP; prints the secret once.
    Engineer {
        #[command(flatten)]
        conn: Conn,
        uid: String,
        /// Replace an existing enrollment.
        #[arg(long)]
        replace: bool,
    },
    /// Create an approver (with --customer) or reviewer account; the password is read from stdin.
    Account {
        #[command(flatten)]
        conn: Conn,
        username: String,
        #[arg(long, value_parser = ["approver", "reviewer"])]
        role: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Create an API token for a role; prints it once.
    Token {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long, value_parser = ["operator", "reviewer", "approver", "ticket_system", "edge"])]
        role: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Disable an engineer or an account: no login until enabled; their session tokens (and an
    /// engineer's certificates) are revoked at once.
    Disable {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        who: Who,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled engineer or account again.
    Enable {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        who: Who,
    },
    /// List the API tokens (never their secrets), revoked ones with when.
    Tokens {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke an API token by its id (from `admin tokens`): it stops working at once.
    TokenRevoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Create or update a ticket (as the ticket system).
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
    /// Approve an access group for a cluster (as a customer approver).
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
        #[arg(long)]
        per_session_mfa: bool,
        #[arg(long)]
        port_forwarding: bool,
        /// CIDR the engineer may connect from (repeatable).
        #[arg(long = "source-network")]
        source_networks: Vec<String>,
    },
    /// Withdraw an approval (revokes its certificates).
    Withdraw {
        #[command(flatten)]
        conn: Conn,
        approval: String,
    },
    /// List approvals.
    Approvals {
        #[command(flatten)]
        conn: Conn,
    },
    /// List pending access requests.
    Requests {
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve or deny an access request.
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
    },
    /// Revoke certificates by serial, grant, engineer, approval or ticket.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_parser = ["serial", "grant", "engineer", "approval", "ticket"])]
        scope: String,
        value: String,
        #[arg(long)]
        reason: String,
    },
    /// Save a customer's own forbid policy (Cedar) from a file.
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

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
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
        } => {
            let path = format!("/v1/clusters/{}/nodes", enc(&cluster));
            print(
                &conn
                    .client()?
                    .post(
                        &path,
                        &json!({"name": name, "address": address, "port": port}),
                    )
                    .await?
                    .1,
            )?;
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
            conn,
            name,
            role,
            customer,
        } => {
            print(
                &conn
                    .client()?
                    .post(
                        "/v1/tokens",
                        &json!({"name": name, "role": role, "customer": customer}),
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
        AdminCmd::TokenRevoke { conn, id } => {
            print(&conn.client()?.delete(&format!("/v1/tokens/{id}")).await?)?;
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
            per_session_mfa,
            port_forwarding,
            source_networks,
        } => {
            let body = json!({
                "cluster": cluster, "group": group, "logins": logins,
                "max_session_secs": max_session.as_secs(),
                "valid_until": crate::now() + valid_for.as_secs(),
                "just_in_time": just_in_time, "per_session_mfa": per_session_mfa,
                "port_forwarding": port_forwarding, "source_networks": source_networks,
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
        } => {
            let path = format!("/v1/access-requests/{}/decision", enc(&request));
            print(
                &conn
                    .client()?
                    .post(&path, &json!({"approve": approve, "reason": reason}))
                    .await?
                    .1,
            )?;
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
