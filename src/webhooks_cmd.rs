//! `sallyport webhooks …`: notifications to a customer's own systems (its approver's token) or
//! vendor-wide (the operator's), as the console's Webhooks page does (`/v1/webhooks`).
//! Reviewers and the operator may list every webhook and delivery.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(Subcommand, Debug)]
pub enum WebhooksCmd {
    /// List webhooks (never their secret, nor their URL past its first path segment).
    List {
        #[command(flatten)]
        conn: Conn,
        /// One JSON object per webhook.
        #[arg(long)]
        json: bool,
    },
    /// Add a webhook: a customer's approver for its customer; the operator vendor-wide (or
    /// for `--customer`). Prints the signing secret once, unless given with --secret-stdin.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The receiver: https://... (http only to loopback where the broker allows it).
        #[arg(long)]
        url: String,
        /// json (signed, for your own receiver) or slack (a Slack incoming webhook).
        #[arg(long, default_value = "json")]
        format: String,
        /// An event kind to be told about (repeat for several; default: every one):
        /// access_request_created, access_request_decided, certificate_issued,
        /// session_started, session_ended, session_terminated, revoked, refusal_burst.
        #[arg(long = "event")]
        events: Vec<String>,
        /// Read the signing secret (24 characters or more) from stdin instead of letting the
        /// broker make one.
        #[arg(long)]
        secret_stdin: bool,
        /// The operator only: a webhook of this customer rather than vendor-wide.
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook: nothing more is sent to it, and what waits is cancelled.
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// The webhook's id (`webhooks list` shows it).
        webhook: String,
        #[arg(long)]
        json: bool,
    },
    /// Recent deliveries, newest first: their status, attempts and last error.
    Deliveries {
        #[command(flatten)]
        conn: Conn,
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

fn t(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => sallyport_audit::sanitize(s),
        Value::Null => "-".into(),
        other => sallyport_audit::sanitize(&other.to_string()),
    }
}

fn hook_line(w: &Value) -> String {
    let events = w["events"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(sallyport_audit::sanitize)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "{} customer={} format={} url={} events={} by={}",
        t(w, "id"),
        if w["customer"].is_null() {
            "(vendor-wide)".to_string()
        } else {
            t(w, "customer")
        },
        t(w, "format"),
        t(w, "url"),
        events,
        t(w, "created_by"),
    )
}

fn delivery_line(d: &Value) -> String {
    let mut line = format!(
        "{} {} {} event={} webhook={} attempts={}",
        t(d, "id"),
        t(d, "status"),
        t(d, "kind"),
        t(d, "event"),
        t(d, "webhook"),
        t(d, "attempts"),
    );
    if !d["last_error"].is_null() {
        line.push_str(&format!(" last_error={:?}", t(d, "last_error")));
    }
    line
}

fn print(v: &Value, json: bool, line: fn(&Value) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else {
        println!("{}", line(v));
    }
    Ok(())
}

pub async fn webhooks(cmd: WebhooksCmd) -> anyhow::Result<i32> {
    match cmd {
        WebhooksCmd::List { conn, json } => {
            let v = conn.client()?.get("/v1/webhooks").await?;
            let list = v["webhooks"].as_array().cloned().unwrap_or_default();
            if list.is_empty() && !json {
                eprintln!("no webhook yet: `sallyport webhooks create --url https://...` adds one");
            }
            for w in &list {
                print(w, json, hook_line)?;
            }
        }
        WebhooksCmd::Create {
            conn,
            url,
            format,
            events,
            secret_stdin,
            customer,
            json,
        } => {
            let mut body = json!({"url": url, "format": format, "events": events});
            if let Some(c) = customer {
                body["customer"] = json!(c);
            }
            if secret_stdin {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                body["secret"] = json!(s.trim());
            }
            let (_, v) = conn.client()?.post("/v1/webhooks", &body).await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{}", hook_line(&v));
                if let Some(secret) = v["secret"].as_str() {
                    println!("signing secret (shown once; keep it with the receiver): {secret}");
                }
            }
        }
        WebhooksCmd::Delete {
            conn,
            webhook,
            json,
        } => {
            let v = conn
                .client()?
                .delete(&format!("/v1/webhooks/{}", enc(&webhook)))
                .await?;
            print(&v, json, |v| {
                format!(
                    "deleted {} ({} waiting deliveries cancelled)",
                    t(v, "id"),
                    t(v, "cancelled_deliveries")
                )
            })?;
        }
        WebhooksCmd::Deliveries {
            conn,
            webhook,
            limit,
            json,
        } => {
            let mut path = match &webhook {
                Some(w) => format!("/v1/webhooks/{}/deliveries", enc(w)),
                None => "/v1/webhooks/deliveries".into(),
            };
            if let Some(l) = limit {
                path.push_str(&format!("?limit={l}"));
            }
            let v = conn.client()?.get(&path).await?;
            let list = v["deliveries"].as_array().cloned().unwrap_or_default();
            if list.is_empty() && !json {
                eprintln!("nothing delivered yet");
            }
            for d in &list {
                print(d, json, delivery_line)?;
            }
        }
    }
    Ok(0)
}
