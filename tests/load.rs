//! Load: 1,000 engineer sessions at once through both stages — the edge and the gateway as their
//! own processes (README's deployment, `support::deploy`), a real OpenSSH sshd as the node — each
//! running commands for a while: a third with exec, a third at an interactive pty shell, a third
//! writing and removing files over sftp. All of them complete; every command and every file
//! operation is in the audit log exactly once, every session has one start and one end, the node
//! saw one login per session, and every chain verifies. The gateway's resident memory is printed
//! (idle, with every session open, after they ended); nothing here is timed.
//!
//! `LOAD_SESSIONS=N` runs N sessions instead of 1,000 (e.g. 30 while working on it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use sallyport_api::admin::TokenCreated;
use sallyport_api::audit::{AuditEntry, AuditEvents};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use support::broker::{Api, field_of, opt_str, read_as, verify_chains};
use support::deploy::{Deployment, Extra, json_as, sp};
use support::load::{Connection, Engineer, Sftp, closed, mib, rss_kib, type_line};

/// Commands (or file operations) each session runs, a pause apart.
const ROUNDS: usize = 3;
const PAUSE: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Exec,
    Interactive,
    Sftp,
}

fn kind_of(i: usize) -> Kind {
    match i % 3 {
        0 => Kind::Exec,
        1 => Kind::Interactive,
        _ => Kind::Sftp,
    }
}

/// The marker of session `i`'s round `k`: in its command, or in its file's name.
fn marker(i: usize, k: usize) -> String {
    let kind = match kind_of(i) {
        Kind::Exec => "e",
        Kind::Interactive => "i",
        Kind::Sftp => "s",
    };
    format!("load-{i}-{kind}{k}")
}

fn content(i: usize, k: usize) -> Vec<u8> {
    format!("{}\n", marker(i, k)).repeat(100).into_bytes()
}

/// Session `i`'s work on its open connection, once every session is open (`go`).
async fn work(
    i: usize,
    conn: Connection,
    dir: Arc<str>,
    go: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<()> {
    let kind = kind_of(i);
    // Each session readies its channel before the barrier, so that all are open at once.
    let mut shell = match kind {
        Kind::Interactive => Some(conn.shell().await?),
        _ => None,
    };
    let mut sftp = match kind {
        Kind::Sftp => Some(Sftp::start(&conn).await?),
        _ => None,
    };
    go.wait().await;
    for k in 0..ROUNDS {
        let m = marker(i, k);
        match kind {
            Kind::Exec => {
                let (out, status) = conn.exec(&format!("echo {m}")).await?;
                ensure!(status == 0, "echo {m}: exit status {status}");
                ensure!(
                    out == format!("{m}\n").as_bytes(),
                    "echo {m} printed {out:?}"
                );
            }
            Kind::Interactive => {
                let shell = shell.as_mut().context("no shell")?;
                // The echo of the typed line, then the line the node prints.
                type_line(shell, &format!("echo {m}"), &m, 2).await?;
            }
            Kind::Sftp => {
                let s = sftp.as_mut().context("no sftp")?;
                let path = format!("{dir}/{m}");
                s.write_file(&path, &content(i, k)).await?;
                s.remove(&path).await?;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    if let Some(mut shell) = shell {
        shell.data(&b"exit\r"[..]).await?;
        closed(&mut shell).await?;
    }
    if let Some(sftp) = sftp {
        sftp.finish().await?;
    }
    conn.close().await;
    Ok(())
}

/// Every event of `kind` in the broker's audit log (newest first, up to 10,000).
async fn events(reviewer: &Api, kind: &str) -> Vec<AuditEntry> {
    let page: AuditEvents = reviewer
        .get_ok(&format!("/v1/audit/events?kind={kind}&limit=10000"))
        .await;
    page.events
}

/// Poll the audit log until `count` of `kind` reach `want` (the gateway ships its events in
/// batches), at most five minutes; returns the last read.
async fn settled(
    reviewer: &Api,
    kind: &str,
    want: usize,
    count: impl Fn(&[AuditEntry]) -> usize,
) -> Vec<AuditEntry> {
    let began = Instant::now();
    loop {
        let ev = events(reviewer, kind).await;
        if count(&ev) >= want || began.elapsed() > Duration::from_secs(300) {
            return ev;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What this test reads of a `file_op` event's `op` (the operation's name and path, and for a
/// close the SHA-256 of what was written through the handle).
#[derive(Debug, Deserialize)]
struct FileOp {
    op: String,
    path: Option<String>,
    sha256_written: Option<String>,
}

fn file_op(e: &AuditEntry) -> FileOp {
    read_as("a file_op's op", field_of(e, "op").clone())
}

/// How many times each command containing `of` appears in `events`.
fn tally(events: &[AuditEntry], of: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for e in events {
        if let Some(text) = e.command.as_deref().filter(|t| t.contains(of)) {
            *seen.entry(text.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_sessions_at_once_of_every_kind_are_each_recorded_once() {
    let n: usize = std::env::var("LOAD_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let parallel = 16;
    let limits = format!(
        "max_sessions = {m}\nmax_sessions_per_engineer = {m}\n",
        m = n + 10
    );
    let d = Deployment::start(Extra {
        edge: &format!("max_connections = {}\n", n + 10),
        gateway: &limits,
        // A third of the sessions reach the node at once (exec connects at the first command):
        // sshd's default MaxStartups (10:30:100) drops much of that burst, more than the
        // gateway's retries make up for (5 attempts: 43 of 1,000 sessions still failed).
        sshd: &format!("MaxStartups {m}\nMaxSessions 10\n", m = n + 10),
    })
    .await;
    let home = d.login();
    let e = Engineer::from_home(&d, &home, "node1.acme-prod");
    // The sftp sessions write into a directory the node's account may write.
    let files = tempfile::Builder::new()
        .prefix("sallyport-load.")
        .tempdir()
        .unwrap();
    Command::new("chmod")
        .args(["1777", &files.path().display().to_string()])
        .status()
        .unwrap();
    let dir: Arc<str> = files.path().display().to_string().into();
    let gw = d.gateway.pid();
    let idle = rss_kib(gw);

    // Open every session (`parallel` set-ups at a time); each then readies its channel and waits
    // for all the others before its first command.
    let go = Arc::new(tokio::sync::Barrier::new(n + 1));
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (e, gate, go, dir) = (e.clone(), gate.clone(), go.clone(), dir.clone());
        tasks.spawn(async move {
            let conn = {
                let _permit = gate.acquire_owned().await.unwrap();
                Connection::open(&e).await
            };
            match conn {
                Ok(conn) => work(i, conn, dir, go).await,
                Err(err) => {
                    go.wait().await;
                    Err(err)
                }
            }
            .with_context(|| format!("session {i} ({:?})", kind_of(i)))
        });
    }
    go.wait().await;
    let opened = began.elapsed();
    // Every session is open and about to run its first command.
    let busy = rss_kib(gw);
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(err) = r.unwrap() {
            failed.push(format!("{err:#}"));
        }
    }
    let ran = began.elapsed();
    assert!(
        failed.is_empty(),
        "{} of {n} sessions failed, e.g. {:?}\n--- edge log tail:\n{}\n--- gateway log tail:\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        tail(&d.edge.log_text()),
        tail(&d.gateway.log_text())
    );

    let reviewer = reviewer(&d);
    let ended = settled(&reviewer, "session_ended", n, |ev| ev.len()).await;
    let after = rss_kib(gw);
    println!(
        "{n} sessions: all open in {:.1} s, all done in {:.1} s; gateway resident memory: idle {}, every session open {}, after {}",
        opened.as_secs_f64(),
        ran.as_secs_f64(),
        mib(idle),
        mib(busy),
        mib(after)
    );

    // One start and one end per session, each session its own.
    let started = events(&reviewer, "session_started").await;
    let ids = |ev: &[AuditEntry]| -> BTreeSet<String> {
        ev.iter()
            .map(|e| e.session.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(started.len(), n, "session_started events");
    assert_eq!(ended.len(), n, "session_ended events");
    assert_eq!(ids(&started).len(), n, "distinct sessions started");
    assert_eq!(ids(&started), ids(&ended), "every started session ended");

    // Every command exactly once: exec and interactive, with how it ran.
    let want_commands = (0..n)
        .filter(|i| !matches!(kind_of(*i), Kind::Sftp))
        .count()
        * ROUNDS;
    let commands = settled(&reviewer, "command", want_commands, |ev| {
        tally(ev, "echo load-").len()
    })
    .await;
    let seen = tally(&commands, "echo load-");
    let mut missing = Vec::new();
    for i in (0..n).filter(|i| !matches!(kind_of(*i), Kind::Sftp)) {
        for k in 0..ROUNDS {
            let cmd = format!("echo {}", marker(i, k));
            match seen.get(&cmd) {
                Some(1) => {}
                Some(c) => panic!("{cmd:?} recorded {c} times"),
                None => missing.push(cmd),
            }
        }
    }
    assert!(missing.is_empty(), "commands never recorded: {missing:?}");
    assert_eq!(seen.len(), want_commands, "no other load command recorded");
    for c in &commands {
        let Some(cmd) = c.command.as_deref().filter(|t| t.starts_with("echo load-")) else {
            continue;
        };
        let via = if cmd.contains("-e") {
            "exec"
        } else {
            "interactive"
        };
        assert_eq!(opt_str(c, "via"), Some(via), "{c:?}");
    }

    // Every sftp write and remove once, with the SHA-256 of what was written.
    let want_files = (0..n).filter(|i| matches!(kind_of(*i), Kind::Sftp)).count() * ROUNDS;
    let ops = settled(&reviewer, "file_op", want_files * 3, |ev| ev.len()).await;
    let ops: Vec<FileOp> = ops.iter().map(file_op).collect();
    let of_kind = |op: &str| -> Vec<&FileOp> {
        ops.iter()
            .filter(|e| e.op == op)
            .filter(|e| e.path.as_deref().is_some_and(|p| p.contains("/load-")))
            .collect()
    };
    for op in ["open", "close", "remove"] {
        let paths: BTreeMap<String, usize> =
            of_kind(op).iter().fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e.path.clone().unwrap()).or_insert(0) += 1;
                m
            });
        assert_eq!(paths.len(), want_files, "sftp {op}: one per file");
        assert!(
            paths.values().all(|c| *c == 1),
            "sftp {op} recorded twice: {paths:?}"
        );
    }
    for close in of_kind("close") {
        let path = close.path.as_deref().unwrap();
        let m = path.rsplit('/').next().unwrap();
        let (i, k) = parse_marker(m);
        let want = hex(&Sha256::digest(content(i, k)));
        assert_eq!(
            close.sha256_written.as_deref(),
            Some(want.as_str()),
            "{close:?}"
        );
    }

    // The node's own log: one accepted login per session.
    let log = d.node.log();
    let accepted = log
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count();
    assert_eq!(accepted, n, "logins the node's sshd accepted");

    let chains = verify_chains(&reviewer);
    assert!(
        chains.len() >= 2,
        "the broker's and the gateway's chains: {chains:?}"
    );
}

fn parse_marker(m: &str) -> (usize, usize) {
    let mut parts = m.trim_start_matches("load-").split('-');
    let i = parts.next().unwrap().parse().unwrap();
    let k = parts.next().unwrap()[1..].parse().unwrap();
    (i, k)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A reviewer's token for the deployment's broker.
fn reviewer(d: &Deployment) -> Api {
    let op = [
        ("SALLYPORT_BROKER", d.broker.url.as_str()),
        ("SALLYPORT_TOKEN", d.operator_token.as_str()),
    ];
    let created: TokenCreated = json_as(&sp(
        d.dir.path(),
        &op,
        &["admin", "token", "load-reviewer", "--role", "reviewer"],
        "",
    ));
    Api::new(&d.broker.url, Some(&created.token))
}
