//! The store's own tests (each aggregate's are beside it).
#[test]
fn redact_hides_password() {
    assert_eq!(
        super::redact("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
}

/// Every file in migrations/ is applied, in order, under its own number: `NNNN_desc.sql`
/// for both engines, or `NNNN_desc.sqlite.sql` and `NNNN_desc.postgres.sql`.
#[test]
fn every_migration_file_is_applied() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let mut expected = Vec::new();
    for (version, desc, sql) in super::MIGRATIONS {
        match sql {
            super::Sql::Portable(sql) => {
                let f = format!("{version:04}_{desc}.sql");
                assert_eq!(&read(&f), sql, "{f}");
                expected.push(f);
            }
            super::Sql::PerEngine { sqlite, postgres } => {
                let p = format!("{version:04}_{desc}.postgres.sql");
                let s = format!("{version:04}_{desc}.sqlite.sql");
                assert_eq!(&read(&p), postgres, "{p}");
                assert_eq!(&read(&s), sqlite, "{s}");
                expected.extend([p, s]);
            }
        }
    }
    assert_eq!(files, expected);
}

/// The checksums sqlx keeps of applied migrations (SHA-384 of the text): those of released
/// migrations never change, or a store that applied them would refuse to start.
#[test]
fn released_migrations_keep_their_checksums() {
    let released = [
        "d8f9fc9367c7b1bb",
        "1ae5a6ccc066b8c9",
        "d6d0181961173d83",
        "b8f9c24e0683495f",
        "f68aeaaf12ba86e5",
        "19abb5b43304d565",
        "86bccc3575b77296",
        "d03676f4785439fb",
    ];
    for is_sqlite in [true, false] {
        let m = super::migrator(is_sqlite);
        for (migration, want) in m.migrations.iter().zip(released) {
            assert_eq!(
                hex::encode(&migration.checksum[..8]),
                want,
                "{}",
                migration.version
            );
        }
    }
}

/// A fresh, empty store URL: SQLite in `dir`, or a new PostgreSQL database when the tests
/// run on PostgreSQL (SALLYPORT_TEST_STORE=postgres, tests/infra/run-tests.sh).
pub(crate) async fn empty_store(dir: &std::path::Path) -> String {
    use sqlx::Connection;
    let admin = std::env::var("SALLYPORT_TEST_PG_ADMIN_URL");
    match (std::env::var("SALLYPORT_TEST_STORE").as_deref(), admin) {
        (Ok("postgres"), Ok(admin)) => {
            super::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
            let name = format!("sp_unit_{}", hex::encode(rand::random::<[u8; 8]>()));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
        _ => format!("sqlite://{}", dir.join("broker.db").display()),
    }
}

/// A ceremony is taken once, only as its own kind; a credential is registered to one
/// account; a passkey is removed only by its own account.
#[tokio::test]
async fn passkey_ceremonies_are_single_use_and_credentials_unique() {
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(dir.path()).await;
    let store = super::Store::connect(&url).await.unwrap();
    let c = super::Ceremony {
        id: "c1".into(),
        kind: "login".into(),
        account: "anna".into(),
        name: None,
        nonce_sha256: Some("n".into()),
        state: "{}".into(),
        expires_at: 1,
    };
    store.add_ceremony(&c).await.unwrap();
    assert_eq!(store.take_ceremony("c1", "register").await.unwrap(), None);
    // An expired one is still handed back once (the caller says it expired).
    assert_eq!(store.take_ceremony("c1", "login").await.unwrap(), Some(c));
    assert_eq!(store.take_ceremony("c1", "login").await.unwrap(), None);
    let p = super::PasskeyRow {
        id: "pk_1".into(),
        account: "anna".into(),
        name: "Laptop".into(),
        credential_id: "cred".into(),
        passkey: "{}".into(),
        created_at: 5,
        last_used_at: None,
    };
    assert!(store.add_passkey(&p).await.unwrap());
    let theft = super::PasskeyRow {
        id: "pk_2".into(),
        account: "mallory".into(),
        ..p.clone()
    };
    assert!(!store.add_passkey(&theft).await.unwrap());
    assert_eq!(
        store.passkey_by_credential("cred").await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(store.remove_passkey("mallory", "pk_1").await.unwrap(), None);
    assert_eq!(store.remove_passkey("anna", "pk_1").await.unwrap(), Some(p));
    assert!(store.passkeys_of("anna").await.unwrap().is_empty());
}

/// Live chunks are taken only in order (a gap or a repeat is answered with where the next
/// one starts); a watch keeps sessions listed for their cluster only; the view reads the
/// header and the text in order.
#[tokio::test]
async fn live_chunks_follow_each_other_and_watches_are_per_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(dir.path()).await;
    let store = super::Store::connect(&url).await.unwrap();
    assert!(store.watch("s-1", "acme-prod", "reviewer:r").await.unwrap());
    assert!(!store.watch("s-1", "acme-prod", "reviewer:r").await.unwrap());
    assert!(
        store
            .watch("s-1", "acme-prod", "approver:acme:b")
            .await
            .unwrap()
    );
    assert_eq!(
        store.watched_sessions("acme-prod").await.unwrap(),
        vec![super::Watched {
            session: "s-1".into(),
            by_approver: true
        }]
    );
    // A reviewer alone watching is no approver watching.
    assert!(store.watch("s-3", "acme-prod", "reviewer:r").await.unwrap());
    let w = store.watched_sessions("acme-prod").await.unwrap();
    assert_eq!(w.len(), 2);
    assert!(!w[1].by_approver, "{w:?}");
    assert!(
        store
            .watched_sessions("globex-prod")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.is_watched("s-1").await.unwrap());
    assert!(!store.is_watched("s-2").await.unwrap());
    let h = r#"{"version":2,"width":80,"height":24}"#;
    let a = "[0.1,\"o\",\"a\"]\n";
    let b = "[0.2,\"o\",\"b\"]\n";
    // A recording new to the broker may start anywhere (a late watch starts at its tail).
    let next = store.live_append("s-1", "s-1-c0", h, 100, a).await.unwrap();
    assert_eq!(next, Ok(100 + a.len() as u64));
    // A repeat and a gap are refused, naming where to go on.
    for at in [100, 100 + a.len() as u64 + 7] {
        let r = store.live_append("s-1", "s-1-c0", h, at, b).await.unwrap();
        assert_eq!(
            r,
            Err(super::OutOfOrder {
                next: Some(100 + a.len() as u64)
            })
        );
    }
    let r = store
        .live_append("s-1", "s-1-c0", h, 100 + a.len() as u64, b)
        .await
        .unwrap();
    assert_eq!(r, Ok(100 + (a.len() + b.len()) as u64));
    let live = store.live_recordings("s-1").await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].header, h);
    assert_eq!(live[0].text, format!("{a}{b}"));
    assert!(store.live_recordings("s-2").await.unwrap().is_empty());
}

/// Recordings kept in the database come back byte for byte at every chunk boundary (none,
/// one, exactly one chunk, one byte more, several); a second upload of a session changes
/// nothing; one with a chunk missing is not there; a recording stored on disk before is read
/// from disk although new ones go to the database.
#[tokio::test]
async fn recordings_in_the_database_are_whole_or_absent() {
    use crate::config::Storage;
    use crate::recordings::{Kept, Recordings};
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(dir.path()).await;
    let store = super::Store::connect(&url).await.unwrap();
    for q in [
        "INSERT INTO customers (id, name, created_at) VALUES ('acme', 'ACME', 1)",
        "INSERT INTO clusters (id, customer_id, created_at) VALUES ('acme-prod', 'acme', 1)",
        "INSERT INTO gateways (id, cluster_id, name, join_token_hash, created_at) \
         VALUES ('gw-1', 'acme-prod', 'gw1', 'h', 1)",
    ] {
        sqlx::query(q).execute(&store.pool).await.unwrap();
    }
    let data_dir = dir.path().join("data");
    let recs = Recordings::new(Storage::Database, &data_dir, store.clone());
    let row = |session: &str| super::Recording {
        session: session.into(),
        gateway: "gw-1".into(),
        cluster: "acme-prod".into(),
        engineer: None,
        ticket: None,
        node: None,
        kind: "pty".into(),
        size: 0,
        sha256: String::new(),
        path: "ignored".into(),
        created_at: 1,
        storage: Storage::DataDir,
    };
    let chunk = super::RECORDING_CHUNK;
    for (i, len) in [0, 1, chunk, chunk + 1, 3 * chunk + 5]
        .into_iter()
        .enumerate()
    {
        let bytes: Vec<u8> = (0..len).map(|j| (j * 31 % 251) as u8).collect();
        let session = format!("s-{i}");
        let received = recs
            .storing()
            .receive(
                "acme-prod",
                &session,
                axum::body::Body::from(bytes.clone()),
                1 << 30,
            )
            .await
            .unwrap();
        assert_eq!(received.size, len as u64);
        let r = super::Recording {
            size: received.size,
            sha256: received.sha256.clone(),
            ..row(&session)
        };
        assert!(matches!(
            recs.storing().keep(r, received).await.unwrap(),
            Kept::Stored
        ));
        let stored = store.recording(&session).await.unwrap().unwrap();
        assert_eq!(
            (stored.storage, stored.path.as_str()),
            (Storage::Database, "")
        );
        assert!(recs.exists(&stored).await.unwrap());
        let back = recs.read(&stored, 1 << 30).await.unwrap().unwrap();
        assert!(back == bytes, "{len}: {} bytes back", back.len());
        // Again, other bytes: the stored one stays.
        let received = recs
            .storing()
            .receive(
                "acme-prod",
                &session,
                axum::body::Body::from(vec![7u8; 3]),
                1 << 30,
            )
            .await
            .unwrap();
        let other = super::Recording {
            size: 3,
            sha256: received.sha256.clone(),
            ..row(&session)
        };
        match recs.storing().keep(other, received).await.unwrap() {
            Kept::Existing(old) => assert_eq!(old.sha256, stored.sha256),
            Kept::Stored => panic!("stored twice"),
        }
        assert!(recs.read(&stored, 1 << 30).await.unwrap().unwrap() == bytes);
    }
    // Nothing is left in the spool.
    let spool = data_dir.join("recordings").join(".incoming");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    // A chunk gone: the recording is not there (never a part of it).
    sqlx::query("DELETE FROM recording_chunks WHERE session = 's-4' AND seq = 1")
        .execute(&store.pool)
        .await
        .unwrap();
    let s4 = store.recording("s-4").await.unwrap().unwrap();
    assert!(!recs.exists(&s4).await.unwrap());
    assert!(recs.open(&s4).await.unwrap().is_none());
    // A recording stored on disk (before the database kept them) is read from disk.
    let old = super::Recording {
        size: 5,
        path: "recordings/acme-prod/s-old.cast".into(),
        ..row("s-old")
    };
    store.insert_recording(&old).await.unwrap();
    let old = store.recording("s-old").await.unwrap().unwrap();
    assert_eq!(old.storage, Storage::DataDir);
    assert!(recs.read(&old, 100).await.unwrap().is_none());
    std::fs::create_dir_all(data_dir.join("recordings/acme-prod")).unwrap();
    std::fs::write(data_dir.join("recordings/acme-prod/s-old.cast"), b"hello").unwrap();
    assert_eq!(recs.read(&old, 100).await.unwrap().unwrap(), b"hello");
}

/// Events stored by a release before the search index are indexed when the broker starts on
/// the upgraded store, once (more than one batch, several chains), and found by text.
#[tokio::test]
async fn events_stored_before_the_search_index_are_indexed_at_upgrade() {
    use crate::audit::AuditRecord;
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(dir.path()).await;
    let is_sqlite = url.starts_with("sqlite:");
    super::install_default_drivers();
    let pool = super::AnyPoolOptions::new()
        .connect(&if is_sqlite {
            format!("{url}?mode=rwc")
        } else {
            url.clone()
        })
        .await
        .unwrap();
    let all = super::migrator(is_sqlite);
    let released = super::Migrator {
        migrations: std::borrow::Cow::Owned(all.migrations[..8].to_vec()),
        ..super::Migrator::DEFAULT
    };
    released.run(&pool).await.unwrap();
    // Written as release 8 wrote them: no text anywhere.
    let mut tx = pool.begin().await.unwrap();
    let mut wanted = Vec::new();
    for source in ["gateway:a", "gateway:b", "broker"] {
        let mut prev: Option<AuditRecord> = None;
        for i in 0..2500u64 {
            let (kind, data) = if i % 10 == 0 {
                (
                    "command",
                    serde_json::json!({"command": format!("sudo systemctl restart unit{i}"), "session": "s1"}),
                )
            } else {
                ("channel_exit", serde_json::json!({"exit_status": 0}))
            };
            let r = AuditRecord::next(
                source,
                prev.as_ref().map(|p| (p.seq, p.hash.as_str())),
                1000 + i,
                kind,
                data,
            );
            sqlx::query(
                "INSERT INTO audit_events (source, seq, time_ms, kind, session, data, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&r.source)
            .bind(super::to_i64(r.seq))
            .bind(super::to_i64(r.time))
            .bind(&r.kind)
            .bind(r.subject("session"))
            .bind(r.data.to_string())
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut *tx)
            .await
            .unwrap();
            if kind == "command" && source != "broker" {
                wanted.push((source.to_string(), r.seq));
            }
            prev = Some(r);
        }
    }
    tx.commit().await.unwrap();
    pool.close().await;

    let search = |store: super::Store, text: &str| {
        let q = crate::store::AuditQuery {
            q: Some(text.into()),
            limit: Some(100_000),
            ..Default::default()
        };
        async move { store.audit_search(&q).await.unwrap() }
    };
    for _ in 0..2 {
        let store = super::Store::connect(&url).await.unwrap();
        let found = search(store.clone(), "SYSTEMCTL restart").await;
        let mut got: Vec<(String, u64)> = found.iter().map(|r| (r.source.clone(), r.seq)).collect();
        got.sort();
        assert_eq!(got, wanted);
        assert_eq!(search(store.clone(), "unit1230").await.len(), 2);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_text_backfill")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
        store.pool.close().await;
    }
}

/// A gateway's records with any text where the search index reads it (a command, a line
/// on screen, an sftp or scp path: NUL, control characters, any Unicode, as an engineer's
/// client can send them) are stored and read back exactly, on either store: the chain
/// never stops at one of them.
#[test]
fn records_with_any_text_are_stored_and_read_back() {
    use proptest::prelude::*;
    use sallyport_audit::AuditRecord;
    use serde_json::json;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let url = empty_store(dir.path()).await;
        super::Store::connect(&url).await.unwrap()
    });
    let text = prop_oneof!["\\PC{0,20}", "[\\x00-\\x1f\\x7f a]{0,6}", any::<String>()];
    let kind = prop::sample::select(vec!["command", "line_entered", "file_op", "file_transfer"]);
    let chain = proptest::collection::vec((kind, text), 1..6);
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        source_file: Some(file!()),
        ..sallyport_audit::proptest_config(64)
    });
    let n = std::cell::Cell::new(0u64);
    let result = runner.run(&chain, |chain| {
        n.set(n.get() + 1);
        let source = format!("gateway:gw{}", n.get());
        let mut records: Vec<AuditRecord> = Vec::new();
        for (i, (kind, text)) in chain.iter().enumerate() {
            let data = match *kind {
                "command" => json!({"command": text, "cluster": "acme-prod"}),
                "line_entered" => json!({"shown": text, "cluster": "acme-prod"}),
                "file_op" => {
                    json!({"op": {"op": "remove", "path": text}, "cluster": "acme-prod"})
                }
                _ => json!({"transfer": {"path": text}, "cluster": "acme-prod"}),
            };
            let prev = records.last().map(|r| (r.seq, r.hash.as_str()));
            let r = AuditRecord::next(&source, prev, 1_700_000_000_000 + i as u64, kind, data);
            records.push(r);
        }
        let (stored, back) = rt.block_on(async {
            let stored = store.ingest(&records).await;
            let back = store.audit_chain(&source, 0, 100).await.unwrap();
            (stored.map_err(|e| format!("{e:#}")), back)
        });
        prop_assert_eq!(stored, Ok(records.len() as u64));
        prop_assert_eq!(back, records);
        Ok(())
    });
    rt.block_on(store.pool.close());
    if let Err(e) = result {
        panic!("{e}");
    }
}
