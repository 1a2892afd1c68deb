//! Grants (the certificates issued) and their revocation.

use sallyport_ca::clock::now_secs;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::columns::{json_list, list_json, opt_u64, placeholders, runs};
use super::{Store, to_i64, to_u64};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRow {
    pub id: String,
    pub engineer: String,
    pub ticket: String,
    pub customer: String,
    pub cluster: String,
    pub approval: String,
    pub request: Option<String>,
    pub logins: Vec<String>,
    pub serial: String,
    pub key_id: String,
    pub ca_fingerprint: String,
    pub public_key: String,
    pub certificate: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
    pub revoked_reason: Option<String>,
}

const GRANT_COLS: &str = "id, engineer, ticket_id, customer_id, cluster_id, approval_id, request_id, logins, serial, key_id, ca_fingerprint, public_key, certificate, valid_after, valid_before, created_at, revoked_at, revoked_reason";

fn grant_from_row(r: &AnyRow) -> GrantRow {
    GrantRow {
        id: r.get("id"),
        engineer: r.get("engineer"),
        ticket: r.get("ticket_id"),
        customer: r.get("customer_id"),
        cluster: r.get("cluster_id"),
        approval: r.get("approval_id"),
        request: r.get("request_id"),
        logins: json_list(&r.get::<String, _>("logins")),
        serial: r.get("serial"),
        key_id: r.get("key_id"),
        ca_fingerprint: r.get("ca_fingerprint"),
        public_key: r.get("public_key"),
        certificate: r.get("certificate"),
        valid_after: to_u64(r.get("valid_after")),
        valid_before: to_u64(r.get("valid_before")),
        created_at: to_u64(r.get("created_at")),
        revoked_at: opt_u64(r, "revoked_at"),
        revoked_reason: r.get("revoked_reason"),
    }
}

/// The insert of a grant's row; [`Store::insert_grant_audited`] runs it in the transaction of
/// the grant's event.
pub(super) fn insert_grant_query(g: &GrantRow) -> AnyQuery<'_> {
    bind_grant(sqlx::query(INSERT_GRANT.as_str()), g)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `g`'s 18 values bound to `query`, in [`GRANT_COLS`]' order.
fn bind_grant<'q>(query: AnyQuery<'q>, g: &'q GrantRow) -> AnyQuery<'q> {
    query
        .bind(&g.id)
        .bind(&g.engineer)
        .bind(&g.ticket)
        .bind(&g.customer)
        .bind(&g.cluster)
        .bind(&g.approval)
        .bind(&g.request)
        .bind(list_json(&g.logins))
        .bind(&g.serial)
        .bind(&g.key_id)
        .bind(&g.ca_fingerprint)
        .bind(&g.public_key)
        .bind(&g.certificate)
        .bind(to_i64(g.valid_after))
        .bind(to_i64(g.valid_before))
        .bind(to_i64(g.created_at))
        .bind(g.revoked_at.map(to_i64))
        .bind(&g.revoked_reason)
}

static INSERT_GRANT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO grants ({GRANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )
});

/// The rows of `grants`, one statement per run of rows ([`insert_grant_query`] for many): a row
/// the store refuses fails its whole statement, which then does not say which row it was.
pub(super) async fn insert_grants(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    grants: &[&GrantRow],
) -> sqlx::Result<()> {
    for run in runs(grants) {
        let sql = format!(
            "INSERT INTO grants ({GRANT_COLS}) VALUES {}",
            placeholders(run.len(), 18)
        );
        let mut query = sqlx::query(&sql);
        for g in run {
            query = bind_grant(query, g);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What to revoke.
pub use sallyport_api::certificates::RevokeScope;

/// The grants column a scope names.
fn column(scope: RevokeScope) -> &'static str {
    match scope {
        RevokeScope::Serial => "serial",
        RevokeScope::Grant => "id",
        RevokeScope::Engineer => "engineer",
        RevokeScope::Approval => "approval_id",
        RevokeScope::Ticket => "ticket_id",
    }
}

impl Store {
    pub async fn grants_where(
        &self,
        scope: RevokeScope,
        value: &str,
    ) -> sqlx::Result<Vec<GrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE {} = $1 ORDER BY created_at",
            column(scope)
        ))
        .bind(value)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(grant_from_row).collect())
    }

    /// Revoke every not-yet-revoked grant matching; returns the grants revoked now.
    /// The write comes first so that the transaction holds the write lock from its start
    /// (SQLite would otherwise refuse to upgrade a reader when another replica wrote).
    pub async fn revoke(
        &self,
        scope: RevokeScope,
        value: &str,
        reason: &str,
    ) -> sqlx::Result<Vec<GrantRow>> {
        let now = to_i64(now_secs());
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "UPDATE grants SET revoked_at = $2, revoked_reason = $3 WHERE {} = $1 AND revoked_at IS NULL",
            column(scope)
        ))
        .bind(value)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE {} = $1 AND revoked_at = $2 AND revoked_reason = $3",
            column(scope)
        ))
        .bind(value)
        .bind(now)
        .bind(reason)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(grant_from_row).collect())
    }

    /// Revoked certificates that have not expired yet: (CA fingerprint, serial, key id).
    pub async fn revoked_grants(&self) -> sqlx::Result<Vec<GrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE revoked_at IS NOT NULL AND valid_before > $1 ORDER BY serial"
        ))
        .bind(to_i64(now_secs()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(grant_from_row).collect())
    }

    /// Grants of an engineer that are valid now and not revoked.
    pub async fn live_grants(&self, engineer: Option<&str>) -> sqlx::Result<Vec<GrantRow>> {
        let now = to_i64(now_secs());
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE revoked_at IS NULL AND valid_before > $1 AND ($2 IS NULL OR engineer = $2) ORDER BY created_at"
        ))
        .bind(now)
        .bind(engineer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(grant_from_row).collect())
    }
}
