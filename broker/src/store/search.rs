//! Searching the audit log (by subject, time and text) and loading it: the text index of
//! each event, kept with it, and the index of events stored before there was one.

use sqlx::Row;

use super::audit::{insert_events, record_from_row};
use super::columns::{placeholders, runs};
use super::{Store, to_i64};
use crate::audit::AuditRecord;
use sallyport_audit::text::{QueryError, query_words, search_text};

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
        let mut cond = subject_conditions(
            &format!("{e}."),
            [
                &q.kind,
                &q.engineer,
                &q.ticket,
                &q.cluster,
                &q.node,
                &q.session,
            ],
            &q.customer,
            &mut arg,
        );
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
        let rows = bind_args(&sql, args).fetch_all(&self.pool).await?;
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
            let (source, through, done): (String, i64, i64) = (
                row.get("source"),
                row.get("through_seq"),
                row.get("done_seq"),
            );
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
        insert_events(&mut tx, records).await?;
        insert_texts(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A value for a numbered placeholder (`$1`, `$2`, ...) of a statement written at run time.
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The subject columns an audit search or stream filters on, in the order
/// [`subject_conditions`] takes their values.
const SUBJECT_COLUMNS: [&str; 6] = ["kind", "engineer", "ticket", "cluster", "node", "session"];

/// ` AND {table}{column} = $n` for each subject value given (in [`SUBJECT_COLUMNS`]' order), and
/// the event's cluster among `customer`'s; `arg` numbers each value's placeholder.
pub(super) fn subject_conditions(
    table: &str,
    values: [&Option<String>; 6],
    customer: &Option<String>,
    arg: &mut impl FnMut(Arg) -> String,
) -> String {
    let mut cond = String::new();
    for (col, v) in SUBJECT_COLUMNS.into_iter().zip(values) {
        if let Some(v) = v {
            cond.push_str(&format!(
                " AND {table}{col} = {}",
                arg(Arg::Text(v.clone()))
            ));
        }
    }
    if let Some(c) = customer {
        cond.push_str(&format!(
            " AND {table}cluster IN (SELECT id FROM clusters WHERE customer_id = {})",
            arg(Arg::Text(c.clone()))
        ));
    }
    cond
}

/// `sql` with `args` bound to its placeholders in order.
pub(super) fn bind_args(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    let mut query = sqlx::query(sql);
    for a in args {
        query = match a {
            Arg::Text(s) => query.bind(s),
            Arg::Int(i) => query.bind(i),
        };
    }
    query
}

/// Index the text of `records` (those that carry any), many per statement.
pub(super) async fn insert_texts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[AuditRecord],
) -> anyhow::Result<()> {
    let texts: Vec<(&AuditRecord, String)> = records
        .iter()
        .filter_map(|r| search_text(&r.source, &r.kind, &r.data).map(|t| (r, t)))
        .collect();
    for chunk in runs(&texts) {
        let sql = format!(
            "INSERT INTO audit_text (source, seq, time_ms, text) VALUES {}",
            placeholders(chunk.len(), 4)
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
