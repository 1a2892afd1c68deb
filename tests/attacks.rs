//! The attack suite: an engineer (or the holder of a leaked credential) tries to get past a
//! control, through the real interfaces. Each test shows the attempt refused with a clear error
//! and an audit event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_api::admin::TokenCreated;
use sallyport_api::audit::AuditEntry;
use sallyport_api::certificates::Issued;
use sallyport_api::gateways::{Enrolled, Gateway, GatewayCreated};
use sallyport_api::requests::{IssuePending, RequestStatus};
use sallyport_api::tickets::Ticket;
use sallyport_broker::audit::AuditEvent;
use support::bastion::{self, trust_edge, world_with_edge};
use support::broker::{error_of, field_of, field_str, opt_str, read_as};
use support::ssh::Ssh;

fn ssh_cmd(home: &Path) -> Command {
    Ssh::engineer(home).command()
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

/// Two sessions held open on node1 through `client()` (each touches `<tag>-<i>` there, then
/// sleeps), then a third that must not run (`what` names it): the held ones and the third's
/// output.
fn two_held_and_a_third(
    client: impl Fn() -> Command,
    tag: &str,
    what: &str,
) -> (Vec<Child>, std::process::Output) {
    let _ = std::fs::remove_file(format!("{tag}-third"));
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = client();
        c.args(["node1.acme-prod", &format!("touch {tag}-{i}; sleep 8")]);
        held.push(spawn(c));
        wait_file(&format!("{tag}-{i}"));
    }
    let mut third = client();
    third.args(["node1.acme-prod", &format!("touch {tag}-third")]);
    let out = third.stdin(Stdio::null()).output().unwrap();
    assert!(
        !Path::new(&format!("{tag}-third")).exists(),
        "a third {what} ran"
    );
    (held, out)
}

/// The end of a [`two_held_and_a_third`]: the held sessions over, the control master stopped,
/// the files on the node removed.
fn release(held: Vec<Child>, mut master: Child, tag: &str) {
    for mut h in held {
        let _ = h.wait();
    }
    let _ = master.kill();
    let _ = master.wait();
    for i in 0..2 {
        let _ = std::fs::remove_file(format!("{tag}-{i}"));
    }
}

// Channels per engineer session at the gateway are bounded.
#[tokio::test]
async fn one_session_cannot_open_unbounded_channels_at_the_gateway() {
    let (w, _b, home) = bastion::alice_at_the_edge()
        .gateway("max_channels_per_session = 2\n")
        .await;
    // One connection (a ControlMaster), several sessions through it.
    let (master, mux_opt) = control_master(home.path(), "node1.acme-prod");
    // The sessions must go through the master: no fallback to a connection of their own.
    let mux_opt = mux_opt.as_str();
    let ssh_mux = || {
        let mut c = ssh_cmd(home.path());
        c.args(["-o", mux_opt, "-o", "ProxyCommand=false"]);
        c
    };
    let tag = format!("/tmp/sp-at-chan-{}", std::process::id());
    let (held, out) = two_held_and_a_third(ssh_mux, &tag, "channel");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused"), "{said}");
    let e = w
        .wait_code("kind=channel_refused&ticket=SUP-1234", "too_many_channels")
        .await;
    assert_eq!(*field_of(&e, "limit"), 2, "{e:#?}");
    // A channel that ends frees its slot: the gateway frees it when it has handled the
    // channel's close, which may come a moment after the ssh client exits.
    for mut h in held {
        let _ = h.wait();
    }
    let mut freed = None;
    for _ in 0..40 {
        let mut again = ssh_mux();
        again.args(["node1.acme-prod", "echo freed"]);
        let out = again.stdin(Stdio::null()).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("freed") {
            freed = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        freed.is_some(),
        "the ended channels' slots were never freed"
    );
    release(Vec::new(), master, &tag);
}

// Sessions through one engineer connection to the edge are bounded.
#[tokio::test]
async fn one_edge_connection_cannot_open_unbounded_sessions() {
    let (w, _b, home) = bastion::alice_at_the_edge()
        .edge("max_forwards_per_connection = 2\n")
        .await;
    // One connection to the edge (a ControlMaster), each session a forward through it.
    let (master, mux_opt) = control_master(home.path(), "sallyport-edge-acme-prod");
    let proxy = format!(
        "ProxyCommand=ssh -F {} -o BatchMode=yes -o {mux_opt} -o ProxyCommand=false -W %h:%p sallyport-edge-acme-prod",
        home.path().join("ssh_config").display()
    );
    let tag = format!("/tmp/sp-at-fwd-{}", std::process::id());
    let through_master = || {
        let mut c = ssh_cmd(home.path());
        c.args(["-o", &proxy]);
        c
    };
    let (held, out) = two_held_and_a_third(through_master, &tag, "session");
    assert!(!out.status.success());
    let e = w
        .wait_code("kind=edge_refused&ticket=SUP-1234", "too_many_forwards")
        .await;
    assert_eq!(*field_of(&e, "limit"), 2, "{e:#?}");
    release(held, master, &tag);
}

// A leaked API token can be listed and revoked; it stops working at once, and the revocation is
// audited.
#[tokio::test]
async fn a_leaked_api_token_is_revoked_and_stops_working_at_once() {
    use support::broker::{Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) = w
        .op
        .post_as::<TokenCreated>(
            "/v1/tokens",
            serde_json::json!({"name": "tickets-2", "role": "ticket_system", "all_customers": true}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v:?}");
    let leaked = w.op.with(&v.token);
    let id = v.id;
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
    let out = w.op.cli(&["admin", "token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, v) = leaked.put("/v1/tickets/SUP-9", ticket.clone()).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).message.contains("revoked"), "{v}");
    // The refused use is audited, naming the token and the route; replaying it does not fill
    // the log.
    for _ in 0..20 {
        let (s, _) = leaked.put("/v1/tickets/SUP-9", ticket.clone()).await;
        assert_eq!(s, reqwest::StatusCode::FORBIDDEN);
    }
    assert_refused_once(
        &w,
        "ticket-system:tickets-2",
        "PUT /v1/tickets/{ticket}",
        "API token was revoked",
    )
    .await;
    // Only the operator may revoke; a second revocation is a clear 404.
    assert_eq!(
        w.reviewer.delete(&format!("/v1/tokens/{id}")).await.0,
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.op.delete(&format!("/v1/tokens/{id}")).await.0,
        reqwest::StatusCode::NOT_FOUND
    );
    // `admin token NAME --role ROLE` still creates one beside the `revoke` subcommand.
    let out = w.op.cli(&[
        "admin",
        "token",
        "tickets-3",
        "--role",
        "ticket_system",
        "--all-customers",
    ]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("spt_"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The older name of the command still works.
    let out = w.op.cli(&["admin", "token-revoke", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    let ev = w.audit("kind=admin_change&limit=100").await;
    assert!(
        ev.iter().any(
            |e| opt_str(e, "action") == Some("revoke_ticket_system_token")
                && opt_str(e, "target") == Some("tickets-2")
        ),
        "{ev:#?}"
    );
}

/// Exactly one `refused` event by `by` for `action` (the route), its reason containing `reason`:
/// a refusal replayed many times within a minute is audited once.
async fn assert_refused_once(w: &support::broker::World, by: &str, action: &str, reason: &str) {
    let refused: Vec<AuditEntry> = w
        .audit("kind=refused&limit=1000")
        .await
        .into_iter()
        .filter(|e| opt_str(e, "by") == Some(by) && opt_str(e, "action") == Some(action))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        field_str(&refused[0], "reason").contains(reason),
        "{refused:#?}"
    );
}

// A session token issued before the engineer's revocation mints nothing, and its refused use is
// audited (once, however often it is replayed).
#[tokio::test]
async fn a_session_token_from_before_the_engineers_revocation_is_refused_and_audited() {
    use serde_json::json;
    use support::broker::{Dir, World, engineer_key};
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let before = w.session("alice", 0).await;
    let (_, key) = engineer_key();
    let body = json!({"public_key": key, "ticket": "T-1"});
    let (s, v) = before.post("/v1/certificates", body.clone()).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let (s, v) =
        w.op.post(
            "/v1/revocations",
            json!({"scope": "engineer", "value": "alice", "reason": "left the company"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    for _ in 0..20 {
        let (s, v) = before.post("/v1/certificates", body.clone()).await;
        assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{v}");
        assert!(
            error_of(&v)
                .message
                .contains("session was revoked: log in again"),
            "{v}"
        );
    }
    assert_eq!(
        w.audit("kind=certificate_issued&engineer=alice")
            .await
            .len(),
        1
    );
    assert_refused_once(
        &w,
        "engineer:alice",
        "POST /v1/certificates",
        "issued before its holder's sessions were revoked",
    )
    .await;
}

// A revoked gateway's credential does nothing any more, and each refused use is audited (once a
// minute per route).
#[tokio::test]
async fn a_revoked_gateway_credential_is_refused_and_audited() {
    use serde_json::json;
    use support::broker::{Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) =
        w.op.post_as::<GatewayCreated>("/v1/clusters/acme-prod/gateways", json!({"name": "gw-x"}))
            .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v:?}");
    let id = v.id.clone();
    let key = |c: &str| {
        sallyport_ca::keys::generate_ed25519(c)
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap()
    };
    let (s, v) = w
        .anon
        .post_as::<Enrolled>(
            "/v1/gateways/enroll",
            json!({"join_token": v.join_token, "node_ca_public_key": key("node ca"),
                   "host_ca_public_key": key("host ca"), "audit_public_key": key("audit")}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v:?}");
    let gw = w.anon.with(&v.credential);
    assert_eq!(gw.get("/v1/gateway/self").await.0, reqwest::StatusCode::OK);
    let (s, v) = w.op.delete(&format!("/v1/gateways/{id}")).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    for _ in 0..20 {
        let (s, v) = gw.get("/v1/gateway/self").await;
        assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{v}");
        assert!(error_of(&v).message.contains("gateway was revoked"), "{v}");
    }
    let by = format!("gateway:{id}");
    assert_refused_once(&w, &by, "GET /v1/gateway/self", "gateway was revoked").await;
    let ev = w.audit("kind=refused&limit=1000").await;
    let e = ev
        .iter()
        .find(|e| opt_str(e, "by") == Some(by.as_str()))
        .unwrap();
    assert_eq!(e.cluster.as_deref(), Some("acme-prod"), "{e:?}");
    assert_eq!(field_str(e, "customer"), "acme", "{e:?}");
}

// One approved just-in-time request yields one certificate: asking again issues none, tells the
// engineer a new request is needed (and makes it, for the approvers), and is audited.
#[tokio::test]
async fn a_second_certificate_from_one_approved_request_is_refused() {
    use serde_json::json;
    use support::broker::{Dir, World, engineer_key};
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    w.approve(
        "acme-prod",
        "support-l2",
        &["ubuntu"],
        json!({"just_in_time": true}),
    )
    .await;
    w.ticket("JIT-1", "acme-prod", "alice", "open").await;
    let alice = w.session("alice", 0).await;
    let ask = || {
        let (_, key) = engineer_key();
        let alice = alice.clone();
        async move {
            alice
                .post(
                    "/v1/certificates",
                    json!({"public_key": key, "ticket": "JIT-1"}),
                )
                .await
        }
    };
    let (s, v) = ask().await;
    assert_eq!(s, reqwest::StatusCode::ACCEPTED, "{v}");
    let p: IssuePending = read_as("a pending certificate", v);
    assert!(p.used_request.is_none(), "{p:?}");
    let rq = p.request.id;
    let (s, v) = w.decide(&rq, json!({"approve": true})).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let (s, v) = ask().await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    read_as::<Issued>("a certificate", v);

    // The second ask: no certificate, and the answer says why and what now.
    let (s, v) = ask().await;
    assert_eq!(s, reqwest::StatusCode::ACCEPTED, "{v}");
    assert!(v.get("certificate").is_none(), "{v}");
    let p: IssuePending = read_as("a pending certificate", v);
    assert_eq!(p.used_request.as_deref(), Some(rq.as_str()), "{p:?}");
    let rq2 = p.request.id.clone();
    assert_ne!(rq2, rq);
    assert_eq!(p.request.status, RequestStatus::Pending, "{p:?}");
    let message = &p.message;
    assert!(
        message.contains(&rq)
            && message.contains("already gave its one certificate")
            && message.contains("needs a new request")
            && message.contains(&rq2),
        "{message}"
    );
    // Asking again waits on the new request, without another refusal.
    let (s, v) = ask().await;
    assert_eq!(s, reqwest::StatusCode::ACCEPTED, "{v}");
    let p: IssuePending = read_as("a pending certificate", v);
    assert_eq!(p.request.id, rq2, "{p:?}");
    assert!(p.used_request.is_none(), "{p:?}");

    assert_eq!(
        w.audit("kind=certificate_issued&ticket=JIT-1").await.len(),
        1
    );
    let denied = w
        .broker_events("kind=certificate_denied&ticket=JIT-1")
        .await;
    let [
        AuditEvent::CertificateDenied {
            engineer, reasons, ..
        },
    ] = &denied[..]
    else {
        panic!("not one denial: {denied:#?}")
    };
    assert_eq!(engineer, "alice");
    assert_eq!(reasons[0].code, "request_used", "{denied:#?}");
    let created = w
        .broker_events("kind=access_request_created&ticket=JIT-1")
        .await;
    assert!(
        created.iter().any(
            |e| matches!(e, AuditEvent::AccessRequestCreated { request, .. } if *request == rq2)
        ),
        "{created:#?}"
    );
}

// Someone who can write the database (not the broker's files) plants a TOTP secret they know,
// in clear, and waits for a restart: it is not sealed, the login with its code is refused, and
// both the start and the login are audited.
#[tokio::test]
async fn a_totp_secret_planted_in_clear_is_refused_after_a_restart() {
    use support::broker::{Dir, World, plant_totp_in_clear};
    let mut w = World::start(Dir::File(vec![("bob", "bob-pw", vec!["support-l2"])])).await;
    use sqlx::Row;
    let mut db = w.store_db().await;
    let planted = plant_totp_in_clear(&mut db, "bob").await;
    w.stop_broker();
    w.start_broker_again();
    let stored: String = sqlx::query("SELECT totp_secret FROM engineers WHERE uid = 'bob'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, planted, "the restart sealed a planted secret");
    let log = w.broker.log_text();
    assert!(
        log.contains("TOTP secrets are stored in clear") && log.contains("engineer:bob"),
        "{log}"
    );
    let refused = w.audit("kind=refused&limit=100").await;
    assert!(
        refused.iter().any(|e| opt_str(e, "by") == Some("broker")
            && opt_str(e, "action") == Some("use_clear_totp_secret")
            && field_str(e, "reason").contains("engineer:bob")),
        "{refused:#?}"
    );
    let now = support::broker::now();
    for (i, t) in [now, now + 30].into_iter().enumerate() {
        let code = sallyport_broker::totp::code(planted, t).unwrap();
        let (s, v) = w.login("bob", "bob-pw", &code).await;
        assert_eq!(s, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{i}: {v}");
        assert!(error_of(&v).message.contains("stored in clear"), "{v}");
    }
    let failed = w.audit("kind=login_failed&engineer=bob&limit=100").await;
    assert_eq!(failed.len(), 2, "{failed:#?}");
    for e in &failed {
        assert_eq!(field_str(e, "code"), "totp_unreadable", "{e:?}");
        assert!(field_str(e, "reason").contains("stored in clear"), "{e:?}");
    }
    assert!(
        w.audit("kind=login_succeeded&engineer=bob")
            .await
            .is_empty()
    );
}

// An open connection to the edge does not outlive its certificate's revocation.
#[tokio::test]
async fn the_edge_drops_an_open_connection_whose_certificate_is_revoked() {
    let (w, b, home) = bastion::alice_at_the_edge().audited().await;
    let held = held_at_edge(home.path(), &b).await;
    let (s, v) =
        w.op.post(
            "/v1/revocations",
            serde_json::json!({"scope": "engineer", "value": "alice", "reason": "laptop stolen"}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    // Cut within seconds (the KRL refresh, then the per-second check), told why, audited.
    let out = cut_by_edge(held, &b, 15, "the revoked connection is still open");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("revoked"), "{said}");
    let ev = w
        .wait_audit("kind=edge_disconnected&ticket=SUP-1234", 1)
        .await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(field_str(&ev[0], "code"), "revoked");
}

/// A connection to the edge held open (as a ControlMaster would), no session through it; returns
/// once the edge has authenticated it.
async fn held_at_edge(home: &Path, b: &bastion::Bastion) -> Child {
    let mut held = ssh_cmd(home);
    held.args(["-N", "sallyport-edge-acme-prod"]);
    let held = spawn(held);
    let start = Instant::now();
    while !b
        .edge
        .log_text()
        .contains("engineer authenticated at the edge")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            b.edge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    held
}

/// The held connection, once the edge cut it (within `secs`, else `what` and the edge's log);
/// it ended with a failure.
fn cut_by_edge(
    mut held: Child,
    b: &bastion::Bastion,
    secs: u64,
    what: &str,
) -> std::process::Output {
    let start = Instant::now();
    let status = loop {
        if let Some(st) = held.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: {}",
            b.edge.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    held.wait_with_output().unwrap()
}

// A connection held open past its certificate's end is cut by the edge (told why, audited): a
// short-lived certificate does not outlive itself through a connection opened in time.
#[tokio::test]
async fn the_edge_drops_an_open_connection_whose_certificate_expired() {
    use support::broker::now;
    let (w, port) = world_with_edge().await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = tempfile::tempdir().unwrap();
    let issued = w.login_cli_with(
        home.path(),
        "alice",
        "SUP-1234",
        &w.code("alice", 0),
        &["--ttl", "10s"],
    );
    let valid_before = read_as::<Issued>("login --json", issued).valid_before;
    trust_edge(home.path(), &b);
    let held = held_at_edge(home.path(), &b).await;
    assert!(
        now() < valid_before,
        "the connection was not open before the certificate expired"
    );
    let out = cut_by_edge(held, &b, 30, "the connection outlived its certificate");
    assert!(now() >= valid_before, "cut before the certificate expired");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("expired"), "{said}");
    let ev = w
        .wait_audit("kind=edge_disconnected&ticket=SUP-1234", 1)
        .await;
    assert_eq!(field_str(&ev[0], "code"), "expired", "{ev:?}");
}

// A revoked gateway stops serving: the edge drops its tunnel within seconds, its open sessions
// end, and it cannot come back.
#[tokio::test]
async fn a_revoked_gateway_loses_its_tunnel_and_its_sessions() {
    let (w, _b, home) = bastion::alice_at_the_edge().audited().await;
    let mut open = ssh_cmd(home.path());
    open.args(["node1.acme-prod", "echo started; sleep 60"]);
    let mut open = spawn(open);
    let mut first = [0u8; 7];
    std::io::Read::read_exact(open.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"started");
    let gws: Vec<Gateway> = w.op.get_ok("/v1/clusters/acme-prod/gateways").await;
    let id = gws
        .first()
        .map(|g| g.id.clone())
        .unwrap_or_else(|| panic!("{gws:?}"));
    let (s, v) = w.op.delete(&format!("/v1/gateways/{id}")).await;
    assert!(s.is_success(), "{v}");
    // The edge drops the tunnel within 5 s (it asks the broker every 2 s): the session ends.
    let revoked = Instant::now();
    while open.try_wait().unwrap().is_none() {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "a session through the revoked gateway is still open 5 s after the revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the session through the revoked gateway ended {:?} after the revocation",
        revoked.elapsed()
    );
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo still"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("still"));
    let start = Instant::now();
    let dropped = loop {
        if let Some(e) = w
            .audit("kind=edge_refused&limit=100")
            .await
            .into_iter()
            .find(|e| opt_str(e, "code") == Some("gateway_revoked"))
        {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no gateway_revoked event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The revoked gateway's own records are refused by the broker: the edge's say which
    // sessions the dropped tunnel cut, each in its ticket's record.
    let session = &w.audit("kind=edge_session&ticket=SUP-1234").await[0];
    assert_eq!(dropped.cluster.as_deref(), Some("acme-prod"));
    assert_eq!(*field_of(&dropped, "sessions_cut"), 1, "{dropped:?}");
    let cut = &field_of(&dropped, "sessions")[0];
    assert_eq!(
        cut["connection"],
        *field_of(session, "connection"),
        "{dropped:?}"
    );
    assert!(field_str(session, "connection").starts_with("c-"));
    assert_eq!(cut["engineer"], "alice");
    assert_eq!(cut["ticket"], "SUP-1234");
    assert_eq!(cut["node"], "node1");
    let ended = w
        .wait_audit("kind=edge_disconnected&ticket=SUP-1234", 1)
        .await;
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(field_str(&ended[0], "code"), "gateway_revoked");
    assert_eq!(
        field_of(&ended[0], "connection"),
        field_of(session, "connection")
    );
    assert_eq!(ended[0].node.as_deref(), Some("node1"));
    assert_eq!(
        field_of(&ended[0], "host_ca"),
        field_of(&dropped, "host_ca")
    );
}

// A ticket system scoped to one customer writes only that customer's tickets; one for every
// customer is an explicit, audited choice.
#[tokio::test]
async fn a_customer_scoped_ticket_system_cannot_write_another_customers_tickets() {
    use support::broker::{Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            serde_json::json!({"name": "any-jira", "role": "ticket_system"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::BAD_REQUEST, "{v}");
    assert!(error_of(&v).message.contains("all_customers"), "{v}");
    let made = w.audit("kind=admin_change").await;
    assert!(
        made.iter().any(|e| opt_str(e, "action")
            == Some("create_ticket_system_token_for_every_customer")
            && opt_str(e, "target") == Some("tickets")),
        "{made:#?}"
    );
    let (s, v) =
        w.op.post_as::<TokenCreated>(
            "/v1/tokens",
            serde_json::json!({"name": "acme-jira", "role": "ticket_system", "customer": "acme"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v:?}");
    let jira = w.op.with(&v.token);
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
    assert!(error_of(&v).message.contains("acme"), "{v}");
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
    let t: Ticket = w.op.get_ok("/v1/tickets/GLX-2").await;
    assert_eq!(t.customer, "globex", "{t:?}");
    // Nor read it: the same answer as for a ticket that does not exist.
    assert_eq!(
        jira.get("/v1/tickets/GLX-2").await.0,
        reqwest::StatusCode::NOT_FOUND
    );
    assert_eq!(
        jira.get("/v1/tickets/ACME-1").await.0,
        reqwest::StatusCode::OK
    );
    let refused = w.audit("kind=refused&limit=100").await;
    assert!(
        refused
            .iter()
            .filter(|e| opt_str(e, "by").is_some_and(|b| b.contains("acme-jira")))
            .count()
            >= 2,
        "{refused:#?}"
    );
}

// Per-session MFA means per session: one TOTP code opens one session, even when the engineer
// keeps the edge connection open (a ControlMaster) and sends more sessions through it.
#[tokio::test]
async fn one_totp_code_opens_one_session_through_a_shared_edge_connection() {
    use support::term::{tmux, wait_pane};
    let (w, port, _) =
        bastion::world_with_edge_approval(serde_json::json!({"per_session_mfa": true})).await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = bastion::alice_home(&w, &b);
    // The control master asks for the code (keyboard-interactive) in a terminal.
    let mux = home.path().join("edge.mux");
    let mux_opt = format!("ControlPath={}", mux.display());
    let name = format!("sp-mfa-mux-{}", std::process::id());
    let master = format!(
        "ssh -F {} -o ControlMaster=yes -o {mux_opt} -N sallyport-edge-acme-prod",
        home.path().join("ssh_config").display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "120",
        "-y",
        "30",
        &master,
    ]);
    wait_pane(&name, "TOTP code for alice", 1);
    tmux(&["send-keys", "-t", &name, &w.code("alice", 1), "Enter"]);
    let start = Instant::now();
    while !mux.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the control master did not come up: {}",
            tmux(&["capture-pane", "-p", "-t", &name])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxy = format!(
        "ProxyCommand=ssh -F {} -o BatchMode=yes -o {mux_opt} -o ProxyCommand=false -W %h:%p sallyport-edge-acme-prod",
        home.path().join("ssh_config").display()
    );
    let tag = format!("/tmp/sp-at-mfa-{}", std::process::id());
    let run = |suffix: &str| {
        let _ = std::fs::remove_file(format!("{tag}-{suffix}"));
        let mut c = ssh_cmd(home.path());
        c.args([
            "-o",
            &proxy,
            "node1.acme-prod",
            &format!("touch {tag}-{suffix}"),
        ]);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let first = run("first");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(Path::new(&format!("{tag}-first")).exists());
    // The second session through the same connection: refused at the edge, never reaches the node.
    let second = run("second");
    assert!(!second.status.success());
    assert!(
        !Path::new(&format!("{tag}-second")).exists(),
        "a second session ran on one TOTP code"
    );
    let refused = w.wait_audit("kind=edge_refused&ticket=SUP-1234", 1).await;
    let r = refused
        .iter()
        .find(|e| opt_str(e, "code") == Some("mfa_session_used"))
        .unwrap_or_else(|| panic!("{refused:#?}"));
    assert!(field_str(r, "reason").contains("new code"), "{r:#?}");
    assert_eq!(
        w.audit("kind=session_mfa_verified&ticket=SUP-1234")
            .await
            .len(),
        1
    );
    tmux(&["kill-session", "-t", &name]);
    let _ = std::fs::remove_file(format!("{tag}-first"));
}

// Guessing is bounded: per user from one address, per address over all users, per user over
// all addresses; atomically across two broker replicas; an edge credential may check codes only
// for an engineer holding a live certificate; repeated refusals do not flood the log.
#[tokio::test]
async fn guessing_is_bounded_per_user_per_address_and_across_replicas() {
    use serde_json::json;
    use support::broker::{Api, World, engineer_key, join_all};
    let w = World::ldap_with("[login]\nmax_failures = 3\nmax_failures_per_source = 10\nmax_failures_per_user = 6\nlockout_secs = 600\n")
    .await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let alice = w.session("alice", 0).await;
    let (_, key) = engineer_key();
    let (s, cert) = alice
        .post_as::<Issued>(
            "/v1/certificates",
            json!({"public_key": key, "ticket": "T-1"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{cert:?}");
    let grant = cert.grant;
    let edge = w.op.with(&bastion::edge_token(&w).await);
    let valid: Vec<String> = (-2..=2).map(|o| w.code("alice", o)).collect();
    let wrong = ["000000", "111111", "222222", "333333", "444444"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .unwrap();
    let mfa = |engineer: &str, grant: &str, code: &str, ip: &str| {
        let body = json!({"engineer": engineer, "grant": grant, "code": code, "source_ip": ip});
        let edge = edge.clone();
        async move { edge.post("/v1/mfa/verify", body).await }
    };

    // An edge credential cannot spend the codes of an engineer who is not connected.
    let (s, v) = mfa("bob", "g-0000000000000000", wrong, "198.51.100.1").await;
    assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED, "{v}");
    assert!(error_of(&v).message.contains("live certificate"), "{v}");
    let (s, _) = mfa("bob", &grant, wrong, "198.51.100.1").await;
    assert_eq!(
        s,
        reqwest::StatusCode::UNAUTHORIZED,
        "alice's grant worked for bob"
    );
    let refused = w.audit("kind=session_mfa_failed&engineer=bob").await;
    assert!(
        refused
            .iter()
            .all(|e| opt_str(e, "code") == Some("no_live_certificate")),
        "{refused:#?}"
    );
    assert_eq!(refused.len(), 2);

    // Guessing alice's code from one address locks that address out for her, not her.
    for _ in 0..3 {
        let (s, v) = mfa("alice", &grant, wrong, "198.51.100.7").await;
        assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED, "{v}");
    }
    let (s, v) = mfa("alice", &grant, &w.code("alice", 1), "198.51.100.7").await;
    assert_eq!(s, reqwest::StatusCode::TOO_MANY_REQUESTS, "{v}");
    let (s, v) = mfa("alice", &grant, &w.code("alice", 1), "198.51.100.8").await;
    assert_eq!(
        s,
        reqwest::StatusCode::OK,
        "the attacker's address locked alice out: {v}"
    );
    // Guessing from many addresses, one try each, is bounded per user.
    for i in 0..6 {
        let (s, v) = mfa("alice", &grant, wrong, &format!("198.51.100.{}", 20 + i)).await;
        assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED, "{v}");
    }
    let (s, v) = mfa("alice", &grant, &w.code("alice", -1), "198.51.100.99").await;
    assert_eq!(s, reqwest::StatusCode::TOO_MANY_REQUESTS, "{v}");

    // 60 parallel wrong passwords for carol, half through a second replica on the same store:
    // at most max_failures of them are checked at all.
    let second = w.broker.replica();
    let other = Api::new(&second.url, None);
    let guesses = (0..60).map(|i| {
        let api = if i % 2 == 0 {
            w.anon.clone()
        } else {
            other.clone()
        };
        let body = json!({"user": "carol", "password": format!("guess-{i}"), "totp": "123456"});
        async move { api.post("/v1/login", body).await.0 }
    });
    let answers = join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|s| **s == reqwest::StatusCode::UNAUTHORIZED)
        .count();
    let locked = answers
        .iter()
        .filter(|s| **s == reqwest::StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 3, "{checked} guesses were checked: {answers:?}");
    assert_eq!(checked + locked, 60, "{answers:?}");
    // The locked-out tries are audited once a minute per replica, not 57 times.
    let carol = w.audit("kind=login_failed&engineer=carol&limit=1000").await;
    let locked_events = carol
        .iter()
        .filter(|e| opt_str(e, "code") == Some("locked_out"))
        .count();
    assert!((1..=2).contains(&locked_events), "{carol:#?}");
    assert!(carol.len() <= 5, "{carol:#?}");
    // Spraying many names from one address locks the address: even bob's right password.
    for i in 0..10 {
        w.login(&format!("nobody-{i}"), "x", "123456").await;
    }
    let (s, v) = w.login("bob", "bob-pw", &w.code("bob", 0)).await;
    assert_eq!(s, reqwest::StatusCode::TOO_MANY_REQUESTS, "{v}");
}

// Someone with a valid account cannot reset an address's lockout between guesses by logging in
// from it: a success clears only that user's own counters.
#[tokio::test]
async fn a_valid_login_does_not_reset_the_lockout_of_its_address() {
    use support::broker::{Dir, World};
    let w = World::start_with(
        Dir::File(vec![
            ("alice", "alice-pw", vec!["support-l2"]),
            ("bob", "bob-pw", vec!["support-l2"]),
        ]),
        "[login]\nmax_failures = 10\nmax_failures_per_source = 4\nmax_failures_per_user = 20\nlockout_secs = 600\n",
    )
    .await;
    // Guesses at alice's password, each followed by a good login of bob's, all from one address.
    for (i, offset) in [-1, 0, 1].into_iter().enumerate() {
        let (s, v) = w.login("alice", &format!("guess-{i}"), "123456").await;
        assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED, "guess {i}: {v}");
        let (s, v) = w.login("bob", "bob-pw", &w.code("bob", offset)).await;
        assert_eq!(s, reqwest::StatusCode::OK, "bob's login {i}: {v}");
    }
    // The fourth guess is still checked; it reaches the address's limit.
    let (s, v) = w.login("alice", "guess-3", "123456").await;
    assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED, "{v}");
    // The address is locked out now: for alice, and for bob too.
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, reqwest::StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(error_of(&v).message.contains("try again"), "{v}");
    let (s, v) = w.login("bob", "bob-pw", "000000").await;
    assert_eq!(s, reqwest::StatusCode::TOO_MANY_REQUESTS, "{v}");
    for who in ["alice", "bob"] {
        let ev = w
            .audit(&format!("kind=login_failed&engineer={who}&limit=100"))
            .await;
        assert!(
            ev.iter().any(|e| opt_str(e, "code") == Some("locked_out")
                && opt_str(e, "source_ip") == Some("127.0.0.1")),
            "{who}: {ev:#?}"
        );
    }
}

/// A session on node1 that would touch `file` fails, the engineer reads `says`, and nothing ran
/// (`ran` otherwise).
fn refused_past_the_limit(home: &Path, file: &str, says: &str, ran: &str) {
    let mut c = ssh_cmd(home);
    c.args(["node1.acme-prod", &format!("touch {file}")]);
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(says), "{said}");
    assert!(!Path::new(file).exists(), "{ran}");
}

/// A `session_refused` event of alice with `code` and `limit` (and `cluster` when given).
async fn session_refused_is_audited(
    w: &support::broker::World,
    code: &str,
    limit: u64,
    cluster: Option<&str>,
) {
    let refused = w.wait_audit("kind=session_refused", 1).await;
    assert!(
        refused.iter().any(|e| opt_str(e, "code") == Some(code)
            && field_of(e, "limit") == limit
            && e.engineer.as_deref() == Some("alice")
            && cluster.is_none_or(|c| e.cluster.as_deref() == Some(c))),
        "{refused:#?}"
    );
}

/// A new session on node1 runs (a place was freed).
fn a_new_session_opens(home: &Path) {
    let again = ssh_cmd(home)
        .args(["node1.acme-prod", "echo freed"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("freed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

// Sessions of one engineer through a gateway are bounded: past the limit a new session is ended
// at once with the reason, audited, and nothing runs; a session that ends frees its place.
#[tokio::test]
async fn one_engineer_cannot_open_unbounded_sessions_at_the_gateway() {
    let (w, _b, home) = bastion::alice_at_the_edge()
        .gateway("max_sessions_per_engineer = 1\n")
        .await;
    let tag = format!("/tmp/sp-at-sess-{}", std::process::id());
    let _ = std::fs::remove_file(format!("{tag}-second"));
    let mut first = ssh_cmd(home.path());
    first.args(["node1.acme-prod", &format!("touch {tag}-first; sleep 6")]);
    let mut first = spawn(first);
    wait_file(&format!("{tag}-first"));
    refused_past_the_limit(
        home.path(),
        &format!("{tag}-second"),
        "at most 1 sessions of one engineer",
        "a session past the limit ran",
    );
    session_refused_is_audited(&w, "too_many_sessions_engineer", 1, None).await;
    let _ = first.wait();
    a_new_session_opens(home.path());
    let _ = std::fs::remove_file(format!("{tag}-first"));
}

// Sessions through one gateway are bounded (`max_sessions`), whoever opens them: past the limit
// a new session is ended at once with the reason, audited, and nothing runs; a session that ends
// frees its place.
#[tokio::test]
async fn a_gateway_serves_at_most_max_sessions_at_once() {
    let (w, _b, home) = bastion::alice_at_the_edge()
        .gateway("max_sessions = 2\n")
        .await;
    let tag = format!("/tmp/sp-at-gwsess-{}", std::process::id());
    let _ = std::fs::remove_file(format!("{tag}-third"));
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = ssh_cmd(home.path());
        c.args(["node1.acme-prod", &format!("touch {tag}-{i}; sleep 6")]);
        held.push(spawn(c));
        wait_file(&format!("{tag}-{i}"));
    }
    refused_past_the_limit(
        home.path(),
        &format!("{tag}-third"),
        "this gateway serves at most 2 sessions at once; try again later",
        "a session past the gateway's limit ran",
    );
    session_refused_is_audited(&w, "too_many_sessions", 2, Some("acme-prod")).await;
    // One ends: the next gets in.
    let mut held = held.into_iter();
    let _ = held.next().unwrap().wait();
    a_new_session_opens(home.path());
    for mut h in held {
        let _ = h.wait();
    }
    for i in 0..2 {
        let _ = std::fs::remove_file(format!("{tag}-{i}"));
    }
}

// Anyone can knock at the edge with a key it has no certificate for, again and again: each try
// is refused, but the edge's log takes only a few events a minute per address and code (the
// first ones as they happen; the others are counted into a later event), so a flood cannot fill
// its spool.
#[tokio::test]
async fn a_flood_of_refused_logins_does_not_fill_the_edges_log() {
    let (w, port) = world_with_edge().await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&plain)
        .status()
        .unwrap();
    assert!(st.success());
    let knock = || {
        Ssh::bare()
            .any_host_key()
            .key(&plain)
            .args(["-p", &port.to_string(), "mallory@127.0.0.1", "true"])
            .spawn()
    };
    const TRIES: usize = 30;
    let began = Instant::now();
    for _ in 0..TRIES / 10 {
        let batch: Vec<Child> = (0..10).map(|_| knock()).collect();
        for c in batch {
            let out = c.wait_with_output().unwrap();
            assert!(!out.status.success());
        }
    }
    let took = began.elapsed();
    // Every try was refused (the edge's own log says so each time)...
    let refusals = || {
        b.edge
            .log_text()
            .matches("plain key refused at the edge")
            .count()
    };
    let start = Instant::now();
    while refusals() < TRIES && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(refusals(), TRIES, "{}", b.edge.log_text());
    // ... and audited a few times, the first ones as they happened.
    w.wait_audit("kind=edge_refused&limit=1000", 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = w
        .audit("kind=edge_refused&limit=1000")
        .await
        .into_iter()
        .filter(|e| opt_str(e, "code") == Some("not_a_certificate"))
        .collect::<Vec<_>>();
    let minutes = took.as_secs() / 60 + 1;
    assert!(
        !events.is_empty() && events.len() as u64 <= 5 * minutes,
        "{} events for {TRIES} refusals in {took:?}: {events:#?}",
        events.len()
    );
    assert_eq!(field_str(&events[0], "login"), "mallory");
    assert_eq!(field_str(&events[0], "source_ip"), "127.0.0.1");
}

// The data plane takes a new set of user CAs only when a CA it trusts signed it. Here the
// broker's CA key was swapped (a restored or rewritten data directory; an on-path attacker
// answering `/v1/ca` looks the same): it offers the old CA plus a new one, signed by the new one.
// The edge and the gateway refuse it, keep the last set (the new CA's certificates open nothing),
// and audit it in their own chains, once however often they refresh.
#[tokio::test]
async fn an_unsigned_change_of_the_user_cas_is_refused_and_audited() {
    use russh::keys::{HashAlg, PublicKey};
    let (mut w, b, home) = bastion::alice_at_the_edge().audited().await;
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo before"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("before"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = w.broker.dir.join("data");
    let fingerprint = |path: &Path| {
        PublicKey::from_openssh(std::fs::read_to_string(path).unwrap().trim())
            .unwrap()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    };
    let old_pub = w.broker.dir.join("old_user_ca.pub");
    std::fs::copy(data.join("user_ca.pub"), &old_pub).unwrap();
    let old = fingerprint(&old_pub);
    w.stop_broker();
    std::fs::rename(data.join("user_ca"), w.broker.dir.join("user_ca.swapped")).unwrap();
    std::fs::remove_file(data.join("user_ca.pub")).unwrap();
    let mut config = std::fs::read_to_string(&w.broker.config).unwrap();
    config.push_str(&format!(
        "\n[ca]\nextra_trusted = [\"{}\"]\n",
        old_pub.display()
    ));
    std::fs::write(&w.broker.config, config).unwrap();
    w.start_broker_again();
    let new = fingerprint(&data.join("user_ca.pub"));
    assert_ne!(old, new);
    for (kind, source) in [
        (
            "edge_user_cas_refused",
            format!("edge:{}", bastion::EDGE_NAME),
        ),
        ("user_cas_refused", "gateway:".to_string()),
    ] {
        let e = w.wait_audit(&format!("kind={kind}"), 1).await;
        assert_eq!(e.len(), 1, "{kind}: {e:#?}");
        let e = &e[0];
        assert!(e.source.as_str().starts_with(&source), "{e:?}");
        assert_eq!(field_str(e, "code"), "user_cas_unsigned", "{e:?}");
        assert_eq!(*field_of(e, "trusted"), serde_json::json!([old]), "{e:?}");
        assert_eq!(*field_of(e, "added"), serde_json::json!([new]), "{e:?}");
        assert_eq!(field_str(e, "signature"), "by no trusted CA", "{e:?}");
        assert!(field_str(e, "reason").contains("refused"), "{e:?}");
    }
    // The new CA's certificate opens nothing: the edge still trusts the old set only.
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 1));
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo after"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));
    let refused = w.wait_audit("kind=edge_refused&ticket=SUP-1234", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("untrusted_ca")),
        "{refused:#?}"
    );
    // Both refresh every second; the refusal stays one event each.
    for kind in ["edge_user_cas_refused", "user_cas_refused"] {
        assert_eq!(w.audit(&format!("kind={kind}")).await.len(), 1, "{kind}");
    }
    // ...though the edge keeps refusing it at each refresh (a second apart; waited for, as a
    // loaded machine may not have refreshed twice yet).
    let refusals = || {
        b.edge
            .log_text()
            .matches("no CA trusted now signed")
            .count()
    };
    let began = Instant::now();
    while refusals() < 2 && began.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refusals() > 1, "{}", b.edge.log_text());
    for kind in ["edge_user_cas_refused", "user_cas_refused"] {
        assert_eq!(w.audit(&format!("kind={kind}")).await.len(), 1, "{kind}");
    }
}

/// Audit chains: what an edge or a gateway may write, and signatures that prove who wrote it.
mod chains {
    use reqwest::StatusCode;
    use russh::keys::PrivateKey;
    use sallyport_audit::AuditRecord;
    use serde_json::{Value, json};

    use super::support::broker::{
        Api, Dir, World, error_of, field_str, now, opt_str, printed, read_as, signed_batch,
    };
    use sallyport_api::admin::TokenCreated;
    use sallyport_api::audit::{AuditChain, AuditEntry};
    use sallyport_api::gateways::{BatchStored, Enrolled, GatewayCreated};

    fn key(comment: &str) -> PrivateKey {
        sallyport_ca::keys::generate_ed25519(comment).unwrap()
    }

    fn line(k: &PrivateKey) -> String {
        k.public_key().to_openssh().unwrap()
    }

    /// Create and enroll a gateway of acme-prod whose audit key is `audit`: (id, its caller).
    async fn gateway(w: &World, name: &str, audit: &PrivateKey) -> (String, Api) {
        let (s, v) = w
            .op
            .post_as::<GatewayCreated>("/v1/clusters/acme-prod/gateways", json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v:?}");
        let (s, v) = w
            .anon
            .post_as::<Enrolled>(
                "/v1/gateways/enroll",
                json!({"join_token": v.join_token, "node_ca_public_key": line(&key("n")),
                       "host_ca_public_key": line(&key("h")), "audit_public_key": line(audit)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v:?}");
        assert_eq!(
            v.audit_key_fingerprint,
            audit
                .public_key()
                .fingerprint(russh::keys::ssh_key::HashAlg::Sha256)
                .to_string()
        );
        (v.gateway, w.anon.with(&v.credential))
    }

    /// Gateway gw1 of acme-prod, its audit key `k`: its chain's source, its caller, and `n`
    /// records of `command` run in alice's session s-1, to be sent.
    async fn gw1_with_commands(
        w: &World,
        k: &PrivateKey,
        n: usize,
        command: &str,
    ) -> (String, Api, Vec<AuditRecord>) {
        let (id, gw) = gateway(w, "gw1", k).await;
        let source = format!("gateway:{id}");
        let data = json!({"cluster": "acme-prod", "session": "s-1", "engineer": "alice", "command": command});
        let records = records(&source, None, n, "command", data);
        (source, gw, records)
    }

    /// `n` records of `source` after `prev`, of `kind` with `data`.
    fn records(
        source: &str,
        prev: Option<&AuditRecord>,
        n: usize,
        kind: &str,
        data: Value,
    ) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let last = out.last().or(prev);
            let mut d = data.clone();
            d["i"] = json!(i);
            out.push(AuditRecord::next(
                source,
                last.map(|r| (r.seq, r.hash.as_str())),
                now() * 1000 + i as u64,
                kind,
                d,
            ));
        }
        out
    }

    async fn refused_ingests(w: &World, by: &str) -> Vec<AuditEntry> {
        w.audit("kind=refused&limit=1000")
            .await
            .into_iter()
            .filter(|e| {
                opt_str(e, "action") == Some("audit_ingest") && opt_str(e, "by") == Some(by)
            })
            .collect()
    }

    fn message(v: &Value) -> String {
        error_of(v).message
    }

    // A leaked edge token cannot put a `command` (or anything with escape sequences in a subject
    // field) in the audit log; each refusal names the record and why, and is audited.
    #[tokio::test]
    async fn an_edge_token_cannot_write_a_command_event_or_escape_sequences() {
        let w = World::start(Dir::File(vec![])).await;
        let (s, v) =
            w.op.post_as::<TokenCreated>("/v1/tokens", json!({"name": "edge-x", "role": "edge"}))
                .await;
        assert_eq!(s, StatusCode::CREATED, "{v:?}");
        let edge = w.op.with(&v.token);
        let k = key("edge audit");
        let source = "edge:edge-x";
        let post = |body: Value| {
            let edge = edge.clone();
            async move { edge.post("/v1/audit/records", body).await }
        };

        let forged = records(
            source,
            None,
            1,
            "command",
            json!({"edge": "edge-x", "engineer": "alice", "cluster": "acme-prod",
                   "command": "rm -rf /srv"}),
        );
        let (s, v) = post(signed_batch(&k, &forged, None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let m = message(&v);
        assert!(
            m.contains("record 1") && m.contains("may not write \"command\""),
            "{m}"
        );
        // A subject field with terminal escape sequences.
        let escaped = records(
            source,
            None,
            1,
            "edge_refused",
            json!({"edge": "edge-x", "engineer": "alice\u{1b}]0;pwned\u{7}\u{1b}[2J",
                   "cluster": "acme-prod"}),
        );
        let (s, v) = post(signed_batch(&k, &escaped, None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let m = message(&v);
        assert!(
            m.contains("engineer") && m.contains("not a valid name") && !m.contains('\u{1b}'),
            "{m:?}"
        );
        // Speaking of another edge, or of a session.
        for data in [
            json!({"edge": "edge-y", "cluster": "acme-prod"}),
            json!({"edge": "edge-x", "session": "s-1"}),
        ] {
            let r = records(source, None, 1, "edge_session", data);
            let (s, v) = post(signed_batch(&k, &r, None)).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        }
        let refused = refused_ingests(&w, source).await;
        assert_eq!(refused.len(), 4, "{refused:#?}");
        assert!(field_str(&refused[0], "reason").contains("may not write \"command\""));
        // Nothing was stored, no key was pinned by a refused batch, and the chain is not wedged:
        // what an edge may say is taken.
        assert!(w.audit(&format!("source={source}")).await.is_empty());
        let (_, keys) = w.reviewer.get("/v1/audit/keys").await;
        assert!(
            !keys.to_string().contains(source),
            "a refused batch pinned a key: {keys}"
        );
        let good = records(
            source,
            None,
            2,
            "edge_refused",
            json!({"edge": "edge-x", "engineer": "alice", "cluster": "acme-prod",
                   "code": "untrusted_ca"}),
        );
        let (s, v) = post(signed_batch(&k, &good, None)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(w.audit("kind=command").await.len(), 0);
        // The edge's key was pinned at this first signed batch, audited.
        let pinned = w.audit("kind=audit_key_pinned").await;
        assert_eq!(pinned.len(), 1, "{pinned:#?}");
        assert_eq!(field_str(&pinned[0], "chain"), source);
    }

    // A batch not signed by the chain's pinned key is refused, audited, and stores nothing.
    #[tokio::test]
    async fn a_batch_with_a_bad_signature_or_signed_by_another_key_is_refused() {
        let w = World::start(Dir::File(vec![])).await;
        let mine = key("gateway audit");
        let (source, gw, batch) = gw1_with_commands(&w, &mine, 3, "id").await;
        let thief = key("someone else");
        let post = |body: Value| {
            let gw = gw.clone();
            async move { gw.post("/v1/audit/records", body).await }
        };
        // Signed by another key (offered as such, or passed off as the pinned one).
        let (s, v) = post(signed_batch(&thief, &batch, None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(message(&v).contains("not by the key pinned"), "{v}");
        let mut passed_off = signed_batch(&thief, &batch, None);
        passed_off["public_key"] = json!(line(&mine));
        let (s, v) = post(passed_off).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(message(&v).contains("does not hold"), "{v}");
        // The signature of another head (an earlier record) does not cover the batch.
        let mut other_head = signed_batch(&mine, &batch, None);
        other_head["signature"] =
            json!(sallyport_ca::chainsig::sign_head(&mine, &source, 2, &batch[1].hash).unwrap());
        let (s, v) = post(other_head).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        // Garbage, and none at all.
        let mut garbage = signed_batch(&mine, &batch, None);
        garbage["signature"] =
            json!("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----");
        assert_eq!(post(garbage).await.0, StatusCode::FORBIDDEN);
        let (s, v) = post(json!({"records": batch})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(message(&v).contains("not signed"), "{v}");
        let refused = refused_ingests(&w, &source).await;
        assert_eq!(refused.len(), 5, "{refused:#?}");
        assert!(w.audit(&format!("source={source}")).await.is_empty());
        // The right key: stored.
        let (s, v) = post(signed_batch(&mine, &batch, None)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            read_as::<BatchStored>("a batch stored", v).acknowledged_through,
            3
        );
    }

    /// Rewrite record `seq` of `source` in the store (its command), and re-hash it and every
    /// later record, as someone who can write the database but not read the signing keys could.
    async fn rewrite(w: &World, source: &str, seq: u64, command: &str) {
        use sqlx::Row;
        let mut db = w.store_db().await;
        let rows = sqlx::query(
            "SELECT seq, time_ms, kind, data, prev_hash FROM audit_events WHERE source = $1 \
             AND seq >= $2 ORDER BY seq",
        )
        .bind(source)
        .bind(seq as i64)
        .fetch_all(&mut db)
        .await
        .unwrap();
        let mut prev: Option<String> = None;
        for row in rows {
            let mut r = AuditRecord {
                source: source.to_string(),
                seq: row.get::<i64, _>(0) as u64,
                time: row.get::<i64, _>(1) as u64,
                kind: row.get(2),
                data: serde_json::from_str(&row.get::<String, _>(3)).unwrap(),
                prev_hash: row.get(4),
                hash: String::new(),
            };
            if r.seq == seq {
                r.data["command"] = json!(command);
            }
            if let Some(p) = prev {
                r.prev_hash = p;
            }
            r.hash = r.compute_hash();
            sqlx::query(
                "UPDATE audit_events SET data = $1, prev_hash = $2, hash = $3 WHERE source = $4 \
                 AND seq = $5",
            )
            .bind(serde_json::to_string(&r.data).unwrap())
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(source)
            .bind(r.seq as i64)
            .execute(&mut db)
            .await
            .unwrap();
            prev = Some(r.hash);
        }
    }

    fn verify(w: &World, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        let out = w.reviewer.cli(&args);
        (out.status.code().unwrap_or(-1), printed(&out))
    }

    // Someone who can write the broker's database rewrites a gateway's record and fixes up the
    // hash chain: every hash is valid again, but no signature covers the rewritten records, and
    // `sallyport audit verify` says so (exit status 1). Replacing the pinned key and re-signing
    // passes the database's own keys, but not the keys kept out of band (`--keys`).
    #[tokio::test]
    async fn a_tampered_gateway_record_with_a_valid_hash_but_no_valid_signature_is_reported() {
        let w = World::start(Dir::File(vec![])).await;
        let k = key("gateway audit");
        let (source, gw, all) = gw1_with_commands(&w, &k, 6, "uptime").await;
        for part in [&all[..3], &all[3..]] {
            let (s, v) = gw
                .post("/v1/audit/records", signed_batch(&k, part, None))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (code, text) = verify(&w, &["--source", &source]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("6 events, chain intact, signed through #6"),
            "{text}"
        );
        // The out-of-band copy of the keys, made before anything happened.
        let keys_file = w.broker.dir.join("trusted-audit-keys");
        let out = w.reviewer.cli(&["audit", "keys"]);
        assert!(out.status.success());
        std::fs::write(&keys_file, &out.stdout).unwrap();
        let keys_text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            keys_text.contains(&source) && keys_text.contains("\nbroker ssh-ed25519 "),
            "{keys_text}"
        );
        let keys_arg = keys_file.to_str().unwrap();
        let (code, text) = verify(&w, &["--keys", keys_arg]);
        assert_eq!(code, 0, "{text}");

        rewrite(&w, &source, 4, "uptime # nothing to see").await;
        let (code, text) = verify(&w, &["--source", &source]);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("TAMPERED: events #4..#6 have a valid hash but no valid signature"),
            "{text}"
        );
        let (code, json_text) = verify(&w, &["--source", &source, "--json"]);
        assert_eq!(code, 1);
        let v: Value = serde_json::from_str(json_text.lines().next().unwrap()).unwrap();
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["signed_through"], 3, "{v}");
        assert_eq!(v["tampered"], json!([4, 6]), "{v}");

        // Now replace the pinned key too, drop the old signatures and re-sign the rewritten head.
        let forger = key("forger");
        {
            let mut db = w.store_db().await;
            let chain: AuditChain = w
                .reviewer
                .get_ok(&format!("/v1/audit/chain?source={source}"))
                .await;
            let last: &AuditRecord = &chain.records[5];
            let sig = sallyport_ca::chainsig::sign_head(&forger, &source, 6, &last.hash).unwrap();
            sqlx::query("UPDATE audit_keys SET public_key = $1 WHERE source = $2")
                .bind(line(&forger))
                .bind(&source)
                .execute(&mut db)
                .await
                .unwrap();
            sqlx::query("DELETE FROM audit_signatures WHERE source = $1 AND seq <> 6")
                .bind(&source)
                .execute(&mut db)
                .await
                .unwrap();
            sqlx::query("UPDATE audit_signatures SET hash = $1, signature = $2 WHERE source = $3 AND seq = 6")
                .bind(&last.hash)
                .bind(&sig)
                .bind(&source)
                .execute(&mut db)
                .await
                .unwrap();
        }
        // The database now vouches for itself...
        let (code, text) = verify(&w, &["--source", &source]);
        assert_eq!(code, 0, "{text}");
        // ...but not against the keys kept outside it.
        let (code, text) = verify(&w, &["--source", &source, "--keys", keys_arg]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("KEY REPLACED"), "{text}");
        assert!(text.contains("TAMPERED"), "{text}");
        // The broker's own chain is signed with a key in its data_dir, never in the database.
        let (code, text) = verify(&w, &["--source", "broker", "--keys", keys_arg]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("signed through"), "{text}");
    }
}

// A revoked edge stops: once the broker refuses its token, it takes no new session, ends the
// open ones after its grace period and exits with an error saying why.
#[tokio::test]
async fn a_revoked_edge_stops_serving() {
    use serde_json::json;
    let (w, port) = world_with_edge().await;
    let (s, v) =
        w.op.post_as::<TokenCreated>(
            "/v1/tokens",
            json!({"name": bastion::EDGE_NAME, "role": "edge"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v:?}");
    let token = v.token;
    let id = v.id;
    let mut b =
        bastion::start_with_edge_token_and(&w, port, &token, "shutdown_grace_secs = 1\n").await;
    let home = bastion::alice_home(&w, &b);
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo before"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("before"));
    let (s, v) = w.op.delete(&format!("/v1/tokens/{id}")).await;
    assert!(s.is_success(), "{v}");
    let status = b
        .edge
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the revoked edge kept running: {}", b.edge.log_text()));
    assert!(!status.success());
    let log = b.edge.log_text();
    assert!(log.contains("refuses this edge's token"), "{log}");
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo after"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));
}

// One connection to the edge opening 1,000 channels: the edge forwards at most
// `max_forwards_per_connection` at once, refuses the rest and keeps serving others. The refusals
// are audited without filling the edge's log: the first few as they happen, the others counted
// into one more event when the connection ends (`suppressed`).
#[tokio::test]
async fn a_connection_opening_a_thousand_channels_is_bounded() {
    struct Client(russh::keys::PublicKey);
    impl russh::client::Handler for Client {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(
                matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
                if key.key_data() == self.0.key_data()),
            )
        }
    }
    let (w, b, home) = bastion::alice_at_the_edge()
        .edge("max_forwards_per_connection = 5\n")
        .await;
    let key = russh::keys::load_secret_key(home.path().join("acme-prod"), None).unwrap();
    let cert = russh::keys::Certificate::from_openssh(
        &std::fs::read_to_string(home.path().join("acme-prod-cert.pub")).unwrap(),
    )
    .unwrap();
    let edge_key = russh::keys::PublicKey::from_openssh(&b.edge_host_key).unwrap();
    let mut h = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        ("127.0.0.1", b.edge_port),
        Client(edge_key),
    )
    .await
    .unwrap();
    let auth = h
        .authenticate_openssh_cert("alice", Arc::new(key), cert)
        .await
        .unwrap();
    assert!(auth.success());
    let mut open = Vec::new();
    let mut refused = 0;
    let began = Instant::now();
    for _ in 0..1000 {
        match h
            .channel_open_direct_tcpip("node1.acme-prod", 22, "127.0.0.1", 40000)
            .await
        {
            Ok(c) => open.push(c),
            Err(_) => refused += 1,
        }
    }
    assert!(open.len() <= 5, "{} forwards open at once", open.len());
    assert_eq!(open.len() + refused, 1000);
    // The edge still serves everyone else.
    let out = ssh_cmd(home.path())
        .args(["node1.acme-prod", "echo still-serving"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still-serving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(open);
    h.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    let took = began.elapsed();
    // Every event stands for itself and the refusals counted into it.
    let accounted = |events: &[AuditEntry]| -> u64 {
        events
            .iter()
            .map(|e| 1 + field_of(e, "suppressed").as_u64().unwrap_or(0))
            .sum()
    };
    let start = Instant::now();
    let events = loop {
        let events = w
            .audit("kind=edge_refused&ticket=SUP-1234&limit=1000")
            .await;
        if accounted(&events) >= refused as u64 || start.elapsed() > Duration::from_secs(20) {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(accounted(&events), refused as u64, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| opt_str(e, "code") == Some("too_many_forwards"))
    );
    // At most 5 events a minute as they happen, and one more with the count at the end.
    let minutes = took.as_secs() / 60 + 1;
    assert!(
        events.len() as u64 <= 5 * minutes + 1,
        "{} events for {refused} refusals in {took:?}",
        events.len()
    );
    // The first refusal is written as it was, the last carries the count.
    let first = &events[0];
    assert_eq!(*field_of(first, "limit"), 5, "{first:?}");
    assert!(first.field("suppressed").is_none(), "{first:?}");
    let last = events.last().unwrap();
    assert!(
        field_of(last, "suppressed").as_u64().unwrap() > 900,
        "{last:?}"
    );
    assert!(
        field_str(last, "reason").contains("more such refusals"),
        "{last:?}"
    );
    assert_eq!(field_of(last, "connection"), field_of(first, "connection"));
}

// Credentials the broker never issued (a guessed API token, a gateway credential, a session
// token it did not sign) are refused and audited by address, a few times a minute, however
// often they are tried.
#[tokio::test]
async fn credentials_never_issued_are_refused_and_audited_without_filling_the_log() {
    use support::broker::{Api, Dir, World};
    let w = World::start(Dir::File(vec![])).await;
    let forged_jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    for (token, path, reason) in [
        (
            format!("spt_{}", "ab".repeat(32)),
            "/v1/approvals",
            "an API token that was never issued",
        ),
        (
            format!("spg_{}", "cd".repeat(32)),
            "/v1/gateway/self",
            "a gateway credential that was never issued",
        ),
        (
            forged_jwt.to_string(),
            "/v1/approvals",
            "a session token the broker did not sign",
        ),
    ] {
        let api = Api::new(&w.broker.url, Some(&token));
        for _ in 0..20 {
            let (s, _) = api.get(path).await;
            assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{token}");
        }
        let refused: Vec<AuditEntry> = w
            .audit("kind=refused&limit=1000")
            .await
            .into_iter()
            .filter(|e| opt_str(e, "reason").is_some_and(|r| r.starts_with(reason)))
            .collect();
        assert!((1..=2).contains(&refused.len()), "{reason}: {refused:#?}");
        assert_eq!(
            field_str(&refused[0], "by"),
            "unknown@127.0.0.1",
            "{refused:#?}"
        );
        assert_eq!(field_str(&refused[0], "action"), format!("GET {path}"));
    }
}
