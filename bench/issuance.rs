//! Certificate issuance: what an engineer waits for, and how many certificates a broker issues per
//! second, beside the raw signing rate of the same certificate. Run it with
//! `tests/infra/run-tests.sh bench/issuance.sh` (it needs the test slapd).
//!
//! The broker is its own `sallyport broker` process (release build) on SQLite, with the test
//! slapd as its directory (LDAP bind and group check), as `tests/control_plane.rs` starts it.
//! Measured:
//! - **raw signing**: the engineer certificate built and signed with the CA's Ed25519 key in this
//!   process (`sallyport_ca::cert::build_session_cert`, the same builder and signature), one core;
//! - **`POST /v1/certificates`** with a logged-in engineer's session, at 1, 8 and 64 requests
//!   in flight: p50 and p99 latency and certificates per second (each one: ticket and approval
//!   read, LDAP groups, the Cedar policy, the signature, the certificate and its audit event
//!   stored), twice: with the default config (the groups read from slapd at every issuance) and
//!   with `groups_cache_secs = 60` (read once a minute per engineer);
//! - **`sallyport login`** end to end (the CLI: LDAP bind, TOTP, key made, certificate written),
//!   once per TOTP period an engineer may use: a few samples, not a rate (a TOTP code is good
//!   for one login).
//!
//! It measures and asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::env_num;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::broker::{Api, Dir, World, engineer_key};

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Sign `n` certificates in this process; returns the rate and the latencies.
fn raw_signing(n: usize) -> (f64, Vec<Duration>) {
    let ca = sallyport_ca::keys::generate_ed25519("bench ca").unwrap();
    let subject = sallyport_ca::keys::generate_ed25519("bench engineer").unwrap();
    let key_id = sallyport_ca::keyid::SessionKeyId::new("s-0001", "alice", "SUP-1234").unwrap();
    let mut took = Vec::with_capacity(n);
    let began = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let cert = sallyport_ca::cert::build_session_cert(
            &ca,
            subject.public_key(),
            "sallyport-node",
            &key_id,
            1_700_000_000,
            1_700_003_600,
            false,
        )
        .unwrap();
        took.push(t.elapsed());
        std::hint::black_box(cert);
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    took.sort();
    (rate, took)
}

/// `n` certificate requests, `parallel` in flight; returns the rate and sorted latencies.
async fn issue(
    session: &Api,
    n: usize,
    parallel: usize,
    keys: &Arc<Vec<String>>,
) -> (f64, Vec<Duration>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    let began = Instant::now();
    for i in 0..n {
        let (session, gate, keys) = (session.clone(), gate.clone(), keys.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let body = json!({"public_key": keys[i % keys.len()], "ticket": "SUP-1234"});
            let t = Instant::now();
            let (s, v) = session.post("/v1/certificates", body).await;
            let took = t.elapsed();
            assert_eq!(s, StatusCode::OK, "{v}");
            took
        });
    }
    let mut took = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        took.push(r.unwrap());
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    took.sort();
    (rate, took)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` and clippy build this file; only `cargo bench` runs it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let per_level = env_num("REQUESTS", 2000);
    let raw_n = env_num("RAW", 20_000);
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let store = match std::env::var("SALLYPORT_TEST_STORE").as_deref() {
        Ok("postgres") => "PostgreSQL",
        _ => "SQLite",
    };
    println!(
        "sallyport issuance bench: {cpus} cores; broker on {store}, directory: the test slapd"
    );
    println!();

    let (raw_rate, raw) = raw_signing(raw_n);
    println!(
        "{:<50} {:>9} {:>9} {:>12}",
        "", "p50 ms", "p99 ms", "per second"
    );
    println!(
        "{:<50} {:>9} {:>9} {:>12.0}",
        format!("raw signing ({raw_n}, one core)"),
        ms(quantile(&raw, 0.5)),
        ms(quantile(&raw, 0.99)),
        raw_rate
    );

    let ldap_url =
        std::env::var("SALLYPORT_TEST_LDAP_URI").expect("run under tests/infra/run-tests.sh");
    let mut best: f64 = 0.0;
    let mut last = None;
    for (label, cache) in [("", ""), (", cache 60 s", "groups_cache_secs = 60\n")] {
        let w = World::start(Dir::LdapAt {
            url: ldap_url.clone(),
            extra: format!("group_mode = \"memberof\"\n{cache}"),
        })
        .await;
        w.approve("acme-prod", "support-l2", &["sallyport-node"], json!({}))
            .await;
        w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
        let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let session = w.anon.with(v["token"].as_str().unwrap());
        let keys: Arc<Vec<String>> = Arc::new((0..64).map(|_| engineer_key().1).collect());
        // Warm-up: connections, caches, the first groups read.
        issue(&session, 50, 8, &keys).await;
        for parallel in [1, 8, 64] {
            let (rate, took) = issue(&session, per_level, parallel, &keys).await;
            best = best.max(rate);
            println!(
                "{:<50} {:>9} {:>9} {:>12.0}",
                format!("POST /v1/certificates, {parallel} in flight{label}"),
                ms(quantile(&took, 0.5)),
                ms(quantile(&took, 0.99)),
                rate
            );
        }
        last = Some(w);
    }
    let w = last.unwrap();

    // `sallyport login`, end to end, once per engineer and TOTP period it may use.
    // alice and dave are in support-l2 (tests/infra/ldap/seed.ldif).
    w.ticket("SUP-2", "acme-prod", "dave", "open").await;
    let mut logins = Vec::new();
    for (engineer, ticket) in [("alice", "SUP-1234"), ("dave", "SUP-2")] {
        for offset in [1, -1] {
            let home = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let out = w
                .spawn_login_cli(
                    home.path(),
                    engineer,
                    ticket,
                    &w.code(engineer, offset),
                    &[],
                )
                .wait_with_output()
                .unwrap();
            let took = t.elapsed();
            if out.status.success() {
                logins.push(took);
            } else {
                println!(
                    "  (sallyport login as {engineer} refused: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    logins.sort();
    println!(
        "{:<50} {:>9} {:>9} {:>12}",
        format!("sallyport login, end to end ({} logins)", logins.len()),
        ms(quantile(&logins, 0.5)),
        ms(quantile(&logins, 1.0)),
        "-"
    );
    println!();
    println!(
        "issuance through the broker at its best: {best:.0} certificates/s, {:.1}% of raw signing on one core",
        100.0 * best / raw_rate
    );
    let issued = w.events("kind=certificate_issued&limit=1").await;
    if issued.first().is_none_or(Value::is_null) {
        println!("  (no certificate_issued event found: check the broker's log)");
    }
}
