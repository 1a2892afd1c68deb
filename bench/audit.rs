//! Durable audit events per second: the gateway's spool, and the broker's ingest of what the
//! gateways ship. Run it with `tests/infra/run-tests.sh bench/audit.sh` (PostgreSQL with
//! `SALLYPORT_TEST_STORE=postgres`).
//!
//! Measured:
//! - **raw fsync** (the reference): a line appended to a file and `fdatasync`ed, in a loop, on
//!   the same filesystem as the spool — what one durable write costs here;
//! - **spool appends** (`Spool::append`: the event chained, written and `fdatasync`ed before it
//!   returns) by 1, 16 and 64 writers at once — a gateway's sessions each waiting for their
//!   command's event;
//! - **spool batches** (`Spool::append_all` of 100 events: one write, one fsync);
//! - **broker ingest** (`POST /v1/audit/records`, signed batches of 100 and 1,000 records from
//!   an enrolled gateway, the broker its own release process): records stored per second, with
//!   the broker's store (SQLite, or PostgreSQL with `SALLYPORT_TEST_STORE=postgres`).
//!
//! It measures and asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::env_num;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sallyport_audit::AuditRecord;
use sallyport_audit::writers::{GatewayKind, Writer};
use sallyport_bastion::spool::Spool;
use serde_json::json;
use support::broker::{Dir, World, signed_batch};

fn row(what: &str, n: usize, took: Duration, reference: Option<f64>) -> f64 {
    let rate = n as f64 / took.as_secs_f64();
    let ratio = reference.map_or(String::new(), |r| format!("{:>8.2}×", rate / r));
    println!("{what:<44} {rate:>12.0} /s {ratio}");
    rate
}

fn event(i: usize) -> serde_json::Value {
    json!({"session": "s-bench", "engineer": "alice", "ticket": "SUP-1", "node": "node1",
           "login": "root", "via": "interactive", "command": format!("systemctl status nginx-{i}")})
}

/// `n` fdatasync'd appends of an event-sized line to a file in `dir`.
fn raw_fsync(dir: &std::path::Path, n: usize) -> Duration {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .unwrap();
    let line = format!(
        "{}\n",
        json!({"seq": 1, "data": event(1), "hash": "0".repeat(64)})
    );
    let began = Instant::now();
    for _ in 0..n {
        f.write_all(line.as_bytes()).unwrap();
        f.sync_data().unwrap();
    }
    began.elapsed()
}

async fn spool_appends(spool: &Arc<Spool<GatewayKind>>, writers: usize, n: usize) -> Duration {
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let spool = spool.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(writers) {
                spool.append(GatewayKind::Command, event(i)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    began.elapsed()
}

/// An enrolled gateway of acme-prod: its credential and its audit key.
async fn enrolled_gateway(w: &World) -> (support::broker::Api, russh::keys::PrivateKey, String) {
    let (s, v) =
        w.op.post("/v1/clusters/acme-prod/gateways", json!({"name": "gw1"}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let token = v["join_token"].as_str().unwrap().to_string();
    let line = |k: &russh::keys::PrivateKey| k.public_key().to_openssh().unwrap();
    let node_ca = sallyport_ca::keys::generate_ed25519("node ca").unwrap();
    let host_ca = sallyport_ca::keys::generate_ed25519("host ca").unwrap();
    let audit = sallyport_ca::keys::generate_ed25519("audit").unwrap();
    let (s, v) = w
        .anon
        .post(
            "/v1/gateways/enroll",
            json!({"join_token": token, "node_ca_public_key": line(&node_ca),
                   "host_ca_public_key": line(&host_ca), "audit_public_key": line(&audit)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let api = w.anon.with(v["credential"].as_str().unwrap());
    (api, audit, format!("gateway:{id}"))
}

/// Ship `total` records in signed batches of `batch`; the time it took.
async fn ingest(
    api: &support::broker::Api,
    key: &russh::keys::PrivateKey,
    source: &str,
    last: &mut Option<AuditRecord>,
    total: usize,
    batch: usize,
) -> Duration {
    let now_ms = support::broker::now() * 1000;
    let mut records: Vec<AuditRecord> = Vec::with_capacity(total);
    for i in 0..total {
        let prev = records.last().or(last.as_ref());
        let seq = prev.map_or(1, |r| r.seq + 1);
        let mut data = event(i);
        data["cluster"] = json!("acme-prod");
        records.push(AuditRecord::next(
            source,
            prev.map(|r| (r.seq, r.hash.as_str())),
            now_ms + seq,
            "command",
            data,
        ));
    }
    let bodies: Vec<_> = records
        .chunks(batch)
        .map(|c| signed_batch(key, c, None))
        .collect();
    let began = Instant::now();
    for body in bodies {
        let (s, v) = api.post("/v1/audit/records", body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let took = began.elapsed();
    *last = records.pop();
    took
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` and clippy build this file; only `cargo bench` runs it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_num("EVENTS", 5000);
    let dir = tempfile::Builder::new()
        .prefix("sallyport-bench-audit.")
        .tempdir_in(std::env::var("SPOOL_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let fs = String::from_utf8_lossy(
        &std::process::Command::new("df")
            .args(["--output=fstype,source", &dir.path().display().to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .nth(1)
    .unwrap_or_default()
    .to_string();
    println!(
        "spool in {} ({fs}), {n} events per row\n",
        dir.path().display()
    );
    println!("{:<44} {:>15} {:>9}", "", "events", "vs fsync");
    let raw = row(
        "raw fsync (write + fdatasync)",
        n,
        raw_fsync(dir.path(), n),
        None,
    );
    let key = sallyport_ca::keys::generate_ed25519("bench audit").unwrap();
    let spool: Arc<Spool<GatewayKind>> = Spool::open(
        &dir.path().join("spool"),
        Writer::Gateway {
            id: "gw-bench".into(),
            cluster: "acme-prod".into(),
        },
        key,
    )
    .unwrap();
    for writers in [1, 16, 64] {
        let took = spool_appends(&spool, writers, n).await;
        row(
            &format!("spool append, {writers} writers at once"),
            n,
            took,
            Some(raw),
        );
    }
    let began = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let events = chunk
            .iter()
            .map(|i| (GatewayKind::Command, event(*i)))
            .collect();
        spool.append_all(events).await.unwrap();
    }
    row(
        "spool append_all, batches of 100",
        n,
        began.elapsed(),
        Some(raw),
    );

    let store = if support::broker::use_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let w = World::start(Dir::File(vec![])).await;
    let (api, audit_key, source) = enrolled_gateway(&w).await;
    let mut last = None;
    println!();
    let total = env_num("INGEST", 20000);
    for batch in [100, 1000] {
        let took = ingest(&api, &audit_key, &source, &mut last, total, batch).await;
        row(
            &format!("broker ingest ({store}), batches of {batch}"),
            total,
            took,
            None,
        );
    }
}
