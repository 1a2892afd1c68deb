//! Web console sessions (server-side: the cookie holds a random token, the store its SHA-256)
//! and the session overview the console's pages read from the audit log.

use sallyport_ca::clock::now_secs;
use serde_json::Value;
use sqlx::Row;

use super::{Store, role_of, to_i64, to_u64};
use crate::auth::Role;

/// A logged-in approver or reviewer in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub account: String,
    pub role: Role,
    pub customer: Option<String>,
    /// The token every state-changing form must carry.
    pub csrf: String,
    pub created_at: u64,
    pub last_seen: u64,
    pub expires_at: u64,
}

/// A session of an engineer on a node, as the gateway reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub session: String,
    pub started_ms: u64,
    /// When the gateway recorded its end (`session_ended` or `session_terminated`).
    pub ended_ms: Option<u64>,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub node: String,
    /// The `session_started` event's own fields (login, peer, serial, grant...).
    pub data: Value,
    pub commands: u64,
}

impl Store {
    pub async fn create_console_session(
        &self,
        token_sha256: &str,
        s: &ConsoleSession,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO console_sessions (token_sha256, account, role, customer, csrf, created_at, last_seen, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token_sha256)
        .bind(&s.account)
        .bind(s.role.as_str())
        .bind(&s.customer)
        .bind(&s.csrf)
        .bind(to_i64(s.created_at))
        .bind(to_i64(s.last_seen))
        .bind(to_i64(s.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn console_session(
        &self,
        token_sha256: &str,
    ) -> sqlx::Result<Option<ConsoleSession>> {
        let row = sqlx::query(
            "SELECT account, role, customer, csrf, created_at, last_seen, expires_at \
             FROM console_sessions WHERE token_sha256 = $1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                account: r.get("account"),
                role: role_of(&r, "role")?,
                customer: r.get("customer"),
                csrf: r.get("csrf"),
                created_at: to_u64(r.get("created_at")),
                last_seen: to_u64(r.get("last_seen")),
                expires_at: to_u64(r.get("expires_at")),
            })
        })
        .transpose()
    }

    /// Mark a console session used now.
    pub async fn touch_console_session(&self, token_sha256: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE console_sessions SET last_seen = $1 WHERE token_sha256 = $2")
            .bind(to_i64(now_secs()))
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn end_console_session(&self, token_sha256: &str) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = $1")
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Forget console sessions past their end (called now and then; an expired session is
    /// refused whether or not it was deleted).
    pub async fn sweep_console_sessions(&self, idle_secs: u64) -> sqlx::Result<u64> {
        let now = now_secs();
        let r =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen <= $2")
                .bind(to_i64(now))
                .bind(to_i64(now.saturating_sub(idle_secs)))
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }

    /// Engineers' sessions, newest first: all of them, or those on `customer`'s clusters.
    /// `open_only`: those whose end is not recorded yet.
    pub async fn session_summaries(
        &self,
        customer: Option<&str>,
        open_only: bool,
        limit: u64,
    ) -> anyhow::Result<Vec<SessionSummary>> {
        let mut sql = String::from(
            "SELECT s.session, s.time_ms, \
             (SELECT MAX(e.time_ms) FROM audit_events e WHERE e.session = s.session \
                AND e.kind IN ('session_ended', 'session_terminated')) AS ended_ms, \
             s.engineer, s.ticket, s.cluster, s.node, s.data, \
             (SELECT COUNT(*) FROM audit_events c WHERE c.session = s.session AND c.kind = 'command' \
             AND c.data NOT LIKE '%\"partial\":true%') AS commands \
             FROM audit_events s WHERE s.kind = 'session_started' AND s.session IS NOT NULL",
        );
        if customer.is_some() {
            sql.push_str(" AND s.cluster IN (SELECT id FROM clusters WHERE customer_id = $1)");
        }
        if open_only {
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.session = s.session \
                 AND e.kind IN ('session_ended', 'session_terminated'))",
            );
        }
        sql.push_str(&format!(
            " ORDER BY s.time_ms DESC LIMIT {}",
            limit.clamp(1, 10_000)
        ));
        let mut q = sqlx::query(&sql);
        if let Some(c) = customer {
            q = q.bind(c.to_string());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(SessionSummary {
                    session: r.try_get("session")?,
                    started_ms: to_u64(r.try_get("time_ms")?),
                    ended_ms: r.try_get::<Option<i64>, _>("ended_ms")?.map(to_u64),
                    engineer: r
                        .try_get::<Option<String>, _>("engineer")?
                        .unwrap_or_default(),
                    ticket: r
                        .try_get::<Option<String>, _>("ticket")?
                        .unwrap_or_default(),
                    cluster: r
                        .try_get::<Option<String>, _>("cluster")?
                        .unwrap_or_default(),
                    node: r.try_get::<Option<String>, _>("node")?.unwrap_or_default(),
                    data: serde_json::from_str(&r.try_get::<String, _>("data")?)?,
                    commands: to_u64(r.try_get("commands")?),
                })
            })
            .collect()
    }

    /// Ask the gateway of `cluster` to end `session`. `false` when it was asked before (the
    /// first request stands).
    pub async fn request_termination(
        &self,
        session: &str,
        cluster: &str,
        by: &str,
        reason: &str,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "INSERT INTO session_terminations (session, cluster, requested_by, reason, requested_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session) DO NOTHING",
        )
        .bind(session)
        .bind(cluster)
        .bind(by)
        .bind(reason)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Sessions of `cluster` whose end was asked for since `since` (unix seconds):
    /// (session, requested_by, reason).
    pub async fn terminations(
        &self,
        cluster: &str,
        since: u64,
    ) -> sqlx::Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT session, requested_by, reason FROM session_terminations \
             WHERE cluster = $1 AND requested_at >= $2 ORDER BY requested_at",
        )
        .bind(cluster)
        .bind(to_i64(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("session"), r.get("requested_by"), r.get("reason")))
            .collect())
    }

    /// The cluster a session ran on, from its `session_started` event.
    pub async fn session_cluster(&self, session: &str) -> sqlx::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT cluster FROM audit_events WHERE session = $1 AND kind = 'session_started' LIMIT 1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>("cluster")))
    }

    /// The gateway recorded the session's end.
    pub async fn session_ended(&self, session: &str) -> sqlx::Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM audit_events WHERE session = $1 \
             AND kind IN ('session_ended', 'session_terminated') LIMIT 1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}
