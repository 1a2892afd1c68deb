//! The broker's side of the data plane, end to end against a real `sallyport broker` process
//! (SQLite, or PostgreSQL with SALLYPORT_TEST_STORE=postgres): gateway creation and one-time
//! enrollment, the gateway credential and what it may do, audit chain ingestion (idempotent,
//! fork-refusing, own source only) checked by `sallyport audit verify`, recordings, and what
//! `sallyport login` writes for the edge and the cluster's host CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::process::Command;

use reqwest::StatusCode;
use russh::keys::PrivateKey;
use sallyport_api::admin::TokenCreated;
use sallyport_api::certificates::CaKeys;
use sallyport_api::certificates::Issued;
use sallyport_api::gateways::{
    BatchStored, Enrolled, Gateway, GatewayCreated, GatewayNode, GatewaySelf, HostCa,
    RecordingStored,
};
use sallyport_api::identity::Whoami;
use sallyport_broker::audit::{AuditEvent, AuditRecord};
use serde_json::{Value, json};
use support::broker::*;

/// An enrolled gateway, as the test sees it.
struct Gw {
    id: String,
    cluster: String,
    /// Calls with the gateway's credential.
    api: Api,
    host_ca_line: String,
    /// Signs the gateway's audit chain (pinned at enrollment).
    audit_key: PrivateKey,
}

fn key_line(k: &PrivateKey) -> String {
    k.public_key().to_openssh().unwrap()
}

/// The operator creates a gateway of `cluster`; returns (id, join token).
async fn create_gateway(w: &World, cluster: &str, name: &str) -> (String, String) {
    let (s, v) =
        w.op.post(
            &format!("/v1/clusters/{cluster}/gateways"),
            json!({"name": name}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let made: GatewayCreated = read_as("a new gateway", v);
    assert_eq!(made.cluster, cluster);
    assert_eq!(made.name, name);
    (made.id, made.join_token)
}

/// An enrollment's answer: it names the gateway `id` of `cluster`.
fn enrolled(v: Value, id: &str, cluster: &str) -> Enrolled {
    let e: Enrolled = read_as("an enrollment", v);
    assert_eq!((e.gateway.as_str(), e.cluster.as_str()), (id, cluster));
    e
}

/// The gateways of `cluster` as `api` lists them (the list as JSON too, to look for secrets).
async fn gateways(api: &Api, cluster: &str) -> (Vec<Gateway>, String) {
    let (s, v) = api.get(&format!("/v1/clusters/{cluster}/gateways")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (read_as("the gateways", v.clone()), v.to_string())
}

/// The host CA keys of `cluster`, as anyone reads them.
async fn host_cas(w: &World, cluster: &str) -> Vec<String> {
    let path = format!("/v1/clusters/{cluster}/host-ca");
    w.anon.get_ok::<HostCa>(&path).await.host_ca_public_keys
}

async fn enroll_with(w: &World, token: &str, node_ca: &str, host_ca: &str) -> (StatusCode, Value) {
    let audit = sallyport_ca::keys::generate_ed25519("audit").unwrap();
    enroll_keyed(w, token, node_ca, host_ca, &key_line(&audit)).await
}

async fn enroll_keyed(
    w: &World,
    token: &str,
    node_ca: &str,
    host_ca: &str,
    audit: &str,
) -> (StatusCode, Value) {
    w.anon
        .post(
            "/v1/gateways/enroll",
            json!({"join_token": token, "node_ca_public_key": node_ca, "host_ca_public_key": host_ca,
                   "audit_public_key": audit}),
        )
        .await
}

/// Create and enroll a gateway of `cluster`.
async fn gateway(w: &World, cluster: &str, name: &str) -> Gw {
    let (id, token) = create_gateway(w, cluster, name).await;
    let node_ca = sallyport_ca::keys::generate_ed25519("node ca").unwrap();
    let host_ca = sallyport_ca::keys::generate_ed25519("host ca").unwrap();
    let audit_key = sallyport_ca::keys::generate_ed25519("audit").unwrap();
    let (s, v) = enroll_keyed(
        w,
        &token,
        &key_line(&node_ca),
        &key_line(&host_ca),
        &key_line(&audit_key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let credential = enrolled(v, &id, cluster).credential;
    Gw {
        api: w.anon.with(&credential),
        id,
        cluster: cluster.into(),
        host_ca_line: key_line(&host_ca),
        audit_key,
    }
}

/// "ssh-ed25519 AAAA..." without the comment.
fn bare(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `refused` events for this action.
async fn refusals(w: &World, action: &str) -> Vec<Refusal> {
    w.refusals(action).await
}

fn ssh_keygen(args: &[&str]) {
    let out = run(Command::new("ssh-keygen").args(args));
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn gateway_enrolls_once_with_its_join_token_and_every_step_is_audited() {
    let w = World::start(Dir::File(vec![])).await;
    let (id, token) = create_gateway(&w, "acme-prod", "gw1").await;
    assert!(
        token.starts_with("spj_") && token.len() == 4 + 64,
        "{token}"
    );
    // Only the operator creates gateways; names are unique per cluster.
    let (s, _) = w
        .acme
        .post("/v1/clusters/acme-prod/gateways", json!({"name": "gw2"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(refusals(&w, "create_gateway").await.len(), 1);
    let (s, _) =
        w.op.post("/v1/clusters/acme-prod/gateways", json!({"name": "gw1"}))
            .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) =
        w.op.post("/v1/clusters/nowhere/gateways", json!({"name": "gw1"}))
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) =
        w.op.post("/v1/clusters/acme-prod/gateways", json!({"name": "../x"}))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The list holds no secret.
    let (list, text) = gateways(&w.op, "acme-prod").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert!(list[0].enrolled_at.is_none());
    assert!(
        !text.contains(&token) && !text.contains("hash") && !text.contains("token"),
        "{text}"
    );
    // acme's approver sees acme's gateways, not globex's; engineers' and others' callers not.
    assert_eq!(
        w.acme.get("/v1/clusters/acme-prod/gateways").await.0,
        StatusCode::OK
    );
    assert_eq!(
        w.globex.get("/v1/clusters/acme-prod/gateways").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.tickets.get("/v1/clusters/acme-prod/gateways").await.0,
        StatusCode::FORBIDDEN
    );

    // Keys that are not Ed25519 public key lines are refused, and do not spend the token.
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    ssh_keygen(&["-q", "-t", "ecdsa", "-N", "", "-f", &p("ecdsa")]);
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p("ca")]);
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p("host")]);
    ssh_keygen(&[
        "-q",
        "-s",
        &p("ca"),
        "-I",
        "x",
        "-h",
        "-n",
        "node1.acme-prod",
        &p("host.pub"),
    ]);
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    let node_ca = sallyport_ca::keys::generate_ed25519("node ca").unwrap();
    let host_ca = sallyport_ca::keys::generate_ed25519("host ca").unwrap();
    let good_node = key_line(&node_ca);
    let good_host = key_line(&host_ca);
    let user_ca = w.anon.get_as::<CaKeys>("/v1/ca").await.1.user_ca;
    let private = node_ca
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .unwrap()
        .to_string();
    for (what, node, host) in [
        ("garbage", "not a key".to_string(), good_host.clone()),
        ("empty", String::new(), good_host.clone()),
        ("ecdsa", read("ecdsa.pub"), good_host.clone()),
        ("certificate", good_node.clone(), read("host-cert.pub")),
        ("private key", private.clone(), good_host.clone()),
        (
            "two lines",
            format!("{good_node}\n{good_node}"),
            good_host.clone(),
        ),
        ("same key twice", good_node.clone(), good_node.clone()),
        ("the user CA", user_ca.clone(), good_host.clone()),
    ] {
        let (s, v) = enroll_with(&w, &token, &node, &host).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {v}");
        assert_eq!(error_of(&v).code, "bad_request", "{what}");
    }
    // A token nobody made.
    let forged = format!("spj_{}", "ab".repeat(32));
    for t in [forged.as_str(), "", "spt_x", &token[..20]] {
        let (s, v) = enroll_with(&w, t, &good_node, &good_host).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{t}: {v}");
    }

    // The real enrollment.
    let (s, v) = enroll_with(&w, &token, &good_node, &good_host).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let credential = enrolled(v, &id, "acme-prod").credential;
    assert!(
        credential.starts_with("spg_") && credential.len() == 4 + 64,
        "{credential}"
    );
    // The join token works once.
    let other = sallyport_ca::keys::generate_ed25519("other").unwrap();
    let (s, v) = enroll_with(&w, &token, &key_line(&other), &good_host).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).message.contains("already used"), "{v}");

    // Audit: one enrollment, the refusals by reason.
    let enrollments = w.broker_events("kind=gateway_enrolled").await;
    let [
        AuditEvent::GatewayEnrolled {
            gateway,
            cluster,
            customer,
            host_ca: host_ca_fp,
            ..
        },
    ] = &enrollments[..]
    else {
        panic!("not one enrollment: {enrollments:?}")
    };
    assert_eq!(
        (gateway, cluster.as_str(), customer.as_str()),
        (&id, "acme-prod", "acme")
    );
    assert_eq!(
        *host_ca_fp,
        host_ca
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    );
    let refused = refusals(&w, "enroll_gateway").await;
    assert_eq!(refused.len(), 8 + 4 + 1, "{refused:?}");
    assert!(
        refused
            .iter()
            .filter(|e| e.by == format!("gateway:{id}"))
            .all(|e| e.cluster.as_deref() == Some("acme-prod"))
    );
    assert_eq!(
        refused
            .iter()
            .filter(|e| e.by.starts_with("unknown-join-token@"))
            .count(),
        4
    );
    assert!(!w.events("").await.iter().any(|e| {
        let t = e.to_string();
        t.contains(&token) || t.contains(&credential)
    }));

    // Listed with its keys (no comments), never with secrets.
    let (list, text) = gateways(&w.reviewer, "acme-prod").await;
    assert!(list[0].enrolled_at.unwrap() > 0);
    assert_eq!(list[0].node_ca_public_key, Some(bare(&good_node)));
    assert_eq!(list[0].host_ca_public_key, Some(bare(&good_host)));
    assert!(!text.contains(&credential));

    // The host CA keys are public, by cluster; an unknown cluster looks like one without keys.
    let (s, v) = w
        .anon
        .get_as::<HostCa>("/v1/clusters/acme-prod/host-ca")
        .await;
    assert_eq!(s, StatusCode::OK, "{v:?}");
    assert_eq!(v.cluster, "acme-prod");
    assert_eq!(v.host_ca_public_keys, [bare(&good_host)]);
    assert!(host_cas(&w, "acme-dev").await.is_empty());
    assert!(host_cas(&w, "no-such").await.is_empty());

    // Revoking the gateway ends its credential and drops its host CA key.
    let gw = w.anon.with(&credential);
    assert_eq!(gw.get("/v1/gateway/self").await.0, StatusCode::OK);
    assert_eq!(
        w.acme.delete(&format!("/v1/gateways/{id}")).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = w.op.delete(&format!("/v1/gateways/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        read_as::<Gateway>("a revoked gateway", v)
            .revoked_at
            .is_some()
    );
    let (s, e) = gw.get_err("/v1/gateway/self").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e.message.contains("revoked"));
    assert!(host_cas(&w, "acme-prod").await.is_empty());
    let revoked = w.broker_events("kind=admin_change").await;
    assert!(revoked.iter().any(|e| matches!(e,
        AuditEvent::AdminChange { action, target, .. }
            if action == "revoke_gateway" && *target == id)));
    // A revoked gateway's unused join token does not enroll either.
    let (id2, token2) = create_gateway(&w, "acme-prod", "gw3").await;
    assert_eq!(
        w.op.delete(&format!("/v1/gateways/{id2}")).await.0,
        StatusCode::OK
    );
    let (s, _) = enroll_with(&w, &token2, &good_node, &good_host).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_with_one_join_token_have_exactly_one_winner() {
    let w = World::start(Dir::File(vec![])).await;
    for round in 0..3 {
        let (id, token) = create_gateway(&w, "acme-prod", &format!("gw{round}")).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let anon = w.anon.clone();
            let token = token.clone();
            tasks.spawn(async move {
                let node = key_line(&sallyport_ca::keys::generate_ed25519("n").unwrap());
                let host = key_line(&sallyport_ca::keys::generate_ed25519("h").unwrap());
                let audit = key_line(&sallyport_ca::keys::generate_ed25519("a").unwrap());
                let (s, v) = anon
                    .post(
                        "/v1/gateways/enroll",
                        json!({"join_token": token, "node_ca_public_key": node, "host_ca_public_key": host,
                               "audit_public_key": audit}),
                    )
                    .await;
                (s, v, host)
            });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (s, v, host) = r.unwrap();
            match s {
                StatusCode::OK => winners.push((v, host)),
                StatusCode::FORBIDDEN => {}
                other => panic!("round {round}: unexpected {other}: {v}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (v, host) = &winners[0];
        // The stored keys are the winner's, and so is the working credential.
        let (list, _) = gateways(&w.op, "acme-prod").await;
        let row = list.iter().find(|g| g.id == id).unwrap();
        assert_eq!(row.host_ca_public_key, Some(bare(host)));
        let gw = w
            .anon
            .with(&enrolled(v.clone(), &id, "acme-prod").credential);
        let (s, me) = gw.get_as::<GatewaySelf>("/v1/gateway/self").await;
        assert_eq!(s, StatusCode::OK, "{me:?}");
        assert_eq!(me.id, id);
    }
    assert_eq!(w.events("kind=gateway_enrolled").await.len(), 3);
    assert_eq!(refusals(&w, "enroll_gateway").await.len(), 3 * 7);
}

#[tokio::test]
async fn a_gateway_credential_reads_its_own_cluster_and_nothing_else() {
    let w = World::start(Dir::File(vec![])).await;
    for (cluster, node, addr) in [
        ("acme-prod", "node1", "10.0.0.5"),
        ("acme-prod", "node2", "10.0.0.6"),
        ("acme-dev", "dev1", "10.1.0.5"),
        ("globex-prod", "g1", "10.9.0.5"),
    ] {
        let (s, v) =
            w.op.post(
                &format!("/v1/clusters/{cluster}/nodes"),
                json!({"name": node, "address": addr, "port": 2222}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let globex = gateway(&w, "globex-prod", "gw1").await;

    let (s, me) = gw.api.get_as::<GatewaySelf>("/v1/gateway/self").await;
    assert_eq!(s, StatusCode::OK, "{me:?}");
    assert_eq!(me.id, gw.id);
    assert_eq!(me.cluster, "acme-prod");
    let node = |name: &str, address: &str| GatewayNode {
        name: name.into(),
        address: address.into(),
        port: 2222,
        host_keys: vec![],
        trust_on_first_use: false,
    };
    assert_eq!(
        me.nodes,
        [node("node1", "10.0.0.5"), node("node2", "10.0.0.6")]
    );
    let (_, ca) = w.anon.get_as::<CaKeys>("/v1/ca").await;
    assert_eq!(me.user_ca, ca.trusted_user_cas);
    assert!(me.user_ca.contains(&ca.user_ca));
    let (_, other) = globex.api.get_as::<GatewaySelf>("/v1/gateway/self").await;
    assert_eq!(other.cluster, "globex-prod");
    assert_eq!(other.nodes.len(), 1);
    assert_eq!(other.nodes[0].name, "g1");
    let who: Whoami = gw.api.get_ok("/v1/whoami").await;
    assert!(
        matches!(&who, Whoami::Gateway { cluster, .. } if cluster == "acme-prod"),
        "{who:?}"
    );

    // Everything else is refused, and refusals name the gateway.
    let before = w.audit("kind=refused").await.len();
    let (_, key) = engineer_key();
    let get = |path: &str| (reqwest::Method::GET, path.to_string(), None);
    let post = |path: &str, body: Value| (reqwest::Method::POST, path.to_string(), Some(body));
    let put = |path: &str, body: Value| (reqwest::Method::PUT, path.to_string(), Some(body));
    let forbidden: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        get("/v1/clusters/acme-prod/nodes"),
        get("/v1/clusters/globex-prod/nodes"),
        get("/v1/clusters"),
        get("/v1/customers"),
        get("/v1/clusters/acme-prod/gateways"),
        post("/v1/clusters/acme-prod/gateways", json!({"name": "mine"})),
        post(
            "/v1/clusters/acme-prod/nodes",
            json!({"name": "evil", "address": "10.6.6.6"}),
        ),
        get("/v1/audit/events"),
        get("/v1/audit/chain?source=broker"),
        get("/v1/audit/signatures?source=broker"),
        get("/v1/audit/keys"),
        post(
            "/v1/certificates",
            json!({"public_key": key, "ticket": "T-1"}),
        ),
        get("/v1/certificates"),
        post(
            "/v1/revocations",
            json!({"scope": "engineer", "value": "alice", "reason": "x"}),
        ),
        get("/v1/approvals"),
        get("/v1/access-requests"),
        put(
            "/v1/tickets/T-1",
            json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice", "status": "open"}),
        ),
        get("/v1/recordings/s-1"),
        post("/v1/tokens", json!({"name": "x", "role": "operator"})),
    ];
    let n = forbidden.len();
    for (method, path, body) in forbidden {
        let (s, v) = gw
            .api
            .raw(method.clone(), &path, body.map(|b| b.to_string()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    let refused = w.broker_events("kind=refused").await;
    assert_eq!(refused.len(), before + n);
    assert!(refused[before..].iter().all(
        |e| matches!(e, AuditEvent::Refused { by, .. } if *by == format!("gateway:{}", gw.id))
    ));
    // What other callers may read is not for a gateway either (answered as not found).
    assert_eq!(gw.api.get("/v1/tickets/T-1").await.0, StatusCode::NOT_FOUND);

    // /v1/gateway/self is for gateways only.
    for api in [&w.op, &w.reviewer, &w.acme, &w.tickets] {
        assert_eq!(api.get("/v1/gateway/self").await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        w.anon.get("/v1/gateway/self").await.0,
        StatusCode::UNAUTHORIZED
    );
    let forged = w.anon.with(&format!("spg_{}", "00".repeat(32)));
    assert_eq!(
        forged.get("/v1/gateway/self").await.0,
        StatusCode::FORBIDDEN
    );
    // A join token is not a credential.
    let (_, token) = create_gateway(&w, "acme-dev", "gw1").await;
    assert_eq!(
        w.anon.with(&token).get("/v1/gateway/self").await.0,
        StatusCode::FORBIDDEN
    );
}

/// `n` records of `source`, starting after `prev`.
fn chain(source: &str, prev: Option<&AuditRecord>, n: usize, cluster: &str) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    for i in 0..n {
        let last = out.last().or(prev);
        let seq = last.map_or(1, |r| r.seq + 1);
        let r = AuditRecord::next(
            source,
            last.map(|r| (r.seq, r.hash.as_str())),
            now() * 1000 + seq,
            "command",
            json!({"cluster": cluster, "node": "node1", "session": "s-1", "engineer": "alice",
                   "ticket": "T-1", "command": format!("ls /tmp/{i}")}),
        );
        out.push(r);
    }
    out
}

async fn ship(gw: &Gw, records: &[AuditRecord]) -> (StatusCode, Value) {
    gw.api
        .post(
            "/v1/audit/records",
            signed_batch(&gw.audit_key, records, None),
        )
        .await
}

#[tokio::test]
async fn audit_records_are_ingested_once_and_forks_and_other_sources_are_refused() {
    let w = World::start(Dir::File(vec![])).await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let other = gateway(&w, "globex-prod", "gw1").await;
    let source = format!("gateway:{}", gw.id);
    let records = chain(&source, None, 5, &gw.cluster);

    // Nothing yet: where to start.
    let (s, v) = ship(&gw, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 0, "acknowledged_through": 0}));
    // Same batch twice: stored once.
    let (s, v) = ship(&gw, &records[..3]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 3, "acknowledged_through": 3}));
    let (s, v) = ship(&gw, &records[..3]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 0, "acknowledged_through": 3}));
    // Overlapping re-send after a lost acknowledgement.
    let (s, v) = ship(&gw, &records[1..]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 2, "acknowledged_through": 5}));
    let stored = w.audit(&format!("source={source}")).await;
    assert_eq!(stored.len(), 5);
    assert_eq!(stored[4].command.as_deref(), Some("ls /tmp/4"));
    assert_eq!(stored[4].session.as_deref(), Some("s-1"));
    assert_eq!(
        w.events(&format!("source={source}&engineer=alice&node=node1"))
            .await
            .len(),
        5
    );

    // A different record at a stored seq: a fork.
    let before = refusals(&w, "audit_ingest").await.len();
    let mut forked = chain(&source, Some(&records[1]), 1, &gw.cluster);
    forked[0].data["command"] = json!("rm -rf /");
    forked[0].hash = forked[0].compute_hash();
    let (s, v) = ship(&gw, &forked).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_of(&v).code, "conflict");
    // A new record that does not continue the stored chain: a fork too.
    let mut detached = chain(&source, Some(&records[4]), 1, &gw.cluster);
    detached[0].prev_hash = "ab".repeat(32);
    detached[0].hash = detached[0].compute_hash();
    let (s, v) = ship(&gw, &detached).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A second chain from seq 1 (a reset spool) forks at 1.
    let mut restart = chain(&source, None, 1, &gw.cluster);
    restart[0].time += 1;
    restart[0].hash = restart[0].compute_hash();
    assert_eq!(ship(&gw, &restart).await.0, StatusCode::CONFLICT);
    // A batch that breaks its own chain.
    let mut broken = chain(&source, Some(&records[4]), 3, &gw.cluster);
    broken[2].prev_hash = broken[0].hash.clone();
    broken[2].hash = broken[2].compute_hash();
    assert_eq!(ship(&gw, &broken).await.0, StatusCode::CONFLICT);
    let forks = refusals(&w, "audit_ingest").await;
    assert_eq!(forks.len(), before + 4, "{forks:?}");
    assert!(
        forks
            .iter()
            .all(|e| e.cluster.as_deref() == Some("acme-prod"))
    );
    // A gap: the answer says where to resume.
    let ahead = chain(
        &source,
        Some(&chain(&source, Some(&records[4]), 2, "acme-prod")[1]),
        1,
        "acme-prod",
    );
    let (s, v) = ship(&gw, &ahead).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(error_of(&v).message.contains("send from record 6"), "{v}");
    // Malformed batches.
    let next = chain(&source, Some(&records[4]), 2, &gw.cluster);
    let mut tampered = next.clone();
    tampered[0].data["command"] = json!("edited");
    assert_eq!(ship(&gw, &tampered).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        ship(&gw, &[next[1].clone(), next[0].clone()]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(w.events(&format!("source={source}")).await.len(), 5);

    // Another source's chain: refused, audited, nothing stored.
    let before = refusals(&w, "audit_ingest").await.len();
    for src in ["broker".to_string(), format!("gateway:{}", other.id)] {
        let foreign = chain(&src, None, 2, &gw.cluster);
        let (s, v) = ship(&gw, &foreign).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{src}: {v}");
    }
    let mut mixed = next.clone();
    mixed[1].source = "broker".into();
    mixed[1].hash = mixed[1].compute_hash();
    assert_eq!(ship(&gw, &mixed).await.0, StatusCode::FORBIDDEN);
    // Records about another cluster.
    let elsewhere = chain(&source, Some(&records[4]), 1, "globex-prod");
    assert_eq!(ship(&gw, &elsewhere).await.0, StatusCode::FORBIDDEN);
    let refused = refusals(&w, "audit_ingest").await;
    assert_eq!(refused.len(), before + 4);
    assert!(refused[before..].iter().all(|e| e.by == source));
    assert!(
        w.events(&format!("source=gateway:{}", other.id))
            .await
            .is_empty()
    );
    let broker_before = w.events("source=broker&kind=command").await;
    assert!(broker_before.is_empty());
    // Only gateways ship records.
    for api in [&w.op, &w.reviewer, &w.acme] {
        let (s, _) = api
            .post("/v1/audit/records", json!({"records": next}))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // The chain goes on from where it is.
    let (s, v) = ship(&gw, &next).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 2, "acknowledged_through": 7}));
}

#[tokio::test]
async fn audit_verify_checks_gateway_chains_and_names_an_edited_record() {
    let w = World::start(Dir::File(vec![])).await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let source = format!("gateway:{}", gw.id);
    let records = chain(&source, None, 6, &gw.cluster);
    assert_eq!(ship(&gw, &records[..4]).await.0, StatusCode::OK);
    assert_eq!(ship(&gw, &records[4..]).await.0, StatusCode::OK);

    let verify = || {
        let out = w.reviewer.cli(&["audit", "verify", "--json"]);
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out, lines)
    };
    let (out, lines) = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |lines: &[Value], s: &str| lines.iter().find(|l| l["source"] == s).cloned();
    let g = line(&lines, &source).expect("the gateway's chain is verified");
    assert_eq!(g["ok"], true, "{g}");
    assert_eq!(g["events"], 6);
    assert_eq!(line(&lines, "broker").unwrap()["ok"], true);

    // Edit one of the gateway's records in the store.
    let mut db = w.store_db().await;
    let changed = sqlx::query(
        "UPDATE audit_events SET data = REPLACE(data, 'ls /tmp/2', 'ls /tmp/x') WHERE source = $1 AND seq = 3",
    )
    .bind(&source)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let (out, lines) = verify();
    assert_eq!(out.status.code(), Some(1));
    let g = line(&lines, &source).unwrap();
    assert_eq!(g["ok"], false, "{g}");
    assert_eq!(g["seq"], 3, "{g}");
    assert!(g["problem"].as_str().unwrap().contains("altered"), "{g}");
    assert_eq!(line(&lines, "broker").unwrap()["ok"], true);
    // The text form names it too.
    let out = w.reviewer.cli(&["audit", "verify", "--source", &source]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at event #3"), "{text}");
}

/// PUT raw bytes; returns (status, JSON body).
async fn put_bytes(
    api: &Api,
    path: &str,
    bytes: Vec<u8>,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .put(format!("{}{}", api.url, path))
        .body(bytes);
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `PUT /v1/recordings/{session}` of `bytes` with the test metadata, as raw bytes.
async fn upload(api: &Api, session: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    put_bytes(
        api,
        &format!("/v1/recordings/{session}?{META}"),
        bytes,
        OCTETS,
    )
    .await
}

/// GET raw bytes; returns (status, body, headers).
async fn get_bytes(api: &Api, path: &str) -> (StatusCode, Vec<u8>, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(format!("{}{}", api.url, path));
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, resp.bytes().await.unwrap().to_vec(), headers)
}

const OCTETS: Option<&str> = Some("application/octet-stream");
const META: &str = "engineer=alice&ticket=T-1&node=node1&kind=pty";

/// A chunked upload (no Content-Length) over a plain socket: the limit holds while streaming.
/// The body is left unfinished (no last chunk): the broker must answer once the limit is
/// passed, without waiting for the end.
fn put_chunked(url: &str, token: &str, path: &str, len: usize) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait(30))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        // The broker may answer and close before the whole body was sent.
        if s.write_all(format!("{n:x}\r\n").as_bytes()).is_err()
            || s.write_all(&chunk[..n]).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
        left -= n;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn recordings_upload_once_download_for_reviewers_and_refuse_tricks() {
    recordings_upload_once("data_dir").await;
}

/// The same with the recordings' bytes in the database (what replicas share).
#[tokio::test]
async fn recordings_in_the_database_upload_once_download_for_reviewers_and_refuse_tricks() {
    recordings_upload_once("database").await;
}

/// Uploads and downloads with `[recordings] storage` = `storage`.
async fn recordings_upload_once(storage: &str) {
    let on_disk = storage == "data_dir";
    let w = World::start_with(
        Dir::File(vec![]),
        &format!("max_recording_bytes = 100000\n[recordings]\nstorage = \"{storage}\"\n"),
    )
    .await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let other = gateway(&w, "globex-prod", "gw1").await;
    let data_dir = w.broker.dir.join("data");
    let dir = data_dir.join("recordings").join("acme-prod");

    // Bytes that are not text, as a recording may hold.
    let bytes: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (s, v) = upload(&gw.api, "sess-1", bytes.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let r: RecordingStored = read_as("a stored recording", v);
    assert!(r.stored);
    assert_eq!(r.size, 60_000);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(r.sha256, sha);
    let file = dir.join("sess-1.cast");
    if on_disk {
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    } else {
        assert!(!file.exists());
    }
    let stored = w
        .broker_events("kind=recording_stored&session=sess-1")
        .await;
    let [
        AuditEvent::RecordingStored {
            engineer,
            cluster,
            sha256,
            ..
        },
    ] = &stored[..]
    else {
        panic!("not one recording stored: {stored:?}")
    };
    assert_eq!(engineer.as_deref(), Some("alice"));
    assert_eq!((cluster.as_str(), sha256), ("acme-prod", &sha));

    // The same bytes again: fine, once. Other bytes: refused.
    let (s, v) = upload(&gw.api, "sess-1", bytes.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!read_as::<RecordingStored>("a stored recording", v).stored);
    let mut changed = bytes.clone();
    changed[10] ^= 1;
    let (s, v) = upload(&gw.api, "sess-1", changed).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Another cluster's gateway cannot replace it either.
    let (s, _) = upload(&other.api, "sess-1", b"other".to_vec()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    if on_disk {
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
    }
    assert_eq!(
        w.events("kind=recording_stored&session=sess-1").await.len(),
        1
    );

    // Reviewers and the operator read it back; reading is audited.
    for api in [&w.reviewer, &w.op] {
        let (s, body, headers) = get_bytes(api, "/v1/recordings/sess-1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, bytes);
        assert_eq!(headers["x-sallyport-sha256"], sha.as_str());
    }
    let read: Vec<String> = w
        .broker_events("kind=recording_read&session=sess-1")
        .await
        .into_iter()
        .map(|e| match e {
            AuditEvent::RecordingRead { by, .. } => by,
            other => panic!("not a read: {other:?}"),
        })
        .collect();
    assert_eq!(read, ["reviewer:security", "operator:config"]);
    // The customer's approver reads recordings of its own clusters; another customer's is
    // told there is no such recording (and the refusal is audited).
    let (s, body, _) = get_bytes(&w.acme, "/v1/recordings/sess-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, bytes);
    assert_eq!(
        get_bytes(&w.globex, "/v1/recordings/sess-1").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        w.refusals("read_recording")
            .await
            .iter()
            .any(|e| e.by == "approver:globex:globex-admin")
    );
    for api in [&gw.api, &w.tickets] {
        assert_eq!(
            get_bytes(api, "/v1/recordings/sess-1").await.0,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        get_bytes(&w.anon, "/v1/recordings/sess-1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bytes(&w.reviewer, "/v1/recordings/no-such").await.0,
        StatusCode::NOT_FOUND
    );

    // Only gateways upload; session ids are plain names, never paths.
    assert_eq!(
        upload(&w.op, "sess-2", b"x".to_vec()).await.0,
        StatusCode::FORBIDDEN
    );
    let long = "a".repeat(65);
    for session in [
        "..%2F..%2Fetc",
        "..%2F..%2F..%2Ftmp%2Fpwned",
        "a.b",
        "..",
        "sess%00x",
        "sess%0Ax",
        "%2Fetc%2Fpasswd",
        long.as_str(),
    ] {
        let (s, v) = upload(&gw.api, session, b"evil".to_vec()).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{session}: {s} {v}"
        );
        let (s, _, _) = get_bytes(&w.reviewer, &format!("/v1/recordings/{session}")).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{session}: {s}"
        );
    }
    // The metadata are names too.
    for query in [
        "engineer=alice&ticket=..&node=node1",
        "engineer=..%2Fx&ticket=T-1&node=node1",
        "engineer=alice&ticket=T-1&node=node1&kind=a%2Fb",
    ] {
        let (s, v) = put_bytes(
            &gw.api,
            &format!("/v1/recordings/sess-3?{query}"),
            b"x".to_vec(),
            OCTETS,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
    }
    // Raw bytes only.
    for ct in [None, Some("application/json")] {
        let (s, v) = put_bytes(
            &gw.api,
            &format!("/v1/recordings/sess-3?{META}"),
            b"{}".to_vec(),
            ct,
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {v}");
    }

    // Too large: refused with 413, by its announced length and while streaming.
    let (s, v) = upload(&gw.api, "sess-4", vec![0u8; 100_001]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_of(&v).code, "too_large");
    let url = w.broker.url.clone();
    let token = gw.api.token.clone().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        put_chunked(
            &url,
            &token,
            &format!("/v1/recordings/sess-5?{META}"),
            7 * 16 * 1024,
        )
    })
    .await
    .unwrap();
    assert!(status.contains(" 413 "), "{status}");
    // Exactly the limit is fine.
    let (s, v) = upload(&gw.api, "sess-6", vec![1u8; 100_000]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Nothing else was written: no partial files, nothing outside the cluster's directory (on
    // disk); nothing at all on disk (in the database).
    let files = |d: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    if on_disk {
        assert_eq!(files(&dir), ["sess-1.cast", "sess-6.cast"]);
        assert_eq!(
            files(&data_dir.join("recordings")),
            ["acme-prod", "globex-prod"]
        );
        assert!(files(&data_dir.join("recordings").join("globex-prod")).is_empty());
    } else {
        // Uploads are spooled in recordings/.incoming, then moved into the database.
        assert_eq!(files(&data_dir.join("recordings")), [".incoming"]);
        assert!(files(&data_dir.join("recordings").join(".incoming")).is_empty());
    }
    assert!(!std::path::Path::new("/tmp/pwned.cast").exists());

    // Without metadata in the query, the gateway's own audit records of the session name the
    // engineer, ticket and node; without those either, they stay unknown.
    let source = format!("gateway:{}", gw.id);
    assert_eq!(
        ship(&gw, &chain(&source, None, 2, &gw.cluster)).await.0,
        StatusCode::OK
    );
    for session in ["s-1", "s-9"] {
        let (s, v) = put_bytes(
            &gw.api,
            &format!("/v1/recordings/{session}"),
            b"{\"version\": 2}\n".to_vec(),
            OCTETS,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let e = &w.audit("kind=recording_stored&session=s-1").await[0];
    assert_eq!(
        (
            e.engineer.as_deref(),
            e.ticket.as_deref(),
            e.node.as_deref(),
            field_str(e, "recording_kind")
        ),
        (Some("alice"), Some("T-1"), Some("node1"), "session"),
        "{e:?}"
    );
    let e = &w.audit("kind=recording_stored&session=s-9").await[0];
    assert!(e.engineer.is_none() && e.ticket.is_none(), "{e:?}");
    assert!(
        e.field("engineer").is_none() && e.field("ticket").is_none(),
        "{e:?}"
    );
    let (s, body, _) = get_bytes(&w.reviewer, "/v1/recordings/s-9").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, b"{\"version\": 2}\n");
}

/// `sallyport login --json` for alice on T-1 into `home`, with the TOTP code `offset` steps from
/// now (each code works once); returns the printed JSON.
fn login(w: &World, home: &std::path::Path, offset: i64) -> Issued {
    read_as(
        "login --json",
        w.login_cli(home, "alice", "T-1", &w.code("alice", offset)),
    )
}

/// What `ssh -G` resolves for `host` with this config: option -> value (lower case names).
fn ssh_g(config: &std::path::Path, host: &str) -> Vec<(String, String)> {
    let out = run(Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host));
    assert!(
        out.status.success(),
        "ssh -G {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn opt<'a>(g: &'a [(String, String)], k: &str) -> Option<&'a str> {
    g.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn login_writes_the_host_ca_and_the_jump_through_the_edge() {
    let w = World::start_with(
        Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])]),
        "edge_address = \"edge.vendor.test:2222\"\n",
    )
    .await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let second = gateway(&w, "acme-prod", "gw2").await;

    // An earlier login left a stale key for this cluster; another cluster's line stays.
    let home = tempfile::tempdir().unwrap();
    let stale = key_line(&sallyport_ca::keys::generate_ed25519("old").unwrap());
    let dev = bare(&key_line(
        &sallyport_ca::keys::generate_ed25519("dev").unwrap(),
    ));
    std::fs::write(
        home.path().join("known_hosts"),
        format!(
            "# mine\n@cert-authority *.acme-prod {}\n@cert-authority *.acme-dev {dev}\n",
            bare(&stale)
        ),
    )
    .unwrap();

    let issued = login(&w, home.path(), 0);
    assert_eq!(issued.edge.as_deref(), Some("edge.vendor.test:2222"));
    let mut want = vec![bare(&gw.host_ca_line), bare(&second.host_ca_line)];
    want.sort();
    let mut got = issued.host_ca_public_keys.clone();
    got.sort();
    assert_eq!(got, want);

    let known_hosts = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    let lines: Vec<&str> = known_hosts.lines().collect();
    assert_eq!(lines.len(), 4, "{known_hosts}");
    assert_eq!(lines[0], "# mine");
    assert_eq!(lines[1], format!("@cert-authority *.acme-dev {dev}"));
    let mut prod: Vec<String> = lines[2..].iter().map(|l| l.to_string()).collect();
    prod.sort();
    assert_eq!(
        prod,
        want.iter()
            .map(|k| format!("@cert-authority *.acme-prod {k}"))
            .collect::<Vec<_>>(),
        "{known_hosts}"
    );
    let kh = home.path().join("known_hosts");
    let found = run(Command::new("ssh-keygen")
        .args(["-F", "node1.acme-prod", "-f"])
        .arg(&kh));
    let found = String::from_utf8_lossy(&found.stdout).to_string();
    assert!(
        found.contains("CA") && found.contains(&bare(&gw.host_ca_line)),
        "{found}"
    );

    // ssh resolves the node through the edge, and the edge with the engineer's certificate.
    let config = home.path().join("ssh_config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("ProxyJump sallyport-edge-acme-prod"),
        "{text}"
    );
    assert!(text.contains("Host sallyport-edge-acme-prod\n"), "{text}");
    let key = home.path().join("acme-prod").display().to_string();
    let cert = home.path().join("acme-prod-cert.pub").display().to_string();
    let node = ssh_g(&config, "node1.acme-prod");
    assert_eq!(opt(&node, "proxyjump"), Some("sallyport-edge-acme-prod"));
    assert_eq!(opt(&node, "user"), Some("ubuntu"));
    assert_eq!(opt(&node, "hostname"), Some("node1.acme-prod"));
    assert_eq!(opt(&node, "certificatefile"), Some(cert.as_str()));
    assert_eq!(opt(&node, "identitiesonly"), Some("yes"));
    // Never asked to trust an unknown host key: both hops are pinned.
    assert_eq!(opt(&node, "stricthostkeychecking"), Some("true"));
    assert_eq!(
        opt(&node, "userknownhostsfile"),
        Some(kh.display().to_string().as_str())
    );
    let edge = ssh_g(&config, "sallyport-edge-acme-prod");
    assert_eq!(opt(&edge, "hostname"), Some("edge.vendor.test"));
    assert_eq!(opt(&edge, "port"), Some("2222"));
    assert_eq!(opt(&edge, "stricthostkeychecking"), Some("true"));
    assert_eq!(opt(&edge, "user"), Some("alice"));
    assert_eq!(opt(&edge, "certificatefile"), Some(cert.as_str()));
    assert_eq!(opt(&edge, "identitiesonly"), Some("yes"));
    assert!(
        node.iter().any(|(k, v)| k == "identityfile" && v == &key),
        "{node:?}"
    );
    assert!(
        edge.iter().any(|(k, v)| k == "identityfile" && v == &key),
        "{edge:?}"
    );
    assert!(
        !matches!(opt(&edge, "proxyjump"), Some(j) if j.starts_with("sallyport")),
        "{edge:?}"
    );

    // Logging in again rewrites the block, not appends to it; a revoked gateway's key leaves.
    assert_eq!(
        w.op.delete(&format!("/v1/gateways/{}", second.id)).await.0,
        StatusCode::OK
    );
    login(&w, home.path(), 1);
    let again = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        again.matches("Host sallyport-edge-acme-prod").count(),
        1,
        "{again}"
    );
    assert_eq!(again.matches("ProxyJump").count(), 1, "{again}");
    let known_hosts = std::fs::read_to_string(&kh).unwrap();
    assert!(
        !known_hosts.contains(&bare(&second.host_ca_line)),
        "{known_hosts}"
    );
    assert!(known_hosts.contains(&bare(&gw.host_ca_line)));
    assert!(known_hosts.contains(&dev));
}

#[tokio::test]
async fn login_without_an_edge_writes_no_jump() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), 0);
    assert!(issued.edge.is_none(), "{issued:?}");
    assert!(issued.host_ca_public_keys.is_empty(), "{issued:?}");
    let config = home.path().join("ssh_config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("ProxyJump") && !text.contains("Host sallyport-edge"),
        "{text}"
    );
    let node = ssh_g(&config, "node1.acme-prod");
    assert_eq!(opt(&node, "user"), Some("ubuntu"));
    let known_hosts = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    assert!(
        !known_hosts
            .lines()
            .any(|l| l.starts_with("@cert-authority")),
        "{known_hosts}"
    );
}

/// An edge's own chain: `n` `edge_refused` records after `prev`, naming `cluster`.
fn edge_chain(
    source: &str,
    prev: Option<&AuditRecord>,
    n: usize,
    cluster: &str,
) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    for i in 0..n {
        let last = out.last().or(prev);
        let seq = last.map_or(1, |r| r.seq + 1);
        out.push(AuditRecord::next(
            source,
            last.map(|r| (r.seq, r.hash.as_str())),
            now() * 1000 + seq,
            "edge_refused",
            json!({"edge": source.strip_prefix("edge:").unwrap_or(source), "cluster": cluster,
                   "engineer": "alice", "ticket": "T-1",
                   "code": "untrusted_ca", "reason": format!("try {i}")}),
        ));
    }
    out
}

#[tokio::test]
async fn an_edge_token_ships_only_its_own_chain_and_checks_session_totp_codes() {
    let w = World::start(Dir::File(vec![("bob", "bob-pw", vec!["support-l2"])])).await;
    // The operator makes the edge's token; an edge belongs to no customer.
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            json!({"name": "edge-a", "role": "edge", "customer": "acme"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) =
        w.op.post("/v1/tokens", json!({"name": "edge-a", "role": "edge"}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let made: TokenCreated = read_as("a token", v);
    assert_eq!(made.role, "edge");
    let edge = w.anon.with(&made.token);
    let edge_key = sallyport_ca::keys::generate_ed25519("edge audit").unwrap();
    let (s, v) = edge.get("/v1/whoami").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"role": "edge", "name": "edge-a"}));

    // Its own chain, naming any cluster: stored once, re-sends acknowledged.
    let source = "edge:edge-a";
    let mut records = edge_chain(source, None, 2, "acme-prod");
    records.extend(edge_chain(source, records.last(), 2, "globex-prod"));
    let (s, v) = edge
        .post(
            "/v1/audit/records",
            signed_batch(&edge_key, &records[..3], None),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 3, "acknowledged_through": 3}));
    let (s, v) = edge
        .post("/v1/audit/records", signed_batch(&edge_key, &records, None))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 1, "acknowledged_through": 4}));
    assert_eq!(w.events(&format!("source={source}")).await.len(), 4);
    assert_eq!(
        w.events("kind=edge_refused&cluster=globex-prod")
            .await
            .len(),
        2
    );
    // Not consecutive; a fork; a gap.
    let next = edge_chain(source, records.last(), 3, "acme-prod");
    let (s, v) = edge
        .post(
            "/v1/audit/records",
            signed_batch(&edge_key, &[next[0].clone(), next[2].clone()], None),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let mut forked = edge_chain(source, Some(&records[1]), 1, "acme-prod");
    forked[0].data["reason"] = json!("edited");
    forked[0].hash = forked[0].compute_hash();
    let (s, v) = edge
        .post("/v1/audit/records", signed_batch(&edge_key, &forked, None))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = edge
        .post(
            "/v1/audit/records",
            signed_batch(&edge_key, &next[1..], None),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(error_of(&v).message.contains("send from record 5"), "{v}");
    // Another edge's chain, or a gateway's: refused, audited.
    for other in ["edge:edge-b", "gateway:gw-1", "broker"] {
        let (s, v) = edge
            .post(
                "/v1/audit/records",
                json!({"records": edge_chain(other, None, 1, "acme-prod")}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{other}: {v}");
    }
    // And a gateway may not write the edge's chain.
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let (s, v) = gw
        .api
        .post(
            "/v1/audit/records",
            json!({"records": edge_chain(source, records.last(), 1, "acme-prod")}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let ingest_refusals = refusals(&w, "audit_ingest").await;
    assert!(
        ingest_refusals
            .iter()
            .filter(|e| e.by == "edge:edge-a")
            .count()
            >= 4,
        "{ingest_refusals:#?}"
    );

    // Nothing else: every other endpoint refuses the edge.
    for (method, path, body) in [
        ("GET", "/v1/audit/events", None),
        ("GET", "/v1/clusters", None),
        ("GET", "/v1/customers", None),
        ("GET", "/v1/approvals", None),
        ("GET", "/v1/certificates", None),
        ("GET", "/v1/gateway/self", None),
        ("GET", "/v1/recordings/s-1", None),
        (
            "POST",
            "/v1/tokens",
            Some(json!({"name": "x", "role": "operator"})),
        ),
        (
            "POST",
            "/v1/revocations",
            Some(json!({"scope": "engineer", "value": "alice", "reason": "x"})),
        ),
        (
            "PUT",
            "/v1/tickets/T-9",
            Some(
                json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice",
                        "status": "open", "title": "t"}),
            ),
        ),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (s, v) = edge.raw(m, path, body.map(|b| b.to_string())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }

    // Per-session TOTP codes: edges only.
    let (s, v) = w
        .reviewer
        .post(
            "/v1/mfa/verify",
            json!({"engineer": "bob", "grant": "g-0", "code": w.code("bob", 0)}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // Codes are checked only for an engineer holding a live certificate of the grant named.
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "bob", "open").await;
    let (_, key) = engineer_key();
    // The login takes the previous period's code (the current one is for the edge below): it is
    // good until the current period ends, so not in that period's last seconds.
    while now() % 30 >= 25 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (s, cert) = w
        .session("bob", -1)
        .await
        .post(
            "/v1/certificates",
            json!({"public_key": key, "ticket": "T-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{cert}");
    let grant = read_as::<Issued>("a certificate", cert).grant;
    let verify = |engineer: &str, code: String| {
        let edge = edge.clone();
        let body = json!({"engineer": engineer, "code": code, "ticket": "T-1", "grant": grant,
                          "cluster": "acme-prod", "source_ip": "192.0.2.7"});
        async move { edge.post("/v1/mfa/verify", body).await }
    };
    let code = w.code("bob", 0);
    let (s, v) = verify("bob", code.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"ok": true}));
    // The same step again, for a session or for a login: spent.
    let (s, v) = verify("bob", code.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let e = error_of(&v);
    assert_eq!(e.code, "mfa_failed");
    assert!(e.message.contains("already used"), "{v}");
    let (s, v) = w.login("bob", "bob-pw", &code).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(error_of(&v).message.contains("already used"), "{v}");
    let (s, v) = verify("not a name", "123456".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = verify("zed", "123456".into()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // Wrong codes count toward the lockout of bob from that address (5 failures; 1 so far: the
    // replayed code).
    let valid: Vec<String> = (-2..=2).map(|o| w.code("bob", o)).collect();
    let wrong = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .unwrap();
    for _ in 0..4 {
        let (s, v) = verify("bob", wrong.into()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (s, v) = verify("bob", w.code("bob", 1)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // ... not bob himself, logging in from his own address.
    let (s, v) = w.login("bob", "bob-pw", &w.code("bob", 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Every outcome is audited, by the edge, with what it said of the session.
    let ok = w.broker_events("kind=session_mfa_verified").await;
    assert_eq!(
        ok,
        [AuditEvent::SessionMfaVerified {
            engineer: "bob".into(),
            by: "edge:edge-a".into(),
            ticket: Some("T-1".into()),
            cluster: Some("acme-prod".into()),
            source_ip: Some("192.0.2.7".into()),
        }]
    );
    let failed: Vec<(String, String)> = w
        .broker_events("kind=session_mfa_failed")
        .await
        .into_iter()
        .map(|e| match e {
            AuditEvent::SessionMfaFailed { code, by, .. } => (code, by),
            other => panic!("not a failed check: {other:?}"),
        })
        .collect();
    let codes: Vec<&str> = failed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        codes,
        [
            "totp_replayed",
            "invalid_engineer",
            "no_live_certificate",
            "bad_totp",
            "bad_totp",
            "bad_totp",
            "bad_totp",
            "locked_out"
        ],
        "{failed:#?}"
    );
    assert!(failed.iter().all(|e| e.1 == "edge:edge-a"));
    let mfa_refusals = refusals(&w, "verify_session_mfa").await;
    assert_eq!(mfa_refusals.len(), 1, "{mfa_refusals:#?}");
    // The API document names the endpoint and the role.
    let (_, doc) = w.anon.get("/v1/openapi.json").await;
    assert!(doc["paths"]["/v1/mfa/verify"]["post"].is_object());
    let roles = &doc["paths"]["/v1/tokens"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ["properties"]["role"]["enum"];
    assert!(
        roles.as_array().unwrap().contains(&json!("edge")),
        "{roles}"
    );
}

#[tokio::test]
async fn a_join_token_expires_and_is_refused_with_a_clear_message() {
    let w = World::start_with(Dir::File(vec![]), "gateway_join_token_ttl_secs = 1\n").await;
    let (s, v) =
        w.op.post("/v1/clusters/acme-prod/gateways", json!({"name": "late"}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let created: GatewayCreated = read_as("a new gateway", v);
    let token = created.join_token;
    let made = created.join_token_expires_at;
    assert!(made > 0, "{made}");
    // Past its lifetime (1 s here; 24 h by default).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let node_ca = sallyport_ca::keys::generate_ed25519("node ca").unwrap();
    let host_ca = sallyport_ca::keys::generate_ed25519("host ca").unwrap();
    let (s, v) = enroll_with(&w, &token, &key_line(&node_ca), &key_line(&host_ca)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.to_string().contains("expired"), "{v}");
    let refused = refusals(&w, "enroll_gateway").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].reason.contains("expired"), "{refused:?}");
    // Nothing changed: the gateway is still not enrolled and has no CA keys.
    let (list, _) = gateways(&w.op, "acme-prod").await;
    let g = list.iter().find(|g| g.name == "late").unwrap();
    assert!(g.enrolled_at.is_none(), "{g:?}");
    assert!(g.node_ca_public_key.is_none(), "{g:?}");
}

#[tokio::test]
async fn a_chain_behind_its_reported_head_is_incomplete_and_big_batches_fit_the_ingest_limit() {
    let w = World::start(Dir::File(vec![])).await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let source = format!("gateway:{}", gw.id);
    let records = chain(&source, None, 10, &gw.cluster);
    // The gateway wrote 10 and the broker has 3: shipping is behind.
    let (s, v) = gw
        .api
        .post(
            "/v1/audit/records",
            signed_batch(&gw.audit_key, &records[..3], Some(10)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let verify = |json: bool| {
        let mut args = vec!["audit", "verify", "--source", source.as_str()];
        if json {
            args.push("--json");
        }
        w.reviewer.cli(&args)
    };
    let out = verify(true);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an incomplete chain is not intact"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["incomplete"], true, "{v}");
    assert_eq!(v["events"], 3, "{v}");
    assert_eq!(v["missing"], 7, "{v}");
    let text = String::from_utf8_lossy(&verify(false).stdout).to_string();
    assert!(text.contains("INCOMPLETE") && text.contains("7"), "{text}");
    // A head report alone (what a gateway sends when a batch cannot get through) never lowers it.
    let (s, _) = gw
        .api
        .post("/v1/audit/records", json!({"records": [], "head": 4}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verify(true).status.code(), Some(1));
    // Caught up: intact again.
    let (s, v) = gw
        .api
        .post(
            "/v1/audit/records",
            signed_batch(&gw.audit_key, &records[3..], Some(10)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let out = verify(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The ingest route takes batches far over the general body limit (64 KiB): 1 MiB of records.
    let big: Vec<AuditRecord> = {
        let mut out: Vec<AuditRecord> = Vec::new();
        let last = records.last().unwrap();
        for i in 0..200 {
            let prev = out.last().unwrap_or(last);
            out.push(AuditRecord::next(
                &source,
                Some((prev.seq, prev.hash.as_str())),
                now() * 1000 + i,
                "command",
                json!({"cluster": gw.cluster, "session": "s-2", "command": "x".repeat(5000)}),
            ));
        }
        out
    };
    let (s, v) = ship(&gw, &big).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        read_as::<BatchStored>("a stored batch", v).acknowledged_through,
        210
    );
    // Elsewhere the general limit still holds.
    let (s, _) =
        w.op.post(
            "/v1/customers",
            json!({"name": "big", "display_name": "x".repeat(100_000)}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn the_data_plane_refuses_a_plain_http_broker_that_is_not_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    for (cmd, config) in [
        (
            "gateway",
            "data_dir = \"g\"\nbroker = \"http://192.0.2.10:8443\"\njoin_token = \"spj_x\"\n",
        ),
        (
            "edge",
            "listen = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\ndata_dir = \"e\"\nbroker = \"http://192.0.2.10:8443\"\n",
        ),
    ] {
        let path = dir.path().join(format!("{cmd}.toml"));
        std::fs::write(&path, config).unwrap();
        let out = run(Command::new(BIN)
            .current_dir(dir.path())
            .args([cmd, "--config"])
            .arg(&path));
        assert!(!out.status.success(), "{cmd} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing plain http://") && err.contains("use https://"),
            "{cmd}: {err}"
        );
    }
}

#[tokio::test]
async fn audit_search_prints_what_a_source_wrote_as_text_never_as_terminal_codes() {
    let w = World::start(Dir::File(vec![])).await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let source = format!("gateway:{}", gw.id);
    // Escape sequences in a subject field are refused at ingest (see tests/attacks.rs); in the
    // event's own fields (a command as typed) they are stored as they came.
    let r = AuditRecord::next(
        &source,
        None,
        now() * 1000,
        "command",
        json!({"cluster": gw.cluster, "session": "s-1", "engineer": "alice",
               "ticket": "T-1", "command": "ls\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[8m"}),
    );
    let (s, v) = ship(&gw, &[r]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let out = w.reviewer.cli(&["audit", "search", "--source", &source]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("command"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    // The line says which source wrote it.
    assert!(text.contains(&format!("source={source}")), "{text}");
}

/// A gateway streams live recordings of its own cluster's sessions only: another cluster's
/// gateway neither learns that a session of acme-prod is watched nor can push (forged) screen
/// content into it; the refusal is audited and nothing reaches the watcher.
#[tokio::test]
async fn a_gateway_cannot_read_or_feed_the_live_view_of_another_clusters_session() {
    let w = World::start(Dir::File(vec![])).await;
    let gw = gateway(&w, "acme-prod", "gw1").await;
    let dev = gateway(&w, "acme-dev", "gw1").await;
    let globex = gateway(&w, "globex-prod", "gw1").await;
    let source = format!("gateway:{}", gw.id);
    let session = "live-s-1";
    let started = AuditRecord::next(
        &source,
        None,
        now() * 1000,
        "session_started",
        json!({"cluster": "acme-prod", "node": "node1", "session": session, "engineer": "alice",
               "ticket": "T-1", "login": "ubuntu"}),
    );
    let (s, v) = ship(&gw, std::slice::from_ref(&started)).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // acme's approver watches it.
    let (s, v) = w.acme.get(&format!("/v1/sessions/{session}/live")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = gw.api.get("/v1/gateway/watches").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.to_string().contains(session), "{v}");

    let chunk = |data: &str| {
        json!({"session": session, "recording": format!("{session}-c0"),
               "header": "{\"version\": 2, \"width\": 80, \"height\": 24}",
               "at": 0, "data": data})
    };
    for (name, other) in [("acme-dev", &dev), ("globex-prod", &globex)] {
        let (s, v) = other.api.get("/v1/gateway/watches").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(!v.to_string().contains(session), "{name} learns of it: {v}");
        let (s, v) = other
            .api
            .post(
                "/v1/gateway/live",
                chunk("[0.1, \"o\", \"forged-by-another\"]\n"),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{name}: {v}");
    }
    let refused = refusals(&w, "gateway_live").await;
    assert!(refused.len() >= 2, "{refused:#?}");

    // The real gateway's chunk arrives; the forged text never does.
    let (s, v) = gw
        .api
        .post("/v1/gateway/live", chunk("[0.1, \"o\", \"real-output\"]\n"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w.acme.get(&format!("/v1/sessions/{session}/live")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v.to_string();
    assert!(text.contains("real-output"), "{v}");
    assert!(!text.contains("forged-by-another"), "{v}");
}
