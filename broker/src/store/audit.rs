//! The audit store: appending the broker's own chain, ingesting other sources' records
//! idempotently by (source, seq), and reading back for search and verification.

use serde_json::Value;
use sqlx::Row;

use super::{Store, now_ms, now_secs, to_i64, to_u64};
use crate::audit::{AuditEvent, AuditRecord, SUBJECT_FIELDS};

/// The broker's own chain.
pub const BROKER_SOURCE: &str = "broker";

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AuditQuery {
    pub source: Option<String>,
    pub kind: Option<String>,
    pub engineer: Option<String>,
    pub ticket: Option<String>,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub session: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<u64>,
    /// Unix ms, exclusive.
    pub until: Option<u64>,
    /// With `source`: records after this sequence number.
    pub after_seq: Option<u64>,
    pub limit: Option<u64>,
}

impl Store {
    /// Append an event to the broker's chain. Retries when another writer (another replica)
    /// took the same sequence number first.
    pub async fn audit(&self, event: &AuditEvent) -> anyhow::Result<AuditRecord> {
        let mut last_err = None;
        for attempt in 0..50u64 {
            match self
                .try_append(BROKER_SOURCE, event.kind(), event.data())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(2 + attempt * 3)).await;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("audit append failed")))
    }

    async fn try_append(
        &self,
        source: &str,
        kind: &str,
        data: Value,
    ) -> anyhow::Result<AuditRecord> {
        let mut tx = self.pool.begin().await?;
        let last = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE source = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&mut *tx)
        .await?;
        let prev = last.map(|r| (to_u64(r.get::<i64, _>(0)), r.get::<String, _>(1)));
        let record = AuditRecord::next(
            source,
            prev.as_ref().map(|(s, h)| (*s, h.as_str())),
            now_ms(),
            kind,
            data,
        );
        insert_record(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(record)
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
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// The highest sequence number stored for a source, with its hash.
    pub async fn audit_head(&self, source: &str) -> anyhow::Result<Option<(u64, String)>> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE source = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (to_u64(r.get::<i64, _>(0)), r.get::<String, _>(1))))
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
                    r.get::<String, _>(0),
                    to_u64(r.get::<i64, _>(1)),
                    to_u64(r.get::<i64, _>(2)),
                )
            })
            .collect())
    }

    pub async fn audit_sources(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT source FROM audit_events ORDER BY source")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    pub async fn audit_search(&self, q: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
        let mut sql = String::from(
            "SELECT source, seq, time_ms, kind, data, prev_hash, hash FROM audit_events WHERE 1=1",
        );
        let mut args: Vec<Arg> = Vec::new();
        let mut add = |col: &str, v: Arg, op: &str, sql: &mut String| {
            args.push(v);
            sql.push_str(&format!(" AND {col} {op} ${}", args.len()));
        };
        for (col, v) in [
            ("source", &q.source),
            ("kind", &q.kind),
            ("engineer", &q.engineer),
            ("ticket", &q.ticket),
            ("cluster", &q.cluster),
            ("node", &q.node),
            ("session", &q.session),
        ] {
            if let Some(v) = v {
                add(col, Arg::Text(v.clone()), "=", &mut sql);
            }
        }
        if let Some(v) = q.since {
            add("time_ms", Arg::Int(to_i64(v)), ">=", &mut sql);
        }
        if let Some(v) = q.until {
            add("time_ms", Arg::Int(to_i64(v)), "<", &mut sql);
        }
        if let Some(v) = q.after_seq {
            add("seq", Arg::Int(to_i64(v)), ">", &mut sql);
        }
        sql.push_str(" ORDER BY time_ms, source, seq");
        let limit = q.limit.unwrap_or(1000).min(100_000);
        sql.push_str(&format!(" LIMIT {limit}"));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
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

enum Arg {
    Text(String),
    Int(i64),
}

async fn insert_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &AuditRecord,
) -> anyhow::Result<()> {
    let subject = |f: &str| r.subject(f);
    sqlx::query(
        "INSERT INTO audit_events (source, seq, time_ms, kind, engineer, ticket, cluster, node, session, data, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&r.source)
    .bind(to_i64(r.seq))
    .bind(to_i64(r.time))
    .bind(&r.kind)
    .bind(subject(SUBJECT_FIELDS[0]))
    .bind(subject(SUBJECT_FIELDS[1]))
    .bind(subject(SUBJECT_FIELDS[2]))
    .bind(subject(SUBJECT_FIELDS[3]))
    .bind(subject(SUBJECT_FIELDS[4]))
    .bind(serde_json::to_string(&r.data)?)
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn record_from_row(row: &sqlx::any::AnyRow) -> anyhow::Result<AuditRecord> {
    Ok(AuditRecord {
        source: row.try_get(0)?,
        seq: to_u64(row.try_get(1)?),
        time: to_u64(row.try_get(2)?),
        kind: row.try_get(3)?,
        data: serde_json::from_str(&row.try_get::<String, _>(4)?)?,
        prev_hash: row.try_get(5)?,
        hash: row.try_get(6)?,
    })
}
