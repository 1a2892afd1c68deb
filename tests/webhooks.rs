//! Notifications, end to end against a real `sallyport broker` process (SQLite, or PostgreSQL
//! with SALLYPORT_TEST_STORE=postgres) and receivers in the test: every notified event reaches
//! a receiver with a signature the test recomputes; a receiver that is down gets it later; the
//! last failure is an audit event; a receiver that never answers delays no login; each
//! customer sees and changes only its own webhooks (API, CLI and console); the secret is never
//! shown again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ring::hmac;
use sallyport_api::certificates::Issued;
use sallyport_api::gateways::{Enrolled, GatewayCreated};
use sallyport_api::requests::IssuePending;
use sallyport_api::webhooks::{
    Deliveries, Delivery, Webhook, WebhookCreated, WebhookDeleted, Webhooks,
};
use sallyport_broker::audit::{AuditEvent, AuditRecord};
use serde_json::{Value, json};
use support::broker::*;
use support::browser::Console;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "[webhooks]\nallow_http_loopback = true\nretry_secs = 1\ntimeout_secs = 2\npoll_millis = 200\n[login]\nmax_failures = 3\n";

/// What a receiver does with each request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Answer 200.
    Ok,
    /// Answer 500 to the next `n` requests, then 200.
    FailFirst(usize),
    /// Read the request and never answer.
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that records each POST.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, mode)
    }

    /// A receiver on `port` (taken once nothing else listens there).
    async fn start_on(port: u16, mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener, mode)
    }

    fn serve(listener: tokio::net::TcpListener, mode: Mode) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let failures = Arc::new(Mutex::new(match mode {
            Mode::FailFirst(n) => n,
            Mode::Ok | Mode::Hang => 0,
        }));
        let g = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (g, failures) = (g.clone(), failures.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    g.lock().unwrap().push(req);
                    let status = match mode {
                        Mode::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Mode::Ok => 200,
                        Mode::FailFirst(_) => {
                            let mut left = failures.lock().unwrap();
                            if *left > 0 {
                                *left -= 1;
                                500
                            } else {
                                200
                            }
                        }
                    };
                    let text = if status == 200 {
                        "OK"
                    } else {
                        "Internal Server Error"
                    };
                    let _ = sock
                        .write_all(
                            format!("HTTP/1.1 {status} {text}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The requests once there is one of each kind in `kinds` (or what there is after 60 s).
    async fn wait_kinds(&self, kinds: &[&str]) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            let missing: Vec<&&str> = kinds
                .iter()
                .filter(|k| !got.iter().any(|r| r.header("x-sallyport-event") == **k))
                .collect();
            if missing.is_empty() {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never received {missing:?}; got {:?}",
                got.iter()
                    .map(|r| r.header("x-sallyport-event"))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        headers,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    })
}

/// The signature header is right for `secret` and recent: recomputed here as a receiver would.
fn assert_signed(r: &Received, secret: &str) {
    let header = r.header("x-sallyport-signature");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("no signature: {header:?}"));
    let t: u64 = t.parse().unwrap();
    assert!(now().abs_diff(t) < 300, "signed at {t}, now {}", now());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let want = hex::encode(hmac::sign(&key, format!("{t}.{}", r.body).as_bytes()).as_ref());
    assert_eq!(v1, want, "signature of {}", r.body);
    // Any other secret or a changed body does not verify.
    let other = hmac::Key::new(hmac::HMAC_SHA256, b"not the secret at all");
    assert_ne!(
        v1,
        hex::encode(hmac::sign(&other, format!("{t}.{}", r.body).as_bytes()).as_ref())
    );
}

async fn create(api: &Api, body: Value) -> WebhookCreated {
    let (s, v) = api.post("/v1/webhooks", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    read_as("a created webhook", v)
}

/// The ids of the webhooks `api` lists.
async fn listed_ids(api: &Api) -> Vec<String> {
    let list: Webhooks = api.get_ok("/v1/webhooks").await;
    list.webhooks.into_iter().map(|h| h.id).collect()
}

/// A console session of a new account (its password `<name>-password-1`).
async fn console_of(w: &World, name: &str, role: &str, customer: Option<&str>) -> Console {
    let secret = w.account(name, role, customer).await;
    let mut c = Console::new(&w.broker.url);
    let code = sallyport_broker::totp::code(&secret, now()).unwrap();
    let p = c.login(name, &format!("{name}-password-1"), &code).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    c
}

/// An enrolled gateway of `cluster`: its id, its credential's caller and its audit key.
async fn gateway(w: &World, cluster: &str) -> (String, Api, russh::keys::PrivateKey) {
    let (s, v) =
        w.op.post_as::<GatewayCreated>(
            &format!("/v1/clusters/{cluster}/gateways"),
            json!({"name": "gw1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v:?}");
    let id = v.id.clone();
    let line = |k: &russh::keys::PrivateKey| k.public_key().to_openssh().unwrap();
    let audit = sallyport_ca::keys::generate_ed25519("audit").unwrap();
    let (s, e) = w
        .anon
        .post_as::<Enrolled>(
            "/v1/gateways/enroll",
            json!({"join_token": v.join_token,
                   "node_ca_public_key": line(&sallyport_ca::keys::generate_ed25519("n").unwrap()),
                   "host_ca_public_key": line(&sallyport_ca::keys::generate_ed25519("h").unwrap()),
                   "audit_public_key": line(&audit)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e:?}");
    (id, w.anon.with(&e.credential), audit)
}

/// Ship a new gateway's first records: a session started, terminated and ended.
async fn ship_session(gw: &(String, Api, russh::keys::PrivateKey), cluster: &str, session: &str) {
    let source = format!("gateway:{}", gw.0);
    let mut prev: Option<AuditRecord> = None;
    let mut records = Vec::new();
    for (kind, extra) in [
        (
            "session_started",
            json!({"login": "ubuntu", "peer": "203.0.113.7:5000"}),
        ),
        (
            "session_terminated",
            json!({"reason": "the session was ended by approver:acme:x: <done> & dusted",
                   "terminated_by": "approver:acme:x"}),
        ),
        ("session_ended", json!({})),
    ] {
        let mut data = json!({"cluster": cluster, "node": "node1", "session": session,
                              "engineer": "alice", "ticket": "T-1"});
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        let r = AuditRecord::next(
            &source,
            prev.as_ref().map(|p| (p.seq, p.hash.as_str())),
            now() * 1000,
            kind,
            data,
        );
        prev = Some(r.clone());
        records.push(r);
    }
    let (s, v) =
        gw.1.post("/v1/audit/records", signed_batch(&gw.2, &records, None))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A broker whose webhooks give up after `n` attempts.
async fn world_with_attempts(n: u32) -> World {
    let config = CONFIG.replace(
        "retry_secs = 1\n",
        &format!("retry_secs = 1\nmax_attempts = {n}\n"),
    );
    World::start_with(users(), &config).await
}

fn users() -> Dir {
    Dir::File(vec![
        ("alice", "alice-pw", vec!["support-l2"]),
        ("bob", "bob-pw", vec!["support-l2"]),
    ])
}

/// The deliveries `api` sees (of one webhook when given; none when refused).
async fn deliveries(api: &Api, webhook: Option<&str>) -> (StatusCode, Vec<Delivery>) {
    let path = match webhook {
        Some(w) => format!("/v1/webhooks/{w}/deliveries"),
        None => "/v1/webhooks/deliveries".into(),
    };
    let (s, v) = api.get(&path).await;
    if s != StatusCode::OK {
        error_of(&v);
        return (s, Vec::new());
    }
    (s, read_as::<Deliveries>(&path, v).deliveries)
}

/// Wait until webhook `id`'s deliveries satisfy `done` (60 s at most); returns them.
async fn wait_deliveries(api: &Api, id: &str, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
    let start = Instant::now();
    loop {
        let (s, list) = deliveries(api, Some(id)).await;
        assert_eq!(s, StatusCode::OK);
        if done(&list) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deliveries never got there: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_notified_event_reaches_the_receivers_signed() {
    let w = World::start_with(users(), CONFIG).await;
    let acme_rx = Receiver::start(Mode::Ok).await;
    let slack_rx = Receiver::start(Mode::Ok).await;
    let vendor_rx = Receiver::start(Mode::Ok).await;
    let globex_rx = Receiver::start(Mode::Ok).await;
    let acme_hook = create(&w.acme, json!({"url": acme_rx.url})).await;
    let acme_secret = acme_hook.secret.clone().unwrap();
    assert!(acme_secret.len() >= 32, "{acme_hook:?}");
    assert_eq!(acme_hook.webhook.customer.as_deref(), Some("acme"));
    assert_eq!(acme_hook.webhook.events, ["*"]);
    let slack_hook = create(
        &w.acme,
        json!({"url": slack_rx.url, "format": "slack",
               "events": ["certificate_issued", "session_terminated"]}),
    )
    .await;
    // The operator's vendor-wide webhook, with a secret of its own choosing (never answered).
    let vendor_secret = "vendor-secret-0123456789-abcdef";
    let (s, vendor_hook) =
        w.op.post(
            "/v1/webhooks",
            json!({"url": vendor_rx.url, "secret": vendor_secret}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vendor_hook}");
    assert!(vendor_hook.get("secret").is_none(), "{vendor_hook}");
    let vendor_hook: WebhookCreated = read_as("a created webhook", vendor_hook);
    assert!(vendor_hook.webhook.customer.is_none(), "{vendor_hook:?}");
    let globex_hook = create(&w.globex, json!({"url": globex_rx.url})).await;

    // Access requested, decided, a certificate issued, revoked: acme-prod's.
    w.jit_tickets(&[("T-1", "alice")]).await;
    let alice = w.session("alice", 0).await;
    let (_, key) = engineer_key();
    let ask = json!({"public_key": key, "ticket": "T-1"});
    let (s, v) = alice
        .post_as::<IssuePending>("/v1/certificates", ask.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v:?}");
    let rq = v.request.id;
    let (s, v) = w.decide(&rq, json!({"approve": true})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = alice.post_as::<Issued>("/v1/certificates", ask).await;
    assert_eq!(s, StatusCode::OK, "{v:?}");
    let serial = v.serial;
    let (s, v) = w
        .acme
        .post(
            "/v1/revocations",
            json!({"scope": "serial", "value": serial, "reason": "done"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A session started, terminated and ended, as the cluster's gateway reports them.
    let gw = gateway(&w, "acme-prod").await;
    ship_session(&gw, "acme-prod", "s-acme-1").await;
    // A burst of refused logins: the third wrong password in a row locks bob out.
    for _ in 0..3 {
        let (s, _) = w.login("bob", "wrong-password", &w.code("bob", 0)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    let acme_kinds = [
        "access_request_created",
        "access_request_decided",
        "certificate_issued",
        "revoked",
        "session_started",
        "session_terminated",
        "session_ended",
    ];
    let got = acme_rx.wait_kinds(&acme_kinds).await;
    let mut ids = Vec::new();
    for r in &got {
        assert_signed(r, &acme_secret);
        let body = r.json();
        assert_eq!(
            body["kind"],
            r.header("x-sallyport-event").as_str(),
            "{body}"
        );
        assert_eq!(body["customer"], "acme", "{body}");
        assert_eq!(body["cluster"], "acme-prod", "{body}");
        assert!(body["time"].as_str().unwrap().ends_with('Z'), "{body}");
        assert!(!body["summary"].as_str().unwrap().is_empty(), "{body}");
        assert_eq!(r.header("content-type"), "application/json");
        let delivery = r.header("x-sallyport-delivery");
        assert!(delivery.starts_with("wd-"), "{delivery}");
        ids.push(delivery);
        // A customer hears nothing of the vendor's own: a burst of refused logins is nobody's
        // customer's.
        assert_ne!(body["kind"], "refusal_burst");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one delivery id per delivery");
    let issued = got
        .iter()
        .map(Received::json)
        .find(|b| b["kind"] == "certificate_issued")
        .unwrap();
    assert_eq!(issued["engineer"], "alice");
    assert_eq!(issued["ticket"], "T-1");
    assert_eq!(issued["data"]["serial"], serial.as_str());
    let ended = got
        .iter()
        .map(Received::json)
        .find(|b| b["kind"] == "session_terminated")
        .unwrap();
    assert_eq!(ended["session"], "s-acme-1");
    assert!(
        ended["id"].as_str().unwrap().starts_with("gateway:"),
        "{ended}"
    );

    // The vendor-wide webhook hears all of it, the burst of refusals too.
    let mut vendor_kinds = acme_kinds.to_vec();
    vendor_kinds.push("refusal_burst");
    let got = vendor_rx.wait_kinds(&vendor_kinds).await;
    for r in &got {
        assert_signed(r, vendor_secret);
    }
    let burst = got
        .iter()
        .map(Received::json)
        .find(|b| b["kind"] == "refusal_burst")
        .unwrap();
    assert_eq!(burst["engineer"], "bob", "{burst}");
    assert_eq!(burst["data"]["failures"], 3, "{burst}");
    assert!(burst["customer"].is_null(), "{burst}");
    // The burst is an audit event too, once per lockout.
    let bursts = w.broker_events("kind=refusal_burst").await;
    assert!(
        bursts.iter().any(
            |e| matches!(e, AuditEvent::RefusalBurst { engineer, counter, .. }
            if engineer.as_deref() == Some("bob") && counter == "user_from_address")
        ),
        "{bursts:?}"
    );

    // The Slack webhook: only the kinds it asked for, as a sentence, escaped for Slack.
    let got = slack_rx
        .wait_kinds(&["certificate_issued", "session_terminated"])
        .await;
    for r in &got {
        let kind = r.header("x-sallyport-event");
        assert!(
            kind == "certificate_issued" || kind == "session_terminated",
            "{kind}"
        );
        let text = r.json()["text"].as_str().unwrap().to_string();
        assert!(text.starts_with("sallyport [acme]: "), "{text}");
        if kind == "session_terminated" {
            assert!(text.contains("&lt;done&gt; &amp; dusted"), "{text}");
            assert!(!text.contains('<'), "{text}");
        } else {
            assert!(
                text.contains("certificate issued to alice for acme-prod"),
                "{text}"
            );
        }
    }
    let (s, slack_deliveries) = deliveries(&w.acme, Some(&slack_hook.webhook.id)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(slack_deliveries.len(), 2, "{slack_deliveries:?}");

    // Globex's webhook was told nothing of acme's: nothing was even queued for it.
    let (s, list) = deliveries(&w.globex, Some(&globex_hook.webhook.id)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(list.is_empty(), "{list:?}");
    assert!(globex_rx.received().is_empty());
    // Globex's own session reaches globex's webhook (and the vendor's), not acme's.
    let gw2 = gateway(&w, "globex-prod").await;
    ship_session(&gw2, "globex-prod", "s-globex-1").await;
    let got = globex_rx.wait_kinds(&["session_started"]).await;
    assert_eq!(got[0].json()["customer"], "globex");
    let (_, acme_list) = deliveries(&w.acme, None).await;
    assert!(
        acme_list
            .iter()
            .all(|d| d.customer.as_deref() == Some("acme") && !d.event.contains(&gw2.0)),
        "{acme_list:?}"
    );

    // Every delivery is listed as delivered; the secrets appear in no answer, event or log.
    let list = wait_deliveries(&w.acme, &acme_hook.webhook.id, |l| {
        l.len() == acme_kinds.len() && l.iter().all(|d| d.status == "delivered")
    })
    .await;
    assert!(list.iter().all(|d| d.attempts == 1), "{list:?}");
    let mut seen = String::new();
    for api in [&w.acme, &w.op, &w.reviewer] {
        seen.push_str(&api.get("/v1/webhooks").await.1.to_string());
        seen.push_str(&api.get("/v1/webhooks/deliveries").await.1.to_string());
    }
    let all = w.audit("limit=10000").await;
    seen.push_str(&serde_json::to_string(&all).unwrap());
    seen.push_str(&w.broker.log_text());
    for secret in [acme_secret.as_str(), vendor_secret] {
        assert!(!seen.contains(secret), "the secret {secret} was shown");
    }
    assert!(seen.contains(&acme_hook.webhook.id));
    // Each creation is audited, naming who.
    let made = w
        .picked("kind=webhook_created", |e| match e {
            AuditEvent::WebhookCreated { by, customer, .. } => Some((by, customer)),
            _ => None,
        })
        .await;
    assert_eq!(made.len(), 4, "{made:?}");
    assert!(
        made.iter()
            .any(|(by, c)| by == "approver:acme:acme-admin" && c.as_deref() == Some("acme")),
        "{made:?}"
    );
    assert!(
        made.iter()
            .any(|(by, c)| by.starts_with("operator:") && c.is_none()),
        "{made:?}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_later() {
    let w = world_with_attempts(5).await;
    // One answers 500 at first; nothing listens at the other's address yet.
    let flaky = Receiver::start(Mode::FailFirst(1)).await;
    let port = support::sshd::free_port();
    let flaky_hook = create(&w.acme, json!({"url": flaky.url, "events": ["revoked"]})).await;
    let down_hook = create(
        &w.acme,
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["revoked"]}),
    )
    .await;
    // A certificate of acme-prod revoked: acme's event.
    let cert = w.alice_certificate("T-2").await;
    let (s, v) = w
        .acme
        .post(
            "/v1/revocations",
            json!({"scope": "serial", "value": cert.serial, "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The 500: tried again, then delivered.
    let id = &flaky_hook.webhook.id;
    let list = wait_deliveries(&w.acme, id, |l| {
        !l.is_empty() && l.iter().all(|d| d.status == "delivered")
    })
    .await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].attempts, 2, "{list:?}");
    assert_eq!(list[0].last_status, Some(200), "{list:?}");
    let got = flaky.received();
    assert_eq!(got.len(), 2);
    // The same delivery both times, signed afresh.
    assert_eq!(
        got[0].header("x-sallyport-delivery"),
        got[1].header("x-sallyport-delivery")
    );
    assert_eq!(got[0].body, got[1].body);
    // Nothing listening: the failure is recorded and the delivery waits for its next try.
    let down = &down_hook.webhook.id;
    let list = wait_deliveries(&w.acme, down, |l| l.iter().any(|d| d.attempts >= 1)).await;
    assert_eq!(list[0].status, "pending", "{list:?}");
    assert!(
        list[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{list:?}"
    );
    assert!(list[0].next_at.is_some(), "{list:?}");
    // The receiver comes up: the event arrives at a later try.
    let rx = Receiver::start_on(port, Mode::Ok).await;
    let got = rx.wait_kinds(&["revoked"]).await;
    assert_eq!(got.len(), 1);
    let list = wait_deliveries(&w.acme, down, |l| l.iter().all(|d| d.status == "delivered")).await;
    assert!(list[0].attempts >= 2, "{list:?}");
}

#[tokio::test]
async fn the_last_failure_is_an_audit_event_and_a_hanging_receiver_delays_no_login() {
    let w = world_with_attempts(2).await;
    let hanging = Receiver::start(Mode::Hang).await;
    let port = support::sshd::free_port();
    let hang_hook = create(
        &w.op,
        json!({"url": hanging.url, "events": ["certificate_issued"]}),
    )
    .await;
    let dead_hook = create(
        &w.acme,
        json!({"url": format!("http://127.0.0.1:{port}/never"), "events": ["certificate_issued"]}),
    )
    .await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    // Logins and certificates go on while the receivers hang or are gone: each completes.
    let home = tempfile::tempdir().unwrap();
    for offset in [-1, 0, 1] {
        let v = w.login_cli(home.path(), "alice", "T-1", &w.code("alice", offset));
        assert_eq!(v["cluster"], "acme-prod", "{v}");
        assert!(home.path().join("acme-prod-cert.pub").exists());
    }
    // The hanging receiver got a request and never answered: the attempt timed out.
    let list = wait_deliveries(&w.op, &hang_hook.webhook.id, |l| {
        l.len() == 3
            && l.iter().all(|d| {
                d.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("no answer"))
            })
    })
    .await;
    assert!(!hanging.received().is_empty());
    assert!(list.iter().all(|d| d.status != "delivered"), "{list:?}");
    // The dead receiver: after the last attempt the delivery has failed, and that is audited
    // with the webhook, the host and the error, never the secret or the URL's path.
    let dead = &dead_hook.webhook.id;
    let list = wait_deliveries(&w.acme, dead, |l| {
        l.len() == 3 && l.iter().all(|d| d.status == "failed")
    })
    .await;
    assert!(list.iter().all(|d| d.attempts == 2), "{list:?}");
    // Each failure is audited just after the delivery is marked failed: wait for the three.
    let start = Instant::now();
    let failed: Vec<AuditEvent> = loop {
        let failed: Vec<AuditEvent> = w
            .broker_events("kind=webhook_failed")
            .await
            .into_iter()
            .filter(|e| matches!(e, AuditEvent::WebhookFailed { webhook, .. } if webhook == dead))
            .collect();
        if failed.len() >= 3 || start.elapsed() > Duration::from_secs(20) {
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(failed.len(), 3, "{failed:?}");
    for e in &failed {
        let AuditEvent::WebhookFailed {
            host,
            attempts,
            customer,
            event_kind,
            last_error,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(*host, format!("127.0.0.1:{port}"), "{e:?}");
        assert_eq!(*attempts, 2, "{e:?}");
        assert_eq!(customer.as_deref(), Some("acme"), "{e:?}");
        assert_eq!(event_kind, "certificate_issued", "{e:?}");
        assert!(last_error.contains("cannot connect"), "{e:?}");
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.contains(dead_hook.secret.as_deref().unwrap()),
            "{e:?}"
        );
    }
    // A failed delivery is not tried again: its count stays.
    let again = wait_deliveries(&w.acme, dead, |_| true).await;
    assert!(
        again
            .iter()
            .all(|d| d.attempts == 2 && d.status == "failed")
    );
}

#[tokio::test]
async fn customers_see_and_change_only_their_own_webhooks() {
    // Without allow_http_loopback: only https.
    let w = World::start_with(users(), "").await;
    // URLs that are refused, with what to do.
    for (url, word) in [
        ("http://hooks.example.com/x", "use https://"),
        ("http://127.0.0.1:9/x", "allow_http_loopback"),
        ("ftp://hooks.example.com/x", "https://"),
        ("https://user:pw@hooks.example.com/x", "password"),
        // A customer's webhook goes to the internet, never into a private network.
        ("https://10.0.0.1/x", "private network"),
        (
            "https://169.254.169.254/latest/meta-data",
            "private network",
        ),
        ("https://[fd00::1]/x", "private network"),
        ("no url", "not a URL"),
    ] {
        let (s, e) = w.acme.post_err("/v1/webhooks", json!({"url": url})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {e:?}");
        assert!(e.message.contains(word), "{url}: {e:?}");
    }
    let (s, v) = w
        .acme
        .post(
            "/v1/webhooks",
            json!({"url": "https://hooks.example.com/x", "events": ["command"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = w
        .acme
        .post(
            "/v1/webhooks",
            json!({"url": "https://hooks.example.com/x", "secret": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let acme = create(
        &w.acme,
        json!({"url": "https://hooks.slack.com/services/T0/B0/SLACKPATHSECRET", "format": "slack"}),
    )
    .await;
    let acme_id = acme.webhook.id.clone();
    // The URL past its first segment (a Slack webhook's secret) is never shown.
    assert_eq!(acme.webhook.url, "https://hooks.slack.com/services/…");
    // The operator's vendor-wide webhook may go to the vendor's own network (its SIEM).
    let vendor = create(&w.op, json!({"url": "https://10.20.0.5/siem"})).await;
    assert_eq!(vendor.webhook.url, "https://10.20.0.5/siem");
    let vendor_id = vendor.webhook.id.clone();
    let globex = create(&w.globex, json!({"url": "https://globex.example/hook"})).await;
    let globex_id = globex.webhook.id.clone();

    // Each approver lists its own; reviewers and the operator all.
    assert_eq!(listed_ids(&w.acme).await, vec![acme_id.clone()]);
    assert_eq!(listed_ids(&w.globex).await, vec![globex_id.clone()]);
    for api in [&w.reviewer, &w.op] {
        let (s, v) = api.get("/v1/webhooks").await;
        assert_eq!(s, StatusCode::OK);
        let mut all = listed_ids(api).await;
        all.sort();
        let mut want = vec![acme_id.clone(), vendor_id.clone(), globex_id.clone()];
        want.sort();
        assert_eq!(all, want);
        assert!(!v.to_string().contains("SLACKPATHSECRET"), "{v}");
        assert!(!v.to_string().contains("whsec_"), "{v}");
    }
    // Globex cannot read or delete acme's, nor the vendor's: "not found", audited.
    for id in [&acme_id, &vendor_id] {
        let (s, _) = w.globex.get(&format!("/v1/webhooks/{id}/deliveries")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = w.globex.delete(&format!("/v1/webhooks/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    w.assert_refused(&[
        ("approver:globex:globex-admin", "delete_webhook"),
        ("approver:globex:globex-admin", "list_webhook_deliveries"),
    ])
    .await;
    // An approver sets up webhooks for its own customer only.
    let (s, _) = w
        .acme
        .post(
            "/v1/webhooks",
            json!({"url": "https://x.example/h", "customer": "globex"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Reviewers read, never change; engineers and ticket systems see nothing.
    let (s, _) = w
        .reviewer
        .post("/v1/webhooks", json!({"url": "https://x.example/h"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = w.reviewer.delete(&format!("/v1/webhooks/{acme_id}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let alice = w.session("alice", 0).await;
    for api in [&alice, &w.tickets] {
        let (s, _) = api.get("/v1/webhooks").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = api.get("/v1/webhooks/deliveries").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, _) = w.anon.get("/v1/webhooks").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The CLI, with the approver's token: create, list, deliveries, delete.
    let out = w.acme.cli(&[
        "webhooks",
        "create",
        "--url",
        "https://hooks.example.com/cli",
        "--event",
        "session_started",
        "--event",
        "revoked",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: WebhookCreated = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made.webhook.events, ["session_started", "revoked"]);
    let cli_id = made.webhook.id.clone();
    assert!(made.secret.as_deref().unwrap().starts_with("whsec_"));
    let out = w.acme.cli(&["webhooks", "list", "--json"]);
    assert!(out.status.success());
    let lines: Vec<Webhook> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|h| h.customer.as_deref() == Some("acme")));
    let out = w.globex.cli(&["webhooks", "delete", &cli_id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w
        .acme
        .cli(&["webhooks", "deliveries", "--webhook", &cli_id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w.acme.cli(&["webhooks", "delete", &cli_id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone: WebhookDeleted = serde_json::from_slice(&out.stdout).unwrap();
    assert!(gone.deleted);
    assert_eq!(listed_ids(&w.acme).await, vec![acme_id.clone()]);
    let deleted = w
        .picked("kind=webhook_deleted", |e| match e {
            AuditEvent::WebhookDeleted { by, .. } => Some(by),
            _ => None,
        })
        .await;
    assert_eq!(deleted, ["approver:acme:acme-admin"]);

    // The console: each approver sees only its own; the form needs its CSRF token.
    let acme_c = &console_of(&w, "acme-boss", "approver", Some("acme")).await;
    let globex_c = &console_of(&w, "globex-boss", "approver", Some("globex")).await;
    let page = acme_c.get("/console/webhooks").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&acme_id), "{}", page.body);
    assert!(page.body.contains("href=\"/console/webhooks\""));
    assert!(!page.body.contains(&globex_id) && !page.body.contains(&vendor_id));
    assert!(!page.body.contains("SLACKPATHSECRET"));
    let page = globex_c.get("/console/webhooks").await;
    assert!(page.body.contains(&globex_id));
    assert!(!page.body.contains(&acme_id), "{}", page.body);
    let page = globex_c
        .get(&format!("/console/webhooks?webhook={acme_id}"))
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let globex_csrf = globex_c.csrf().await;
    let p = globex_c
        .post(
            &format!("/console/webhooks/{acme_id}/delete"),
            &[("csrf", &globex_csrf)],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let acme_csrf = acme_c.csrf().await;
    // Without its token, or with another session's, a form changes nothing.
    for csrf in ["", globex_csrf.as_str()] {
        let p = acme_c
            .post(
                &format!("/console/webhooks/{acme_id}/delete"),
                &[("csrf", csrf)],
                &[],
            )
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        let p = acme_c
            .post(
                "/console/webhooks",
                &[
                    ("csrf", csrf),
                    ("url", "https://x.example/h"),
                    ("event", "revoked"),
                ],
                &[],
            )
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
    }
    // Added from the form: the secret shown once, on that page only.
    let p = acme_c
        .post(
            "/console/webhooks",
            &[
                ("csrf", &acme_csrf),
                ("url", "http://hooks.example.com/x"),
                ("format", "json"),
                ("event", "revoked"),
            ],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("use https://"), "{}", p.body);
    let p = acme_c
        .post(
            "/console/webhooks",
            &[
                ("csrf", &acme_csrf),
                ("url", "https://hooks.example.com/console"),
                ("format", "json"),
                ("event", "revoked"),
                ("event", "session_ended"),
            ],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let at = p.body.find("whsec_").expect("the secret is shown once");
    let secret: String = p.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(secret.len(), "whsec_".len() + 64);
    let page = acme_c.get("/console/webhooks").await;
    assert!(!page.body.contains(&secret));
    assert!(page.body.contains("hooks.example.com/console"));
    let list: Webhooks = w.acme.get_ok("/v1/webhooks").await;
    let console_hook = list
        .webhooks
        .iter()
        .find(|h| h.url == "https://hooks.example.com/console")
        .unwrap();
    assert_eq!(console_hook.events, ["revoked", "session_ended"]);
    // Deleted from the page.
    let id = &console_hook.id;
    acme_c
        .submit(&format!("/console/webhooks/{id}/delete"), &acme_csrf)
        .await;
    assert_eq!(listed_ids(&w.acme).await, vec![acme_id.clone()]);
    // A reviewer's page lists every webhook, with no form.
    let r = console_of(&w, "sec-anna", "reviewer", None).await;
    let page = r.get("/console/webhooks").await;
    assert!(
        page.body.contains(&acme_id)
            && page.body.contains(&globex_id)
            && page.body.contains(&vendor_id)
    );
    assert!(page.body.contains("vendor-wide"));
    assert!(!page.body.contains("action=\"/console/webhooks\""));
}

/// In headless Chromium: an approver adds a webhook from the console (no script needed), reads
/// its secret once, and sees the delivery of the next event as delivered; the receiver checks
/// the signature with the secret the page showed. Screenshots of each step.
#[tokio::test]
async fn in_chromium_an_approver_adds_a_webhook_and_sees_it_delivered() {
    let w = World::start_with(users(), CONFIG).await;
    let rx = Receiver::start(Mode::Ok).await;
    let secret = w.account("acme-boss", "approver", Some("acme")).await;
    let code = sallyport_broker::totp::code(&secret, now()).unwrap();
    let browser = support::browser::Browser::start("in_chromium_an_approver_adds_a_webhook").await;
    let base = &w.broker.url;
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code)
        .await;
    browser.click("nav a[href='/console/webhooks']").await;
    browser.wait_path("/console/webhooks").await;
    browser.wait_for("No webhook yet").await;
    browser.shot("01-webhooks-empty").await;
    browser.fill("#url", &rx.url).await;
    browser.click("#add button[type=submit]").await;
    let text = browser.wait_for("shown this once").await;
    assert!(text.contains("Webhook wh-"), "{text}");
    let secret = browser.text_of("#secret").await.trim().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.shot("02-webhook-added").await;
    // The next event of acme's: a certificate.
    w.alice_certificate("T-1").await;
    let got = rx.wait_kinds(&["certificate_issued"]).await;
    assert_signed(&got[0], &secret);
    let (_, list) = deliveries(&w.acme, None).await;
    let id = list[0].webhook.clone();
    wait_deliveries(&w.acme, &id, |l| l.iter().any(|d| d.status == "delivered")).await;
    browser.goto(&format!("{base}/console/webhooks")).await;
    let text = browser.wait_for("delivered").await;
    assert!(text.contains("Certificate issued"), "{text}");
    assert!(!text.contains(&secret), "the secret is shown once only");
    browser.shot("03-webhook-delivered").await;
    browser.close().await;
}
