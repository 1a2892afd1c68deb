//! Customers' own policy files (forbid rules added to the base policy).

use sqlx::Row;

use super::{Store, to_i64, to_u64};

pub use sallyport_api::approvals::CustomerPolicy;

impl Store {
    pub async fn save_policy(&self, p: &CustomerPolicy) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM customer_policies WHERE customer_id = $1 AND name = $2")
            .bind(&p.customer)
            .bind(&p.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO customer_policies (id, customer_id, name, body, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.id)
        .bind(&p.customer)
        .bind(&p.name)
        .bind(&p.body)
        .bind(&p.created_by)
        .bind(to_i64(p.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn delete_policy(&self, customer: &str, name: &str) -> sqlx::Result<bool> {
        let res = sqlx::query("DELETE FROM customer_policies WHERE customer_id = $1 AND name = $2")
            .bind(customer)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn policies(&self, customer: &str) -> sqlx::Result<Vec<CustomerPolicy>> {
        let rows = sqlx::query(
            "SELECT id, customer_id, name, body, created_by, created_at FROM customer_policies WHERE customer_id = $1 ORDER BY name",
        )
        .bind(customer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CustomerPolicy {
                id: r.get("id"),
                customer: r.get("customer_id"),
                name: r.get("name"),
                body: r.get("body"),
                created_by: r.get("created_by"),
                created_at: to_u64(r.get("created_at")),
            })
            .collect())
    }
}
