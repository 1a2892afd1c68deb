//! The attack suite: an engineer (or the holder of a leaked credential) tries to get past a
//! control, through the real interfaces. Each test shows the attempt refused with a clear error
//! and an audit event.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::bastion::{self, trust_edge, world_with_edge};

fn ssh_cmd(home: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(home.join("ssh_config"))
        .args(["-o", "BatchMode=yes"]);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A control master (one SSH connection) to `host`, ready: the process and its `ControlPath=`
/// option for the clients that multiplex over it.
fn control_master(home: &Path, host: &str) -> (Child, String) {
    let mux = home.join(format!("{host}.mux"));
    let mux_opt = format!("ControlPath={}", mux.display());
    let mut master = ssh_cmd(home);
    master.args(["-o", "ControlMaster=yes", "-o", &mux_opt, "-N", host]);
    let master = spawn(master);
    let start = Instant::now();
    while !mux.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no control master to {host}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (master, mux_opt)
}

/// Wait until `path` exists (a command on the node is running).
fn wait_file(path: &str) {
    let start = Instant::now();
    while !Path::new(path).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{path} never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Channels per engineer session at the gateway are bounded.
#[tokio::test]
async fn one_session_cannot_open_unbounded_channels_at_the_gateway() {
    let (w, port) = world_with_edge().await;
    let mut b = bastion::start(&w, port).await;
    b.reconfigure_gateway("max_channels_per_session = 2\n");
    let home = tempfile::tempdir().unwrap();
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), &b);
    // One connection (a ControlMaster), several sessions through it.
    let (mut master, mux_opt) = control_master(home.path(), "node1.acme-prod");
    // The sessions must go through the master: no fallback to a connection of their own.
    let mux_opt = mux_opt.as_str();
    let ssh_mux = || {
        let mut c = ssh_cmd(home.path());
        c.args(["-o", mux_opt, "-o", "ProxyCommand=false"]);
        c
    };
    let tag = format!("/tmp/sp-at-chan-{}", std::process::id());
    let _ = std::fs::remove_file(format!("{tag}-third"));
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = ssh_mux();
        c.args(["node1.acme-prod", &format!("touch {tag}-{i}; sleep 8")]);
        held.push(spawn(c));
        wait_file(&format!("{tag}-{i}"));
    }
    let mut third = ssh_mux();
    third.args(["node1.acme-prod", &format!("touch {tag}-third")]);
    let out = third.stdin(Stdio::null()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused"), "{said}");
    assert!(
        !Path::new(&format!("{tag}-third")).exists(),
        "a third channel ran"
    );
    let refused = w
        .wait_events("kind=channel_refused&ticket=SUP-1234", 1)
        .await;
    assert!(
        refused
            .iter()
            .any(|e| e["code"] == "too_many_channels" && e["limit"] == 2),
        "{refused:#?}"
    );
    // A channel that ends frees its slot.
    for mut h in held {
        let _ = h.wait();
    }
    let mut again = ssh_mux();
    again.args(["node1.acme-prod", "echo freed"]);
    let out = again.stdin(Stdio::null()).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("freed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = master.kill();
    let _ = master.wait();
    for i in 0..2 {
        let _ = std::fs::remove_file(format!("{tag}-{i}"));
    }
}

// Sessions through one engineer connection to the edge are bounded.
#[tokio::test]
async fn one_edge_connection_cannot_open_unbounded_sessions() {
    let (w, port) = world_with_edge().await;
    let token = bastion::edge_token(&w).await;
    let b =
        bastion::start_with_edge_token_and(&w, port, &token, "max_forwards_per_connection = 2\n")
            .await;
    let home = tempfile::tempdir().unwrap();
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), &b);
    // One connection to the edge (a ControlMaster), each session a forward through it.
    let (mut master, mux_opt) = control_master(home.path(), "sallyport-edge-acme-prod");
    let proxy = format!(
        "ProxyCommand=ssh -F {} -o BatchMode=yes -o {mux_opt} -o ProxyCommand=false -W %h:%p sallyport-edge-acme-prod",
        home.path().join("ssh_config").display()
    );
    let tag = format!("/tmp/sp-at-fwd-{}", std::process::id());
    let _ = std::fs::remove_file(format!("{tag}-third"));
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = ssh_cmd(home.path());
        c.args([
            "-o",
            &proxy,
            "node1.acme-prod",
            &format!("touch {tag}-{i}; sleep 8"),
        ]);
        held.push(spawn(c));
        wait_file(&format!("{tag}-{i}"));
    }
    let mut third = ssh_cmd(home.path());
    third.args([
        "-o",
        &proxy,
        "node1.acme-prod",
        &format!("touch {tag}-third"),
    ]);
    let out = third.stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        !Path::new(&format!("{tag}-third")).exists(),
        "a third session ran"
    );
    let refused = w.wait_events("kind=edge_refused&ticket=SUP-1234", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| e["code"] == "too_many_forwards" && e["limit"] == 2),
        "{refused:#?}"
    );
    for mut h in held {
        let _ = h.wait();
    }
    let _ = master.kill();
    let _ = master.wait();
    for i in 0..2 {
        let _ = std::fs::remove_file(format!("{tag}-{i}"));
    }
}

// A leaked API token can be listed and revoked; it stops working at once, and the revocation is
// audited.
#[tokio::test]
async fn a_leaked_api_token_is_revoked_and_stops_working_at_once() {
    use support::broker::{Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            serde_json::json!({"name": "tickets-2", "role": "ticket_system"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    let leaked = w.op.with(v["token"].as_str().unwrap());
    let id = v["id"].as_str().unwrap().to_string();
    let ticket = serde_json::json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice", "status": "open"});
    assert!(
        leaked
            .put("/v1/tickets/SUP-9", ticket.clone())
            .await
            .0
            .is_success()
    );
    // The operator lists tokens (no secrets) and revokes it with the CLI.
    let out = w.op.cli(&["admin", "tokens"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("tickets-2"),
        "{listed}"
    );
    assert!(
        !listed.contains("spt_"),
        "a secret in the listing: {listed}"
    );
    let out = w.op.cli(&["admin", "token-revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, v) = leaked.put("/v1/tickets/SUP-9", ticket).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    // Only the operator may revoke; a second revocation is a clear 404.
    assert_eq!(
        w.reviewer.delete(&format!("/v1/tokens/{id}")).await.0,
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.op.delete(&format!("/v1/tokens/{id}")).await.0,
        reqwest::StatusCode::NOT_FOUND
    );
    let ev = w.events("kind=admin_change&limit=100").await;
    assert!(
        ev.iter()
            .any(|e| e["action"] == "revoke_ticket_system_token" && e["target"] == "tickets-2"),
        "{ev:#?}"
    );
}

// An open connection to the edge does not outlive its certificate's revocation.
#[tokio::test]
async fn the_edge_drops_an_open_connection_whose_certificate_is_revoked() {
    let (w, port) = world_with_edge().await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = tempfile::tempdir().unwrap();
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), &b);
    // A connection to the edge held open (as a ControlMaster would), no session through it.
    let mut held = ssh_cmd(home.path());
    held.args(["-N", "sallyport-edge-acme-prod"]);
    let mut held = spawn(held);
    let start = Instant::now();
    loop {
        let ev = w.events("kind=edge_session&limit=10").await;
        let connected = b
            .edge
            .log_text()
            .contains("engineer authenticated at the edge");
        if connected || start.elapsed() > Duration::from_secs(20) {
            assert!(connected, "{ev:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, v) =
        w.op.post(
            "/v1/revocations",
            serde_json::json!({"scope": "engineer", "value": "alice", "reason": "laptop stolen"}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    // Cut within seconds (the KRL refresh, then the per-second check), told why, audited.
    let start = Instant::now();
    let status = loop {
        if let Some(st) = held.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the revoked connection is still open: {}",
            b.edge.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    let out = held.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("revoked"), "{said}");
    let ev = w
        .wait_events("kind=edge_disconnected&ticket=SUP-1234", 1)
        .await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["code"], "revoked");
}

// A revoked gateway stops serving: the edge drops its tunnel within seconds, its open sessions
// end, and it cannot come back.
#[tokio::test]
async fn a_revoked_gateway_loses_its_tunnel_and_its_sessions() {
    let (w, port) = world_with_edge().await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = tempfile::tempdir().unwrap();
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), &b);
    let mut open = ssh_cmd(home.path());
    open.args(["node1.acme-prod", "echo started; sleep 60"]);
    let mut open = spawn(open);
    let mut first = [0u8; 7];
    std::io::Read::read_exact(open.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"started");
    let (_, gws) = w.op.get("/v1/clusters/acme-prod/gateways").await;
    let id = gws
        .as_array()
        .or_else(|| gws["gateways"].as_array())
        .and_then(|l| l.first())
        .and_then(|g| g["id"].as_str())
        .unwrap_or_else(|| panic!("{gws}"))
        .to_string();
    let (s, v) = w.op.delete(&format!("/v1/gateways/{id}")).await;
    assert!(s.is_success(), "{v}");
    let start = Instant::now();
    while open.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a session through the revoked gateway is still open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo still"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("still"));
    let start = Instant::now();
    while !w
        .events("kind=edge_refused&limit=100")
        .await
        .iter()
        .any(|e| e["code"] == "gateway_revoked")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no gateway_revoked event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// A ticket system scoped to one customer writes only that customer's tickets.
#[tokio::test]
async fn a_customer_scoped_ticket_system_cannot_write_another_customers_tickets() {
    use support::broker::{Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            serde_json::json!({"name": "acme-jira", "role": "ticket_system", "customer": "acme"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    let jira = w.op.with(v["token"].as_str().unwrap());
    let ticket = |customer: &str, cluster: &str| serde_json::json!({"customer": customer, "cluster": cluster, "assignee": "alice", "status": "open"});
    assert!(
        jira.put("/v1/tickets/ACME-1", ticket("acme", "acme-prod"))
            .await
            .0
            .is_success()
    );
    let (s, v) = jira
        .put("/v1/tickets/GLX-1", ticket("globex", "globex-prod"))
        .await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("acme"),
        "{v}"
    );
    // Nor may it take over a ticket that exists for another customer.
    assert!(
        w.tickets
            .put("/v1/tickets/GLX-2", ticket("globex", "globex-prod"))
            .await
            .0
            .is_success()
    );
    let (s, _) = jira
        .put("/v1/tickets/GLX-2", ticket("acme", "acme-prod"))
        .await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN);
    let (_, t) = w.op.get("/v1/tickets/GLX-2").await;
    assert_eq!(t["customer"], "globex", "{t}");
    let refused = w.events("kind=refused&limit=100").await;
    assert!(
        refused
            .iter()
            .filter(|e| e["by"].as_str().is_some_and(|b| b.contains("acme-jira")))
            .count()
            >= 2,
        "{refused:#?}"
    );
}
