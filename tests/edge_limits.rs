//! The edge's connection limit, idle timeout and graceful shutdown, with real `ssh` through a
//! real edge and gateway (both `sallyport` processes) to a real sshd node, and the edge's audit
//! events checked at the broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use sallyport_api::audit::AuditEntry;
use support::bastion::{self, Bastion, ssh};
use support::broker::*;
use support::ssh::Ssh;

/// A world whose edge address is known to the broker, with alice's approval and ticket, and an
/// edge holding a token (so it audits) with `extra` in its config; alice logged in and trusting
/// the edge. Returns the world, the bastion and alice's `SALLYPORT_HOME`.
async fn edge_world(extra: &str) -> (World, Bastion, tempfile::TempDir) {
    bastion::alice_at_the_edge().edge(extra).await
}

/// `ssh node1.acme-prod <command>` through the edge, running in the background.
fn spawn_ssh(home: &Path, command: &str) -> Child {
    spawn_ssh_with(home, command, Stdio::null())
}

fn spawn_ssh_with(home: &Path, command: &str, stdin: Stdio) -> Child {
    Ssh::engineer(home)
        .args(["node1.acme-prod", command])
        .command()
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The output of `child` once it exited; panics (with `context`) when it runs past `timeout`.
fn finish(mut child: Child, timeout: Duration, context: &dyn Fn() -> String) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ssh still running after {timeout:?}; stdout: {}\nstderr: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The finished ssh was cut by the edge (exit status 255, its command never done) and told
/// the engineer `says`.
fn disconnected_saying(out: &Output, says: &str, context: &dyn Fn() -> String) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}\n{}", context());
    assert!(!text(&out.stdout).contains("never"));
    assert!(stderr.contains(says), "{stderr}\n{}", context());
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// SIGTERM to the edge, once it says it is shutting down.
fn sigterm_edge(b: &Bastion) {
    b.edge.sigterm();
    assert!(
        b.edge
            .wait_log("edge shutting down", Duration::from_secs(5)),
        "{}",
        b.edge.log_text()
    );
}

/// The edge's events of `kind` at the broker, once there are `n`.
async fn edge_events(w: &World, kind: &str, n: usize) -> Vec<AuditEntry> {
    let source = format!("edge:{}", bastion::EDGE_NAME);
    let ev = w.wait_audit(&format!("kind={kind}&limit=1000"), n).await;
    assert!(ev.iter().all(|e| e.source == source.as_str()), "{ev:#?}");
    ev
}

/// Wait until the gateway has recorded `n` commands of the ticket: the sessions are open.
async fn wait_commands(w: &World, b: &Bastion, n: usize) {
    let cmds = w
        .wait_audit("kind=command&ticket=SUP-1234&limit=1000", n)
        .await;
    assert!(
        cmds.len() >= n,
        "{} of {n} sessions open: {cmds:#?}\n{}",
        cmds.len(),
        b.logs()
    );
}

#[tokio::test]
async fn past_max_connections_an_engineer_is_told_why_is_audited_and_a_freed_slot_serves_again() {
    let (w, b, home) = edge_world("max_connections = 2\n").await;
    let home = home.path();
    // Two sessions take both slots.
    let mut first = spawn_ssh(home, "sleep 60");
    let mut second = spawn_ssh(home, "sleep 60");
    wait_commands(&w, &b, 2).await;

    // A third is refused, and the engineer reads why.
    let out = ssh(home, &["node1.acme-prod", "echo third"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(!text(&out.stdout).contains("third"));
    assert!(
        stderr
            .contains("sallyport edge: too many connections (at most 2 at once), try again later"),
        "{stderr}\n--- edge:\n{}",
        b.edge.log_text()
    );
    // An audit event at the broker names who was refused.
    let refused: Vec<AuditEntry> = edge_events(&w, "edge_refused", 1)
        .await
        .into_iter()
        .filter(|e| opt_str(e, "code") == Some("edge_full"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let e = &refused[0];
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(e.cluster.as_deref(), Some("acme-prod"));
    assert_eq!(field_str(e, "login"), "alice");
    assert_eq!(field_str(e, "source_ip"), "127.0.0.1");
    assert_eq!(*field_of(e, "max_connections"), 2);
    assert!(field_str(e, "key_id").starts_with("sallyport:"), "{e:?}");
    assert!(field_str(e, "reason").contains("try again later"), "{e:?}");

    // The two sessions were not disturbed; when one ends, its slot serves a new connection.
    assert!(first.try_wait().unwrap().is_none());
    assert!(second.try_wait().unwrap().is_none());
    first.kill().unwrap();
    first.wait().unwrap();
    let start = Instant::now();
    loop {
        let out = ssh(home, &["node1.acme-prod", "echo again"]);
        if text(&out.stdout).trim() == "again" {
            assert_eq!(out.status.code(), Some(0));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the freed slot does not serve: {}\n--- edge:\n{}",
            text(&out.stderr),
            b.edge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(second.try_wait().unwrap().is_none());
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_a_message_and_an_active_one_is_not() {
    let idle_secs = 3;
    let (w, b, home) = edge_world(&format!("idle_timeout_secs = {idle_secs}\n")).await;
    let home = home.path();
    // Silent for far longer than the timeout, and talking every second for 8 s (more than
    // twice the timeout).
    let silent = spawn_ssh(home, "sleep 30; echo never");
    let talking = spawn_ssh(
        home,
        "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 1; done; echo done",
    );
    let log = || format!("--- edge:\n{}", b.edge.log_text());

    let out = finish(silent, Duration::from_secs(25), &log);
    disconnected_saying(
        &out,
        &format!("sallyport edge: no traffic for {idle_secs} s, disconnected"),
        &log,
    );

    let out = finish(talking, Duration::from_secs(25), &log);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        log()
    );
    assert!(
        stdout.contains("tick 8") && stdout.trim_end().ends_with("done"),
        "{stdout}"
    );

    // One disconnect, of alice's silent connection, is an audit event.
    let ev = edge_events(&w, "edge_disconnected", 1).await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(field_str(e, "code"), "idle_timeout");
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(e.cluster.as_deref(), Some("acme-prod"));
    assert!(
        field_of(e, "idle_secs").as_u64().unwrap() >= idle_secs,
        "{e:?}"
    );
    assert!(field_str(e, "reason").contains("no traffic"), "{e:?}");
}

#[tokio::test]
async fn on_sigterm_the_edge_refuses_new_connections_lets_sessions_finish_then_disconnects_and_exits()
 {
    let grace = 6;
    let (w, mut b, home) = edge_world(&format!("shutdown_grace_secs = {grace}\n")).await;
    let home = home.path();
    let edge_port = b.edge_port.to_string();

    // 1. A command that ends within the grace period completes; the edge then exits by itself.
    // (It waits for a line from the test, so it surely runs across the SIGTERM.)
    let mut running = spawn_ssh_with(home, "read line; echo \"done $line\"", Stdio::piped());
    wait_commands(&w, &b, 1).await;
    sigterm_edge(&b);
    // No new connection from here on.
    let out = ssh(home, &["node1.acme-prod", "echo new"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(!text(&out.stdout).contains("new"));
    assert!(
        stderr.contains(&format!("port {edge_port}: Connection refused")),
        "{stderr}"
    );
    // The open session goes on.
    {
        use std::io::Write;
        let mut stdin = running.stdin.take().unwrap();
        stdin.write_all(b"after sigterm\n").unwrap();
    }
    let log = || format!("--- edge:\n{}", b.edge.log_text());
    let out = finish(running, Duration::from_secs(20), &log);
    assert_eq!(
        text(&out.stdout).trim(),
        "done after sigterm",
        "{}\n{}",
        text(&out.stderr),
        log()
    );
    assert_eq!(out.status.code(), Some(0));
    let status = b.edge.wait_exit(Duration::from_secs(grace + 10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        b.edge.log_text()
    );
    let started = edge_events(&w, "edge_shutdown", 1).await;
    assert_eq!(*field_of(&started[0], "connections"), 1, "{started:#?}");
    assert_eq!(*field_of(&started[0], "grace_secs"), grace);
    let stopped = edge_events(&w, "edge_stopped", 1).await;
    assert_eq!(*field_of(&stopped[0], "drained"), true, "{stopped:#?}");
    assert_eq!(*field_of(&stopped[0], "disconnected"), 0);
    assert!(edge_events(&w, "edge_disconnected", 0).await.is_empty());

    // 2. A session still open when the grace period ends is disconnected with a message, and
    // the edge exits.
    b.restart_edge("edge-2.log");
    let lingering = spawn_ssh(home, "sleep 60; echo never");
    wait_commands(&w, &b, 2).await;
    sigterm_edge(&b);
    let log = || format!("--- edge:\n{}", b.edge.log_text());
    let out = finish(lingering, Duration::from_secs(grace + 15), &log);
    disconnected_saying(
        &out,
        &format!("sallyport edge: shutting down, disconnected after a grace period of {grace} s"),
        &log,
    );
    let status = b.edge.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        b.edge.log_text()
    );
    let stopped = edge_events(&w, "edge_stopped", 2).await;
    assert_eq!(stopped.len(), 2, "{stopped:#?}");
    let last = stopped
        .iter()
        .find(|e| *field_of(e, "drained") == false)
        .unwrap();
    assert_eq!(*field_of(last, "disconnected"), 1, "{stopped:#?}");
    let ev = edge_events(&w, "edge_disconnected", 1).await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(field_str(&ev[0], "code"), "shutdown");
    assert_eq!(ev[0].engineer.as_deref(), Some("alice"));
    assert_eq!(ev[0].ticket.as_deref(), Some("SUP-1234"));
    assert!(field_str(&ev[0], "reason").contains("shutting down"));

    // 3. A second SIGTERM ends the grace period at once: the edge exits with status 1 while a
    // session that the grace period would have let run is still open.
    b.restart_edge("edge-3.log");
    let lingering = spawn_ssh(home, "sleep 60; echo never");
    wait_commands(&w, &b, 3).await;
    sigterm_edge(&b);
    b.edge.sigterm();
    let status = b.edge.wait_exit(Duration::from_secs(grace + 10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{}",
        b.edge.log_text()
    );
    assert!(
        b.edge.log_text().contains("second signal"),
        "{}",
        b.edge.log_text()
    );
    let edge_log = b.edge.log_text();
    let out = finish(lingering, Duration::from_secs(15), &|| edge_log.clone());
    assert!(!text(&out.stdout).contains("never"));
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_in_time_is_closed_and_audited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (w, b, home) = edge_world("login_grace_secs = 4\n").await;
    // A logged-in session outlives the login grace: it has logged in (and run its first command)
    // before the stalled client connects, and runs past the grace of either.
    // Written by the node's login, which cannot enter the test's private temp dirs.
    let marker = std::path::PathBuf::from(format!("/tmp/sp-grace-alive-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let alive = spawn_ssh(
        home.path(),
        &format!("touch {}; sleep 9; echo alive", marker.display()),
    );
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the logged-in session never started\n{}",
            b.edge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A client that says hello and then never authenticates.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", b.edge_port))
        .await
        .unwrap();
    stalled
        .write_all(b"SSH-2.0-OpenSSH_9.2 stalled\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 4096];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the edge kept a connection that never logged in\n{}",
        b.edge.log_text()
    );
    let e = edge_events(&w, "edge_refused", 1).await;
    let e = e
        .iter()
        .find(|e| opt_str(e, "code") == Some("login_timeout"))
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert!(
        field_str(e, "reason").contains("not logged in within 4 s"),
        "{e:?}"
    );
    let out = alive.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(text(&out.stdout).trim(), "alive", "{}", text(&out.stderr));
}
