//! Notifications: webhooks of a customer (set by its approvers) or vendor-wide (set by the
//! operator) for the events people want to hear about at once — access requested, request
//! decided, certificate issued, session started, ended and terminated, revocation and a burst of
//! refused logins.
//!
//! A delivery is queued in the store in the same transaction that stores its audit event
//! ([`crate::store::enqueue_deliveries`]), so nothing is lost and no login or session waits for a
//! receiver. [`run`] (started with the server, one per replica) claims due deliveries with a
//! conditional UPDATE, POSTs them (5 s timeout), and retries with backoff; the last failure is an
//! audit event (`webhook_failed`). The pure parts — which events are notified, the bodies, the
//! signature, the URL rules, the backoff — are here with their tests.
//!
//! Generic form (`json`): the event as JSON, signed with HMAC-SHA256 over `"<t>.<body>"` in
//! `X-Sallyport-Signature: t=<unix secs>,v1=<hex>`; receivers check it and refuse a `t` more
//! than 5 minutes away (docs/webhooks.md). Slack form (`slack`): `{"text": "..."}`, a sentence
//! for a Slack incoming webhook (signed the same way, which Slack ignores).
//!
//! Here: the backoff and the secrets; which events in `events.rs`, the bodies and the signature
//! in `bodies.rs`, the URL rules in `urls.rs`, the delivery worker in `worker.rs`.

mod bodies;
mod events;
#[cfg(test)]
mod tests;
mod urls;
mod worker;

pub use bodies::{Format, event_id, json_body, signature, slack_body, summary};
pub use events::{NOTIFIED, event_notified, notified};
pub use urls::{UrlRefused, check_url, reachable, shown_url};
pub use worker::run;

/// Seconds to wait before the next attempt after `attempts` failed ones (5 s, 30 s, 2 min,
/// 10 min, 1 h with `base` 5), or `None`: that was the last.
pub fn backoff(attempts: u64, base: u64, max_attempts: u64) -> Option<u64> {
    const STEPS: [u64; 5] = [1, 6, 24, 120, 720];
    if attempts >= max_attempts {
        return None;
    }
    let i = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    Some(base.saturating_mul(STEPS[i.min(STEPS.len() - 1)]))
}

/// The context a webhook's sealed secret and URL are bound to.
pub fn secret_context(id: &str) -> String {
    format!("webhook-secret:{id}")
}

pub fn url_context(id: &str) -> String {
    format!("webhook-url:{id}")
}

/// A new signing secret: `whsec_` and 32 random bytes, hex.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("whsec_{}", hex::encode(b))
}
