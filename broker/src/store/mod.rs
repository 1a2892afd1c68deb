//! The broker's store: sqlx over SQLite (a file, the default) or PostgreSQL (`postgres://`).
//!
//! One set of portable SQL serves both (sqlx `Any` driver, `$N` placeholders, which SQLite
//! accepts too). Queries are checked at run time: the compile-time macros would need a live
//! database for each engine at build time.

mod audit;
mod gateways;
mod records;

pub use audit::*;
pub use gateways::*;
pub use records::*;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub is_sqlite: bool,
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "gateways",
        include_str!("../../../migrations/0002_gateways.sql"),
    ),
    (
        3,
        "audit_heads",
        include_str!("../../../migrations/0003_audit_heads.sql"),
    ),
    (
        4,
        "session_revocations",
        include_str!("../../../migrations/0004_session_revocations.sql"),
    ),
    (
        5,
        "disabled_principals",
        include_str!("../../../migrations/0005_disabled_principals.sql"),
    ),
];

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, desc, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*desc),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
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
        migrator()
            .run(&pool)
            .await
            .context("applying the store's migrations")?;
        Ok(Store { pool, is_sqlite })
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

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }

    /// Every file in migrations/ is applied, in order, under its own number.
    #[test]
    fn every_migration_file_is_applied() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), super::MIGRATIONS.len(), "{files:?}");
        for (file, (version, desc, sql)) in files.iter().zip(super::MIGRATIONS) {
            assert_eq!(file, &format!("{version:04}_{desc}.sql"));
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../migrations")
                    .join(file),
            )
            .unwrap();
            assert_eq!(&text, sql, "{file}");
        }
    }
}
