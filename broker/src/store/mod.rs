//! The broker's store: sqlx over SQLite (a file, the default) or PostgreSQL (`postgres://`).
//!
//! One set of portable SQL serves both (sqlx `Any` driver, `$N` placeholders, which SQLite
//! accepts too). Queries are checked at run time: the compile-time macros would need a live
//! database for each engine at build time.

mod accounts;
mod append;
mod approvals;
mod audit;
mod columns;
mod console;
mod customers;
mod gateways;
mod grants;
mod issuance;
mod live;
mod passkeys;
mod policies;
mod requests;
mod search;
mod stream;
mod tickets;
mod webhooks;

pub use accounts::*;
pub use approvals::*;
pub use audit::*;
pub use console::*;
pub use customers::*;
pub use gateways::*;
pub use grants::*;
pub use issuance::*;
pub use live::*;
pub use passkeys::*;
pub use policies::*;
pub use requests::*;
pub use search::*;
pub use stream::*;
pub use tickets::*;
pub use webhooks::*;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub is_sqlite: bool,
    /// Signs every record of the broker's own chain (a key in the data_dir, never in the
    /// database); `None` for tools that only read.
    audit_key: Option<std::sync::Arc<russh::keys::PrivateKey>>,
    /// Appends to the broker's own chain from this process, written by one writer at a time,
    /// as many as are waiting in one transaction (`append.rs`): each continues the stored head,
    /// so two writers at once would collide and one retry after a pause (other replicas still
    /// can, and do retry).
    appends: std::sync::Arc<append::Appends>,
}

/// A migration's SQL: one text for both engines, or one per engine where they differ (a full-text
/// index, say). Migrations 1 to 8 are portable; their text, and so the checksum sqlx keeps of
/// each applied one, is what it always was.
#[derive(Clone, Copy)]
enum Sql {
    Portable(&'static str),
    PerEngine {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl Sql {
    fn for_engine(self, is_sqlite: bool) -> &'static str {
        match self {
            Sql::Portable(sql) => sql,
            Sql::PerEngine { sqlite, postgres } => {
                if is_sqlite {
                    sqlite
                } else {
                    postgres
                }
            }
        }
    }
}

/// (version, description, SQL). Files are `NNNN_<description>.sql`, or
/// `NNNN_<description>.sqlite.sql` and `NNNN_<description>.postgres.sql` for a migration with a
/// part per engine.
const MIGRATIONS: &[(i64, &str, Sql)] = &[
    (
        1,
        "initial",
        Sql::Portable(include_str!("../../../migrations/0001_initial.sql")),
    ),
    (
        2,
        "gateways",
        Sql::Portable(include_str!("../../../migrations/0002_gateways.sql")),
    ),
    (
        3,
        "audit_heads",
        Sql::Portable(include_str!("../../../migrations/0003_audit_heads.sql")),
    ),
    (
        4,
        "session_revocations",
        Sql::Portable(include_str!(
            "../../../migrations/0004_session_revocations.sql"
        )),
    ),
    (
        5,
        "disabled_principals",
        Sql::Portable(include_str!(
            "../../../migrations/0005_disabled_principals.sql"
        )),
    ),
    (
        6,
        "request_terms",
        Sql::Portable(include_str!("../../../migrations/0006_request_terms.sql")),
    ),
    (
        7,
        "audit_signatures",
        Sql::Portable(include_str!(
            "../../../migrations/0007_audit_signatures.sql"
        )),
    ),
    (
        8,
        "node_host_keys",
        Sql::Portable(include_str!("../../../migrations/0008_node_host_keys.sql")),
    ),
    (
        9,
        "audit_text",
        Sql::PerEngine {
            sqlite: include_str!("../../../migrations/0009_audit_text.sqlite.sql"),
            postgres: include_str!("../../../migrations/0009_audit_text.postgres.sql"),
        },
    ),
    (
        10,
        "console",
        Sql::Portable(include_str!("../../../migrations/0010_console.sql")),
    ),
    (
        11,
        "live",
        Sql::Portable(include_str!("../../../migrations/0011_live.sql")),
    ),
    (
        12,
        "observer",
        Sql::Portable(include_str!("../../../migrations/0012_observer.sql")),
    ),
    (
        13,
        "webhooks",
        Sql::Portable(include_str!("../../../migrations/0013_webhooks.sql")),
    ),
    (
        14,
        "edge_registrations",
        Sql::Portable(include_str!(
            "../../../migrations/0014_edge_registrations.sql"
        )),
    ),
    (
        15,
        "audit_subject_time",
        Sql::Portable(include_str!(
            "../../../migrations/0015_audit_subject_time.sql"
        )),
    ),
    (
        16,
        "audit_text_time",
        Sql::PerEngine {
            sqlite: include_str!("../../../migrations/0016_audit_text_time.sqlite.sql"),
            postgres: include_str!("../../../migrations/0016_audit_text_time.postgres.sql"),
        },
    ),
    (
        17,
        "passkeys",
        Sql::Portable(include_str!("../../../migrations/0017_passkeys.sql")),
    ),
    (
        18,
        "recording_chunks",
        Sql::PerEngine {
            sqlite: include_str!("../../../migrations/0018_recording_chunks.sqlite.sql"),
            postgres: include_str!("../../../migrations/0018_recording_chunks.postgres.sql"),
        },
    ),
    (
        19,
        "issuance_indexes",
        Sql::Portable(include_str!(
            "../../../migrations/0019_issuance_indexes.sql"
        )),
    ),
];

/// The migrations for one engine.
fn migrator(is_sqlite: bool) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, desc, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*desc),
                MigrationType::Simple,
                Cow::Borrowed(sql.for_engine(is_sqlite)),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

impl Store {
    /// Connect and apply migrations. `url`: `sqlite://FILE` or `postgres://...`.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        use anyhow::Context;
        install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let url = if is_sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        if is_sqlite {
            opts = opts.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the store {}", redact(&url)))?;
        migrator(is_sqlite)
            .run(&pool)
            .await
            .context("applying the store's migrations")?;
        let store = Store {
            pool,
            is_sqlite,
            audit_key: None,
            appends: std::sync::Arc::default(),
        };
        store
            .index_stored_text()
            .await
            .context("indexing the text of audit events stored before the search index")?;
        Ok(store)
    }

    /// Sign the broker's own chain with `key` from now on.
    pub fn with_audit_key(mut self, key: russh::keys::PrivateKey) -> Store {
        self.audit_key = Some(std::sync::Arc::new(key));
        self
    }

    /// Sign an evidence bundle's manifest with the broker's audit key (an armored SSHSIG).
    pub fn sign_bundle_manifest(&self, manifest: &[u8]) -> anyhow::Result<String> {
        let key = self
            .audit_key
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("this broker has no audit key"))?;
        Ok(sallyport_ca::chainsig::sign_manifest(key, manifest)?)
    }

    /// The public key that signs the broker's own chain, when there is one.
    pub fn broker_audit_key(&self) -> Option<&russh::keys::PublicKey> {
        self.audit_key.as_deref().map(|k| k.public_key())
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The role stored in column `col` of a row: parsed here, once; a role the broker never writes
/// is an error of the store, not a caller without rights.
pub(crate) fn role_of(row: &sqlx::any::AnyRow, col: &str) -> sqlx::Result<crate::auth::Role> {
    use sqlx::Row;
    let text: String = row.try_get(col)?;
    crate::auth::Role::parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: format!("unknown role {text:?}").into(),
    })
}

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests;
