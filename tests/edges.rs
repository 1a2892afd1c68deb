//! Two edges in front of one gateway (docs/deploy.md, "Several edges"): the gateway keeps a
//! tunnel to each, the broker names both (`edge_addresses`), `sallyport login` writes a jump hop
//! that tries them in turn (`sallyport connect`), and killing one edge moves new sessions to the
//! other, each recorded once; the same behind HAProxy configured as the guide shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bastion::{self, Bastion, LOGIN, Proc, ssh, start_edge, trust_edge};
use support::broker::*;

/// Wait until `p`'s log holds `needle` at least `n` times.
fn wait_count(p: &Proc, needle: &str, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if p.log_text().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `ssh node1.acme-prod 'echo WORD'` through whichever edge answers; panics unless it prints
/// WORD.
fn echo(home: &Path, word: &str, logs: &dyn Fn() -> String) {
    let out = ssh(home, &["node1.acme-prod", &format!("echo {word}")]);
    assert_printed(&out, word, &logs());
}

/// A broker with `broker_extra` in its config, alice's approval and ticket, edge A on `port_a`
/// and edge B on `port_b`, one gateway keeping a tunnel to each, and alice logged in (into the
/// returned home, trusting both edges' host keys). Returns the world, the bastion (edge A), edge
/// B and the home.
async fn two_edges(
    broker_extra: &str,
    port_a: u16,
    port_b: u16,
) -> (World, Bastion, Proc, tempfile::TempDir, Value) {
    let w = World::ldap_with(broker_extra).await;
    w.approve("acme-prod", "support-l2", &[LOGIN], json!({}))
        .await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
    let mut b = bastion::start(&w, port_a).await;

    // A second edge; the gateway is told of it and keeps a tunnel to each.
    let (edge_b, key_b, tunnel_b) = start_edge(&w, &b.dir.path().join("edge-b"), port_b);
    let mut cfg = std::fs::read_to_string(&b.gateway_config).unwrap();
    cfg.push_str(&format!(
        "[[edges]]\naddress = \"127.0.0.1:{tunnel_b}\"\nhost_key = \"{key_b}\"\n"
    ));
    std::fs::write(&b.gateway_config, cfg).unwrap();
    b.restart_gateway();
    assert!(
        wait_count(&b.edge, "gateway tunnel up", 2),
        "the restarted gateway's tunnel did not come back to edge A: {}",
        b.gateway.log_text()
    );
    assert!(
        wait_count(&edge_b, "gateway tunnel up", 1),
        "no tunnel to edge B: {}\n--- gateway:\n{}",
        edge_b.log_text(),
        b.gateway.log_text()
    );

    let home = tempfile::tempdir().unwrap();
    let issued = w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), &b);
    std::fs::OpenOptions::new()
        .append(true)
        .open(home.path().join("known_hosts"))
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "sallyport-edge-acme-prod {key_b}")
        })
        .unwrap();
    (w, b, edge_b, home, issued)
}

/// Each of `words`' `echo` commands recorded exactly once, and nothing else.
async fn each_recorded_once(w: &World, words: &[String]) {
    let cmds = w
        .wait_events("kind=command&ticket=SUP-1234", words.len())
        .await;
    for word in words {
        let n = cmds
            .iter()
            .filter(|c| c["command"] == format!("echo {word}"))
            .count();
        assert_eq!(n, 1, "{word}: {cmds:#?}");
    }
    assert_eq!(cmds.len(), words.len(), "{cmds:#?}");
}

#[tokio::test]
async fn with_two_edges_killing_either_moves_new_sessions_to_the_other() {
    let (port_a, port_b) = (bastion::pick_edge_port(), bastion::pick_edge_port());
    let (addr_a, addr_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    let (w, mut b, mut edge_b, home, issued) = two_edges(
        &format!("edge_addresses = [\"{addr_a}\", \"{addr_b}\"]\n"),
        port_a,
        port_b,
    )
    .await;

    // Login names both edges and writes a jump hop that tries them in turn.
    assert_eq!(issued["edge"], addr_a.as_str(), "{issued:#}");
    assert_eq!(issued["edges"], json!([addr_a, addr_b]), "{issued:#}");
    let config = std::fs::read_to_string(home.path().join("ssh_config")).unwrap();
    assert!(
        config.contains(&format!(" connect {addr_a} {addr_b}\n")),
        "{config}"
    );

    let mut words: Vec<String> = Vec::new();
    let mut run = |word: String, logs: &dyn Fn() -> String| {
        echo(home.path(), &word, logs);
        words.push(word);
    };
    for i in 0..4 {
        run(format!("both-up-{i}"), &String::new);
    }

    // Edge A killed: every new session goes through B.
    b.edge.kill9();
    // The jump hop asked to start at the dead edge moves on to the live one: its first line
    // is B's SSH banner.
    let mut connect = Command::new(BIN)
        .args(["connect", "--in-order", &addr_a, &addr_b])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(connect.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    let _ = connect.kill();
    let _ = connect.wait();
    for i in 0..4 {
        run(format!("a-down-{i}"), &|| edge_b.log_text());
    }

    // A back, B killed: the gateway's tunnel returns to A by itself and sessions go there.
    b.restart_edge("edge-again.log");
    edge_b.kill9();
    for i in 0..4 {
        run(format!("b-down-{i}"), &|| b.edge.log_text());
    }

    // Each session's command recorded exactly once, whichever edge carried it.
    each_recorded_once(&w, &words).await;

    // Both edges down: the engineer reads why.
    b.edge.kill9();
    let out = ssh(home.path(), &["node1.acme-prod", "echo nowhere"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no edge answered") && err.contains(&addr_a) && err.contains(&addr_b),
        "{err}"
    );
}

/// HAProxy, killed with its test.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docs/deploy.md's HAProxy example, on loopback and without `usesrc` (TPROXY routing is not
/// set up here): engineers dial the balancer's one address; killing an edge moves new sessions
/// to the other (a connection refused by the dead edge is sent to the live one, and the health
/// check takes the dead edge out).
#[tokio::test]
async fn two_edges_behind_haproxy_as_the_guide_configures_it() {
    let (port_a, port_b) = (bastion::pick_edge_port(), bastion::pick_edge_port());
    let lb_port = bastion::pick_edge_port();
    let lb = format!("127.0.0.1:{lb_port}");
    let (w, mut b, edge_b, home, issued) =
        two_edges(&format!("edge_address = \"{lb}\"\n"), port_a, port_b).await;
    assert_eq!(issued["edges"], json!([lb]), "{issued:#}");
    let config = std::fs::read_to_string(home.path().join("ssh_config")).unwrap();
    assert!(!config.contains("ProxyCommand"), "{config}");

    let cfg = b.dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 12h\n    timeout server 12h\n    retries 3\n    option redispatch 1\nfrontend sallyport_edges\n    bind {lb}\n    default_backend edges\nbackend edges\n    balance leastconn\n    server edge-a 127.0.0.1:{port_a} check inter 500ms fall 2 rise 2\n    server edge-b 127.0.0.1:{port_b} check inter 500ms fall 2 rise 2\n"
        ),
    )
    .unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _haproxy = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut words: Vec<String> = Vec::new();
    let mut run = |word: String, logs: &dyn Fn() -> String| {
        echo(home.path(), &word, logs);
        words.push(word);
    };
    // The balancer may take a moment to listen: the first session waits for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&lb).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..4 {
        run(format!("both-up-{i}"), &String::new);
    }
    b.edge.kill9();
    for i in 0..4 {
        run(format!("a-down-{i}"), &|| edge_b.log_text());
    }
    each_recorded_once(&w, &words).await;
}
