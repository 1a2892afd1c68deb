//! Tickets, as read from the ticket system.

use sqlx::Row;

use super::{Store, to_i64, to_u64};

pub use sallyport_api::tickets::Ticket;

impl Store {
    pub async fn ticket(&self, id: &str) -> sqlx::Result<Option<Ticket>> {
        let row = sqlx::query(
            "SELECT id, customer_id, cluster_id, assignee, status, title, updated_at FROM tickets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Ticket {
            id: r.get("id"),
            customer: r.get("customer_id"),
            cluster: r.get("cluster_id"),
            assignee: r.get("assignee"),
            status: r.get("status"),
            title: r.get("title"),
            updated_at: to_u64(r.get("updated_at")),
        }))
    }

    pub async fn upsert_ticket(&self, t: &Ticket) -> sqlx::Result<()> {
        // Both statements take the ticket's columns as $1 to $7, in this order.
        let ticket_query = |sql: &'static str| {
            sqlx::query(sql)
                .bind(&t.id)
                .bind(&t.customer)
                .bind(&t.cluster)
                .bind(&t.assignee)
                .bind(&t.status)
                .bind(&t.title)
                .bind(to_i64(t.updated_at))
        };
        let mut tx = self.pool.begin().await?;
        let updated = ticket_query(
            "UPDATE tickets SET customer_id = $2, cluster_id = $3, assignee = $4, status = $5, title = $6, updated_at = $7 WHERE id = $1",
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            ticket_query(
                "INSERT INTO tickets (id, customer_id, cluster_id, assignee, status, title, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}
