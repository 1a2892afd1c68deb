//! The audit store: appending the broker's own chain, ingesting other sources' records
//! idempotently by (source, seq), and reading back for search and verification.

use sqlx::Row;

use super::{Store, now_secs, to_i64, to_u64};
use crate::audit::{AuditRecord, SUBJECT_FIELDS};
use sallyport_audit::text::{QueryError, query_words, search_text};

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
    /// Text the event must contain: every word of it (white space separates words), as a
    /// substring of the event's indexed text ([`search_text`]), ignoring case. Every character
    /// is literal. Results are then newest first.
    pub q: Option<String>,
    /// A cursor ([`AuditCursor`]): only events older than the one it names, newest first. The
    /// next page of a newest-first search starts `before` its last event.
    pub before: Option<String>,
    /// Only events on this customer's clusters (set by the API for a customer's approver, never
    /// from the query string).
    #[serde(skip)]
    pub customer: Option<String>,
}

/// Why a search cannot be run as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditQueryError {
    #[error(transparent)]
    Text(#[from] QueryError),
    #[error("before must be a cursor <time_ms>:<source>:<seq>, as the previous page's `next`")]
    Cursor,
}

impl AuditQuery {
    /// The words of `q` (none when it is absent or blank).
    pub fn words(&self) -> Result<Vec<String>, AuditQueryError> {
        Ok(query_words(self.q.as_deref().unwrap_or(""))?)
    }

    pub fn cursor(&self) -> Result<Option<AuditCursor>, AuditQueryError> {
        self.before.as_deref().map(AuditCursor::parse).transpose()
    }

    /// Newest first (with text to find, or a cursor); otherwise oldest first.
    pub fn newest_first(&self) -> bool {
        self.before.is_some() || self.q.as_deref().is_some_and(|q| !q.trim().is_empty())
    }

    /// How many events a page holds at most: `limit`, 1000 by default, at most 100,000.
    pub fn page_size(&self) -> u64 {
        self.limit.unwrap_or(1000).min(100_000)
    }

    /// Both checks, for a caller that answers 400.
    pub fn check(&self) -> Result<(), AuditQueryError> {
        self.words()?;
        self.cursor()?;
        Ok(())
    }
}

/// Where a newest-first page ended: the last event's (time, source, seq), the order of the
/// results. As text `<time_ms>:<source>:<seq>` (a source may itself contain `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub time_ms: u64,
    pub source: String,
    pub seq: u64,
}

impl AuditCursor {
    pub fn of(r: &AuditRecord) -> AuditCursor {
        AuditCursor {
            time_ms: r.time,
            source: r.source.clone(),
            seq: r.seq,
        }
    }

    pub fn parse(s: &str) -> Result<AuditCursor, AuditQueryError> {
        let (time, rest) = s.split_once(':').ok_or(AuditQueryError::Cursor)?;
        let (source, seq) = rest.rsplit_once(':').ok_or(AuditQueryError::Cursor)?;
        Ok(AuditCursor {
            time_ms: time.parse().map_err(|_| AuditQueryError::Cursor)?,
            source: source.to_string(),
            seq: seq.parse().map_err(|_| AuditQueryError::Cursor)?,
        })
    }
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.time_ms, self.source, self.seq)
    }
}

impl Store {
    /// The key pinned for a chain: (OpenSSH line, fingerprint).
    pub async fn audit_key(&self, source: &str) -> anyhow::Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT public_key, fingerprint FROM audit_keys WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))))
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
                source: r.get(0),
                public_key: r.get(1),
                fingerprint: r.get(2),
                pinned_at: to_u64(r.get::<i64, _>(3)),
                pinned_by: r.get(4),
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
        let seq = to_u64(row.get::<i64, _>(0));
        let hash: String = row.get(1);
        let signature: String = row.get(2);
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
                seq: to_u64(r.get::<i64, _>(0)),
                hash: r.get(1),
                signature: r.get(2),
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

    /// Events matching `q`: oldest first, or newest first with text to find or a cursor
    /// ([`AuditQuery::newest_first`]); at most [`AuditQuery::page_size`].
    pub async fn audit_search(&self, q: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
        let words = q.words()?;
        let cursor = q.cursor()?;
        let mut args: Vec<Arg> = Vec::new();
        let mut arg = |v: Arg| {
            args.push(v);
            format!("${}", args.len())
        };
        // With text, the matching rows of audit_text are ordered and cut to a page first (they
        // carry each event's time), joined to their events only for the other filters; the page's
        // events are read last. Without text, the events are searched directly.
        let (t, e) = if words.is_empty() {
            ("e", "e")
        } else {
            ("t", "f")
        };
        let mut cond = String::new();
        for (col, v) in [
            ("kind", &q.kind),
            ("engineer", &q.engineer),
            ("ticket", &q.ticket),
            ("cluster", &q.cluster),
            ("node", &q.node),
            ("session", &q.session),
        ] {
            if let Some(v) = v {
                cond.push_str(&format!(" AND {e}.{col} = {}", arg(Arg::Text(v.clone()))));
            }
        }
        if let Some(c) = &q.customer {
            cond.push_str(&format!(
                " AND {e}.cluster IN (SELECT id FROM clusters WHERE customer_id = {})",
                arg(Arg::Text(c.clone()))
            ));
        }
        let joined = !cond.is_empty();
        if let Some(v) = &q.source {
            cond.push_str(&format!(" AND {t}.source = {}", arg(Arg::Text(v.clone()))));
        }
        if let Some(v) = q.since {
            cond.push_str(&format!(" AND {t}.time_ms >= {}", arg(Arg::Int(to_i64(v)))));
        }
        if let Some(v) = q.until {
            cond.push_str(&format!(" AND {t}.time_ms < {}", arg(Arg::Int(to_i64(v)))));
        }
        if let Some(v) = q.after_seq {
            cond.push_str(&format!(" AND {t}.seq > {}", arg(Arg::Int(to_i64(v)))));
        }
        if let Some(c) = &cursor {
            // Keyset paging: strictly after the cursor in (time, source, seq) descending order.
            let (ms, src, seq) = (
                arg(Arg::Int(to_i64(c.time_ms))),
                arg(Arg::Text(c.source.clone())),
                arg(Arg::Int(to_i64(c.seq))),
            );
            cond.push_str(&format!(
                " AND {t}.time_ms <= {ms} AND ({t}.time_ms, {t}.source, {t}.seq) < ({ms}, {src}, {seq})"
            ));
        }
        // PostgreSQL: the text rows' time index serves only words the trigram index cannot
        // narrow (all under three characters): the page is read newest first and cut. With a
        // longer word the trigram index is far better, and `time_ms + 0` keeps the planner from
        // walking the time index instead (it would read every row for a rare word).
        let time_index = !self.is_sqlite && words.iter().all(|w| w.chars().count() < 3);
        let order = |a: &str| {
            let time = if a == "t" && !self.is_sqlite && !time_index {
                format!("({a}.time_ms + 0)")
            } else {
                format!("{a}.time_ms")
            };
            if q.newest_first() {
                format!(" ORDER BY {time} DESC, {a}.source DESC, {a}.seq DESC")
            } else {
                format!(" ORDER BY {time}, {a}.source, {a}.seq")
            }
        };
        let limit = format!(" LIMIT {}", q.page_size());
        let select = "SELECT e.source, e.seq, e.time_ms, e.kind, e.data, e.prev_hash, e.hash \
                      FROM audit_events e";
        let sql = if words.is_empty() {
            format!("{select} WHERE 1=1{cond}{}{limit}", order("e"))
        } else {
            let text = text_condition(self.is_sqlite, &words, &mut arg);
            // CROSS JOIN: SQLite keeps the text table as the outer loop (driven by the index of
            // the text), instead of walking the events of a filter and looking each one up among
            // the matches. PostgreSQL plans it as any inner join.
            let (join, on) = if joined {
                (
                    " CROSS JOIN audit_events f",
                    " AND f.source = t.source AND f.seq = t.seq",
                )
            } else {
                ("", "")
            };
            format!(
                "{select} WHERE (e.source, e.seq) IN (SELECT t.source, t.seq FROM audit_text t{join} \
                 WHERE {text}{on}{cond}{}{limit}){}",
                order("t"),
                order("e")
            )
        };
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

    /// Index the text of events stored before the search index existed (migration 0009 lists
    /// each chain's last record then), a batch per transaction; resumes where a stopped broker
    /// left off, and replicas starting together share the work. Returns how many events it
    /// looked at.
    pub async fn index_stored_text(&self) -> anyhow::Result<u64> {
        const BATCH: i64 = 2000;
        let mut seen = 0u64;
        loop {
            let Some(row) = sqlx::query(
                "SELECT source, through_seq, done_seq FROM audit_text_backfill ORDER BY source LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await?
            else {
                if seen > 0 {
                    tracing::info!(events = seen, "indexed the text of earlier audit events");
                }
                return Ok(seen);
            };
            let (source, through, done): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let mut tx = self.pool.begin().await?;
            if done >= through {
                sqlx::query("DELETE FROM audit_text_backfill WHERE source = $1")
                    .bind(&source)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                continue;
            }
            if seen == 0 {
                tracing::info!("indexing the text of earlier audit events for search");
            }
            let upto = through.min(done + BATCH);
            // Claim the batch: another replica that took it first moved done_seq.
            let claimed = sqlx::query(
                "UPDATE audit_text_backfill SET done_seq = $1 WHERE source = $2 AND done_seq = $3",
            )
            .bind(upto)
            .bind(&source)
            .bind(done)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() != 1 {
                tx.rollback().await?;
                continue;
            }
            let rows = sqlx::query(
                "SELECT source, seq, time_ms, kind, data, prev_hash, hash FROM audit_events \
                 WHERE source = $1 AND seq > $2 AND seq <= $3",
            )
            .bind(&source)
            .bind(done)
            .bind(upto)
            .fetch_all(&mut *tx)
            .await?;
            let records = rows
                .iter()
                .map(record_from_row)
                .collect::<anyhow::Result<Vec<_>>>()?;
            insert_texts(&mut tx, &records).await?;
            tx.commit().await?;
            seen += records.len() as u64;
        }
    }

    /// Store records as they are, many per statement, in one transaction, indexing their text:
    /// for seeding a store (tests, benchmarks) or loading records kept elsewhere. Unlike
    /// [`Store::ingest`] it checks nothing (hashes, chains, what was stored before): a record
    /// already stored fails the whole batch.
    pub async fn import(&self, records: &[AuditRecord]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(IMPORT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO audit_events (source, seq, time_ms, kind, engineer, ticket, cluster, node, session, data, prev_hash, hash) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 12;
                sql.push('(');
                sql.push_str(
                    &(1..=12)
                        .map(|k| format!("${}", b + k))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                sql.push(')');
            }
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.source.clone())
                    .bind(to_i64(r.seq))
                    .bind(to_i64(r.time))
                    .bind(r.kind.clone());
                for f in SUBJECT_FIELDS {
                    query = query.bind(r.subject(f));
                }
                query = query
                    .bind(serde_json::to_string(&r.data)?)
                    .bind(r.prev_hash.clone())
                    .bind(r.hash.clone());
            }
            query.execute(&mut *tx).await?;
            insert_texts(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(())
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

/// A key pinned for a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedKey {
    pub source: String,
    pub public_key: String,
    pub fingerprint: String,
    pub pinned_at: u64,
    pub pinned_by: String,
}

/// A signed head of a chain: record `seq` had `hash`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeadSignature {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
}

pub(super) async fn insert_signature(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    source: &str,
    seq: u64,
    hash: &str,
    signature: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO audit_signatures (source, seq, hash, signature) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (source, seq) DO NOTHING",
    )
    .bind(source)
    .bind(to_i64(seq))
    .bind(hash)
    .bind(signature)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

enum Arg {
    Text(String),
    Int(i64),
}

pub(super) async fn insert_record(
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
    insert_texts(tx, std::slice::from_ref(r)).await?;
    // Notifications are queued with the event they tell about, in its transaction: stored
    // together or not at all, and sent later by the webhook worker.
    super::enqueue_deliveries(tx, r).await
}

/// Rows per statement of [`Store::import`] (12 parameters each; sqlx binds many parameters to
/// one SQLite statement slowly, and 50 rows load fastest).
const IMPORT_ROWS: usize = 50;

/// Index the text of `records` (those that carry any), many per statement.
async fn insert_texts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[AuditRecord],
) -> anyhow::Result<()> {
    let texts: Vec<(&AuditRecord, String)> = records
        .iter()
        .filter_map(|r| search_text(&r.source, &r.kind, &r.data).map(|t| (r, t)))
        .collect();
    for chunk in texts.chunks(IMPORT_ROWS) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = 4 * i;
                format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_text (source, seq, time_ms, text) VALUES {}",
            values.join(",")
        );
        let mut query = sqlx::query(&sql);
        for (r, text) in chunk {
            query = query
                .bind(r.source.clone())
                .bind(to_i64(r.seq))
                .bind(to_i64(r.time))
                .bind(text.clone());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The condition on `audit_text t` that every word is in an event's text, ignoring case, each
/// word's characters taken literally (bound as parameters, never spliced into the SQL).
///
/// SQLite: words of 3 characters or more go to FTS5 as one MATCH of quoted strings (inside
/// `"..."` FTS5 reads no operator; a `"` is doubled), answered by the trigram index; shorter
/// words (no trigram to look up) are checked with LIKE on the rows found. PostgreSQL: ILIKE
/// `%word%` per word, answered by the pg_trgm index. In LIKE patterns `\`, `%` and `_` are
/// escaped.
fn text_condition(
    is_sqlite: bool,
    words: &[String],
    arg: &mut impl FnMut(Arg) -> String,
) -> String {
    let like = |w: &str| {
        let mut p = String::from("%");
        for c in w.chars() {
            if matches!(c, '\\' | '%' | '_') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push('%');
        p
    };
    let mut parts = Vec::new();
    if is_sqlite {
        let (long, short): (Vec<&String>, Vec<&String>) =
            words.iter().partition(|w| w.chars().count() >= 3);
        if !long.is_empty() {
            let fts = long
                .iter()
                .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" AND ");
            parts.push(format!(
                "t.id IN (SELECT rowid FROM audit_text_fts WHERE audit_text_fts MATCH {})",
                arg(Arg::Text(fts))
            ));
        }
        for w in short {
            parts.push(format!(
                "t.text LIKE {} ESCAPE '\\'",
                arg(Arg::Text(like(w)))
            ));
        }
    } else {
        for w in words {
            parts.push(format!(
                "t.text ILIKE {} ESCAPE '\\'",
                arg(Arg::Text(like(w)))
            ));
        }
    }
    parts.join(" AND ")
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
