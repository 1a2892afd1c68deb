//! What a certificate issuance reads before its decision, in one query: the ticket, the cluster
//! (the one asked for, else the ticket's), that cluster's approvals, and whether there is
//! anything more to read (the customer's own policies, an open just-in-time request).

use std::sync::LazyLock;

use sqlx::Row;

use super::approvals::{APPROVAL_COLS, approval_from_row};
use super::requests::NOT_SPENT;
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
          AND r.cluster_id = c.id AND r.status {NOT_SPENT}) AS n_requests, \
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

#[cfg(test)]
mod tests {
    use super::super::tests::empty_store;
    use super::super::{
        AccessRequest, Approval, Cluster, Customer, CustomerPolicy, RequestState, Store, Ticket,
    };

    fn approval(id: &str, cluster: &str, created_at: u64) -> Approval {
        Approval {
            id: id.into(),
            customer: "acme".into(),
            cluster: cluster.into(),
            group: "support-l2".into(),
            logins: vec!["ubuntu".into()],
            max_session_secs: 3600,
            valid_from: 0,
            valid_until: 4_000_000_000,
            just_in_time: false,
            per_session_mfa: false,
            port_forwarding: false,
            source_networks: vec![],
            created_by: "approver".into(),
            created_at,
            updated_at: created_at,
            withdrawn_at: (id == "ap-withdrawn").then_some(created_at + 1),
            withdrawn_by: (id == "ap-withdrawn").then(|| "approver".to_string()),
            approvers_required: 1,
            observer_required: false,
        }
    }

    fn request(id: &str, status: RequestState) -> AccessRequest {
        AccessRequest {
            id: id.into(),
            engineer: "alice".into(),
            ticket: "SUP-1".into(),
            cluster: "acme-prod".into(),
            approval: "ap-b".into(),
            status,
            created_at: 10,
            decided_by: None,
            decided_at: None,
            reason: None,
            logins: vec!["ubuntu".into()],
            ttl_secs: 600,
            approvers_required: 1,
            approved_by: vec![],
        }
    }

    /// The issuance read finds a cluster's approvals and counts the engineer's open requests
    /// through their indexes (migration 0019), not by scanning the tables (SQLite's plan).
    #[tokio::test]
    async fn the_issuance_read_searches_by_index() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("broker.db").display());
        let store = Store::connect(&url).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {}", *super::ISSUE_READS))
            .bind("SUP-1")
            .bind(Some("acme-prod"))
            .bind("alice")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let uses = |index: &str| plan.iter().any(|l| l.contains(index));
        assert!(uses("approvals_cluster"), "{plan:#?}");
        assert!(uses("access_requests_engineer_ticket_cluster"), "{plan:#?}");
        assert!(
            !plan
                .iter()
                .any(|l| l.starts_with("SCAN a") || l.starts_with("SCAN r")),
            "{plan:#?}"
        );
    }

    /// The one read gives what the separate reads give: the ticket, the cluster asked for (else
    /// the ticket's), every approval of that cluster in the same order (withdrawn ones too),
    /// and says when there are customer policies or an open request to read; an unknown ticket
    /// is `None`, an unknown cluster no cluster.
    #[tokio::test]
    async fn issue_reads_agree_with_the_reads_they_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&empty_store(dir.path()).await)
            .await
            .unwrap();
        for c in ["acme", "other"] {
            store
                .create_customer(&Customer {
                    id: c.into(),
                    name: c.into(),
                })
                .await
                .unwrap();
        }
        for (id, customer) in [
            ("acme-prod", "acme"),
            ("acme-dev", "acme"),
            ("other-prod", "other"),
        ] {
            store
                .create_cluster(&Cluster {
                    id: id.into(),
                    customer: customer.into(),
                })
                .await
                .unwrap();
        }
        let ticket = Ticket {
            id: "SUP-1".into(),
            customer: "acme".into(),
            cluster: "acme-prod".into(),
            assignee: "alice".into(),
            status: "open".into(),
            title: "disk full".into(),
            updated_at: 5,
        };
        store.upsert_ticket(&ticket).await.unwrap();
        for a in [
            approval("ap-b", "acme-prod", 20),
            approval("ap-withdrawn", "acme-prod", 10),
            approval("ap-a", "acme-prod", 20),
            approval("ap-dev", "acme-dev", 1),
        ] {
            store.save_approval(&a, true).await.unwrap();
        }

        assert!(
            store
                .issue_reads("SUP-404", None, "alice")
                .await
                .unwrap()
                .is_none()
        );
        let r = store
            .issue_reads("SUP-1", None, "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.ticket, ticket);
        assert_eq!(
            r.cluster,
            Some(Cluster {
                id: "acme-prod".into(),
                customer: "acme".into()
            })
        );
        let listed = store.approvals(None, Some("acme-prod")).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(r.approvals, listed);
        assert!(!r.customer_policies && !r.open_request);

        let r = store
            .issue_reads("SUP-1", Some("acme-dev"), "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.cluster.unwrap().id, "acme-dev");
        assert_eq!(r.approvals, vec![approval("ap-dev", "acme-dev", 1)]);
        let r = store
            .issue_reads("SUP-1", Some("nowhere"), "alice")
            .await
            .unwrap()
            .unwrap();
        assert!(r.cluster.is_none() && r.approvals.is_empty());

        // The customer's policies: theirs count, another customer's do not.
        let policy = |id: &str, customer: &str| CustomerPolicy {
            id: id.into(),
            customer: customer.into(),
            name: "no-nights".into(),
            body: "forbid(principal, action, resource);".into(),
            created_by: "approver".into(),
            created_at: 1,
        };
        store.save_policy(&policy("p-1", "other")).await.unwrap();
        let read = || store.issue_reads("SUP-1", None, "alice");
        assert!(!read().await.unwrap().unwrap().customer_policies);
        store.save_policy(&policy("p-2", "acme")).await.unwrap();
        assert!(read().await.unwrap().unwrap().customer_policies);

        // Requests: used and superseded ones are not open; another engineer's is not theirs.
        store
            .create_request(&request("rq-used", RequestState::Used))
            .await
            .unwrap();
        store
            .create_request(&request("rq-old", RequestState::Superseded))
            .await
            .unwrap();
        let mut bob = request("rq-bob", RequestState::Pending);
        bob.engineer = "bob".into();
        store.create_request(&bob).await.unwrap();
        assert!(!read().await.unwrap().unwrap().open_request);
        assert!(
            store
                .latest_request("alice", "SUP-1", "acme-prod")
                .await
                .unwrap()
                .is_none()
        );
        store
            .create_request(&request("rq-open", RequestState::Pending))
            .await
            .unwrap();
        assert!(read().await.unwrap().unwrap().open_request);
        assert!(
            !store
                .issue_reads("SUP-1", Some("acme-dev"), "alice")
                .await
                .unwrap()
                .unwrap()
                .open_request
        );
    }
}
