//! SIGHUP: the broker, the edge and the gateway (three processes, as deployed) read their config
//! again, apply what can change while they run, name what needs a restart, refuse a config that
//! is not usable (and keep serving with the one they have), and audit each outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_api::audit::AuditEntry;
use support::broker::{assert_printed, field_of, field_str, opt_str, printed};
use support::deploy::{Deployment, Extra, sp, text, write_directory};
use support::load::{AnyHostKey, Engineer};

fn hup(pid: u32) {
    let st = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -HUP {pid}");
}

/// Append `line` to the config file `name` of the deployment (top-level keys go first).
fn set(d: &Deployment, name: &str, line: &str) {
    let path = d.dir.path().join(name);
    let old = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{line}\n{old}")).unwrap();
}

/// The audit events of `kind` (newest first), waiting until there are at least `n`.
fn events(d: &Deployment, kind: &str, n: usize) -> Vec<AuditEntry> {
    let env: &[(&str, &str)] = &[
        ("SALLYPORT_BROKER", &d.broker.url),
        ("SALLYPORT_TOKEN", &d.operator_token),
    ];
    let began = Instant::now();
    loop {
        let out = sp(
            d.dir.path(),
            env,
            &["audit", "search", "--kind", kind, "--json"],
            "",
        );
        let found: Vec<AuditEntry> = text(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if found.len() >= n || began.elapsed() > Duration::from_secs(30) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `sallyport login` as alice (see `Deployment::try_login`): whether it succeeded, and what it
/// printed.
fn login(d: &Deployment, password: &str, periods: i64) -> (bool, String) {
    let out = d.try_login(password, periods);
    (out.status.success(), printed(&out))
}

#[tokio::test]
async fn the_broker_reads_its_directory_again_on_sighup_and_refuses_a_broken_config() {
    let d = Deployment::start(Extra::default()).await;
    let etc = d.dir.path();
    // The operator rotates alice's password in the directory file and changes a setting that
    // only a restart takes.
    write_directory(etc, "alice-rotated-password-2");
    set(&d, "broker.toml", "max_body_bytes = 2000000");
    let (ok, said) = login(&d, "alice-rotated-password-2", -1);
    assert!(
        !ok,
        "the new password works before the broker read it: {said}"
    );
    assert!(said.contains("wrong user name or password"), "{said}");

    hup(d.broker.pid());
    let reloaded = events(&d, "admin_change", 0)
        .into_iter()
        .filter(|e| opt_str(e, "action") == Some("config_reloaded"))
        .count();
    let began = Instant::now();
    let event = loop {
        let found: Vec<AuditEntry> = events(&d, "admin_change", 1)
            .into_iter()
            .filter(|e| opt_str(e, "action") == Some("config_reloaded"))
            .collect();
        if found.len() > reloaded || began.elapsed() > Duration::from_secs(30) {
            break found.into_iter().next().expect("no config_reloaded event");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let target = field_str(&event, "target");
    assert!(
        target.contains("needs a restart: max_body_bytes"),
        "{event:?}"
    );
    assert_eq!(field_str(&event, "by"), "operator (SIGHUP)", "{event:?}");
    let (ok, said) = login(&d, "alice-rotated-password-2", 0);
    assert!(
        ok,
        "the rotated password does not work after SIGHUP: {said}"
    );

    // A config that does not parse changes nothing: the broker keeps serving, and says why.
    set(&d, "broker.toml", "listen = ");
    hup(d.broker.pid());
    let began = Instant::now();
    let refused = loop {
        let found: Vec<AuditEntry> = events(&d, "admin_change", 1)
            .into_iter()
            .filter(|e| opt_str(e, "action") == Some("config_reload_refused"))
            .collect();
        if !found.is_empty() || began.elapsed() > Duration::from_secs(30) {
            break found
                .into_iter()
                .next()
                .expect("no config_reload_refused event");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        field_str(&refused, "target").contains("broker.toml"),
        "{refused:?}"
    );
    assert!(
        d.broker.log_text().contains("config not reloaded"),
        "{}",
        d.broker.log_text()
    );
    let (ok, said) = login(&d, "alice-rotated-password-2", 1);
    assert!(
        ok,
        "the broker stopped serving after a broken config: {said}"
    );
}

/// How many of `n` forwards to the node one engineer connection to the edge gets.
async fn forwards(d: &Deployment, home: &Path, n: usize) -> usize {
    let e = Engineer::from_home(d, home, "node1.acme-prod");
    let mut h = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        e.edge,
        AnyHostKey,
    )
    .await
    .unwrap();
    let auth = h
        .authenticate_openssh_cert("alice", e.key, e.cert)
        .await
        .unwrap();
    assert!(auth.success());
    let mut open = Vec::new();
    for _ in 0..n {
        if let Ok(c) = h
            .channel_open_direct_tcpip("node1.acme-prod", 22, "127.0.0.1", 40000)
            .await
        {
            open.push(c);
        }
    }
    let got = open.len();
    drop(open);
    let _ = h
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    got
}

/// `ssh node1.acme-prod CMD` through both stages as alice.
fn ssh(home: &Path, cmd: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(home.join("ssh_config"))
        .args(["-o", "BatchMode=yes", "node1.acme-prod", cmd])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test]
async fn the_edge_and_the_gateway_take_new_limits_on_sighup_and_refuse_a_broken_config() {
    let d = Deployment::start(Extra::default()).await;
    let home = d.login();
    assert_eq!(forwards(&d, &home, 3).await, 3);

    // The edge: one forward per connection from now on; `listen` only at a restart.
    set(&d, "edge.toml", "max_forwards_per_connection = 1");
    hup(d.edge.pid());
    let event = events(&d, "edge_config_reloaded", 1)
        .into_iter()
        .next()
        .expect("no edge_config_reloaded event");
    assert_eq!(
        *field_of(&event, "applied"),
        serde_json::json!(["max_forwards_per_connection"]),
        "{event:?}"
    );
    assert_eq!(forwards(&d, &home, 3).await, 1);

    // The gateway: one session per engineer from now on; a changed retention needs a restart.
    set(
        &d,
        "gateway.toml",
        "max_sessions_per_engineer = 1\nrecording_retention_secs = 60",
    );
    hup(d.gateway.pid());
    let event = events(&d, "gateway_config_reloaded", 1)
        .into_iter()
        .next()
        .expect("no gateway_config_reloaded event");
    assert_eq!(
        *field_of(&event, "applied"),
        serde_json::json!(["max_sessions_per_engineer"]),
        "{event:?}"
    );
    assert_eq!(
        *field_of(&event, "needs_restart"),
        serde_json::json!(["recording_retention_secs"]),
        "{event:?}"
    );
    let mut first = ssh(&home, "echo first-up; sleep 30").spawn().unwrap();
    let began = Instant::now();
    while !d.node.log().contains("Accepted publickey") && began.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = ssh(&home, "echo second").output().unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second session ran: {said}");
    assert!(
        said.contains("at most 1 sessions of one engineer"),
        "{said}"
    );
    let _ = first.kill();
    let _ = first.wait();

    // Broken configs: refused, audited, and both keep serving with what they have.
    set(&d, "edge.toml", "max_forwards_per_connection = \"many\"");
    let gateway_toml = d.dir.path().join("gateway.toml");
    let text_now = std::fs::read_to_string(&gateway_toml).unwrap();
    assert!(text_now.contains("broker = \"http://"), "{text_now}");
    std::fs::write(
        &gateway_toml,
        text_now.replace("broker = \"http://", "broker = \"ftp://"),
    )
    .unwrap();
    hup(d.edge.pid());
    hup(d.gateway.pid());
    let edge_refused = events(&d, "edge_config_reload_refused", 1);
    assert!(
        !edge_refused.is_empty(),
        "no edge_config_reload_refused event"
    );
    assert!(
        field_str(&edge_refused[0], "reason").contains("edge.toml"),
        "{:?}",
        edge_refused[0]
    );
    let gw_refused = events(&d, "gateway_config_reload_refused", 1);
    assert!(
        !gw_refused.is_empty(),
        "no gateway_config_reload_refused event"
    );
    assert!(
        field_str(&gw_refused[0], "reason").starts_with("broker: "),
        "{:?}",
        gw_refused[0]
    );
    assert_eq!(forwards(&d, &home, 3).await, 1);
    let out = ssh(&home, "echo still-$((40+2))").output().unwrap();
    assert_printed(&out, "still-42", "");
}
