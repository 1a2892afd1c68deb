//! The audit store: other sources' records ingested idempotently by (source, seq), the keys
//! pinned for chains and their signed heads, and chains read back for verification. The
//! broker's own appends are in `append.rs`, search and loading in `search.rs`.

use sallyport_ca::clock::now_secs;
use sqlx::Row;

use super::columns::{placeholders, runs};
use super::search::insert_texts;
use super::{Store, to_i64, to_u64};
use crate::audit::{AuditRecord, SUBJECT_FIELDS};

/// The broker's own chain.
pub const BROKER_SOURCE: &str = "broker";

impl Store {
    /// The key pinned for a chain: (OpenSSH line, fingerprint).
    pub async fn audit_key(&self, source: &str) -> anyhow::Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT public_key, fingerprint FROM audit_keys WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| {
            (
                r.get::<String, _>("public_key"),
                r.get::<String, _>("fingerprint"),
            )
        }))
    }

    /// Pin `public_key` for `source` unless a key is pinned already; `true` when this pinned it.
    pub async fn pin_audit_key(
        &self,
        source: &str,
        public_key: &str,
        fingerprint: &str,
        by: &str,
    ) -> anyhow::Result<bool> {
        let res = sqlx::query(
            "INSERT INTO audit_keys (source, public_key, fingerprint, pinned_at, pinned_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source) DO NOTHING",
        )
        .bind(source)
        .bind(public_key)
        .bind(fingerprint)
        .bind(to_i64(now_secs()))
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Every pinned key.
    pub async fn audit_keys(&self) -> anyhow::Result<Vec<PinnedKey>> {
        let rows = sqlx::query(
            "SELECT source, public_key, fingerprint, pinned_at, pinned_by FROM audit_keys \
             ORDER BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PinnedKey {
                source: r.get("source"),
                public_key: r.get("public_key"),
                fingerprint: r.get("fingerprint"),
                pinned_at: Some(to_u64(r.get::<i64, _>("pinned_at"))),
                pinned_by: r.get("pinned_by"),
            })
            .collect())
    }

    /// Keep the signature of a chain's head (a re-sent one is kept once).
    pub async fn store_signature(
        &self,
        source: &str,
        seq: u64,
        hash: &str,
        signature: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_signature(&mut tx, source, seq, hash, signature).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The last signed record of the broker's own chain when this store's audit key did not
    /// sign it (`None`: it did, or nothing is signed yet). Replicas must share one audit key: a
    /// replica started with a key of its own signs records that fail `audit verify --keys`.
    pub async fn broker_chain_signed_by_another_key(&self) -> anyhow::Result<Option<u64>> {
        let Some(key) = &self.audit_key else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT seq, hash, signature FROM audit_signatures WHERE source = $1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(BROKER_SOURCE)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let seq = to_u64(row.get::<i64, _>("seq"));
        let hash: String = row.get("hash");
        let signature: String = row.get("signature");
        let ours = sallyport_ca::chainsig::verify_head(
            key.public_key(),
            BROKER_SOURCE,
            seq,
            &hash,
            &signature,
        );
        Ok(ours.is_err().then_some(seq))
    }

    /// A chain's signed heads in sequence order, `limit` after `after_seq`.
    pub async fn audit_signatures(
        &self,
        source: &str,
        after_seq: u64,
        limit: u64,
    ) -> anyhow::Result<Vec<HeadSignature>> {
        let rows = sqlx::query(
            "SELECT seq, hash, signature FROM audit_signatures WHERE source = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(source)
        .bind(to_i64(after_seq))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| HeadSignature {
                seq: to_u64(r.get::<i64, _>("seq")),
                hash: r.get("hash"),
                signature: r.get("signature"),
            })
            .collect())
    }

    /// Store records shipped by another source (a gateway). A record already stored with the
    /// same (source, seq) and hash is acknowledged again; a different one is refused with an
    /// [`IngestRefusal`] (downcast the error to tell it from a store failure). Two concurrent
    /// sends of the same record both succeed, one of them storing it.
    pub async fn ingest(&self, records: &[AuditRecord]) -> anyhow::Result<u64> {
        let mut stored = 0;
        for r in records {
            if r.compute_hash() != r.hash {
                return Err(IngestRefusal::BadHash {
                    chain: r.source.clone(),
                    seq: r.seq,
                }
                .into());
            }
            let same = |hash: String| -> anyhow::Result<()> {
                if hash == r.hash {
                    Ok(())
                } else {
                    Err(IngestRefusal::Fork {
                        chain: r.source.clone(),
                        seq: r.seq,
                    }
                    .into())
                }
            };
            if let Some(hash) = self.audit_hash(&r.source, r.seq).await? {
                same(hash)?;
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let inserted = match insert_record(&mut tx, r).await {
                Ok(()) => tx.commit().await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match inserted {
                Ok(()) => stored += 1,
                // Another sender stored this (source, seq) in between: the same record is fine.
                Err(e) => match self.audit_hash(&r.source, r.seq).await? {
                    Some(hash) => same(hash)?,
                    None => return Err(e),
                },
            }
        }
        Ok(stored)
    }

    /// The stored hash of one record.
    pub async fn audit_hash(&self, source: &str, seq: u64) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT hash FROM audit_events WHERE source = $1 AND seq = $2")
            .bind(source)
            .bind(to_i64(seq))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>("hash")))
    }

    /// The highest sequence number stored for a source, with its hash.
    pub async fn audit_head(&self, source: &str) -> anyhow::Result<Option<(u64, String)>> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE source = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (to_u64(r.get::<i64, _>("seq")), r.get::<String, _>("hash"))))
    }

    /// Remember the head a source reports of its own chain (never lowered: a report that arrives
    /// late does not hide a later one).
    pub async fn report_audit_head(&self, source: &str, head: u64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO audit_heads (source, reported, reported_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET reported = excluded.reported, \
             reported_at = excluded.reported_at WHERE audit_heads.reported <= excluded.reported",
        )
        .bind(source)
        .bind(to_i64(head))
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every source's reported head: (source, head, unix seconds of the report).
    pub async fn audit_heads(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let rows =
            sqlx::query("SELECT source, reported, reported_at FROM audit_heads ORDER BY source")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("source"),
                    to_u64(r.get::<i64, _>("reported")),
                    to_u64(r.get::<i64, _>("reported_at")),
                )
            })
            .collect())
    }

    pub async fn audit_sources(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT source FROM audit_events ORDER BY source")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>("source")).collect())
    }

    /// One source's chain in sequence order, `limit` records after `after_seq`.
    pub async fn audit_chain(
        &self,
        source: &str,
        after_seq: u64,
        limit: u64,
    ) -> anyhow::Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT source, seq, time_ms, kind, data, prev_hash, hash FROM audit_events \
             WHERE source = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(source)
        .bind(to_i64(after_seq))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }
}

/// Why records shipped by a source were refused (as opposed to the store failing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestRefusal {
    #[error("record {chain}#{seq} does not match its hash")]
    BadHash { chain: String, seq: u64 },
    #[error("record {chain}#{seq} differs from the stored one: the chain forks")]
    Fork { chain: String, seq: u64 },
}

/// A key pinned for a chain (`pinned_at` always set), and a signed head of a chain.
pub use sallyport_api::audit::{AuditKey as PinnedKey, HeadSignature};

pub(super) async fn insert_signature(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    source: &str,
    seq: u64,
    hash: &str,
    signature: &str,
) -> anyhow::Result<()> {
    insert_signatures(tx, source, &[(seq, hash.into(), signature.into())]).await
}

pub(super) async fn insert_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &AuditRecord,
) -> anyhow::Result<()> {
    insert_events(tx, std::slice::from_ref(r)).await?;
    insert_texts(tx, std::slice::from_ref(r)).await?;
    // Notifications are queued with the event they tell about, in its transaction: stored
    // together or not at all, and sent later by the webhook worker.
    super::enqueue_deliveries(tx, r).await
}

/// Store `records` (one statement per run of rows) with the index of their text and the
/// deliveries they are notified by: [`insert_record`] for many at once.
pub(super) async fn insert_records(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[AuditRecord],
) -> anyhow::Result<()> {
    insert_events(tx, records).await?;
    insert_texts(tx, records).await?;
    // Most appends tell no webhook: one look for an enabled one answers for the whole group,
    // in its transaction, and only then is each notified record queued.
    if records
        .iter()
        .any(|r| crate::webhooks::notified(&r.source, &r.kind))
        && super::webhooks_enabled(tx).await?
    {
        for r in records {
            super::enqueue_deliveries(tx, r).await?;
        }
    }
    Ok(())
}

/// The rows of `records` in `audit_events`, one statement per run of rows.
pub(super) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[AuditRecord],
) -> anyhow::Result<()> {
    for run in runs(records) {
        let sql = format!(
            "INSERT INTO audit_events (source, seq, time_ms, kind, engineer, ticket, cluster, node, session, data, prev_hash, hash) VALUES {}",
            placeholders(run.len(), 12)
        );
        let mut query = sqlx::query(&sql);
        for r in run {
            query = query
                .bind(&r.source)
                .bind(to_i64(r.seq))
                .bind(to_i64(r.time))
                .bind(&r.kind);
            for f in SUBJECT_FIELDS {
                query = query.bind(r.subject(f));
            }
            query = query
                .bind(serde_json::to_string(&r.data)?)
                .bind(&r.prev_hash)
                .bind(&r.hash);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Signatures of heads of `source`'s chain, (seq, hash, signature), one statement per run.
pub(super) async fn insert_signatures(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    source: &str,
    heads: &[(u64, String, String)],
) -> anyhow::Result<()> {
    for run in runs(heads) {
        let sql = format!(
            "INSERT INTO audit_signatures (source, seq, hash, signature) VALUES {} \
             ON CONFLICT (source, seq) DO NOTHING",
            placeholders(run.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for (seq, hash, signature) in run {
            query = query
                .bind(source)
                .bind(to_i64(*seq))
                .bind(hash)
                .bind(signature);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(super) fn record_from_row(row: &sqlx::any::AnyRow) -> anyhow::Result<AuditRecord> {
    Ok(AuditRecord {
        source: row.try_get("source")?,
        seq: to_u64(row.try_get("seq")?),
        time: to_u64(row.try_get("time_ms")?),
        kind: row.try_get("kind")?,
        data: serde_json::from_str(&row.try_get::<String, _>("data")?)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
