//! Customers, their clusters, and the clusters' nodes.

use sallyport_ca::clock::now_secs;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::columns::{json_list, list_json};
use super::{Store, to_i64};

pub use sallyport_api::admin::{Cluster, Customer, Node};

const NODE_COLS: &str = "cluster_id, name, address, port, host_keys, trust_on_first_use";

fn node_row(r: &AnyRow) -> Node {
    Node {
        cluster: r.get("cluster_id"),
        name: r.get("name"),
        address: r.get("address"),
        port: u16::try_from(r.get::<i64, _>("port")).unwrap_or(22),
        host_keys: json_list(&r.get::<String, _>("host_keys")),
        trust_on_first_use: r.get::<i64, _>("trust_on_first_use") != 0,
    }
}

impl Store {
    pub async fn create_customer(&self, c: &Customer) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&c.id)
            .bind(&c.name)
            .bind(to_i64(now_secs()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn customers(&self) -> sqlx::Result<Vec<Customer>> {
        let rows = sqlx::query("SELECT id, name FROM customers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Customer {
                id: r.get("id"),
                name: r.get("name"),
            })
            .collect())
    }

    pub async fn customer_exists(&self, id: &str) -> sqlx::Result<bool> {
        Ok(sqlx::query("SELECT id FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn create_cluster(&self, c: &Cluster) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO clusters (id, customer_id, created_at) VALUES ($1, $2, $3)")
            .bind(&c.id)
            .bind(&c.customer)
            .bind(to_i64(now_secs()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn cluster(&self, id: &str) -> sqlx::Result<Option<Cluster>> {
        let row = sqlx::query("SELECT id, customer_id FROM clusters WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Cluster {
            id: r.get("id"),
            customer: r.get("customer_id"),
        }))
    }

    pub async fn clusters(&self, customer: Option<&str>) -> sqlx::Result<Vec<Cluster>> {
        let rows = sqlx::query(
            "SELECT id, customer_id FROM clusters WHERE ($1 IS NULL OR customer_id = $1) ORDER BY id",
        )
        .bind(customer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Cluster {
                id: r.get("id"),
                customer: r.get("customer_id"),
            })
            .collect())
    }

    pub async fn create_node(&self, n: &Node) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO nodes (cluster_id, name, address, port, created_at, host_keys, trust_on_first_use) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&n.cluster)
        .bind(&n.name)
        .bind(&n.address)
        .bind(i64::from(n.port))
        .bind(to_i64(now_secs()))
        .bind(list_json(&n.host_keys))
        .bind(i64::from(n.trust_on_first_use))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replace a node's address, port, host keys and trust-on-first-use setting; `false` when
    /// there is no such node.
    pub async fn update_node(&self, n: &Node) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE nodes SET address = $3, port = $4, host_keys = $5, trust_on_first_use = $6 \
             WHERE cluster_id = $1 AND name = $2",
        )
        .bind(&n.cluster)
        .bind(&n.name)
        .bind(&n.address)
        .bind(i64::from(n.port))
        .bind(list_json(&n.host_keys))
        .bind(i64::from(n.trust_on_first_use))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn nodes(&self, cluster: &str) -> sqlx::Result<Vec<Node>> {
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE cluster_id = $1 ORDER BY name"
        ))
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(node_row).collect())
    }

    pub async fn node(&self, cluster: &str, name: &str) -> sqlx::Result<Option<Node>> {
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE cluster_id = $1 AND name = $2"
        ))
        .bind(cluster)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(node_row))
    }
}
