//! Two broker replicas on one PostgreSQL database, each with its own data_dir, behind a
//! round-robin TCP balancer (docs/deploy.md, "Several broker replicas"): logins, single-use
//! TOTP codes, lockouts, approvals, issuing and recordings work whichever replica answers.
//! PostgreSQL only (SALLYPORT_TEST_STORE=postgres): replicas cannot share a SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use sallyport_api::approvals::Approval;
use sallyport_api::certificates::Issued;
use sallyport_api::gateways::{Enrolled, GatewayCreated};
use sallyport_api::login::LoginResponse;
use serde_json::json;
use support::balancer::Balancer;
use support::broker::*;
use support::browser::Console;

/// The files replicas must share, by their default names in the data_dir: the user CA, the key
/// that seals TOTP secrets, the session tokens' secret and the key that signs the broker's own
/// audit chain.
const SHARED: [&str; 4] = ["user_ca", "totp.key", "jwt.secret", "audit_key"];

/// A second broker process on the world's store: a copy of its config with its own data_dir,
/// holding copies of the shared keys.
fn second_replica(w: &World, dir: &std::path::Path, shared: &[&str]) -> BrokerProc {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let first = w.broker.dir.join("data");
    for f in shared {
        std::fs::copy(first.join(f), data.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(&w.broker.config).unwrap().replace(
        &format!("data_dir = \"{}\"", first.display()),
        &format!("data_dir = \"{}\"", data.display()),
    );
    assert!(config.contains(&data.display().to_string()), "{config}");
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).unwrap();
    BrokerProc::start(
        dir,
        path,
        w.broker.store.clone(),
        w.broker.operator_token.clone(),
    )
}

/// A recording as a gateway uploads it: an asciicast of more than one chunk (1 MiB) of the
/// database.
fn asciicast() -> Vec<u8> {
    let mut text = String::from(
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"title\": \"on replicas\"}\n",
    );
    let mut i = 0u64;
    while text.len() < 1_300_000 {
        text.push_str(&format!(
            "[{}.{:03}, \"o\", \"line {i} of a long session\\r\\n\"]\n",
            i / 1000,
            i % 1000
        ));
        i += 1;
    }
    text.push_str("[99.5, \"o\", \"replicas-agree\\r\\n\"]\n");
    text.into_bytes()
}

/// PUT a recording as a gateway does.
async fn upload(
    url: &str,
    credential: &str,
    session: &str,
    bytes: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!(
            "{url}/v1/recordings/{session}?engineer=alice&ticket=T-1&node=node1&kind=pty"
        ))
        .bearer_auth(credential)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn download(url: &str, token: &str, session: &str) -> (StatusCode, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/recordings/{session}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

// Several threads: the balancer keeps running while the test waits for a `sallyport` command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_a_balancer_act_as_one_broker() {
    if !use_postgres() {
        eprintln!(
            "skipped: broker replicas share a PostgreSQL store; run with SALLYPORT_TEST_STORE=postgres"
        );
        return;
    }
    let w = World::ldap_with("[login]\nmax_failures = 3\nlockout_secs = 600\n").await;
    let tmp_b = tempfile::tempdir().unwrap();
    let b = second_replica(&w, tmp_b.path(), &SHARED);
    let a_url = w.broker.url.clone();
    let lb = Balancer::start(&[&a_url, &b.url]).await;
    let via = |api: &Api| Api::new(&lb.url, api.token.as_deref());
    let (op, anon, acme, tickets, reviewer) = (
        via(&w.op),
        via(&w.anon),
        via(&w.acme),
        via(&w.tickets),
        via(&w.reviewer),
    );

    // A login on one replica spends its TOTP code on both.
    let code = w.code("alice", 0);
    let login = json!({"user": "alice", "password": "alice-pw", "totp": code});
    let (s, v) = anon.post("/v1/login", login.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = lb.last();
    let alice = anon.with(&read_as::<LoginResponse>("a login", v).token);
    let (s, v) = anon.post("/v1/login", login).await;
    assert_ne!(
        lb.last(),
        first,
        "the balancer sends the next login to the other replica"
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let replayed = w.login_failure_codes().await;
    assert_eq!(replayed.last().unwrap(), "totp_replayed", "{replayed:?}");

    // An approval made through one replica is seen through the other; the token one replica
    // issued works on the other, and a certificate is issued.
    let (s, v) = acme
        .post_as::<Approval>(
            "/v1/approvals",
            json!({"cluster": "acme-prod", "group": "support-l2", "logins": ["ubuntu"],
                   "max_session_secs": 3600, "valid_until": now() + 86_400}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v:?}");
    let approval = v.id;
    let made_on = lb.last();
    let v: Vec<Approval> = acme.get_ok("/v1/approvals?cluster=acme-prod").await;
    assert_ne!(lb.last(), made_on);
    assert!(v.iter().any(|a| a.id == approval), "{v:?}");
    let (s, v) = tickets
        .put(
            "/v1/tickets/T-1",
            json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice", "status": "open", "title": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, key) = engineer_key();
    let (s, v) = alice
        .post_as::<Issued>(
            "/v1/certificates",
            json!({"public_key": key, "ticket": "T-1"}),
        )
        .await;
    assert!(s.is_success(), "{s} {v:?}");
    assert!(
        v.certificate
            .starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{v:?}"
    );

    // A recording uploaded to replica A is read back whole through replica B: the API and the
    // console's replay. Neither replica's disk holds it.
    let (s, v) = op
        .post_as::<GatewayCreated>("/v1/clusters/acme-prod/gateways", json!({"name": "gw1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v:?}");
    let join_token = v.join_token;
    let key_line = |name: &str| {
        sallyport_ca::keys::generate_ed25519(name)
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap()
    };
    let (s, v) = anon
        .post_as::<Enrolled>(
            "/v1/gateways/enroll",
            json!({"join_token": join_token, "node_ca_public_key": key_line("node ca"),
                   "host_ca_public_key": key_line("host ca"), "audit_public_key": key_line("audit")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v:?}");
    let credential = v.credential;
    let bytes = asciicast();
    let (s, v) = upload(&a_url, &credential, "s-1-c0", bytes.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The same upload again, to the other replica: already stored, the same bytes.
    let (s, v) = upload(&b.url, &credential, "s-1-c0", bytes.clone()).await;
    assert_eq!((s, &v["stored"]), (StatusCode::OK, &json!(false)), "{v}");
    let mut changed = bytes.clone();
    changed[100] ^= 1;
    assert_eq!(
        upload(&b.url, &credential, "s-1-c0", changed).await.0,
        StatusCode::CONFLICT
    );
    let reviewer_token = w.reviewer.token.clone().unwrap();
    let (s, got) = download(&b.url, &reviewer_token, "s-1-c0").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        got == bytes,
        "replica B read {} bytes of {}",
        got.len(),
        bytes.len()
    );
    for (url, token) in [(&lb.url, &reviewer_token), (&lb.url, &reviewer_token)] {
        assert!(download(url, token, "s-1-c0").await.1 == bytes);
    }
    for data in [w.broker.dir.join("data"), tmp_b.path().join("data")] {
        let files: Vec<_> = walk(&data.join("recordings"));
        assert!(files.is_empty(), "{files:?}");
    }
    let secret = w.account("sec", "reviewer", None).await;
    let mut console = Console::new(&b.url);
    let code = sallyport_broker::totp::code(&secret, now()).unwrap();
    let p = console.login("sec", "sec-password-1", &code).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = console.get("/console/recordings/s-1-c0").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("on replicas"), "{}", page.body);
    let frames = console.get("/console/recordings/s-1-c0/frames").await;
    assert_eq!(frames.status, StatusCode::OK);
    assert!(frames.body.contains("replicas-agree"));

    // Failed logins counted on both replicas lock the user out on both.
    for _ in 0..3 {
        assert_eq!(
            anon.post(
                "/v1/login",
                json!({"user": "bob", "password": "bad", "totp": "123456"})
            )
            .await
            .0,
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..2 {
        let (s, v) = anon
            .post(
                "/v1/login",
                json!({"user": "bob", "password": "bob-pw", "totp": w.code("bob", 0)}),
            )
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    }

    // Both replicas append to the broker's own chain at once (each read of a recording is an
    // audit event): the chain stays whole, and every record is signed by the one shared key.
    let reads = (0..24).map(|_| download(&lb.url, &reviewer_token, "s-1-c0"));
    for (s, got) in join_all(reads).await {
        assert_eq!(s, StatusCode::OK);
        assert!(got == bytes);
    }
    assert_eq!(
        w.events("kind=recording_read&session=s-1-c0").await.len(),
        24 + 5
    );
    let keys = reviewer.cli(&["audit", "keys"]);
    assert!(
        keys.status.success(),
        "{}{}",
        String::from_utf8_lossy(&keys.stdout),
        String::from_utf8_lossy(&keys.stderr)
    );
    let keys_file = tmp_b.path().join("keys.txt");
    std::fs::write(&keys_file, &keys.stdout).unwrap();
    let out = reviewer.cli(&["audit", "verify", "--keys", keys_file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("chain intact"), "{text}");

    // Both replicas answered through the balancer.
    let served = lb.served.lock().unwrap().clone();
    assert!(served.contains(&0) && served.contains(&1), "{served:?}");
    let warning = "did not sign its audit chain";
    assert!(!b.log_text().contains(warning), "{}", b.log_text());

    // A replica started without the shared audit key says so in its log.
    let tmp_c = tempfile::tempdir().unwrap();
    let c = second_replica(&w, tmp_c.path(), &SHARED[..3]);
    let start = std::time::Instant::now();
    while !c.log_text().contains(warning) {
        assert!(start.elapsed() < wait(10), "{}", c.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
