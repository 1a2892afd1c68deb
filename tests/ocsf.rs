//! SIEM export and the security team's CLI: every kind of audit event mapped to OCSF validates
//! against the OCSF schema's own class definitions (vendored, see `support/ocsf_schema.rs`); a
//! real session exported with `audit export --format ocsf` validates; `audit show` and `audit
//! replay` show the session's commands; `GET /v1/audit/stream` gives events written after the
//! client connected, resumes exactly after a cursor, and gives an approver only its customer's
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use sallyport_api::admin::TokenCreated;
use sallyport_broker::audit::{AuditEvent, AuditRecord};
use sallyport_broker::ocsf;
use serde_json::{Value, json};
use support::bastion::{alice_at_the_edge, ssh};
use support::broker::output_text as text;
use support::broker::*;
use support::ocsf_schema::Schema;

fn valid(schema: &Schema, e: &Value) {
    let problems = schema.check_event(e);
    assert!(
        problems.is_empty(),
        "{problems:#?}\nin {}",
        serde_json::to_string_pretty(e).unwrap()
    );
}

fn rec(source: &str, kind: &str, data: Value) -> AuditRecord {
    AuditRecord::next(source, Some((6, "00")), 1_764_000_000_000, kind, data)
}

/// A gateway's record with what a real one carries.
fn gateway_data(kind: &str) -> Value {
    let mut d = json!({"session": "s-1", "host": "node1.acme-prod", "cluster": "acme-prod",
        "node": "node1", "login": "ubuntu", "engineer": "alice", "ticket": "SUP-1",
        "grant": "g-1", "channel": 0, "peer": "127.0.0.1:40000"});
    let extra = match kind {
        "command" => json!({"command": "echo hi", "via": "exec"}),
        "channel_exit" => json!({"exit_status": 3}),
        "file_op" => json!({"via": "sftp", "op": {"op": "close", "path": "/tmp/x",
            "bytes_read": 0, "bytes_written": 5, "sha256_written": "ab", "status": "ok"}}),
        "file_transfer" => json!({"via": "scp", "transfer": {"direction": "upload",
            "path": "/tmp/", "recursive": false, "preserve": false, "target_is_dir": false}}),
        "forward" | "forward_failed" | "forward_refused" => json!({"target": "10.0.0.9:5432"}),
        "channel_refused" | "session_refused" | "node_unreachable" => {
            json!({"code": "refused", "reason": "no"})
        }
        "session_started" => json!({"serial": "42", "key_id": "k"}),
        _ => json!({}),
    };
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

/// Broker events of every class.
fn broker_events() -> Vec<AuditEvent> {
    vec![
        AuditEvent::LoginSucceeded {
            engineer: "alice".into(),
            groups: vec!["support-l2".into()],
            source_ip: Some("10.0.0.1".into()),
        },
        AuditEvent::AccountLoginFailed {
            account: "carol".into(),
            code: "bad_password".into(),
            reason: "wrong password".into(),
        },
        AuditEvent::SessionMfaFailed {
            engineer: "alice".into(),
            code: "bad_totp".into(),
            reason: "wrong".into(),
            by: "edge:edge1".into(),
            ticket: Some("SUP-1".into()),
            cluster: Some("acme-prod".into()),
            source_ip: Some("192.0.2.1".into()),
        },
        AuditEvent::ConsoleLogout {
            account: "carol".into(),
            role: "approver".into(),
            customer: Some("acme".into()),
        },
        AuditEvent::AccessRequestCreated {
            request: "r".into(),
            engineer: "alice".into(),
            ticket: "SUP-1".into(),
            cluster: "acme-prod".into(),
            approval: "a".into(),
            logins: vec!["ubuntu".into()],
            ttl_secs: 60,
            approvers_required: 1,
        },
        AuditEvent::ApprovalWithdrawn {
            approval: "a".into(),
            customer: "acme".into(),
            cluster: "acme-prod".into(),
            group: "g".into(),
            by: "approver:acme:carol".into(),
        },
        AuditEvent::AdminChange {
            action: "disable_engineer".into(),
            target: "alice".into(),
            by: "operator:config".into(),
            customer: None,
            cluster: None,
            node: None,
            engineer: Some("alice".into()),
        },
        AuditEvent::AdminChange {
            action: "create_reviewer_token".into(),
            target: "sec".into(),
            by: "operator:config".into(),
            customer: None,
            cluster: None,
            node: None,
            engineer: None,
        },
        AuditEvent::RefusalBurst {
            principal: "account:carol".into(),
            engineer: None,
            customer: Some("acme".into()),
            source_ip: Some("10.0.0.7".into()),
            counter: "address".into(),
            failures: 5,
            locked_secs: 300,
        },
        AuditEvent::WebhookCreated {
            webhook: "w".into(),
            customer: Some("acme".into()),
            url: "https://hooks.example/…".into(),
            format: "json".into(),
            events: vec!["certificate_issued".into()],
            by: "approver:acme:carol".into(),
        },
        AuditEvent::RecordingRead {
            session: "s-1-c0".into(),
            by: "reviewer:sec".into(),
            cluster: "acme-prod".into(),
            engineer: Some("alice".into()),
            ticket: Some("SUP-1".into()),
            node: Some("node1".into()),
        },
        AuditEvent::Refused {
            by: "unknown@10.1.1.1".into(),
            action: "GET /v1/audit/events".into(),
            reason: "never issued".into(),
            customer: None,
            cluster: None,
        },
        AuditEvent::Refused {
            by: "approver:acme:carol".into(),
            action: "audit_stream".into(),
            reason: "another customer's".into(),
            customer: Some("globex".into()),
            cluster: None,
        },
    ]
}

#[test]
fn every_kind_maps_to_an_event_that_its_ocsf_class_validates() {
    use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind};
    let schema = Schema::load();
    assert_eq!(schema.version(), ocsf::OCSF_VERSION);
    let mut classes = BTreeSet::new();
    for k in GatewayKind::ALL {
        let e = ocsf::event(&rec("gateway:gw-1", k.as_str(), gateway_data(k.as_str())));
        valid(&schema, &e);
        // A record with nothing but its kind validates too.
        valid(
            &schema,
            &ocsf::event(&rec("gateway:gw-1", k.as_str(), json!({}))),
        );
        classes.insert(e["class_uid"].as_u64().unwrap());
    }
    for k in EdgeKind::ALL {
        let data = json!({"edge": "edge1", "engineer": "alice", "cluster": "acme-prod",
            "node": "node1", "peer": "192.0.2.9:2200", "code": "revoked", "reason": "revoked"});
        let e = ocsf::event(&rec("edge:edge1", k.as_str(), data));
        valid(&schema, &e);
        valid(
            &schema,
            &ocsf::event(&rec("edge:edge1", k.as_str(), json!({"edge": "edge1"}))),
        );
    }
    for ev in broker_events() {
        let e = ocsf::event(&rec("broker", ev.kind(), ev.data()));
        valid(&schema, &e);
        classes.insert(e["class_uid"].as_u64().unwrap());
    }
    // A record this version does not know still makes a valid event.
    valid(
        &schema,
        &ocsf::event(&rec("broker", "from_the_future", json!({"x": 1}))),
    );
    assert_eq!(
        classes,
        BTreeSet::from([3001, 3002, 4007, 6003]),
        "every class is used"
    );
}

/// The validator is not a rubber stamp: what the schema forbids, it names.
#[test]
fn the_schema_check_names_what_is_wrong() {
    let schema = Schema::load();
    let good = ocsf::event(&rec(
        "broker",
        "login_succeeded",
        json!({"engineer": "alice", "groups": [], "source_ip": null}),
    ));
    valid(&schema, &good);
    type Change = fn(&mut Value);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "no user",
            |e| drop(e.as_object_mut().unwrap().remove("user")),
            "user: required",
        ),
        (
            "no metadata product",
            |e| drop(e["metadata"].as_object_mut().unwrap().remove("product")),
            "metadata.product: required",
        ),
        (
            "activity not of the class",
            |e| {
                e["activity_id"] = json!(42);
                e["type_uid"] = json!(300242)
            },
            "activity_id: 42",
        ),
        (
            "severity outside the enum",
            |e| e["severity_id"] = json!(7),
            "severity_id: 7",
        ),
        ("time as text", |e| e["time"] = json!("yesterday"), "time"),
        (
            "type_uid off",
            |e| e["type_uid"] = json!(300299),
            "type_uid",
        ),
        (
            "unknown attribute",
            |e| e["shell_history"] = json!("x"),
            "shell_history: not an attribute",
        ),
        (
            "wrong category",
            |e| e["category_uid"] = json!(4),
            "category_uid",
        ),
        (
            "user without a name",
            |e| e["user"] = json!({"type_id": 1}),
            "at least one",
        ),
    ];
    for (what, change, word) in cases {
        let mut e = good.clone();
        change(&mut e);
        let problems = schema.check_event(&e);
        assert!(
            problems.iter().any(|p| p.contains(word)),
            "{what}: {problems:#?}"
        );
    }
}

/// A line-by-line reader of a streaming response.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(api: &Api, query: &str) -> Lines {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/audit/stream?{query}", api.url))
            .bearer_auth(api.token.as_deref().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Lines {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next line; `None` once the broker ended the response. A guard against a broker that
    /// never sends it, not a measure of time.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), self.resp.chunk())
                .await
                .expect("no line from the stream in 60 s")
                .unwrap();
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return None,
            }
        }
    }

    /// Lines until one satisfies `f` (which is returned last).
    async fn until(&mut self, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.next().await.expect("the stream ended first");
            let done = f(&v);
            out.push(v);
            if done {
                return out;
            }
        }
    }

    async fn rest(mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.next().await {
            out.push(v);
        }
        out
    }
}

fn key(v: &Value) -> (String, u64) {
    (
        v["source"].as_str().unwrap().to_string(),
        v["seq"].as_u64().unwrap(),
    )
}

fn ticket_saved(v: &Value, id: &str) -> bool {
    v["kind"] == "ticket_saved" && v["ticket"] == id
}

#[tokio::test]
async fn the_stream_gives_new_events_and_resumes_exactly_after_a_cursor() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    w.ticket("SUP-S0", "acme-prod", "alice", "open").await;

    // Connected first; then an event is written: it arrives.
    let mut live = Lines::open(&w.reviewer, "").await;
    w.ticket("SUP-S1", "acme-prod", "alice", "open").await;
    let first = live.until(|v| ticket_saved(v, "SUP-S1")).await;
    assert!(
        first.iter().any(|v| ticket_saved(v, "SUP-S0")),
        "the backlog first"
    );
    let cursor = first.last().unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cursor.contains("broker:"), "{cursor}");
    drop(live);
    // The broker stops reading for a client that went away, though nothing is written to it.
    let mut tries = 0;
    while !w
        .broker
        .log_text()
        .contains("audit stream ended: its reader went away")
    {
        tries += 1;
        assert!(
            tries < 100,
            "the stream's task outlived its reader:\n{}",
            w.broker.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Written while nobody reads; resuming after the cursor gives exactly the rest.
    w.ticket("SUP-S2", "acme-prod", "alice", "open").await;
    w.ticket("SUP-S3", "globex-prod", "bob", "open").await;
    let rest = Lines::open(&w.reviewer, &format!("follow=false&since={cursor}"))
        .await
        .rest()
        .await;
    assert!(!rest.iter().any(|v| ticket_saved(v, "SUP-S1")), "{rest:#?}");
    assert!(rest.iter().any(|v| ticket_saved(v, "SUP-S2")), "{rest:#?}");
    assert!(rest.iter().any(|v| ticket_saved(v, "SUP-S3")), "{rest:#?}");
    // No gap, no duplicate: together they are each chain from its first record, once.
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for v in first.iter().chain(&rest) {
        let (s, n) = key(v);
        seen.entry(s).or_default().push(n);
    }
    for (source, seqs) in &seen {
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        let mut got = seqs.clone();
        got.sort();
        assert_eq!(got, want, "{source}: every record once");
    }
    // The same as the store holds after the cursor.
    let broker_after = first
        .last()
        .unwrap()
        .get("seq")
        .and_then(Value::as_u64)
        .unwrap();
    let stored = w
        .audit(&format!(
            "source=broker&after_seq={broker_after}&limit=100000"
        ))
        .await;
    let from_stream: Vec<u64> = rest
        .iter()
        .filter(|v| v["source"] == "broker")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    let from_store: Vec<u64> = stored
        .iter()
        .map(|e| e.seq)
        .filter(|n| from_stream.last().is_some_and(|last| n <= last))
        .collect();
    assert_eq!(from_stream, from_store);

    // OCSF lines validate and carry their cursor too.
    let schema = Schema::load();
    let all = Lines::open(&w.reviewer, "follow=false&format=ocsf")
        .await
        .rest()
        .await;
    assert_eq!(all.len(), seen.values().map(Vec::len).sum::<usize>());
    for e in &all {
        valid(&schema, e);
        assert!(e["unmapped"]["cursor"].is_string(), "{e}");
    }

    // `sallyport audit stream` prints the same lines, resuming where told.
    let mut child = std::process::Command::new(BIN)
        .args(["audit", "stream", "--since", &cursor])
        .env("SALLYPORT_BROKER", &w.reviewer.url)
        .env("SALLYPORT_TOKEN", w.reviewer.token.as_deref().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut got = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let done = ticket_saved(&v, "SUP-S3");
            got.push(v);
            if done {
                break;
            }
        }
        got
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        lines.iter().map(key).collect::<Vec<_>>()[..],
        rest.iter().map(key).collect::<Vec<_>>()[..lines.len()]
    );

    // The API document describes it.
    let (_, api) = w.anon.get("/v1/openapi.json").await;
    let params = api["paths"]["/v1/audit/stream"]["get"]["parameters"].to_string();
    assert!(
        params.contains("\"since\"") && params.contains("\"ocsf\""),
        "{params}"
    );

    // What the stream refuses.
    for q in ["since=nonsense", "format=xml", "since=gateway:../x:3"] {
        let (s, v) = w.reviewer.get(&format!("/v1/audit/stream?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
    }
    let (s, _) = w.tickets.get("/v1/audit/stream").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A token revoked while it streams ends its stream.
    let (s, t) =
        w.op.post_as::<TokenCreated>(
            "/v1/tokens",
            json!({"name": "siem", "role": "reviewer", "customer": null}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t:?}");
    let siem = w.op.with(&t.token);
    let mut s = Lines::open(&siem, "since=now").await;
    // `now` resolved: the broker's chain as far as it is stored.
    let start = s.resp.headers()["x-sallyport-cursor"]
        .to_str()
        .unwrap()
        .to_string();
    let head = w.audit("source=broker&limit=100000").await.len();
    assert!(
        start.split(',').any(|p| p == format!("broker:{head}")),
        "{start} (broker head {head})"
    );
    let (st, v) = w.op.delete(&format!("/v1/tokens/{}", t.id)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ended = s.until(|v| v.get("error").is_some()).await;
    assert_eq!(
        error_of(ended.last().unwrap()).code,
        "forbidden",
        "{ended:#?}"
    );
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn an_approvers_stream_holds_only_its_customers_events() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    w.ticket("SUP-A1", "acme-prod", "alice", "open").await;
    w.ticket("SUP-G1", "globex-prod", "bob", "open").await;
    w.ticket("SUP-A2", "acme-dev", "alice", "open").await;
    let acme_clusters = ["acme-prod", "acme-dev"];
    for format in ["native", "ocsf"] {
        let lines = Lines::open(&w.acme, &format!("follow=false&format={format}"))
            .await
            .rest()
            .await;
        let cluster = |v: &Value| -> Value {
            if format == "ocsf" {
                v["unmapped"]["data"]["cluster"].clone()
            } else {
                v["cluster"].clone()
            }
        };
        let tickets: Vec<Value> = lines
            .iter()
            .map(|v| {
                if format == "ocsf" {
                    v["unmapped"]["data"]["ticket"].clone()
                } else {
                    v["ticket"].clone()
                }
            })
            .collect();
        assert!(tickets.contains(&json!("SUP-A1")), "{lines:#?}");
        assert!(tickets.contains(&json!("SUP-A2")));
        assert!(!tickets.contains(&json!("SUP-G1")), "{lines:#?}");
        for v in &lines {
            let c = cluster(v);
            assert!(
                c.as_str().is_some_and(|c| acme_clusters.contains(&c)),
                "an event of no acme cluster: {v}"
            );
        }
    }
    // Live too: globex's new ticket never reaches acme's stream, acme's does.
    let mut live = Lines::open(&w.acme, "since=now").await;
    w.ticket("SUP-G2", "globex-prod", "bob", "open").await;
    w.ticket("SUP-A3", "acme-prod", "alice", "open").await;
    let got = live.until(|v| ticket_saved(v, "SUP-A3")).await;
    assert!(!got.iter().any(|v| v["ticket"] == "SUP-G2"), "{got:#?}");
    // Asking for another customer is refused, and audited.
    let (s, _) = w.acme.get("/v1/audit/stream?customer=globex").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!w.refusals("audit_stream").await.is_empty());
}

#[tokio::test]
async fn a_real_session_in_ocsf_validates_and_audit_show_and_replay_show_its_commands() {
    use support::term::Term;
    let (w, b, home) = alice_at_the_edge().await;

    // An exec channel with its exit status, then an interactive shell.
    let out = ssh(home.path(), &["node1.acme-prod", "echo exec-7313; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // A file uploaded with scp (the classic protocol, parsed at the gateway with its SHA-256).
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("payload.txt");
    std::fs::write(&local, "ocsf file payload\n").unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"ocsf file payload\n"))
    };
    let remote = format!(
        "node1.acme-prod:/tmp/sallyport-ocsf-{}.txt",
        std::process::id()
    );
    let up = std::process::Command::new("scp")
        .arg("-F")
        .arg(home.path().join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-q", "-O"])
        .arg(&local)
        .arg(&remote)
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let term = Term::ssh("sp-ocsf", home.path(), 100, 30, "");
    term.wait(":~$", 1);
    term.send(&["echo typed-marker-4471", "Enter"]);
    term.wait("typed-marker-4471", 2);
    // The node prints an OSC 52 sequence (write the clipboard): recorded, never replayed raw.
    term.type_text("printf '\\033]52;c;cHduZWQ=\\007osc-%s\\n' done");
    term.send(&["Enter"]);
    term.wait("osc-done", 1);
    term.send(&["exit", "Enter"]);
    term.wait_exit();
    let ended = w.wait_audit("kind=session_ended&ticket=SUP-1234", 3).await;
    assert_eq!(ended.len(), 3, "{ended:#?}");
    let file_ops = w.wait_audit("kind=file_op&ticket=SUP-1234", 1).await;
    let scp_session = file_ops
        .iter()
        .find(|e| e.field("op").and_then(|op| op.get("sha256")) == Some(&json!(sha)))
        .unwrap_or_else(|| panic!("no file_op with the file's SHA-256: {file_ops:#?}"))
        .session
        .clone()
        .unwrap();
    let commands = w.audit("kind=command&ticket=SUP-1234").await;
    let session_of = |c: &str| {
        commands
            .iter()
            .find(|e| e.command.as_deref() == Some(c))
            .unwrap_or_else(|| panic!("no command {c}: {commands:#?}"))
            .session
            .clone()
            .unwrap()
    };
    let exec_session = session_of("echo exec-7313; exit 3");
    let pty_session = session_of("echo typed-marker-4471");
    // Both recordings reached the broker (what replay reads).
    for s in [&exec_session, &pty_session] {
        let prefix = format!("{s}-c");
        let mut tries = 0;
        loop {
            let stored = w.audit("kind=recording_stored&limit=1000").await;
            if stored
                .iter()
                .any(|e| e.session.as_deref().unwrap().starts_with(&prefix))
            {
                break;
            }
            tries += 1;
            assert!(
                tries < 100,
                "no recording of {s} stored: {stored:#?}\n{}",
                b.gateway.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    // OCSF export of the ticket: every line validates against its class.
    let schema = Schema::load();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("sup-1234.ocsf.jsonl");
    let out = w.reviewer.cli(&[
        "audit",
        "export",
        "--format",
        "ocsf",
        "--ticket",
        "SUP-1234",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for e in &events {
        valid(&schema, e);
    }
    let kinds: BTreeSet<&str> = events
        .iter()
        .map(|e| e["unmapped"]["kind"].as_str().unwrap())
        .collect();
    for k in [
        "certificate_issued",
        "session_started",
        "command",
        "channel_exit",
        "session_ended",
        "recording_stored",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    let find = |kind: &str, f: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| e["unmapped"]["kind"] == kind && f(e))
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let cmd = find("command", &|e| {
        e["unmapped"]["data"]["command"] == "echo typed-marker-4471"
    });
    assert_eq!(cmd["class_uid"], 4007);
    assert_eq!(cmd["actor"]["user"]["name"], "alice");
    assert_eq!(cmd["metadata"]["correlation_uid"], pty_session.as_str());
    let started = find("session_started", &|_| true);
    assert_eq!(started["activity_id"], 1);
    assert!(started["src_endpoint"]["ip"].is_string(), "{started}");
    let exit = find("channel_exit", &|e| {
        e["unmapped"]["data"]["exit_status"] == 3
    });
    assert_eq!(exit["status_id"], 2);
    let op = find("file_op", &|e| {
        e["unmapped"]["data"]["op"]["sha256"] == sha.as_str()
    });
    assert_eq!(op["file"]["hashes"][0]["value"], sha.as_str(), "{op}");
    assert_eq!(op["file"]["hashes"][0]["algorithm_id"], 3);
    assert_eq!(op["file"]["size"], 18);
    let issued = find("certificate_issued", &|_| true);
    assert_eq!(issued["class_uid"], 3002);
    assert_eq!(issued["user"]["name"], "alice");
    // By session, to stdout; a file that exists is not overwritten.
    let out = w.reviewer.cli(&[
        "audit",
        "export",
        "--format",
        "ocsf",
        "--session",
        &exec_session,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|e| e["metadata"]["correlation_uid"] == exec_session.as_str())
    );
    let out = w.reviewer.cli(&[
        "audit",
        "export",
        "--format",
        "ocsf",
        "--ticket",
        "SUP-1234",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));

    // audit show: the facts and the timeline, with the exec's exit status.
    let out = w.reviewer.cli(&["audit", "show", &exec_session]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("$ echo exec-7313; exit 3  [exit 3]"),
        "{shown}"
    );
    assert!(shown.contains("engineer    alice"), "{shown}");
    assert!(shown.contains("ticket      SUP-1234"), "{shown}");
    assert!(shown.contains("approval    "), "{shown}");
    let out = w.reviewer.cli(&["audit", "show", &scp_session]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains(&format!("(18 bytes) sha256 {sha}")),
        "{shown}"
    );
    let out = w.acme.cli(&["audit", "show", &pty_session, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["engineer"], "alice");
    assert_eq!(v["live"], false);
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["command"] == "echo typed-marker-4471"),
        "{v:#}"
    );
    // Another customer's approver sees nothing of it.
    let out = w.globex.cli(&["audit", "show", &pty_session]);
    assert!(!out.status.success(), "{}", text(&out));

    // audit replay: the screen shows the command typed; the exec channel its streams.
    let out = w
        .reviewer
        .cli(&["audit", "replay", &pty_session, "--speed", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    let played = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(played.contains("echo typed-marker-4471"), "{played}");
    assert!(played.contains("osc-done"), "{played}");
    let finished = w
        .audit(&format!("kind=recording_finished&session={pty_session}"))
        .await;
    let rec_id = field_str(&finished[0], "recording").to_string();
    let cast = w.fetch_recording(&rec_id).await;
    // ESC as the recording's JSON escapes it (the typed `\033]52` text does not match).
    assert!(
        cast.contains("\\u001b]52;c;"),
        "the recording holds the sequence: {cast}"
    );
    assert!(
        !played.contains("\u{1b}]"),
        "no OSC sequence reaches the terminal: {played:?}"
    );
    let out = w
        .reviewer
        .cli(&["audit", "replay", &exec_session, "--speed", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    let played = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(played.contains("exec-7313"), "{played}");
    let out = w
        .reviewer
        .cli(&["audit", "replay", &exec_session, "--channel", "9"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit show"), "{}", text(&out));

    // audit sessions: the same as sessions list.
    let out = w.reviewer.cli(&["audit", "sessions", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains(&pty_session) && listed.contains(&exec_session),
        "{listed}"
    );
    let out = w.reviewer.cli(&["audit", "sessions", "--live"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&pty_session));
    // audit terminate: the same answer as sessions terminate.
    let a = w.reviewer.cli(&[
        "audit",
        "terminate",
        &pty_session,
        "--reason",
        "r",
        "--json",
    ]);
    let b = w.reviewer.cli(&[
        "sessions",
        "terminate",
        &pty_session,
        "--reason",
        "r",
        "--json",
    ]);
    assert_eq!(
        a.status.code(),
        b.status.code(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(a.stderr, b.stderr, "{}\n{}", text(&a), text(&b));
}
