//! The delivery worker: claims due deliveries, sends them, records the outcome and retries
//! with backoff.

use std::sync::Arc;
use std::time::Duration;

use super::urls::PublicOnly;
use super::{backoff, check_url, secret_context, signature, url_context};
use crate::audit::{AuditEvent, sanitize};
use crate::state::Broker;
use crate::store::Delivery;
use sallyport_ca::clock::now_secs;

/// How long a claimed delivery stays claimed: past it, another worker may take it again (the
/// replica that claimed it stopped half-way).
const LEASE_SECS: u64 = 60;
/// Deliveries sent at once by one replica.
const PARALLEL: usize = 8;

/// Deliver due notifications until `stop` is cancelled: every second, claim what is due and
/// send each (at most [`PARALLEL`] at once, so a receiver that hangs holds up no other).
pub async fn run(b: Arc<Broker>, stop: tokio_util::sync::CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = &b.cfg.webhooks;
    let builder = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sallyport-webhooks/", env!("CARGO_PKG_VERSION")))
    };
    // Vendor-wide webhooks may go anywhere the operator chose (a SIEM inside the vendor's
    // network); customers' only to public addresses.
    let clients = builder().build().and_then(|vendor| {
        builder()
            .dns_resolver(Arc::new(PublicOnly {
                allow_loopback: cfg.allow_http_loopback,
            }))
            .build()
            .map(|customer| Clients { vendor, customer })
    });
    let http = match clients {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot make an HTTP client; no notification is sent");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(b.cfg.webhooks.poll_millis)) => {}
        }
        let due = match b.store.due_deliveries(now_secs(), 32).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the queue");
                continue;
            }
        };
        for d in due {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match b.store.claim_delivery(&d, now_secs() + LEASE_SECS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot claim a delivery");
                    continue;
                }
            }
            let (b, http) = (b.clone(), http.clone());
            tokio::spawn(async move {
                deliver(&b, &http, d).await;
                drop(permit);
            });
        }
    }
}

/// The HTTP clients of vendor-wide and of customers' webhooks.
struct Clients {
    vendor: reqwest::Client,
    customer: reqwest::Client,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Failed(Option<u16>, String),
}

/// One attempt at a claimed delivery, and its outcome recorded.
async fn deliver(b: &Broker, http: &Clients, d: Delivery) {
    let attempt = d.attempts + 1;
    let outcome = send(b, http, &d).await;
    let result = match outcome {
        Outcome::Delivered(status) => b.store.delivered(&d.id, attempt, status).await.map(|_| ()),
        Outcome::Failed(status, error) => {
            let cfg = &b.cfg.webhooks;
            match backoff(attempt, cfg.retry_secs, cfg.max_attempts) {
                Some(wait) => b
                    .store
                    .retry_delivery(&d.id, attempt, now_secs() + wait, status, &error)
                    .await
                    .map(|_| ()),
                None => give_up(b, &d, attempt, status, &error).await,
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(delivery = %d.id, error = %e, "webhooks: cannot record a delivery's outcome");
    }
}

async fn give_up(
    b: &Broker,
    d: &Delivery,
    attempt: u64,
    status: Option<u16>,
    error: &str,
) -> anyhow::Result<()> {
    if !b.store.fail_delivery(&d.id, attempt, status, error).await? {
        return Ok(());
    }
    tracing::warn!(webhook = %d.webhook, delivery = %d.id, attempts = attempt, error, "webhooks: giving up on a delivery");
    b.store
        .audit(&AuditEvent::WebhookFailed {
            webhook: d.webhook.clone(),
            customer: d.customer.clone(),
            url: d.url_shown.clone(),
            host: d.host.clone(),
            delivery: d.id.clone(),
            event: format!("{}#{}", d.source, d.seq),
            event_kind: d.kind.clone(),
            attempts: attempt,
            last_status: status.map(u64::from),
            last_error: error.to_string(),
        })
        .await?;
    Ok(())
}

async fn send(b: &Broker, clients: &Clients, d: &Delivery) -> Outcome {
    let open = |ctx: String, sealed: &str| b.totp_box.open(&ctx, sealed);
    let (url, secret) = match (
        open(url_context(&d.webhook), &d.url_sealed),
        open(secret_context(&d.webhook), &d.secret_sealed),
    ) {
        (Ok(u), Ok(s)) => (u, s),
        (Err(e), _) | (_, Err(e)) => {
            return Outcome::Failed(
                None,
                format!("the webhook's URL or secret does not open: {e}"),
            );
        }
    };
    // Checked again: the broker's rules may have changed since the webhook was made.
    let customer = d.customer.is_some();
    let url = match check_url(&url, b.cfg.webhooks.allow_http_loopback, customer) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(None, e.0),
    };
    let http = if customer {
        &clients.customer
    } else {
        &clients.vendor
    };
    let t = now_secs();
    let res = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Sallyport-Signature", signature(&secret, t, &d.body))
        .header("X-Sallyport-Event", &d.kind)
        .header("X-Sallyport-Delivery", &d.id)
        .body(d.body.clone())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
        Ok(r) => Outcome::Failed(
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
        ),
        Err(e) => Outcome::Failed(e.status().map(|s| s.as_u16()), transport_error(&e)),
    }
}

/// A transport error in words, without the URL (which may hold a secret).
fn transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within the timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirected (redirects are not followed)"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {}", sanitize(&detail))
    }
}
