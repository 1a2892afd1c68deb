//! The data plane end to end: real `ssh` through a real edge and gateway (both `sallyport`
//! processes) to a real sshd node, with the audit trail checked at the broker.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::bastion::{self, LOGIN, ssh};
use support::broker::*;

/// `sallyport login` for `user` on `ticket` into `home`; panics unless it succeeds.
fn login(w: &World, home: &Path, user: &str, ticket: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args([
            "login",
            "--broker",
            &w.broker.url,
            "--user",
            user,
            "--password-stdin",
            "--totp",
        ])
        .arg(w.code(user, 0))
        .args(["--ticket", ticket, "--json"])
        .env("SALLYPORT_HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}-pw\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Trust the edge's host key for the jump hop.
fn trust_edge(home: &Path, b: &bastion::Bastion) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("known_hosts"))
        .unwrap();
    writeln!(f, "[127.0.0.1]:{} {}", b.edge_port, b.edge_host_key).unwrap();
}

/// Wait until the broker holds events matching `query` (shipped from the gateway's spool).
async fn wait_events(w: &World, query: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let ev = w.events(query).await;
        if ev.len() >= n || start.elapsed() > Duration::from_secs(20) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn world_with_edge() -> (World, u16) {
    let port = bastion::pick_edge_port();
    let w = World::start_with(
        Dir::Ldap {
            group_mode: "memberof",
        },
        &format!("edge_address = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    w.approve("acme-prod", "support-l2", &[LOGIN], json!({}))
        .await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
    (w, port)
}

#[tokio::test]
async fn exec_through_edge_and_gateway_is_recorded_with_its_exit_status() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    login(&w, home.path(), "alice", "SUP-1234");
    trust_edge(home.path(), &b);

    let out = ssh(home.path(), &["node1.acme-prod", "echo hi; exit 3"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi",
        "stderr: {}\n--- gateway:\n{}\n--- edge:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.gateway.log_text(),
        b.edge.log_text()
    );
    assert_eq!(out.status.code(), Some(3));

    // The command, with engineer, ticket, node and login, then its exit status.
    let cmds = wait_events(&w, "kind=command&ticket=SUP-1234", 1).await;
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let c = &cmds[0];
    assert_eq!(c["command"], "echo hi; exit 3");
    assert_eq!(c["engineer"], "alice");
    assert_eq!(c["node"], "node1");
    assert_eq!(c["login"], LOGIN);
    assert_eq!(c["cluster"], "acme-prod");
    assert!(c["source"].as_str().unwrap().starts_with("gateway:"));
    let session = c["session"].as_str().unwrap().to_string();
    let exits = wait_events(&w, &format!("kind=channel_exit&session={session}"), 1).await;
    assert_eq!(exits[0]["exit_status"], 3);
    // The node's own sshd log names the session and the ticket.
    assert!(
        b.node.wait_for_log("SUP-1234", Duration::from_secs(5)),
        "{}",
        b.node.log()
    );
    assert!(b.node.log().contains(&session), "{}", b.node.log());
    // The whole log, gateway chain included, verifies.
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("SALLYPORT_BROKER", &w.broker.url)
        .env("SALLYPORT_TOKEN", w.reviewer.token.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway:"));
}

#[tokio::test]
async fn the_edge_opens_no_shell_and_nodes_do_not_trust_engineer_certificates() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), "alice", "SUP-1234");
    trust_edge(home.path(), &b);
    // A shell or command on the edge itself: a message, no shell.
    let jump = format!("sallyport-edge-acme-prod");
    let out = ssh(home.path(), &[&jump, "id"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("opens no shell"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("uid="));
    // The engineer's certificate straight to the node: refused (the node trusts its node CA only).
    let key = home.path().join("acme-prod");
    let cert = home.path().join("acme-prod-cert.pub");
    let kh = home.path().join("node_kh");
    std::fs::write(&kh, b.node.known_hosts_line()).unwrap();
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args([
            "-p",
            &b.node.port().to_string(),
            &format!("{LOGIN}@127.0.0.1"),
            "id",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(issued["certificate"].is_string());
}

#[tokio::test]
async fn revoking_the_grant_ends_an_open_session() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), "alice", "SUP-1234");
    trust_edge(home.path(), &b);
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(home.path().join("ssh_config"))
        .args([
            "-o",
            "BatchMode=yes",
            "node1.acme-prod",
            "sleep 60; echo finished",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The session is open once the command is in the audit log.
    let cmds = wait_events(&w, "kind=command&ticket=SUP-1234", 1).await;
    assert_eq!(cmds.len(), 1, "{}", b.gateway.log_text());
    let (s, v) =
        w.op.post(
            "/v1/revocations",
            json!({"scope": "grant", "value": issued["grant"], "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let revoked_at = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the session outlived its revocation by 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"));
    let ended = wait_events(&w, "kind=session_terminated&ticket=SUP-1234", 1).await;
    assert_eq!(ended[0]["reason"], "the certificate was revoked");
    // And a new connection with the revoked certificate is refused.
    let out = ssh(home.path(), &["node1.acme-prod", "true"]);
    assert_ne!(out.status.code(), Some(0));
}
