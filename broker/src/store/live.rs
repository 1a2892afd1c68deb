//! Watching live sessions: who has a session's watch view open, and the session's recordings
//! as they grow, sent by the gateway while anyone watches (whole asciicast lines, in order).

use sallyport_ca::clock::now_secs;
use sqlx::Row;

use super::{Store, to_i64, to_u64};

/// A watch is current while its view asked within this many seconds.
pub const WATCH_FRESH_SECS: u64 = 10;
/// Live data of sessions nobody has watched for this long is removed.
const LIVE_KEEP_SECS: u64 = 300;
/// Of a live recording the broker keeps, and the watch view reads, the last this many bytes.
pub const LIVE_TAIL_BYTES: u64 = 2 << 20;

/// A chunk was not taken: the recording's next chunk must start at `next` (`None`: at any
/// line, the recording is new to the broker).
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfOrder {
    pub next: Option<u64>,
}

/// A session someone watches now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub session: String,
    /// One of the watchers is an approver of the session's customer (only they may watch it
    /// among approvers): a moderated session may start.
    pub by_approver: bool,
}

/// A live recording as the watch view reads it: the header line and the text of its last
/// chunks (whole lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecording {
    pub recording: String,
    pub header: String,
    pub text: String,
}

impl Store {
    /// `viewer` looks at `session` (on `cluster`) now. True when this starts a watch (none was
    /// current): the caller audits it.
    pub async fn watch(&self, session: &str, cluster: &str, viewer: &str) -> sqlx::Result<bool> {
        let now = to_i64(now_secs());
        let fresh = now - to_i64(WATCH_FRESH_SECS) * 6;
        let current = sqlx::query(
            "SELECT 1 FROM session_watches WHERE session = $1 AND viewer = $2 AND seen_at >= $3",
        )
        .bind(session)
        .bind(viewer)
        .bind(fresh)
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        sqlx::query(
            "INSERT INTO session_watches (session, viewer, cluster, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (session, viewer) DO UPDATE SET seen_at = $4",
        )
        .bind(session)
        .bind(viewer)
        .bind(cluster)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(!current)
    }

    /// The sessions of `cluster` someone watches now, and whether an approver of the customer
    /// is among the watchers. Live data nobody has looked at for a while is removed on the way.
    pub async fn watched_sessions(&self, cluster: &str) -> sqlx::Result<Vec<Watched>> {
        let now = now_secs();
        let stale = to_i64(now.saturating_sub(LIVE_KEEP_SECS));
        for table in ["live_chunks", "live_recordings"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE session IN (SELECT session FROM session_watches \
                 WHERE cluster = $1 GROUP BY session HAVING MAX(seen_at) < $2)"
            ))
            .bind(cluster)
            .bind(stale)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("DELETE FROM session_watches WHERE cluster = $1 AND seen_at < $2")
            .bind(cluster)
            .bind(stale)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT session, MAX(CASE WHEN viewer LIKE 'approver:%' THEN 1 ELSE 0 END) \
             AS by_approver FROM session_watches WHERE cluster = $1 AND seen_at >= $2 \
             GROUP BY session ORDER BY session",
        )
        .bind(cluster)
        .bind(to_i64(now.saturating_sub(WATCH_FRESH_SECS)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Watched {
                session: r.get("session"),
                by_approver: r.get::<i64, _>("by_approver") != 0,
            })
            .collect())
    }

    /// Someone watches `session` now.
    pub async fn is_watched(&self, session: &str) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM session_watches WHERE session = $1 AND seen_at >= $2")
            .bind(session)
            .bind(to_i64(now_secs().saturating_sub(WATCH_FRESH_SECS)))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Take the chunk of `recording` (of `session`) that starts at byte `at` of the file.
    /// Chunks follow each other exactly; a recording new to the broker may start at any line
    /// (a watch that begins late starts from the recording's tail). Returns where the next
    /// chunk starts. Older chunks past the tail the view reads are dropped.
    pub async fn live_append(
        &self,
        session: &str,
        recording: &str,
        header: &str,
        at: u64,
        data: &str,
    ) -> anyhow::Result<Result<u64, OutOfOrder>> {
        let now = to_i64(now_secs());
        let next = at + data.len() as u64;
        let mut tx = self.pool.begin().await?;
        let known = sqlx::query("SELECT next_byte FROM live_recordings WHERE recording = $1")
            .bind(recording)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| to_u64(r.get::<i64, _>("next_byte")));
        match known {
            Some(expected) if expected != at => {
                return Ok(Err(OutOfOrder {
                    next: Some(expected),
                }));
            }
            Some(_) => {
                sqlx::query(
                    "UPDATE live_recordings SET next_byte = $1, updated_at = $2 WHERE recording = $3",
                )
                .bind(to_i64(next))
                .bind(now)
                .bind(recording)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO live_recordings (recording, session, header, next_byte, updated_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(recording)
                .bind(session)
                .bind(header)
                .bind(to_i64(next))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        if !data.is_empty() {
            sqlx::query(
                "INSERT INTO live_chunks (recording, at_byte, session, data, received_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(recording)
            .bind(to_i64(at))
            .bind(session)
            .bind(data)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM live_chunks WHERE recording = $1 AND at_byte < $2")
            .bind(recording)
            .bind(to_i64(next.saturating_sub(2 * LIVE_TAIL_BYTES)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(next))
    }

    /// The live recordings of `session`: header and the text of the last chunks (about
    /// `LIVE_TAIL_BYTES`), in channel order.
    pub async fn live_recordings(&self, session: &str) -> sqlx::Result<Vec<LiveRecording>> {
        let heads = sqlx::query(
            "SELECT recording, header, next_byte FROM live_recordings WHERE session = $1 \
             ORDER BY recording",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for h in heads {
            let recording: String = h.get("recording");
            let next = to_u64(h.get::<i64, _>("next_byte"));
            let chunks = sqlx::query(
                "SELECT data FROM live_chunks WHERE recording = $1 AND at_byte >= $2 \
                 ORDER BY at_byte",
            )
            .bind(&recording)
            .bind(to_i64(next.saturating_sub(LIVE_TAIL_BYTES)))
            .fetch_all(&self.pool)
            .await?;
            out.push(LiveRecording {
                recording,
                header: h.get("header"),
                text: chunks.iter().map(|r| r.get::<String, _>("data")).collect(),
            });
        }
        Ok(out)
    }
}
