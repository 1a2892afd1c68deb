//! `sallyport approvals …` and `sallyport requests …`: a customer's approvers scripting what
//! they do in the console, with their API token (the same API: `/v1/approvals`,
//! `/v1/access-requests`). Reviewers and the operator may list.

use std::time::Duration;

use clap::{Args, Subcommand};
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;
use crate::show::{show, show_all};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// List approvals (a customer's approver: its own; reviewers and the operator: all).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only this cluster's.
        #[arg(long)]
        cluster: Option<String>,
        /// One JSON object per approval.
        #[arg(long)]
        json: bool,
    },
    /// Approve an access group for a cluster (the customer's approver).
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        group: String,
        #[command(flatten)]
        terms: Terms,
        #[arg(long)]
        json: bool,
    },
    /// Change an approval's terms: only what is given changes; its open just-in-time requests
    /// are void (their approvers saw the old terms).
    Edit {
        #[command(flatten)]
        conn: Conn,
        /// The approval's id (`approvals list` shows it).
        approval: String,
        #[command(flatten)]
        terms: Terms,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an approval: its certificates are revoked and its sessions end.
    Withdraw {
        #[command(flatten)]
        conn: Conn,
        approval: String,
        #[arg(long)]
        json: bool,
    },
}

/// An approval's terms; on `edit`, only those given change.
#[derive(Args, Debug, Default)]
pub struct Terms {
    /// A login on the nodes (repeat for several).
    #[arg(long = "login")]
    logins: Vec<String>,
    /// The longest a certificate lasts (e.g. 8h; create: 8h).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_session: Option<Duration>,
    /// How long the approval stands from now (e.g. 30days; create: 30days).
    #[arg(long, value_parser = humantime::parse_duration)]
    valid_for: Option<Duration>,
    /// Each certificate needs a request an approver decides (true or false).
    #[arg(long)]
    just_in_time: Option<bool>,
    /// Distinct approvers who must approve each just-in-time request (1-5).
    #[arg(long)]
    approvers_required: Option<u64>,
    /// A fresh authenticator code for every session (true or false).
    #[arg(long)]
    per_session_mfa: Option<bool>,
    /// Each session waits until an approver of the customer watches it (true or false).
    #[arg(long)]
    observer_required: Option<bool>,
    /// Port forwarding allowed (true or false).
    #[arg(long)]
    port_forwarding: Option<bool>,
    /// A network (CIDR) the engineer may connect from (repeat for several).
    #[arg(long = "source-network")]
    source_networks: Vec<String>,
}

impl Terms {
    /// `base` with these terms applied.
    fn apply(&self, mut base: Value) -> Value {
        if !self.logins.is_empty() {
            base["logins"] = json!(self.logins);
        }
        if let Some(d) = self.max_session {
            base["max_session_secs"] = json!(d.as_secs());
        }
        if let Some(d) = self.valid_for {
            base["valid_until"] = json!(now_secs() + d.as_secs());
        }
        for (k, v) in [
            ("just_in_time", self.just_in_time),
            ("per_session_mfa", self.per_session_mfa),
            ("observer_required", self.observer_required),
            ("port_forwarding", self.port_forwarding),
        ] {
            if let Some(v) = v {
                base[k] = json!(v);
            }
        }
        if let Some(n) = self.approvers_required {
            base["approvers_required"] = json!(n);
        }
        if !self.source_networks.is_empty() {
            base["source_networks"] = json!(self.source_networks);
        }
        base
    }
}

#[derive(Subcommand, Debug)]
pub enum RequestsCmd {
    /// List just-in-time requests waiting for a decision (a customer's approver: its own).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Every request, decided ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request (never your own), optionally for less: some of the logins asked for,
    /// a shorter lifetime.
    Approve {
        #[command(flatten)]
        conn: Conn,
        request: String,
        /// Approve only this login of those asked for (repeat for several; default: all).
        #[arg(long = "login")]
        logins: Vec<String>,
        /// A shorter certificate lifetime than asked for (e.g. 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// A comment the engineer and the audit log see.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deny a request, saying why.
    Deny {
        #[command(flatten)]
        conn: Conn,
        request: String,
        /// Why: the engineer and the audit log see it.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

fn t(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => sallyport_audit::sanitize(s),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The strings of the array at `k`, each sanitized, joined with commas.
fn joined(v: &Value, k: &str) -> String {
    v[k].as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(sallyport_audit::sanitize)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn approval_line(a: &Value) -> String {
    let mut options = Vec::new();
    for (k, label) in [
        ("just_in_time", "just-in-time"),
        ("per_session_mfa", "mfa-per-session"),
        ("observer_required", "watched"),
        ("port_forwarding", "port-forwarding"),
    ] {
        if a[k] == true {
            options.push(label.to_string());
        }
    }
    if a["approvers_required"].as_u64().unwrap_or(1) > 1 {
        options.push(format!("quorum={}", a["approvers_required"]));
    }
    format!(
        "{} {} cluster={} group={} logins={} max_session={}s until={} {}",
        t(a, "id"),
        if a["withdrawn_at"].is_null() {
            "in force "
        } else {
            "withdrawn"
        },
        t(a, "cluster"),
        t(a, "group"),
        joined(a, "logins"),
        t(a, "max_session_secs"),
        t(a, "valid_until"),
        options.join(" ")
    )
}

fn request_line(r: &Value) -> String {
    format!(
        "{} {} engineer={} ticket={} cluster={} logins={} ttl={}s approvals={}/{}",
        t(r, "id"),
        t(r, "status"),
        t(r, "engineer"),
        t(r, "ticket"),
        t(r, "cluster"),
        joined(r, "logins"),
        t(r, "ttl_secs"),
        r["approved_by"].as_array().map_or(0, Vec::len),
        t(r, "approvers_required"),
    )
}

pub async fn approvals(cmd: ApprovalsCmd) -> anyhow::Result<i32> {
    match cmd {
        ApprovalsCmd::List {
            conn,
            cluster,
            json,
        } => {
            let path = match &cluster {
                Some(c) => format!("/v1/approvals?cluster={}", enc(c)),
                None => "/v1/approvals".into(),
            };
            let list = conn.client()?.get(&path).await?;
            let list = list.as_array().cloned().unwrap_or_default();
            show_all(
                &list,
                json,
                "no approval yet: `sallyport approvals create` makes one",
                approval_line,
            )?;
        }
        ApprovalsCmd::Create {
            conn,
            cluster,
            group,
            terms,
            json,
        } => {
            if terms.logins.is_empty() {
                anyhow::bail!("name at least one login with --login");
            }
            let base = json!({
                "cluster": cluster, "group": group,
                "max_session_secs": 8 * 3600, "valid_until": now_secs() + 30 * 86_400,
            });
            let v = conn
                .client()?
                .post("/v1/approvals", &terms.apply(base))
                .await?
                .1;
            show(&v, json, approval_line)?;
        }
        ApprovalsCmd::Edit {
            conn,
            approval,
            terms,
            json,
        } => {
            let client = conn.client()?;
            let path = format!("/v1/approvals/{}", enc(&approval));
            let now = client.get(&path).await?;
            let mut base = json!({});
            for k in [
                "cluster",
                "group",
                "logins",
                "max_session_secs",
                "valid_from",
                "valid_until",
                "just_in_time",
                "per_session_mfa",
                "observer_required",
                "port_forwarding",
                "source_networks",
                "approvers_required",
            ] {
                base[k] = now[k].clone();
            }
            let v = client.put(&path, &terms.apply(base)).await?;
            show(&v, json, approval_line)?;
        }
        ApprovalsCmd::Withdraw {
            conn,
            approval,
            json,
        } => {
            let v = conn
                .client()?
                .delete(&format!("/v1/approvals/{}", enc(&approval)))
                .await?;
            show(&v, json, |v| {
                format!(
                    "withdrew {}: {}",
                    sallyport_audit::sanitize(&approval),
                    sallyport_audit::sanitize(&v.to_string())
                )
            })?;
        }
    }
    Ok(0)
}

pub async fn requests(cmd: RequestsCmd) -> anyhow::Result<i32> {
    let decide =
        |approve: bool, logins: Vec<String>, ttl: Option<Duration>, reason: Option<String>| {
            let mut body = json!({"approve": approve, "reason": reason});
            if !logins.is_empty() {
                body["logins"] = json!(logins);
            }
            if let Some(t) = ttl {
                body["ttl_secs"] = json!(t.as_secs());
            }
            body
        };
    let (conn, request, body, json) = match cmd {
        RequestsCmd::List { conn, all, json } => {
            let path = if all {
                "/v1/access-requests"
            } else {
                "/v1/access-requests?status=pending"
            };
            let list = conn.client()?.get(path).await?;
            let list = list.as_array().cloned().unwrap_or_default();
            show_all(
                &list,
                json,
                "no request is waiting for a decision",
                request_line,
            )?;
            return Ok(0);
        }
        RequestsCmd::Approve {
            conn,
            request,
            logins,
            ttl,
            reason,
            json,
        } => (conn, request, decide(true, logins, ttl, reason), json),
        RequestsCmd::Deny {
            conn,
            request,
            reason,
            json,
        } => (
            conn,
            request,
            decide(false, vec![], None, Some(reason)),
            json,
        ),
    };
    let path = format!("/v1/access-requests/{}/decision", enc(&request));
    let (_, v) = conn.client()?.post(&path, &body).await?;
    show(&v, json, request_line)?;
    Ok(0)
}
