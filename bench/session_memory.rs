//! Memory per session of the edge and of the gateway, each its own process (release build),
//! and whether it returns to its idle level once sessions end. Run it with
//! `bench/session_memory.sh` (it raises the open-file limit; see that file for the knobs).
//!
//! The deployment is README's (`tests/support/deploy.rs`): broker, edge and gateway as three
//! `sallyport` processes, a real OpenSSH sshd as the node. The sessions come from a load client
//! in this process — what `ssh -J` does, with russh: one connection to the edge per session,
//! a forward to `node1.acme-prod:22` in it, the engineer's SSH session to the gateway through
//! that forward, a pty and a shell — held idle once the node's shell has printed its prompt
//! (`tests/support/load.rs`; thousands of OpenSSH clients would cost the machine more than what
//! is measured).
//!
//! With `NODE=stand-in` the node is a **stand-in**: an SSH server (russh) in a process of its own
//! (this program run again with `--stand-in`) that accepts the gateway's certificate without
//! checking it and answers a pty shell with a prompt, then waits (`support::load::start_stand_in`). It is for the session counts a real sshd cannot hold on this machine (every
//! OpenSSH session is two sshd processes and a shell: 10,000 of them need tens of GiB); the edge
//! and the gateway do the same work either way (the gateway still connects to the node with a
//! per-session certificate and checks its registered host key). Run both kinds at the same count
//! to see what the node's kind changes.
//!
//! Under each count it prints the file descriptors each process holds (the edge, the gateway,
//! the load client, and the stand-in node): each is bound by its own limit (`ulimit -n`).
//!
//! Resident memory is VmRSS of /proc/PID/status; "settled" means every file descriptor that
//! the sessions opened in the edge and the gateway is closed again. It measures and asserts
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::env_num;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::deploy::{Deployment, Extra};
use support::load::{Connection, Engineer, mib, rss_kib as rss, stand_in_main, start_stand_in};

/// One engineer session held open: the connections and the shell channel.
struct Held {
    conn: Connection,
    _shell: russh::Channel<russh::client::Msg>,
}

async fn open(e: Engineer) -> anyhow::Result<Held> {
    let conn = Connection::open(&e).await?;
    let shell = conn.shell().await?;
    Ok(Held {
        conn,
        _shell: shell,
    })
}

/// Open `n` sessions, `parallel` set-ups at a time.
async fn open_many(e: &Engineer, n: usize, parallel: usize) -> anyhow::Result<Vec<Held>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (e, gate) = (e.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            open(e).await
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(h) => held.push(h),
            Err(err) => {
                return Err(err.context(format!(
                    "session {} of {n} could not be opened",
                    held.len() + 1
                )));
            }
        }
    }
    Ok(held)
}

/// Open `n` sessions or stop the bench with why, and the last lines of the stages' logs.
async fn open_or_stop(d: &Deployment, e: &Engineer, n: usize, parallel: usize) -> Vec<Held> {
    match open_many(e, n, parallel).await {
        Ok(held) => held,
        Err(err) => {
            for (name, stage) in [("edge", &d.edge), ("gateway", &d.gateway)] {
                let log = stage.log_text();
                let lines: Vec<&str> = log.lines().collect();
                println!("--- the {name}'s log, last lines:");
                for l in &lines[lines.len().saturating_sub(15)..] {
                    println!("{l}");
                }
            }
            panic!("{err:#}");
        }
    }
}

async fn close_all(held: Vec<Held>) {
    let mut tasks = tokio::task::JoinSet::new();
    for h in held {
        tasks.spawn(h.conn.close());
    }
    while tasks.join_next().await.is_some() {}
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Connections to the broker (HTTP keep-alive) come and go whatever the sessions do.
const SLACK_FDS: usize = 4;

/// Wait until the edge and the gateway hold no more file descriptors than at `base` (every
/// session's sockets and recording files are closed; up to [`SLACK_FDS`] more), then three
/// seconds more (the allocator returns freed pages after a second).
async fn settle(pids: [u32; 2], base: [usize; 2]) -> Duration {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(120) {
        if pids.iter().zip(base).all(|(p, b)| fds(*p) <= b + SLACK_FDS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = began.elapsed();
    for (p, b) in pids.iter().zip(base) {
        if fds(*p) > b + SLACK_FDS {
            println!(
                "  (pid {p} still holds {} descriptors more than idle: {:?})",
                fds(*p) - b,
                fd_targets(*p)
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    took
}

/// Wait until the gateway's recordings directory holds no recording (each is deleted once the
/// broker has it; up to five minutes), then three seconds more. Returns how long it took.
async fn wait_delivered(dir: &Path) -> Duration {
    let began = Instant::now();
    let left = || {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.ends_with(".cast") || name.ends_with(".cast.part")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    while left() > 0 && began.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = began.elapsed();
    if left() > 0 {
        println!(
            "  ({} recordings still in {} after 300 s)",
            left(),
            dir.display()
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    took
}

fn fd_targets(pid: u32) -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

fn per_session(from: u64, to: u64, n: usize) -> String {
    format!("{:.0} KiB", (to as f64 - from as f64) / n as f64)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--stand-in") {
        stand_in_main().await;
        return;
    }
    // `cargo test --all-targets` and clippy build this file; only `cargo bench` runs it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let points: Vec<usize> = std::env::var("SESSIONS")
        .unwrap_or_else(|_| "100,500,1000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("SESSIONS: numbers, comma-separated")
        })
        .collect();
    let rounds = env_num("ROUNDS", 10);
    let per_round = env_num("ROUND_SESSIONS", 500);
    let parallel = env_num("PARALLEL", 16);
    // Idle sessions' screen models rest after the gateway's REST_AFTER (10 s) without traffic.
    let idle_wait = env_num("IDLE_WAIT", 16);
    let most = points.iter().copied().max().unwrap_or(0).max(per_round);
    let limits = format!(
        "max_sessions = {}\nmax_sessions_per_engineer = {}\n",
        most + 10,
        most + 10
    );
    let d = Deployment::start(Extra {
        edge: &format!("max_connections = {}\n", most + 10),
        gateway: &limits,
        sshd: &format!(
            "MaxStartups {p}:100:{p}\nMaxSessions 10\n",
            p = parallel * 4
        ),
    })
    .await;
    let home = d.login();
    let (node, stand_in) = match std::env::var("NODE").as_deref() {
        Ok("stand-in") => {
            let (node, process) = start_stand_in(&d).await;
            (node, Some(process))
        }
        Ok("sshd") | Err(_) => ("node1.acme-prod".into(), None),
        Ok(other) => panic!("NODE: sshd or stand-in, not {other:?}"),
    };
    let node_pid = stand_in.as_ref().and_then(|p| p.id());
    let e = Engineer::from_home(&d, &home, &node);
    let pids = [d.edge.pid(), d.gateway.pid()];
    let rss_both = || (rss(pids[0]), rss(pids[1]));
    describe(Path::new("/proc/cpuinfo"));

    // Warm-up: the first sessions load keys, certificates, caches.
    let base_fds = [fds(pids[0]), fds(pids[1])];
    close_all(open_or_stop(&d, &e, 20, parallel).await).await;
    settle(pids, base_fds).await;
    if let Some(wait) = std::env::var("PROFILE_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!(
            "edge pid {}, gateway pid {}: attach a profiler now (e.g. heaptrack -p PID); going on in {wait} s",
            pids[0], pids[1]
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    let (edge0, gw0) = rss_both();
    let node_kind = if &*node == "node1.acme-prod" {
        "a real sshd"
    } else {
        "a stand-in node (NODE=stand-in)"
    };
    println!(
        "edge and gateway as their own processes; idle pty shells on {node_kind}, measured {idle_wait} s after the last one opened"
    );
    println!();
    println!(
        "{:>9} {:>12} {:>12}   {:>22} {:>22}",
        "sessions", "edge RSS", "gateway RSS", "edge per session", "gateway per session"
    );
    println!("{:>9} {:>12} {:>12}", 0, mib(edge0), mib(gw0));
    let alloc0 = print_alloc(&d, None, 0).await;
    let mut held = Vec::new();
    let mut last = (0usize, edge0, gw0);
    let began = Instant::now();
    for &n in &points {
        held.extend(open_or_stop(&d, &e, n - held.len(), parallel).await);
        tokio::time::sleep(Duration::from_secs(idle_wait as u64)).await;
        let (edge, gw) = rss_both();
        println!(
            "{:>9} {:>12} {:>12}   {:>10} (slope {:>6}) {:>10} (slope {:>6})",
            n,
            mib(edge),
            mib(gw),
            per_session(edge0, edge, n),
            per_session(last.1, edge, n - last.0),
            per_session(gw0, gw, n),
            per_session(last.2, gw, n - last.0),
        );
        print_alloc(&d, alloc0, n).await;
        print_fds(pids, node_pid, base_fds, n);
        last = (n, edge, gw);
    }
    if let Some(hold) = std::env::var("PROFILE_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!(
            "holding the {} sessions {hold} s: stop a profiled stage now to see what they hold (kill -9 PID)",
            held.len()
        );
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let opened = held.len();
    let took = began.elapsed();
    close_all(held).await;
    let settled = settle(pids, base_fds).await;
    let (edge_after, gw_after) = rss_both();
    println!(
        "{:>9} {:>12} {:>12}   (all {opened} closed; set-up {:.1} s, {:.0} sessions/s; settled in {:.1} s)",
        "after",
        mib(edge_after),
        mib(gw_after),
        took.as_secs_f64(),
        opened as f64 / took.as_secs_f64(),
        settled.as_secs_f64()
    );
    let delivered = wait_delivered(&d.dir.path().join("gw-data/recordings")).await;
    let (edge_later, gw_later) = rss_both();
    println!(
        "{:>9} {:>12} {:>12}   (the gateway's recordings all delivered to the broker {:.1} s later)",
        "delivered",
        mib(edge_later),
        mib(gw_later),
        delivered.as_secs_f64(),
    );
    print_alloc(&d, None, 0).await;
    let (n, edge_n, gw_n) = last;
    println!(
        "\nper idle session at {n}: edge {}, gateway {}, both {}",
        per_session(edge0, edge_n, n),
        per_session(gw0, gw_n, n),
        per_session(edge0 + gw0, edge_n + gw_n, n)
    );

    if rounds == 0 {
        return;
    }
    println!("\n{rounds} rounds of {per_round} sessions: opened, then all closed");
    println!(
        "{:>6} {:>12} {:>12}   {:>12} {:>12}",
        "round", "edge open", "gateway open", "edge after", "gateway after"
    );
    let (edge_start, gw_start) = rss_both();
    println!(
        "{:>6} {:>12} {:>12}   {:>12} {:>12}",
        "start",
        "",
        "",
        mib(edge_start),
        mib(gw_start)
    );
    let mut after = (edge_start, gw_start);
    for round in 1..=rounds {
        let held = open_or_stop(&d, &e, per_round, parallel).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (edge_open, gw_open) = rss_both();
        close_all(held).await;
        settle(pids, base_fds).await;
        after = rss_both();
        println!(
            "{:>6} {:>12} {:>12}   {:>12} {:>12}",
            round,
            mib(edge_open),
            mib(gw_open),
            mib(after.0),
            mib(after.1)
        );
    }
    let total = rounds * per_round;
    println!(
        "\nafter {total} sessions: edge {:+.1} MiB ({:+.2} KiB per ended session), gateway {:+.1} MiB ({:+.2} KiB per ended session)",
        (after.0 as f64 - edge_start as f64) / 1024.0,
        (after.0 as f64 - edge_start as f64) / total as f64,
        (after.1 as f64 - gw_start as f64) / 1024.0,
        (after.1 as f64 - gw_start as f64) / total as f64,
    );
}

/// The file descriptors each process holds with `n` sessions open, and per session in the edge
/// and the gateway (over what they held idle, `base`).
fn print_fds(pids: [u32; 2], node: Option<u32>, base: [usize; 2], n: usize) {
    let per = |now: usize, base: usize| (now as f64 - base as f64) / n as f64;
    let (edge, gw) = (fds(pids[0]), fds(pids[1]));
    let node = node
        .map(|p| format!(", stand-in node {}", fds(p)))
        .unwrap_or_default();
    println!(
        "{:>9} edge {edge} ({:.2} per session), gateway {gw} ({:.2} per session), load client {}{node}",
        "fds",
        per(edge, base[0]),
        per(gw, base[1]),
        fds(std::process::id()),
    );
}

/// With the feature `alloc-stats`: the stage's jemalloc statistics (bytes allocated, bytes
/// resident), asked for with SIGUSR1 and read from its log. `None` without the feature.
async fn alloc_stats(stage: &support::bastion::Proc) -> Option<(u64, u64)> {
    if !cfg!(feature = "alloc-stats") {
        return None;
    }
    let before = stage.log_text().matches("alloc-stats ").count();
    let sent = std::process::Command::new("kill")
        .args(["-USR1", &stage.pid().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !sent {
        return None;
    }
    for _ in 0..100 {
        let text = stage.log_text();
        if text.matches("alloc-stats ").count() > before {
            let line = text.lines().rev().find(|l| l.contains("alloc-stats "))?;
            let field = |name: &str| -> Option<u64> {
                let at = line.find(&format!("{name}="))? + name.len() + 1;
                line[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            return Some((field("allocated")? / 1024, field("resident")? / 1024));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The two stages' allocator statistics, as a line under the RSS table (nothing without the
/// feature); `base` is what they were with no session open.
async fn print_alloc(
    d: &Deployment,
    base: Option<[(u64, u64); 2]>,
    n: usize,
) -> Option<[(u64, u64); 2]> {
    let now = [alloc_stats(&d.edge).await?, alloc_stats(&d.gateway).await?];
    let show = |(alloc, res): (u64, u64), b: Option<(u64, u64)>| match b {
        Some((a0, r0)) if n > 0 => format!(
            "allocated {} ({}), resident {} ({})",
            mib(alloc),
            per_session(a0, alloc, n),
            mib(res),
            per_session(r0, res, n)
        ),
        _ => format!("allocated {}, resident {}", mib(alloc), mib(res)),
    };
    println!(
        "{:>9} edge {}; gateway {}",
        "jemalloc",
        show(now[0], base.map(|b| b[0])),
        show(now[1], base.map(|b| b[1]))
    );
    Some(now)
}

fn describe(cpuinfo: &Path) {
    let cpus = std::fs::read_to_string(cpuinfo)
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let model = std::fs::read_to_string(cpuinfo)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!("machine: {cpus} cores ({model})");
}
