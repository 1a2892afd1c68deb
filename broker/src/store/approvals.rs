//! Customers' approvals: who may reach which cluster, with which logins, for how long.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::columns::{json_list, list_json, opt_u64};
use super::{Store, to_i64, to_u64};

pub use sallyport_api::approvals::Approval;

pub(super) const APPROVAL_COLS: &str = "id, customer_id, cluster_id, access_group, logins, max_session_secs, valid_from, valid_until, just_in_time, per_session_mfa, port_forwarding, source_networks, created_by, created_at, updated_at, withdrawn_at, withdrawn_by, approvers_required, observer_required";

pub(super) fn approval_from_row(r: &AnyRow) -> Approval {
    Approval {
        id: r.get("id"),
        customer: r.get("customer_id"),
        cluster: r.get("cluster_id"),
        group: r.get("access_group"),
        logins: json_list(&r.get::<String, _>("logins")),
        max_session_secs: to_u64(r.get("max_session_secs")),
        valid_from: to_u64(r.get("valid_from")),
        valid_until: to_u64(r.get("valid_until")),
        just_in_time: r.get::<i64, _>("just_in_time") != 0,
        per_session_mfa: r.get::<i64, _>("per_session_mfa") != 0,
        port_forwarding: r.get::<i64, _>("port_forwarding") != 0,
        source_networks: json_list(&r.get::<String, _>("source_networks")),
        created_by: r.get("created_by"),
        created_at: to_u64(r.get("created_at")),
        updated_at: to_u64(r.get("updated_at")),
        withdrawn_at: opt_u64(r, "withdrawn_at"),
        withdrawn_by: r.get("withdrawn_by"),
        approvers_required: to_u64(r.get("approvers_required")),
        observer_required: r.get::<i64, _>("observer_required") != 0,
    }
}

impl Store {
    pub async fn save_approval(&self, a: &Approval, create: bool) -> sqlx::Result<()> {
        let sql = if create {
            format!(
                "INSERT INTO approvals ({APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
            )
        } else {
            "UPDATE approvals SET customer_id = $2, cluster_id = $3, access_group = $4, logins = $5, max_session_secs = $6, valid_from = $7, valid_until = $8, just_in_time = $9, per_session_mfa = $10, port_forwarding = $11, source_networks = $12, created_by = $13, created_at = $14, updated_at = $15, withdrawn_at = $16, withdrawn_by = $17, approvers_required = $18, observer_required = $19 WHERE id = $1".to_string()
        };
        sqlx::query(&sql)
            .bind(&a.id)
            .bind(&a.customer)
            .bind(&a.cluster)
            .bind(&a.group)
            .bind(list_json(&a.logins))
            .bind(to_i64(a.max_session_secs))
            .bind(to_i64(a.valid_from))
            .bind(to_i64(a.valid_until))
            .bind(i64::from(a.just_in_time))
            .bind(i64::from(a.per_session_mfa))
            .bind(i64::from(a.port_forwarding))
            .bind(list_json(&a.source_networks))
            .bind(&a.created_by)
            .bind(to_i64(a.created_at))
            .bind(to_i64(a.updated_at))
            .bind(a.withdrawn_at.map(to_i64))
            .bind(&a.withdrawn_by)
            .bind(to_i64(a.approvers_required))
            .bind(i64::from(a.observer_required))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn approval(&self, id: &str) -> sqlx::Result<Option<Approval>> {
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(approval_from_row))
    }

    pub async fn approvals(
        &self,
        customer: Option<&str>,
        cluster: Option<&str>,
    ) -> sqlx::Result<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE ($1 IS NULL OR customer_id = $1) AND ($2 IS NULL OR cluster_id = $2) ORDER BY created_at, id"
        ))
        .bind(customer)
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(approval_from_row).collect())
    }
}
