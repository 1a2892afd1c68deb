//! What a certificate issuance reads before its decision, in one query: the ticket, the cluster
//! (the one asked for, else the ticket's), that cluster's approvals, and whether there is
//! anything more to read (the customer's own policies, an open just-in-time request).

use std::sync::LazyLock;

use sqlx::Row;

use super::approvals::{APPROVAL_COLS, approval_from_row};
use super::{Approval, Cluster, Store, Ticket, to_u64};

/// What [`Store::issue_reads`] found for a ticket that exists.
#[derive(Debug, Clone)]
pub struct IssueReads {
    pub ticket: Ticket,
    /// The cluster, when it exists.
    pub cluster: Option<Cluster>,
    /// The cluster's approvals, as [`Store::approvals`] lists them (withdrawn and expired ones
    /// too: the decision explains them).
    pub approvals: Vec<Approval>,
    /// The cluster's customer has policies of its own: [`Store::policies`] reads them.
    pub customer_policies: bool,
    /// The engineer has a request for this ticket and cluster that was neither used nor
    /// superseded: [`Store::latest_request`] reads it.
    pub open_request: bool,
}

/// Ticket and cluster columns under names of their own (`t_`, `c_`), the approval's under its
/// own names, one row per approval of the cluster (one row with NULL approval columns when it
/// has none; no row when the ticket does not exist).
static ISSUE_READS: LazyLock<String> = LazyLock::new(|| {
    let approval_cols: Vec<String> = APPROVAL_COLS
        .split(", ")
        .map(|c| format!("a.{c}"))
        .collect();
    format!(
        "SELECT t.id AS t_id, t.customer_id AS t_customer, t.cluster_id AS t_cluster, \
         t.assignee AS t_assignee, t.status AS t_status, t.title AS t_title, \
         t.updated_at AS t_updated_at, c.id AS c_id, c.customer_id AS c_customer, \
         (SELECT COUNT(*) FROM customer_policies p WHERE p.customer_id = c.customer_id) AS n_policies, \
         (SELECT COUNT(*) FROM access_requests r WHERE r.engineer = $3 AND r.ticket_id = t.id \
          AND r.cluster_id = c.id AND r.status NOT IN ('used', 'superseded')) AS n_requests, \
         {} \
         FROM tickets t \
         LEFT JOIN clusters c ON c.id = COALESCE($2, t.cluster_id) \
         LEFT JOIN approvals a ON a.cluster_id = c.id \
         WHERE t.id = $1 \
         ORDER BY a.created_at, a.id",
        approval_cols.join(", ")
    )
});

impl Store {
    /// The ticket `ticket`, the cluster `cluster` (else the ticket's) and its approvals, read in
    /// one statement (so from one snapshot), for `engineer`'s certificate. `None` when the
    /// ticket does not exist.
    pub async fn issue_reads(
        &self,
        ticket: &str,
        cluster: Option<&str>,
        engineer: &str,
    ) -> sqlx::Result<Option<IssueReads>> {
        let rows = sqlx::query(ISSUE_READS.as_str())
            .bind(ticket)
            .bind(cluster)
            .bind(engineer)
            .fetch_all(&self.pool)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let ticket = Ticket {
            id: first.try_get("t_id")?,
            customer: first.try_get("t_customer")?,
            cluster: first.try_get("t_cluster")?,
            assignee: first.try_get("t_assignee")?,
            status: first.try_get("t_status")?,
            title: first.try_get("t_title")?,
            updated_at: to_u64(first.try_get("t_updated_at")?),
        };
        let cluster = match first.try_get::<Option<String>, _>("c_id")? {
            Some(id) => Some(Cluster {
                id,
                customer: first.try_get("c_customer")?,
            }),
            None => None,
        };
        let mut approvals = Vec::new();
        for r in &rows {
            if r.try_get::<Option<String>, _>("id")?.is_some() {
                approvals.push(approval_from_row(r));
            }
        }
        Ok(Some(IssueReads {
            ticket,
            cluster,
            approvals,
            customer_policies: first.try_get::<i64, _>("n_policies")? > 0,
            open_request: first.try_get::<i64, _>("n_requests")? > 0,
        }))
    }
}
