//! Gateways (enrolled once with a join token; authenticated by a credential, both stored as
//! SHA-256) and the session recordings they upload.

use sallyport_ca::clock::now_secs;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, to_i64, to_u64};
use crate::config::Storage;

/// A gateway as listed: never its join token or credential (nor their hashes).
pub use sallyport_api::gateways::Gateway;

/// One uploaded recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    pub session: String,
    pub gateway: String,
    pub cluster: String,
    pub engineer: Option<String>,
    pub ticket: Option<String>,
    pub node: Option<String>,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    /// Relative to the broker's data_dir (`storage` data_dir); empty for `storage` database.
    pub path: String,
    pub created_at: u64,
    /// Where its bytes are: a file in one broker's data_dir, or `recording_chunks`.
    pub storage: Storage,
}

const GATEWAY_COLS: &str = "id, cluster_id, name, created_at, enrolled_at, node_ca_public_key, host_ca_public_key, revoked_at";

fn gateway_from_row(r: &AnyRow) -> Gateway {
    Gateway {
        id: r.get("id"),
        cluster: r.get("cluster_id"),
        name: r.get("name"),
        created_at: to_u64(r.get("created_at")),
        enrolled_at: r.get::<Option<i64>, _>("enrolled_at").map(to_u64),
        node_ca_public_key: r.get("node_ca_public_key"),
        host_ca_public_key: r.get("host_ca_public_key"),
        revoked_at: r.get::<Option<i64>, _>("revoked_at").map(to_u64),
    }
}

const RECORDING_COLS: &str = "session, gateway_id, cluster_id, engineer, ticket, node, kind, size, sha256, path, created_at, storage";

/// The largest row of `recording_chunks`.
pub const RECORDING_CHUNK: usize = 1 << 20;

fn recording_from_row(r: &AnyRow) -> Recording {
    Recording {
        session: r.get("session"),
        gateway: r.get("gateway_id"),
        cluster: r.get("cluster_id"),
        engineer: r.get("engineer"),
        ticket: r.get("ticket"),
        node: r.get("node"),
        kind: r.get("kind"),
        size: to_u64(r.get("size")),
        sha256: r.get("sha256"),
        path: r.get("path"),
        created_at: to_u64(r.get("created_at")),
        storage: match r.get::<String, _>("storage").as_str() {
            "database" => Storage::Database,
            // 'data_dir', the default of every row stored before the column.
            _ => Storage::DataDir,
        },
    }
}

async fn insert_recording_row(conn: &mut sqlx::AnyConnection, r: &Recording) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "INSERT INTO recordings ({RECORDING_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(&r.session)
    .bind(&r.gateway)
    .bind(&r.cluster)
    .bind(&r.engineer)
    .bind(&r.ticket)
    .bind(&r.node)
    .bind(&r.kind)
    .bind(to_i64(r.size))
    .bind(&r.sha256)
    .bind(&r.path)
    .bind(to_i64(r.created_at))
    .bind(r.storage.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    // --- gateways ---

    pub async fn create_gateway(&self, g: &Gateway, join_token_hash: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO gateways (id, cluster_id, name, join_token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&g.id)
        .bind(&g.cluster)
        .bind(&g.name)
        .bind(join_token_hash)
        .bind(to_i64(g.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn gateways(&self, cluster: &str) -> sqlx::Result<Vec<Gateway>> {
        let rows = sqlx::query(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE cluster_id = $1 ORDER BY created_at, id"
        ))
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(gateway_from_row).collect())
    }

    pub async fn gateway(&self, id: &str) -> sqlx::Result<Option<Gateway>> {
        let row = sqlx::query(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(gateway_from_row))
    }

    pub async fn gateway_by_join_token(&self, hash: &str) -> sqlx::Result<Option<Gateway>> {
        let row = sqlx::query(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE join_token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(gateway_from_row))
    }

    /// The gateway holding this credential (revoked ones too: the caller says why it refuses).
    pub async fn gateway_by_credential(&self, hash: &str) -> sqlx::Result<Option<Gateway>> {
        let row = sqlx::query(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE credential_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(gateway_from_row))
    }

    /// Spend a join token: one statement that only succeeds while the gateway is not enrolled
    /// (nor revoked), so of two concurrent enrollments (other replicas too) exactly one wins.
    /// `true` when this call enrolled it.
    pub async fn enroll_gateway(
        &self,
        join_token_hash: &str,
        node_ca_public_key: &str,
        host_ca_public_key: &str,
        credential_hash: &str,
        audit_key: (&str, &str),
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE gateways SET enrolled_at = $2, node_ca_public_key = $3, host_ca_public_key = $4, credential_hash = $5 \
             WHERE join_token_hash = $1 AND enrolled_at IS NULL AND revoked_at IS NULL RETURNING id",
        )
        .bind(join_token_hash)
        .bind(to_i64(now_secs()))
        .bind(node_ca_public_key)
        .bind(host_ca_public_key)
        .bind(credential_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        // The key that signs the gateway's audit chain is pinned with its enrollment, in one
        // transaction: an enrolled gateway always has it.
        let id: String = row.get("id");
        sqlx::query(
            "INSERT INTO audit_keys (source, public_key, fingerprint, pinned_at, pinned_by) \
             VALUES ($1, $2, $3, $4, 'enrollment')",
        )
        .bind(format!("gateway:{id}"))
        .bind(audit_key.0)
        .bind(audit_key.1)
        .bind(to_i64(now_secs()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revoke a gateway (its credential and its unused join token). `false` if it was already
    /// revoked or does not exist.
    pub async fn revoke_gateway(&self, id: &str) -> sqlx::Result<bool> {
        let res =
            sqlx::query("UPDATE gateways SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(to_i64(now_secs()))
                .execute(&self.pool)
                .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The host CA public keys of a cluster's enrolled, non-revoked gateways (distinct, in
    /// enrollment order).
    pub async fn host_ca_keys(&self, cluster: &str) -> sqlx::Result<Vec<String>> {
        let rows = sqlx::query(&format!(
            "SELECT host_ca_public_key {HOST_CAS_OF_CLUSTER} ORDER BY enrolled_at, id"
        ))
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        Ok(distinct(rows.iter().map(|r| r.get("host_ca_public_key"))))
    }

    // --- recordings ---

    /// (engineer, ticket, node) as the first of this source's records about `session` that
    /// names an engineer says.
    pub async fn session_subjects(
        &self,
        source: &str,
        session: &str,
    ) -> sqlx::Result<Option<(Option<String>, Option<String>, Option<String>)>> {
        let row = sqlx::query(
            "SELECT engineer, ticket, node FROM audit_events WHERE source = $1 AND session = $2 \
             AND engineer IS NOT NULL ORDER BY seq LIMIT 1",
        )
        .bind(source)
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get("engineer"), r.get("ticket"), r.get("node"))))
    }

    pub async fn recording(&self, session: &str) -> sqlx::Result<Option<Recording>> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLS} FROM recordings WHERE session = $1"
        ))
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(recording_from_row))
    }

    /// Claim a session's recording. A unique violation means it was stored before (or by a
    /// concurrent upload): the caller compares with what is stored.
    pub async fn insert_recording(&self, r: &Recording) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_recording_row(&mut conn, r).await
    }

    /// Store a recording's row and its bytes, read from `bytes` into rows of `recording_chunks`
    /// of [`RECORDING_CHUNK`] bytes, in one transaction: the recording is whole or absent. A
    /// unique violation: the session has a recording already (nothing was written).
    pub async fn insert_recording_with_bytes(
        &self,
        r: &Recording,
        bytes: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> sqlx::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut tx = self.pool.begin().await?;
        insert_recording_row(&mut tx, r).await?;
        let mut buf = vec![0u8; RECORDING_CHUNK];
        let mut seq: i64 = 0;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = bytes.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            sqlx::query("INSERT INTO recording_chunks (session, seq, data) VALUES ($1, $2, $3)")
                .bind(&r.session)
                .bind(seq)
                .bind(&buf[..filled])
                .execute(&mut *tx)
                .await?;
            seq += 1;
            if filled < buf.len() {
                break;
            }
        }
        tx.commit().await
    }

    /// Chunk `seq` of a recording kept in the database; `None` past its last one.
    pub async fn recording_chunk(&self, session: &str, seq: u64) -> sqlx::Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM recording_chunks WHERE session = $1 AND seq = $2")
            .bind(session)
            .bind(to_i64(seq))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>("data")))
    }

    /// How many bytes of a recording the database holds.
    pub async fn recording_bytes_held(&self, session: &str) -> sqlx::Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(LENGTH(data)), 0) AS BIGINT) FROM recording_chunks \
             WHERE session = $1",
        )
        .bind(session)
        .fetch_one(&self.pool)
        .await?;
        Ok(to_u64(n))
    }

    /// Record what an edge says of itself (its host key, the address engineers dial); `true`
    /// when that changed (a new edge, a new key or address).
    pub async fn register_edge(
        &self,
        name: &str,
        host_key: &str,
        address: Option<&str>,
    ) -> sqlx::Result<bool> {
        let now = to_i64(now_secs());
        let old = sqlx::query("SELECT host_key, address FROM edge_registrations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let same = old.as_ref().is_some_and(|r| {
            r.get::<String, _>("host_key") == host_key
                && r.get::<Option<String>, _>("address").as_deref() == address
        });
        sqlx::query(
            "INSERT INTO edge_registrations (name, host_key, address, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET host_key = excluded.host_key, address = excluded.address, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(host_key)
        .bind(address)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(!same)
    }
}

/// The host CA keys a cluster's engineers trust: of its enrolled gateways not revoked (`$1`: the
/// cluster).
const HOST_CAS_OF_CLUSTER: &str = "FROM gateways WHERE cluster_id = $1 AND enrolled_at IS NOT NULL \
     AND revoked_at IS NULL AND host_ca_public_key IS NOT NULL";

/// The edges that registered themselves and whose API token is not revoked.
const LIVE_EDGES: &str = "FROM edge_registrations e WHERE EXISTS (SELECT 1 FROM api_tokens t \
     WHERE t.role = 'edge' AND t.name = e.name AND t.revoked_at IS NULL)";

/// `keys` in their order, each once.
fn distinct(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

impl Store {
    /// [`Store::host_ca_keys`] of `cluster` and the live edges (the most recently seen first), in
    /// one query: what an issued certificate's answer tells the engineer's client to trust and to
    /// dial.
    pub async fn jump_reads(
        &self,
        cluster: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<EdgeRegistration>)> {
        let rows = sqlx::query(&format!(
            "SELECT 'host_ca' AS part, host_ca_public_key AS key, NULL AS address, id AS name, \
             enrolled_at AS at {HOST_CAS_OF_CLUSTER} \
             UNION ALL \
             SELECT 'edge' AS part, e.host_key AS key, e.address AS address, e.name AS name, \
             e.updated_at AS at {LIVE_EDGES}"
        ))
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        let mut gateways: Vec<(i64, String, String)> = Vec::new();
        let mut edges = Vec::new();
        for r in &rows {
            let part: String = r.try_get("part")?;
            if part == "host_ca" {
                gateways.push((r.try_get("at")?, r.try_get("name")?, r.try_get("key")?));
            } else {
                edges.push(EdgeRegistration {
                    name: r.try_get("name")?,
                    host_key: r.try_get("key")?,
                    address: r.try_get("address")?,
                    updated_at: to_u64(r.try_get("at")?),
                });
            }
        }
        // The orders of the two reads: gateways in enrollment order, edges the most recently
        // seen first.
        gateways.sort();
        let keys = distinct(gateways.into_iter().map(|(_, _, k)| k));
        edges.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok((keys, edges))
    }
}

/// An edge as it registered itself (`POST /v1/edge/self`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRegistration {
    pub name: String,
    pub host_key: String,
    pub address: Option<String>,
    pub updated_at: u64,
}
