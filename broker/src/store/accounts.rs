//! Engineers' TOTP secrets, console and API accounts, API tokens, used TOTP steps, login
//! failures and lockouts, disabled principals and revoked session tokens.

use sallyport_ca::clock::now_secs;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use super::{Store, role_of, to_i64, to_u64};
use crate::auth::Role;

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

impl Store {
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
                let (name, stored): (String, String) = (r.get(key), r.get("totp_secret"));
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
                let (name, stored): (String, String) = (r.get(key), r.get("totp_secret"));
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
        Ok(row.map(|r| r.get("totp_secret")))
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
                username: r.get("username"),
                role: role_of(&r, "role")?,
                customer: r.get("customer_id"),
                password_hash: r.get("password_hash"),
                totp_secret: r.get("totp_secret"),
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
                    "id": r.get::<String, _>("id"),
                    "role": r.get::<String, _>("role"),
                    "customer": r.get::<Option<String>, _>("customer_id"),
                    "name": r.get::<String, _>("name"),
                    "created_at": to_u64(r.get::<i64, _>("created_at")),
                    "revoked_at": r.get::<Option<i64>, _>("revoked_at").map(to_u64),
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
            id: r.get("id"),
            role: role_of(&r, "role")?,
            customer: r.get("customer_id"),
            name: r.get("name"),
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
                id: r.get("id"),
                role: role_of(&r, "role")?,
                customer: r.get("customer_id"),
                name: r.get("name"),
            };
            Ok((token, r.get::<Option<i64>, _>("revoked_at").is_some()))
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
            .map(|r| to_u64(r.get("locked_until")))
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
        Ok(row.get::<i64, _>("failures"))
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
        Ok(row.map(|r| to_u64(r.get::<i64, _>("revoked_at"))))
    }
}
