//! Rows of the control plane: customers, clusters, nodes, engineers, accounts, tokens, TOTP
//! steps, login failures, tickets, approvals, access requests, customer policies, grants.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now_secs, role_of, to_i64, to_u64};
use crate::auth::Role;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub customer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub cluster: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    /// The node's registered SSH host public keys (OpenSSH lines, no comment).
    pub host_keys: Vec<String>,
    /// Whether the gateway may pin the first key of a node without registered keys.
    pub trust_on_first_use: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub role: Role,
    pub customer: Option<String>,
    #[serde(skip_serializing)]
    pub password_hash: String,
    #[serde(skip_serializing)]
    pub totp_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub role: Role,
    pub customer: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub customer: String,
    pub cluster: String,
    pub assignee: String,
    pub status: String,
    pub title: String,
    pub updated_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub customer: String,
    pub cluster: String,
    pub group: String,
    pub logins: Vec<String>,
    pub max_session_secs: u64,
    pub valid_from: u64,
    pub valid_until: u64,
    pub just_in_time: bool,
    pub per_session_mfa: bool,
    pub port_forwarding: bool,
    pub source_networks: Vec<String>,
    pub created_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub withdrawn_at: Option<u64>,
    pub withdrawn_by: Option<String>,
    /// Distinct approvers who must approve each just-in-time request (a quorum); 1 by default.
    pub approvers_required: u64,
    /// Each session waits at the gateway until an approver of the customer watches it.
    #[serde(default)]
    pub observer_required: bool,
}

/// Where an access request stands. Parsed once where the store reads it; the text is the same
/// everywhere (`pending`, `approved`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the customer's approvers.
    Pending,
    /// Approved: the engineer's next login may use it, once.
    Approved,
    Denied,
    /// Its approval was changed or withdrawn.
    Void,
    /// A newer request of the same engineer, ticket and cluster replaced it.
    Superseded,
    /// A certificate was issued under it.
    Used,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Void => "void",
            RequestState::Superseded => "superseded",
            RequestState::Used => "used",
        }
    }

    /// The state this text names, if any.
    pub fn parse(s: &str) -> Option<RequestState> {
        [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Void,
            RequestState::Superseded,
            RequestState::Used,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request state stored in column `i` of a row; one the broker never writes is an error of
/// the store.
fn state_of(row: &AnyRow, i: usize) -> sqlx::Result<RequestState> {
    let text: String = row.try_get(i)?;
    RequestState::parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: format!("unknown access request state {text:?}").into(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub approval: String,
    pub status: RequestState,
    pub created_at: u64,
    pub decided_by: Option<String>,
    pub decided_at: Option<u64>,
    pub reason: Option<String>,
    /// What the approver sees and the one certificate may carry: these logins, at most this
    /// lifetime (seconds).
    pub logins: Vec<String>,
    pub ttl_secs: u64,
    /// Distinct approvers needed (the approval's quorum when the request was made).
    pub approvers_required: u64,
    /// Who approved so far (read from the votes).
    #[serde(default)]
    pub approved_by: Vec<String>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerPolicy {
    pub id: String,
    pub customer: String,
    pub name: String,
    pub body: String,
    pub created_by: String,
    pub created_at: u64,
}

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

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn list_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn opt_u64(row: &AnyRow, i: usize) -> Option<u64> {
    row.get::<Option<i64>, _>(i).map(to_u64)
}

const NODE_COLS: &str = "cluster_id, name, address, port, host_keys, trust_on_first_use";

fn node_row(r: &AnyRow) -> Node {
    Node {
        cluster: r.get(0),
        name: r.get(1),
        address: r.get(2),
        port: u16::try_from(r.get::<i64, _>(3)).unwrap_or(22),
        host_keys: json_list(&r.get::<String, _>(4)),
        trust_on_first_use: r.get::<i64, _>(5) != 0,
    }
}

const APPROVAL_COLS: &str = "id, customer_id, cluster_id, access_group, logins, max_session_secs, valid_from, valid_until, just_in_time, per_session_mfa, port_forwarding, source_networks, created_by, created_at, updated_at, withdrawn_at, withdrawn_by, approvers_required, observer_required";

fn approval_from_row(r: &AnyRow) -> Approval {
    Approval {
        id: r.get(0),
        customer: r.get(1),
        cluster: r.get(2),
        group: r.get(3),
        logins: json_list(&r.get::<String, _>(4)),
        max_session_secs: to_u64(r.get(5)),
        valid_from: to_u64(r.get(6)),
        valid_until: to_u64(r.get(7)),
        just_in_time: r.get::<i64, _>(8) != 0,
        per_session_mfa: r.get::<i64, _>(9) != 0,
        port_forwarding: r.get::<i64, _>(10) != 0,
        source_networks: json_list(&r.get::<String, _>(11)),
        created_by: r.get(12),
        created_at: to_u64(r.get(13)),
        updated_at: to_u64(r.get(14)),
        withdrawn_at: opt_u64(r, 15),
        withdrawn_by: r.get(16),
        approvers_required: to_u64(r.get(17)),
        observer_required: r.get::<i64, _>(18) != 0,
    }
}

const REQUEST_COLS: &str = "id, engineer, ticket_id, cluster_id, approval_id, status, created_at, decided_by, decided_at, reason, logins, ttl_secs, approvers_required";

fn request_from_row(r: &AnyRow) -> sqlx::Result<AccessRequest> {
    Ok(AccessRequest {
        id: r.get(0),
        engineer: r.get(1),
        ticket: r.get(2),
        cluster: r.get(3),
        approval: r.get(4),
        status: state_of(r, 5)?,
        created_at: to_u64(r.get(6)),
        decided_by: r.get(7),
        decided_at: opt_u64(r, 8),
        reason: r.get(9),
        logins: json_list(&r.get::<String, _>(10)),
        ttl_secs: to_u64(r.get(11)),
        approvers_required: to_u64(r.get(12)),
        approved_by: Vec::new(),
    })
}

const GRANT_COLS: &str = "id, engineer, ticket_id, customer_id, cluster_id, approval_id, request_id, logins, serial, key_id, ca_fingerprint, public_key, certificate, valid_after, valid_before, created_at, revoked_at, revoked_reason";

fn grant_from_row(r: &AnyRow) -> GrantRow {
    GrantRow {
        id: r.get(0),
        engineer: r.get(1),
        ticket: r.get(2),
        customer: r.get(3),
        cluster: r.get(4),
        approval: r.get(5),
        request: r.get(6),
        logins: json_list(&r.get::<String, _>(7)),
        serial: r.get(8),
        key_id: r.get(9),
        ca_fingerprint: r.get(10),
        public_key: r.get(11),
        certificate: r.get(12),
        valid_after: to_u64(r.get(13)),
        valid_before: to_u64(r.get(14)),
        created_at: to_u64(r.get(15)),
        revoked_at: opt_u64(r, 16),
        revoked_reason: r.get(17),
    }
}

/// What to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeScope {
    Serial,
    Grant,
    Engineer,
    Approval,
    Ticket,
}

impl RevokeScope {
    fn column(self) -> &'static str {
        match self {
            RevokeScope::Serial => "serial",
            RevokeScope::Grant => "id",
            RevokeScope::Engineer => "engineer",
            RevokeScope::Approval => "approval_id",
            RevokeScope::Ticket => "ticket_id",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeScope::Serial => "serial",
            RevokeScope::Grant => "grant",
            RevokeScope::Engineer => "engineer",
            RevokeScope::Approval => "approval",
            RevokeScope::Ticket => "ticket",
        }
    }
}

impl Store {
    // --- customers, clusters, nodes ---

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
                id: r.get(0),
                name: r.get(1),
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
            id: r.get(0),
            customer: r.get(1),
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
                id: r.get(0),
                customer: r.get(1),
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

    // --- engineers' TOTP, accounts, tokens ---

    pub async fn set_engineer_totp(
        &self,
        uid: &str,
        secret: &str,
        replace: bool,
    ) -> sqlx::Result<()> {
        if replace {
            sqlx::query("DELETE FROM engineers WHERE uid = $1")
                .bind(uid)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query("INSERT INTO engineers (uid, totp_secret, created_at) VALUES ($1, $2, $3)")
            .bind(uid)
            .bind(secret)
            .bind(to_i64(now_secs()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Seal the TOTP secrets an older version stored in clear (engineers `engineer:<uid>`,
    /// accounts `account:<name>`); returns whose. Run once, by the start that makes the sealing
    /// key: afterwards a secret in clear does not open.
    pub async fn seal_clear_secrets(
        &self,
        sealer: &crate::secretbox::SecretBox,
    ) -> sqlx::Result<Vec<String>> {
        let mut sealed = Vec::new();
        for (table, key, kind) in [
            ("engineers", "uid", "engineer"),
            ("accounts", "username", "account"),
        ] {
            let rows = sqlx::query(&format!("SELECT {key}, totp_secret FROM {table}"))
                .fetch_all(&self.pool)
                .await?;
            for r in rows {
                let (name, stored): (String, String) = (r.get(0), r.get(1));
                if crate::secretbox::is_sealed(&stored) {
                    continue;
                }
                let principal = format!("{kind}:{name}");
                let value = sealer.seal(&principal, &stored);
                // Only if it is still the clear value read (another replica may seal it too).
                let done = sqlx::query(&format!(
                    "UPDATE {table} SET totp_secret = $1 WHERE {key} = $2 AND totp_secret = $3"
                ))
                .bind(value)
                .bind(&name)
                .bind(&stored)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() > 0 {
                    sealed.push(principal);
                }
            }
        }
        Ok(sealed)
    }

    /// Whose TOTP secrets are stored in clear (`engineer:<uid>`, `account:<name>`).
    pub async fn clear_secrets(&self) -> sqlx::Result<Vec<String>> {
        let mut clear = Vec::new();
        for (table, key, kind) in [
            ("engineers", "uid", "engineer"),
            ("accounts", "username", "account"),
        ] {
            let rows = sqlx::query(&format!(
                "SELECT {key}, totp_secret FROM {table} ORDER BY {key}"
            ))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let (name, stored): (String, String) = (r.get(0), r.get(1));
                if !crate::secretbox::is_sealed(&stored) {
                    clear.push(format!("{kind}:{name}"));
                }
            }
        }
        Ok(clear)
    }

    pub async fn engineer_totp(&self, uid: &str) -> sqlx::Result<Option<String>> {
        let row = sqlx::query("SELECT totp_secret FROM engineers WHERE uid = $1")
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn create_account(&self, a: &Account) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (username, role, customer_id, password_hash, totp_secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.username)
        .bind(a.role.as_str())
        .bind(&a.customer)
        .bind(&a.password_hash)
        .bind(&a.totp_secret)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn account(&self, username: &str) -> sqlx::Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT username, role, customer_id, password_hash, totp_secret FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Account {
                username: r.get(0),
                role: role_of(&r, 1)?,
                customer: r.get(2),
                password_hash: r.get(3),
                totp_secret: r.get(4),
            })
        })
        .transpose()
    }

    pub async fn create_token(&self, t: &ApiToken, token_hash: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, token_hash, role, customer_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(token_hash)
        .bind(t.role.as_str())
        .bind(&t.customer)
        .bind(&t.name)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every API token (never its secret): id, role, customer, name, created, revoked.
    pub async fn tokens(&self) -> sqlx::Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT id, role, customer_id, name, created_at, revoked_at FROM api_tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.get::<String, _>(0),
                    "role": r.get::<String, _>(1),
                    "customer": r.get::<Option<String>, _>(2),
                    "name": r.get::<String, _>(3),
                    "created_at": to_u64(r.get::<i64, _>(4)),
                    "revoked_at": r.get::<Option<i64>, _>(5).map(to_u64),
                })
            })
            .collect())
    }

    /// Revoke an API token: it stops working at once (every replica reads the store). The
    /// token's name and role when it was live; `None` when unknown or already revoked.
    pub async fn revoke_token(&self, id: &str) -> sqlx::Result<Option<ApiToken>> {
        let row = sqlx::query(
            "SELECT id, role, customer_id, name FROM api_tokens WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let res = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        if res.rows_affected() != 1 {
            return Ok(None);
        }
        Ok(Some(ApiToken {
            id: r.get(0),
            role: role_of(&r, 1)?,
            customer: r.get(2),
            name: r.get(3),
        }))
    }

    /// The API token with this hash, and whether it was revoked (so that a refused use of a
    /// revoked token can name it in the audit log).
    pub async fn token_by_hash(&self, token_hash: &str) -> sqlx::Result<Option<(ApiToken, bool)>> {
        let row = sqlx::query(
            "SELECT id, role, customer_id, name, revoked_at FROM api_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let token = ApiToken {
                id: r.get(0),
                role: role_of(&r, 1)?,
                customer: r.get(2),
                name: r.get(3),
            };
            Ok((token, r.get::<Option<i64>, _>(4).is_some()))
        })
        .transpose()
    }

    /// Mark a TOTP step used. `false` when it was used before (by this or another replica).
    pub async fn use_totp_step(&self, subject: &str, step: u64) -> sqlx::Result<bool> {
        let res = sqlx::query("INSERT INTO totp_used (subject, step, used_at) VALUES ($1, $2, $3)")
            .bind(subject)
            .bind(to_i64(step))
            .bind(to_i64(now_secs()))
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Seconds left of a lockout, if any.
    pub async fn locked_for(&self, subject: &str) -> sqlx::Result<Option<u64>> {
        let row = sqlx::query("SELECT locked_until FROM login_failures WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        let now = now_secs();
        Ok(row
            .map(|r| to_u64(r.get(0)))
            .filter(|until| *until > now)
            .map(|until| until - now))
    }

    /// Count an attempt as a failure (until it succeeds and clears the count or gives it back);
    /// lock the subject for `lockout` seconds once `max` in a row. With `forget_after`, failures
    /// further apart than that many seconds are not in a row. One statement, so concurrent
    /// attempts (on other replicas too) all count; returns this attempt's number in the row.
    pub async fn record_failure(
        &self,
        subject: &str,
        max: i64,
        lockout: u64,
        forget_after: Option<u64>,
    ) -> sqlx::Result<i64> {
        // After a lockout has run out (or, with forget_after, a quiet while), counting starts
        // again.
        const NEXT: &str = "CASE WHEN (login_failures.locked_until <> 0 AND login_failures.locked_until <= $2) \
                            OR login_failures.last_failure < $5 \
                            THEN 1 ELSE login_failures.failures + 1 END";
        let now = now_secs();
        let forget_before = forget_after.map_or(0, |secs| now.saturating_sub(secs));
        let row = sqlx::query(&format!(
            "INSERT INTO login_failures (subject, failures, last_failure, locked_until) \
             VALUES ($1, 1, $2, CASE WHEN 1 >= $3 THEN $2 + $4 ELSE 0 END) \
             ON CONFLICT (subject) DO UPDATE SET failures = {NEXT}, last_failure = $2, \
             locked_until = CASE WHEN {NEXT} >= $3 THEN $2 + $4 ELSE 0 END \
             RETURNING failures"
        ))
        .bind(subject)
        .bind(to_i64(now))
        .bind(max)
        .bind(to_i64(lockout))
        .bind(to_i64(forget_before))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get::<i64, _>(0))
    }

    /// Give back an attempt that was not decided (the directory was down): it does not count.
    pub async fn release_attempt(&self, subject: &str, max: i64) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE login_failures SET failures = failures - 1, \
             locked_until = CASE WHEN failures - 1 >= $2 THEN locked_until ELSE 0 END \
             WHERE subject = $1 AND failures > 0",
        )
        .bind(subject)
        .bind(max)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn clear_failures(&self, subject: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- tickets ---

    pub async fn ticket(&self, id: &str) -> sqlx::Result<Option<Ticket>> {
        let row = sqlx::query(
            "SELECT id, customer_id, cluster_id, assignee, status, title, updated_at FROM tickets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Ticket {
            id: r.get(0),
            customer: r.get(1),
            cluster: r.get(2),
            assignee: r.get(3),
            status: r.get(4),
            title: r.get(5),
            updated_at: to_u64(r.get(6)),
        }))
    }

    pub async fn upsert_ticket(&self, t: &Ticket) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tickets SET customer_id = $2, cluster_id = $3, assignee = $4, status = $5, title = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(&t.id)
        .bind(&t.customer)
        .bind(&t.cluster)
        .bind(&t.assignee)
        .bind(&t.status)
        .bind(&t.title)
        .bind(to_i64(t.updated_at))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO tickets (id, customer_id, cluster_id, assignee, status, title, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.id)
            .bind(&t.customer)
            .bind(&t.cluster)
            .bind(&t.assignee)
            .bind(&t.status)
            .bind(&t.title)
            .bind(to_i64(t.updated_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    // --- approvals ---

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

    // --- access requests ---

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
        r.approved_by = rows.iter().map(|row| row.get(0)).collect();
        Ok(Some(r))
    }

    /// The engineer's latest request for a ticket and cluster that was not used yet (a used one
    /// gave its certificate: the next needs a new request) nor replaced by a newer one (made in
    /// the same second, it would tie).
    pub async fn latest_request(
        &self,
        engineer: &str,
        ticket: &str,
        cluster: &str,
    ) -> sqlx::Result<Option<AccessRequest>> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM access_requests WHERE engineer = $1 AND ticket_id = $2 AND cluster_id = $3 AND status NOT IN ('used', 'superseded') ORDER BY created_at DESC, id DESC LIMIT 1"
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
            Some(r) if state_of(&r, 1)? == RequestState::Used => Ok(Some(r.get(0))),
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
            "SELECT COUNT(*) FROM request_decisions WHERE request_id = $1 AND approve = 1",
        )
        .bind(&r.id)
        .fetch_one(&self.pool)
        .await?
        .get(0);
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

    // --- customer policies ---

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
                id: r.get(0),
                customer: r.get(1),
                name: r.get(2),
                body: r.get(3),
                created_by: r.get(4),
                created_at: to_u64(r.get(5)),
            })
            .collect())
    }

    // --- grants ---

    pub async fn insert_grant(&self, g: &GrantRow) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO grants ({GRANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ))
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn grants_where(
        &self,
        scope: RevokeScope,
        value: &str,
    ) -> sqlx::Result<Vec<GrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE {} = $1 ORDER BY created_at",
            scope.column()
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
            scope.column()
        ))
        .bind(value)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE {} = $1 AND revoked_at = $2 AND revoked_reason = $3",
            scope.column()
        ))
        .bind(value)
        .bind(now)
        .bind(reason)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(grant_from_row).collect())
    }

    /// Disable `principal` (`engineer:<uid>` or `account:<name>`): no login succeeds for it
    /// until enabled. `false` when it was disabled already.
    pub async fn disable(&self, principal: &str, by: &str, reason: &str) -> sqlx::Result<bool> {
        let res = sqlx::query(
            "INSERT INTO disabled_principals (principal, disabled_at, disabled_by, reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (principal) DO NOTHING",
        )
        .bind(principal)
        .bind(to_i64(now_secs()))
        .bind(by)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// `false` when it was not disabled.
    pub async fn enable(&self, principal: &str) -> sqlx::Result<bool> {
        let res = sqlx::query("DELETE FROM disabled_principals WHERE principal = $1")
            .bind(principal)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn is_disabled(&self, principal: &str) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM disabled_principals WHERE principal = $1")
            .bind(principal)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Every session token of `principal` issued until now is revoked.
    pub async fn revoke_sessions(&self, principal: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO session_revocations (principal, revoked_at) VALUES ($1, $2) \
             ON CONFLICT (principal) DO UPDATE SET revoked_at = excluded.revoked_at",
        )
        .bind(principal)
        .bind(to_i64(now_secs()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When `principal`'s session tokens were last revoked (unix seconds).
    pub async fn sessions_revoked_at(&self, principal: &str) -> sqlx::Result<Option<u64>> {
        let row = sqlx::query("SELECT revoked_at FROM session_revocations WHERE principal = $1")
            .bind(principal)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| to_u64(r.get::<i64, _>(0))))
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

#[cfg(test)]
mod tests {
    use super::RequestState;

    #[test]
    fn request_states_read_back_as_written() {
        for s in [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Void,
            RequestState::Superseded,
            RequestState::Used,
        ] {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::json!(s), serde_json::json!(s.as_str()));
        }
        assert_eq!(RequestState::parse("Pending"), None);
    }
}
