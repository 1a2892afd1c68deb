//! Reading the audit log as a stream that can be resumed exactly: `GET /v1/audit/stream`.
//!
//! Records of several sources arrive in any order across sources (a gateway ships its spool
//! late, two replicas store at once), so no single number orders them by when they became
//! visible. Within one source they do: a record is stored only after the one before it (the
//! broker's chain takes the next number only once the last one is committed; ingest refuses a
//! record whose predecessor is not stored). So the stream's position is one sequence number
//! per source — a [`StreamCursor`] — and "after the cursor" is exact: nothing is skipped and
//! nothing is given twice, whichever replica answers.

use std::collections::BTreeMap;

use sqlx::Row;

use super::audit::record_from_row;
use super::search::{Arg, bind_args, subject_conditions};
use super::{Store, to_i64, to_u64};
use crate::audit::AuditRecord;
use sallyport_audit::writers::{Role, valid_session};

/// For each source, the last sequence number the reader has been given or has passed over; a
/// source it does not name is read from its first record. As text: `<source>:<seq>` joined
/// by `,` (`broker:57,edge:edge-eu1:3,gateway:gw-1:12`); the empty text is the beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCursor(pub BTreeMap<String, u64>);

/// A cursor that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "since must be a cursor as the stream gives it (`<source>:<seq>` joined by `,`, e.g. \
     broker:57,gateway:gw-1:12), `now`, or empty for the beginning"
)]
pub struct CursorError;

/// At most this many sources in a cursor.
const MAX_SOURCES: usize = 10_000;

impl StreamCursor {
    pub fn parse(s: &str) -> Result<StreamCursor, CursorError> {
        let mut m = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (source, seq) = part.rsplit_once(':').ok_or(CursorError)?;
            let name_ok = match Role::of(source) {
                Some((Role::Broker, _)) => true,
                Some((Role::Edge | Role::Gateway, name)) => {
                    valid_session(name) || { sallyport_audit::valid_name(name) }
                }
                None => false,
            };
            if !name_ok {
                return Err(CursorError);
            }
            let seq: u64 = seq.parse().map_err(|_| CursorError)?;
            m.insert(source.to_string(), seq);
        }
        if m.len() > MAX_SOURCES {
            return Err(CursorError);
        }
        Ok(StreamCursor(m))
    }

    pub fn get(&self, source: &str) -> u64 {
        self.0.get(source).copied().unwrap_or(0)
    }

    pub fn set(&mut self, source: &str, seq: u64) {
        self.0.insert(source.to_string(), seq);
    }
}

impl std::fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (source, seq)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{source}:{seq}")?;
        }
        Ok(())
    }
}

/// Which records a stream gives: equality on the subject fields, the kind and the source, a
/// customer's clusters, and a time range (unix ms, `from` inclusive, `until` exclusive).
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    pub engineer: Option<String>,
    pub ticket: Option<String>,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub session: Option<String>,
    pub kind: Option<String>,
    pub source: Option<String>,
    pub customer: Option<String>,
    pub from_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl Store {
    /// Every source and its last stored sequence number. Read through the primary key, one
    /// source at a time (a loose index scan written as a recursive query: neither engine would
    /// do it for `GROUP BY`), so it costs the number of sources, not of records.
    pub async fn audit_source_heads(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "WITH RECURSIVE s(source) AS ( \
               SELECT MIN(source) FROM audit_events \
               UNION ALL \
               SELECT (SELECT MIN(e.source) FROM audit_events e WHERE e.source > s.source) \
               FROM s WHERE s.source IS NOT NULL \
             ) \
             SELECT s.source, (SELECT MAX(e.seq) FROM audit_events e WHERE e.source = s.source) \
             AS head FROM s WHERE s.source IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("source"),
                    to_u64(r.get::<i64, _>("head")),
                )
            })
            .collect())
    }

    /// Records of `source` after `after` and at most `through`, in sequence order, that `f`
    /// selects; at most `limit`.
    pub async fn audit_stream_page(
        &self,
        source: &str,
        after: u64,
        through: u64,
        f: &StreamFilter,
        limit: u64,
    ) -> anyhow::Result<Vec<AuditRecord>> {
        let mut args: Vec<Arg> = vec![
            Arg::Text(source.to_string()),
            Arg::Int(to_i64(after)),
            Arg::Int(to_i64(through)),
        ];
        let mut arg = |v: Arg| {
            args.push(v);
            format!("${}", args.len())
        };
        let mut cond = subject_conditions(
            "",
            [
                &f.kind,
                &f.engineer,
                &f.ticket,
                &f.cluster,
                &f.node,
                &f.session,
            ],
            &f.customer,
            &mut arg,
        );
        if let Some(v) = f.from_ms {
            cond.push_str(&format!(" AND time_ms >= {}", arg(Arg::Int(to_i64(v)))));
        }
        if let Some(v) = f.until_ms {
            cond.push_str(&format!(" AND time_ms < {}", arg(Arg::Int(to_i64(v)))));
        }
        let sql = format!(
            "SELECT source, seq, time_ms, kind, data, prev_hash, hash FROM audit_events \
             WHERE source = $1 AND seq > $2 AND seq <= $3{cond} ORDER BY seq LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = bind_args(&sql, args).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }
}

/// One round of a stream: the records after `cursor` of every source `heads` lists (at most
/// `page` per source), merged by time while each source stays in sequence order, each with the
/// cursor to resume after it. `full` when a source had more than a page: read again at once.
#[derive(Debug, Default)]
pub struct Round {
    pub lines: Vec<(AuditRecord, StreamCursor)>,
    /// The cursor after the whole round (sources with nothing selected moved to their head).
    pub cursor: StreamCursor,
    pub full: bool,
}

/// What one source gave in a round: its records after the cursor that the filter selects, in
/// sequence order, and the position it reaches once they are given (its head, or the last
/// record's number when the page was full).
#[derive(Debug)]
pub struct Page {
    pub source: String,
    pub records: Vec<AuditRecord>,
    pub reach: u64,
    /// The page held as many records as asked: there may be more before the head.
    pub full: bool,
}

/// Merge the pages read for one round. Pure.
pub fn merge_round(mut cursor: StreamCursor, pages: Vec<Page>) -> Round {
    let mut full = false;
    let mut queues: Vec<(String, std::collections::VecDeque<AuditRecord>, u64)> = Vec::new();
    for p in pages {
        full |= p.full;
        if p.records.is_empty() {
            // Nothing selected up to `reach`: passed over at once.
            let at = p.reach.max(cursor.get(&p.source));
            cursor.set(&p.source, at);
        } else {
            queues.push((p.source, p.records.into(), p.reach));
        }
    }
    let mut lines = Vec::new();
    loop {
        // The queue whose next record is the oldest (ties by source name).
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, (s, q, _))| q.front().map(|r| ((r.time, s.clone()), i)))
            .min()
            .map(|(_, i)| i);
        let Some(i) = next else { break };
        let (source, q, reach) = &mut queues[i];
        let Some(r) = q.pop_front() else { break };
        let pos = if q.is_empty() { *reach } else { r.seq };
        cursor.set(source, pos);
        lines.push((r, cursor.clone()));
    }
    Round {
        lines,
        cursor,
        full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(source: &str, seq: u64, time: u64) -> AuditRecord {
        AuditRecord {
            source: source.into(),
            seq,
            time,
            kind: "x".into(),
            data: json!({}),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn page(source: &str, records: Vec<AuditRecord>, reach: u64) -> Page {
        Page {
            source: source.into(),
            records,
            reach,
            full: false,
        }
    }

    #[test]
    fn cursors_read_back() {
        let cases = [
            ("", Some("")),
            ("broker:57", Some("broker:57")),
            (
                "gateway:gw-1:12,broker:57,edge:edge-eu1:3",
                Some("broker:57,edge:edge-eu1:3,gateway:gw-1:12"),
            ),
            ("broker:x", None),
            ("broker", None),
            ("other:5", None),
            ("gateway:../x:5", None),
            ("gateway:a b:5", None),
            ("broker:-1", None),
        ];
        for (text, want) in cases {
            let got = StreamCursor::parse(text).map(|c| c.to_string()).ok();
            assert_eq!(got.as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn a_round_keeps_each_source_in_order_and_every_line_resumable() {
        let start = StreamCursor::parse("broker:2").unwrap();
        // The gateway's clock is behind: its records sort first by time, but stay in order.
        let round = merge_round(
            start,
            vec![
                page(
                    "broker",
                    vec![rec("broker", 3, 100), rec("broker", 5, 300)],
                    6,
                ),
                page(
                    "gateway:g",
                    vec![rec("gateway:g", 1, 200), rec("gateway:g", 2, 50)],
                    2,
                ),
                page("edge:e", vec![], 9),
            ],
        );
        let order: Vec<(String, u64)> = round
            .lines
            .iter()
            .map(|(r, _)| (r.source.clone(), r.seq))
            .collect();
        assert_eq!(
            order,
            vec![
                ("broker".into(), 3),
                ("gateway:g".into(), 1),
                ("gateway:g".into(), 2),
                ("broker".into(), 5)
            ]
        );
        let cursors: Vec<String> = round.lines.iter().map(|(_, c)| c.to_string()).collect();
        assert_eq!(
            cursors,
            vec![
                "broker:3,edge:e:9",
                "broker:3,edge:e:9,gateway:g:1",
                "broker:3,edge:e:9,gateway:g:2",
                // broker 4 was not selected (a filter): passed over with the last one.
                "broker:6,edge:e:9,gateway:g:2",
            ]
        );
        assert_eq!(round.cursor.to_string(), "broker:6,edge:e:9,gateway:g:2");
        assert!(!round.full);
        // A full page: read again at once, from its last record.
        let mut p = page("broker", vec![rec("broker", 1, 1)], 1);
        p.full = true;
        let round = merge_round(StreamCursor::default(), vec![p]);
        assert!(round.full);
        assert_eq!(round.cursor.to_string(), "broker:1");
    }
}
