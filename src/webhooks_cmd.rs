//! `sallyport webhooks …`: notifications to a customer's own systems (its approver's token) or
//! vendor-wide (the operator's), as the console's Webhooks page does (`/v1/webhooks`).
//! Reviewers and the operator may list every webhook and delivery.

use clap::Subcommand;
use sallyport_api::webhooks::{
    Deliveries, Delivery, Webhook, WebhookCreated, WebhookDeleted, WebhookInput, Webhooks,
};
use sallyport_audit::sanitize;

use crate::audit_cmd::Conn;
use crate::client::{enc, read_as};
use crate::show::{show, show_all};

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

fn hook_line(w: &Webhook) -> String {
    format!(
        "{} customer={} format={} url={} events={} by={}",
        sanitize(&w.id),
        w.customer
            .as_deref()
            .map_or_else(|| "(vendor-wide)".to_string(), sanitize),
        sanitize(&w.format),
        sanitize(&w.url),
        w.events
            .iter()
            .map(|e| sanitize(e))
            .collect::<Vec<_>>()
            .join(","),
        sanitize(&w.created_by),
    )
}

fn delivery_line(d: &Delivery) -> String {
    let mut line = format!(
        "{} {} {} event={} webhook={} attempts={}",
        sanitize(&d.id),
        sanitize(&d.status),
        sanitize(&d.kind),
        sanitize(&d.event),
        sanitize(&d.webhook),
        d.attempts,
    );
    if let Some(e) = &d.last_error {
        line.push_str(&format!(" last_error={:?}", sanitize(e)));
    }
    line
}

pub async fn webhooks(cmd: WebhooksCmd) -> anyhow::Result<i32> {
    match cmd {
        WebhooksCmd::List { conn, json } => {
            let list = conn
                .client()?
                .get_as::<Webhooks>("/v1/webhooks")
                .await?
                .webhooks;
            show_all(
                &list,
                json,
                "no webhook yet: `sallyport webhooks create --url https://...` adds one",
                hook_line,
            )?;
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
            let secret = if secret_stdin {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                Some(s.trim().to_string())
            } else {
                None
            };
            let body = WebhookInput {
                url,
                format: Some(format),
                events,
                secret,
                customer,
            };
            let v: WebhookCreated = conn.client()?.post_as("/v1/webhooks", &body).await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{}", hook_line(&v.webhook));
                if let Some(secret) = &v.secret {
                    println!("signing secret (shown once; keep it with the receiver): {secret}");
                }
            }
        }
        WebhooksCmd::Delete {
            conn,
            webhook,
            json,
        } => {
            let path = format!("/v1/webhooks/{}", enc(&webhook));
            let v: WebhookDeleted = read_as(&path, conn.client()?.delete(&path).await?)?;
            show(&v, json, |v| {
                format!(
                    "deleted {} ({} waiting deliveries cancelled)",
                    sanitize(&v.id),
                    v.cancelled_deliveries
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
            let list = conn.client()?.get_as::<Deliveries>(&path).await?.deliveries;
            show_all(&list, json, "nothing delivered yet", delivery_line)?;
        }
    }
    Ok(0)
}
