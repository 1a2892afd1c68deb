//! Just-in-time access requests, their states and their approvers' votes.

use sallyport_ca::clock::now_secs;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::columns::{json_list, list_json, opt_u64};
use super::{Store, to_i64, to_u64};

/// Where an access request stands. Parsed once where the store reads it; the text is the same
/// everywhere (`pending`, `approved`...).
pub use sallyport_api::requests::RequestStatus as RequestState;

/// The request state stored in column `col` of a row; one the broker never writes is an error
/// of the store.
fn state_of(row: &AnyRow, col: &str) -> sqlx::Result<RequestState> {
    let text: String = row.try_get(col)?;
    RequestState::parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: format!("unknown access request state {text:?}").into(),
    })
}

pub use sallyport_api::requests::AccessRequest;

/// What one approver's vote did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// The request is decided (denied, or approved by enough approvers).
    Decided,
    /// Approved by `approved` of the `required` approvers so far.
    Waiting { approved: u64, required: u64 },
    /// This approver voted on this request before.
    AlreadyVoted,
    /// The request's terms changed since this approver read them (another approver narrowed
    /// them): nothing was recorded.
    TermsChanged,
    /// The request is no longer pending.
    NotPending,
}

const REQUEST_COLS: &str = "id, engineer, ticket_id, cluster_id, approval_id, status, created_at, decided_by, decided_at, reason, logins, ttl_secs, approvers_required";

fn request_from_row(r: &AnyRow) -> sqlx::Result<AccessRequest> {
    Ok(AccessRequest {
        id: r.get("id"),
        engineer: r.get("engineer"),
        ticket: r.get("ticket_id"),
        cluster: r.get("cluster_id"),
        approval: r.get("approval_id"),
        status: state_of(r, "status")?,
        created_at: to_u64(r.get("created_at")),
        decided_by: r.get("decided_by"),
        decided_at: opt_u64(r, "decided_at"),
        reason: r.get("reason"),
        logins: json_list(&r.get::<String, _>("logins")),
        ttl_secs: to_u64(r.get("ttl_secs")),
        approvers_required: to_u64(r.get("approvers_required")),
        approved_by: Vec::new(),
    })
}

/// The statuses of a request that still counts as the engineer's latest for its ticket and
/// cluster (`status {NOT_SPENT}`): neither used nor replaced by a newer one.
pub(super) const NOT_SPENT: &str = "NOT IN ('used', 'superseded')";

impl Store {
    pub async fn create_request(&self, r: &AccessRequest) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO access_requests ({REQUEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&r.id)
        .bind(&r.engineer)
        .bind(&r.ticket)
        .bind(&r.cluster)
        .bind(&r.approval)
        .bind(r.status.as_str())
        .bind(to_i64(r.created_at))
        .bind(&r.decided_by)
        .bind(r.decided_at.map(to_i64))
        .bind(&r.reason)
        .bind(list_json(&r.logins))
        .bind(to_i64(r.ttl_secs))
        .bind(to_i64(r.approvers_required))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn request(&self, id: &str) -> sqlx::Result<Option<AccessRequest>> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM access_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        self.with_votes(row.as_ref().map(request_from_row).transpose()?)
            .await
    }

    /// Fill in who approved a request so far.
    async fn with_votes(&self, r: Option<AccessRequest>) -> sqlx::Result<Option<AccessRequest>> {
        let Some(mut r) = r else { return Ok(None) };
        let rows = sqlx::query(
            "SELECT approver FROM request_decisions WHERE request_id = $1 AND approve = 1 ORDER BY decided_at, approver",
        )
        .bind(&r.id)
        .fetch_all(&self.pool)
        .await?;
        r.approved_by = rows.iter().map(|row| row.get("approver")).collect();
        Ok(Some(r))
    }

    /// The engineer's latest request for a ticket and cluster that was neither used (a used one
    /// gave its certificate: the next needs a new request) nor replaced by a newer one (made in
    /// the same second, it would tie): status [`NOT_SPENT`].
    pub async fn latest_request(
        &self,
        engineer: &str,
        ticket: &str,
        cluster: &str,
    ) -> sqlx::Result<Option<AccessRequest>> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM access_requests WHERE engineer = $1 AND ticket_id = $2 AND cluster_id = $3 AND status {NOT_SPENT} ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(engineer)
        .bind(ticket)
        .bind(cluster)
        .fetch_optional(&self.pool)
        .await?;
        self.with_votes(row.as_ref().map(request_from_row).transpose()?)
            .await
    }

    /// The id of the engineer's last request for this ticket and cluster when it was used for
    /// its one certificate (so that asking again can say why a new request is needed).
    pub async fn last_request_used(
        &self,
        engineer: &str,
        ticket: &str,
        cluster: &str,
    ) -> sqlx::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT id, status FROM access_requests WHERE engineer = $1 AND ticket_id = $2 AND cluster_id = $3 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(engineer)
        .bind(ticket)
        .bind(cluster)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) if state_of(&r, "status")? == RequestState::Used => Ok(Some(r.get("id"))),
            Some(_) | None => Ok(None),
        }
    }

    pub async fn requests(
        &self,
        customer: Option<&str>,
        status: Option<&str>,
    ) -> sqlx::Result<Vec<AccessRequest>> {
        let cols = REQUEST_COLS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM access_requests r JOIN clusters c ON c.id = r.cluster_id \
             WHERE ($1 IS NULL OR c.customer_id = $1) AND ($2 IS NULL OR r.status = $2) ORDER BY r.created_at, r.id"
        ))
        .bind(customer)
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(self.with_votes(Some(request_from_row(r)?)).await?);
        }
        Ok(out)
    }

    /// One approver's vote on a pending request. A no denies the request at once; a yes
    /// approves it when `approvers_required` distinct approvers said yes. Each approver votes
    /// once (the primary key holds that across replicas).
    pub async fn vote(
        &self,
        r: &AccessRequest,
        approver: &str,
        approve: bool,
        reason: Option<&str>,
        narrow: Option<(&[String], u64)>,
    ) -> sqlx::Result<Vote> {
        let inserted = sqlx::query(
            "INSERT INTO request_decisions (request_id, approver, approve, reason, decided_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM access_requests WHERE id = $1 AND status = 'pending') \
             AND NOT EXISTS (SELECT 1 FROM request_decisions WHERE request_id = $1 AND approver = $2)",
        )
        .bind(&r.id)
        .bind(approver)
        .bind(i64::from(approve))
        .bind(reason)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await;
        let inserted = match inserted {
            Ok(res) => res.rows_affected() == 1,
            // Two votes of one approver racing: the primary key refused the second.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => false,
            Err(e) => return Err(e),
        };
        // Narrowed terms are in place before the vote can decide the request: the certificate
        // is never issued on the wider ones. Compare-and-set on the terms this approver saw, so
        // that two approvers narrowing at once cannot widen each other's.
        if inserted && let Some((logins, ttl)) = narrow {
            let seen = serde_json::to_string(&r.logins).unwrap_or_default();
            let res = sqlx::query(
                "UPDATE access_requests SET logins = $1, ttl_secs = $2 \
                 WHERE id = $3 AND status = 'pending' AND logins = $4 AND ttl_secs = $5",
            )
            .bind(serde_json::to_string(logins).unwrap_or_default())
            .bind(to_i64(ttl))
            .bind(&r.id)
            .bind(seen)
            .bind(to_i64(r.ttl_secs))
            .execute(&self.pool)
            .await?;
            if res.rows_affected() != 1 {
                sqlx::query(
                    "DELETE FROM request_decisions WHERE request_id = $1 AND approver = $2",
                )
                .bind(&r.id)
                .bind(approver)
                .execute(&self.pool)
                .await?;
                return Ok(Vote::TermsChanged);
            }
        }
        if !inserted {
            let voted = sqlx::query(
                "SELECT 1 FROM request_decisions WHERE request_id = $1 AND approver = $2",
            )
            .bind(&r.id)
            .bind(approver)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
            return Ok(if voted {
                Vote::AlreadyVoted
            } else {
                Vote::NotPending
            });
        }
        if !approve {
            self.decide_request(&r.id, RequestState::Denied, approver, reason)
                .await?;
            return Ok(Vote::Decided);
        }
        let yes: i64 = sqlx::query(
            "SELECT COUNT(*) AS yes FROM request_decisions WHERE request_id = $1 AND approve = 1",
        )
        .bind(&r.id)
        .fetch_one(&self.pool)
        .await?
        .get("yes");
        let yes = to_u64(yes);
        if yes >= r.approvers_required.max(1) {
            // Two last votes racing both get here: one of them moves the request.
            self.decide_request(&r.id, RequestState::Approved, approver, reason)
                .await?;
            return Ok(Vote::Decided);
        }
        Ok(Vote::Waiting {
            approved: yes,
            required: r.approvers_required,
        })
    }

    /// End the open requests of an approval whose terms changed or that was withdrawn: what
    /// their approvers saw no longer holds. Returns how many.
    pub async fn void_requests(&self, approval: &str) -> sqlx::Result<u64> {
        let res = sqlx::query(
            "UPDATE access_requests SET status = 'void' WHERE approval_id = $1 AND status IN ('pending', 'approved')",
        )
        .bind(approval)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    /// The engineer asks anew for this ticket and cluster with other terms: the open requests
    /// (pending, or approved and not used) are replaced, so that approvers see one.
    pub async fn supersede_requests(
        &self,
        engineer: &str,
        ticket: &str,
        cluster: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE access_requests SET status = 'superseded' WHERE engineer = $1 AND ticket_id = $2 AND cluster_id = $3 AND status IN ('pending', 'approved')",
        )
        .bind(engineer)
        .bind(ticket)
        .bind(cluster)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Decide a pending request; `false` if it was no longer pending.
    pub async fn decide_request(
        &self,
        id: &str,
        status: RequestState,
        by: &str,
        reason: Option<&str>,
    ) -> sqlx::Result<bool> {
        let res = sqlx::query(
            "UPDATE access_requests SET status = $2, decided_by = $3, decided_at = $4, reason = $5 WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(by)
        .bind(to_i64(now_secs()))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Use an approved request for the one certificate it allows: `false` when it is not (any
    /// more) approved — used already, by a concurrent issue on another replica too.
    pub async fn consume_request(&self, id: &str) -> sqlx::Result<bool> {
        let res = sqlx::query(
            "UPDATE access_requests SET status = 'used' WHERE id = $1 AND status = 'approved'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests;
