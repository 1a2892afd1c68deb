//! Passkeys of approver and reviewer accounts, and the WebAuthn ceremonies in progress (kept
//! here, not in one replica's memory; each taken once).

use sallyport_ca::clock::now_secs;
use sqlx::Row;

use super::{Store, to_i64, to_u64};

/// A registered passkey. `passkey` is the library's credential as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    pub id: String,
    pub account: String,
    pub name: String,
    pub credential_id: String,
    pub passkey: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

/// A registration (`kind` = `register`) or login (`login`) between its challenge and its
/// answer. `state` is the library's ceremony state as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    pub id: String,
    pub kind: String,
    pub account: String,
    /// The name the passkey will have (registration).
    pub name: Option<String>,
    /// SHA-256 of the login form's nonce (login).
    pub nonce_sha256: Option<String>,
    pub state: String,
    pub expires_at: u64,
}

fn row(r: &sqlx::any::AnyRow) -> PasskeyRow {
    PasskeyRow {
        id: r.get("id"),
        account: r.get("account"),
        name: r.get("name"),
        credential_id: r.get("credential_id"),
        passkey: r.get("passkey"),
        created_at: to_u64(r.get("created_at")),
        last_used_at: r.get::<Option<i64>, _>("last_used_at").map(to_u64),
    }
}

const COLUMNS: &str = "id, account, name, credential_id, passkey, created_at, last_used_at";

impl Store {
    /// Store a new passkey. `false`: its credential is already registered (to any account).
    pub async fn add_passkey(&self, p: &PasskeyRow) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "INSERT INTO passkeys (id, account, name, credential_id, passkey, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) ON CONFLICT (credential_id) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.account)
        .bind(&p.name)
        .bind(&p.credential_id)
        .bind(&p.passkey)
        .bind(to_i64(p.created_at))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// An account's passkeys, oldest first.
    pub async fn passkeys_of(&self, account: &str) -> sqlx::Result<Vec<PasskeyRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM passkeys WHERE account = $1 ORDER BY created_at, id"
        ))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect())
    }

    /// The passkey with this credential id, whoever's it is.
    pub async fn passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> sqlx::Result<Option<PasskeyRow>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM passkeys WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(row))
    }

    /// After a login with it: the credential as updated (its counter) and when.
    pub async fn passkey_used(&self, id: &str, passkey: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3")
            .bind(passkey)
            .bind(to_i64(now_secs()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remove one of `account`'s passkeys; the removed row, `None` when it has no such one.
    pub async fn remove_passkey(
        &self,
        account: &str,
        id: &str,
    ) -> sqlx::Result<Option<PasskeyRow>> {
        let r = sqlx::query(&format!(
            "DELETE FROM passkeys WHERE account = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(row))
    }

    /// Begin a ceremony (and forget those long expired).
    pub async fn add_ceremony(&self, c: &Ceremony) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at < $1")
            .bind(to_i64(now_secs().saturating_sub(3600)))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO passkey_ceremonies (id, kind, account, name, nonce_sha256, state, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.account)
        .bind(&c.name)
        .bind(&c.nonce_sha256)
        .bind(&c.state)
        .bind(to_i64(c.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Take a ceremony of `kind` to finish it: it is deleted in the same statement, so of two
    /// requests with the same ceremony at most one gets it. Expired ones are returned too (the
    /// caller says so).
    pub async fn take_ceremony(&self, id: &str, kind: &str) -> sqlx::Result<Option<Ceremony>> {
        let r = sqlx::query(
            "DELETE FROM passkey_ceremonies WHERE id = $1 AND kind = $2 \
             RETURNING id, kind, account, name, nonce_sha256, state, expires_at",
        )
        .bind(id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| Ceremony {
            id: r.get("id"),
            kind: r.get("kind"),
            account: r.get("account"),
            name: r.get("name"),
            nonce_sha256: r.get("nonce_sha256"),
            state: r.get("state"),
            expires_at: to_u64(r.get("expires_at")),
        }))
    }
}
