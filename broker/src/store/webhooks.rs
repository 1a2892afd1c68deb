//! Webhooks and their queue of deliveries (migration 0013). Deliveries are queued by
//! [`enqueue_deliveries`] inside the transaction that stores an audit event, and taken by the
//! worker of any replica with a conditional UPDATE ([`Store::claim_delivery`]).

use sallyport_ca::clock::now_secs;
use sqlx::Row;

use super::{BROKER_SOURCE, Store, to_i64, to_u64};
use crate::audit::AuditRecord;

pub use sallyport_api::webhooks::{Delivery as DeliveryRow, Webhook};

/// A webhook to store: URL and secret sealed already.
pub struct NewWebhook {
    pub id: String,
    pub customer: Option<String>,
    pub url_sealed: String,
    pub url_shown: String,
    pub format: String,
    pub events: Vec<String>,
    pub secret_sealed: String,
    pub created_by: String,
}

/// A delivery as the worker sends it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub webhook: String,
    pub customer: Option<String>,
    pub url_sealed: String,
    pub url_shown: String,
    /// The receiver's host (from the shortened URL), for the audit log.
    pub host: String,
    pub secret_sealed: String,
    pub source: String,
    pub seq: u64,
    pub kind: String,
    pub body: String,
    pub attempts: u64,
    pub next_at: u64,
}

const ALL: &str = "[\"*\"]";

fn like_escape(s: &str) -> String {
    let mut p = String::new();
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// Whether any webhook is enabled: when none is, no record needs [`enqueue_deliveries`].
pub(crate) async fn webhooks_enabled(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> anyhow::Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS one FROM webhooks WHERE enabled = 1 AND deleted_at IS NULL LIMIT 1",
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// Queue a delivery of `r` for every enabled webhook that wants it: its kind is notified and
/// in the webhook's events, and the webhook is vendor-wide or of the event's customer (the
/// owner of the event's cluster; for the broker's own events without a cluster, the customer
/// they name). One INSERT…SELECT in the caller's transaction.
pub(crate) async fn enqueue_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &AuditRecord,
) -> anyhow::Result<()> {
    if !crate::webhooks::notified(&r.source, &r.kind) {
        return Ok(());
    }
    let owner = match r.subject("cluster") {
        Some(cluster) => sqlx::query("SELECT customer_id FROM clusters WHERE id = $1")
            .bind(cluster)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.get::<String, _>("customer_id")),
        None => None,
    };
    // Only the broker's own word names a customer without a cluster: a gateway's record is
    // about its cluster, whatever else it says.
    let customer = owner.or_else(|| {
        (r.source == BROKER_SOURCE)
            .then(|| r.subject("customer"))
            .flatten()
    });
    let hash = r.hash.get(..16).unwrap_or(&r.hash);
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook, source, seq, kind, body, status, attempts, \
         next_at, created_at) \
         SELECT 'wd-' || $1 || '-' || w.id, w.id, $2, $3, $4, \
         CASE WHEN w.format = 'slack' THEN $5 ELSE $6 END, 'pending', 0, $7, $7 \
         FROM webhooks w WHERE w.enabled = 1 AND w.deleted_at IS NULL \
         AND (w.customer IS NULL OR w.customer = $8) \
         AND (w.events = $9 OR w.events LIKE $10 ESCAPE '\\')",
    )
    .bind(hash)
    .bind(&r.source)
    .bind(to_i64(r.seq))
    .bind(&r.kind)
    .bind(crate::webhooks::slack_body(r, customer.as_deref()))
    .bind(crate::webhooks::json_body(r, customer.as_deref()))
    .bind(to_i64(now_secs()))
    .bind(customer)
    .bind(ALL)
    .bind(format!("%\"{}\"%", like_escape(&r.kind)))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn webhook_from_row(r: &sqlx::any::AnyRow) -> anyhow::Result<Webhook> {
    Ok(Webhook {
        id: r.try_get("id")?,
        customer: r.try_get("customer")?,
        url: r.try_get("url_shown")?,
        format: r.try_get("format")?,
        events: serde_json::from_str(&r.try_get::<String, _>("events")?)?,
        created_by: r.try_get("created_by")?,
        created_at: to_u64(r.try_get("created_at")?),
        enabled: r.try_get::<i64, _>("enabled")? != 0,
    })
}

const WEBHOOK_COLUMNS: &str =
    "id, customer, url_shown, format, events, created_by, created_at, enabled";

fn host_of(shown: &str) -> String {
    let rest = shown.split_once("://").map_or(shown, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_string()
}

impl Store {
    pub async fn create_webhook(&self, w: &NewWebhook) -> anyhow::Result<Webhook> {
        let now = now_secs();
        let events = if w.events.is_empty() {
            ALL.to_string()
        } else {
            serde_json::to_string(&w.events)?
        };
        sqlx::query(
            "INSERT INTO webhooks (id, customer, url_sealed, url_shown, format, events, \
             secret_sealed, created_by, created_at, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)",
        )
        .bind(&w.id)
        .bind(w.customer.clone())
        .bind(&w.url_sealed)
        .bind(&w.url_shown)
        .bind(&w.format)
        .bind(&events)
        .bind(&w.secret_sealed)
        .bind(&w.created_by)
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        self.webhook(&w.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the webhook just stored is not there"))
    }

    /// A webhook that is not deleted.
    pub async fn webhook(&self, id: &str) -> anyhow::Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// The webhooks that are not deleted: `Some(c)` customer c's only; `None` all, the
    /// vendor-wide ones first.
    pub async fn webhooks(&self, customer: Option<&str>) -> anyhow::Result<Vec<Webhook>> {
        let rows = match customer {
            Some(c) => {
                sqlx::query(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL \
                     AND customer = $1 ORDER BY created_at, id"
                ))
                .bind(c)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL \
                     ORDER BY customer IS NOT NULL, customer, created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(webhook_from_row).collect()
    }

    /// Delete a webhook: nothing more is queued for it and what waits is cancelled. Returns how
    /// many deliveries were cancelled, or `None` when there was no such webhook.
    pub async fn delete_webhook(&self, id: &str, by: &str) -> anyhow::Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = $1, deleted_by = $2, enabled = 0 \
             WHERE id = $3 AND deleted_at IS NULL",
        )
        .bind(to_i64(now_secs()))
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let cancelled = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', \
             last_error = 'the webhook was deleted' WHERE webhook = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(cancelled.rows_affected()))
    }

    /// Recent deliveries, newest first: of one webhook, of one customer's webhooks, or all.
    pub async fn deliveries(
        &self,
        customer: Option<&str>,
        webhook: Option<&str>,
        limit: u64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let mut sql = String::from(
            "SELECT d.id, d.webhook, w.customer, w.url_shown, d.source, d.seq, d.kind, d.status, \
             d.attempts, d.next_at, d.last_error, d.last_status, d.created_at, d.delivered_at \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook WHERE 1=1",
        );
        let mut args = Vec::new();
        if let Some(c) = customer {
            args.push(c.to_string());
            sql.push_str(&format!(" AND w.customer = ${}", args.len()));
        }
        if let Some(h) = webhook {
            args.push(h.to_string());
            sql.push_str(&format!(" AND d.webhook = ${}", args.len()));
        }
        sql.push_str(&format!(
            " ORDER BY d.created_at DESC, d.id DESC LIMIT {}",
            limit.min(1000)
        ));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(DeliveryRow {
                    id: r.try_get("id")?,
                    webhook: r.try_get("webhook")?,
                    customer: r.try_get("customer")?,
                    url: r.try_get("url_shown")?,
                    event: format!(
                        "{}#{}",
                        r.try_get::<String, _>("source")?,
                        to_u64(r.try_get("seq")?)
                    ),
                    kind: r.try_get("kind")?,
                    attempts: to_u64(r.try_get("attempts")?),
                    next_at: (status == "pending").then(|| to_u64(r.get("next_at"))),
                    status,
                    last_error: r.try_get("last_error")?,
                    last_status: r.try_get::<Option<i64>, _>("last_status")?.map(to_u64),
                    created_at: to_u64(r.try_get("created_at")?),
                    delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(to_u64),
                })
            })
            .collect()
    }

    /// Deliveries due at `now`, oldest first.
    pub async fn due_deliveries(&self, now: u64, limit: u64) -> anyhow::Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT d.id, d.webhook, w.customer, w.url_sealed, w.url_shown, w.secret_sealed, \
             d.source, d.seq, d.kind, d.body, d.attempts, d.next_at \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook \
             WHERE d.status = 'pending' AND d.next_at <= $1 ORDER BY d.next_at, d.id LIMIT $2",
        )
        .bind(to_i64(now))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let url_shown: String = r.try_get("url_shown")?;
                Ok(Delivery {
                    id: r.try_get("id")?,
                    webhook: r.try_get("webhook")?,
                    customer: r.try_get("customer")?,
                    url_sealed: r.try_get("url_sealed")?,
                    host: host_of(&url_shown),
                    url_shown,
                    secret_sealed: r.try_get("secret_sealed")?,
                    source: r.try_get("source")?,
                    seq: to_u64(r.try_get("seq")?),
                    kind: r.try_get("kind")?,
                    body: r.try_get("body")?,
                    attempts: to_u64(r.try_get("attempts")?),
                    next_at: to_u64(r.try_get("next_at")?),
                })
            })
            .collect()
    }

    /// Take a due delivery for one attempt: move its next attempt to `lease_until` unless
    /// another worker (on this replica or another) took it first. `true` when this one did.
    pub async fn claim_delivery(&self, d: &Delivery, lease_until: u64) -> anyhow::Result<bool> {
        let res = sqlx::query(
            "UPDATE webhook_deliveries SET next_at = $1 WHERE id = $2 AND status = 'pending' \
             AND attempts = $3 AND next_at = $4",
        )
        .bind(to_i64(lease_until))
        .bind(&d.id)
        .bind(to_i64(d.attempts))
        .bind(to_i64(d.next_at))
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Attempt number `attempt` succeeded.
    pub async fn delivered(&self, id: &str, attempt: u64, status: u16) -> anyhow::Result<bool> {
        self.record_attempt(
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $1, last_status = $2, \
                 delivered_at = $3 WHERE id = $4 AND status = 'pending' AND attempts = $5",
            )
            .bind(to_i64(attempt))
            .bind(i64::from(status))
            .bind(to_i64(now_secs())),
            id,
            attempt,
        )
        .await
    }

    /// Attempt number `attempt` failed; the next one is at `next_at`.
    pub async fn retry_delivery(
        &self,
        id: &str,
        attempt: u64,
        next_at: u64,
        status: Option<u16>,
        error: &str,
    ) -> anyhow::Result<bool> {
        self.record_attempt(
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = $1, next_at = $2, last_status = $3, \
                 last_error = $4 WHERE id = $5 AND status = 'pending' AND attempts = $6",
            )
            .bind(to_i64(attempt))
            .bind(to_i64(next_at))
            .bind(status.map(i64::from))
            .bind(error),
            id,
            attempt,
        )
        .await
    }

    /// The last attempt failed: the delivery has failed. `true` when this call recorded it (so
    /// the caller audits it once).
    pub async fn fail_delivery(
        &self,
        id: &str,
        attempt: u64,
        status: Option<u16>,
        error: &str,
    ) -> anyhow::Result<bool> {
        self.record_attempt(
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', attempts = $1, last_status = $2, \
                 last_error = $3 WHERE id = $4 AND status = 'pending' AND attempts = $5",
            )
            .bind(to_i64(attempt))
            .bind(status.map(i64::from))
            .bind(error),
            id,
            attempt,
        )
        .await
    }

    /// Runs `update` (an attempt's record: its last two placeholders are the delivery's id and
    /// the attempt before `attempt`), which changes the delivery only while it is still pending
    /// after that attempt; `true` when it did.
    async fn record_attempt<'q>(
        &self,
        update: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        id: &'q str,
        attempt: u64,
    ) -> anyhow::Result<bool> {
        let res = update
            .bind(id)
            .bind(to_i64(attempt.saturating_sub(1)))
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }
}
