//! Property tests of hostile input at the HTTP API, through the router with a real store
//! (SQLite in a temporary directory, or PostgreSQL with `SALLYPORT_TEST_STORE=postgres`), as the operator, a reviewer, a customer's approver, a
//! ticket system, an edge and nobody:
//!
//! - every JSON body the API reads, generated from its fields (well-typed values, hostile
//!   ones, missing and unknown fields, any JSON, bytes that are not JSON): never a server
//!   error or a dropped connection, and every refusal in the API's error shape;
//! - audit batches an edge ships, valid ones broken in every way the ingest checks (contents
//!   changed, chain broken, sequence gaps, another source, kinds and subjects the edge may not
//!   write, missing or wrong signatures, forks, malformed records): each refused with a 4xx in
//!   the error shape, and the stored chain, its signatures and its pinned key unchanged; an
//!   intact batch among them is stored, so the refusals are the breakage's.
use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use russh::keys::PrivateKey;
use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::state::Broker;

/// A broker serving the router on loopback, seeded with a customer, a cluster and a token of
/// each role.
struct World {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    url: String,
    http: reqwest::Client,
    /// (who, token); `None`: no credentials.
    callers: Vec<(&'static str, Option<String>)>,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        // reqwest's TLS needs a provider even for plain HTTP; the other test may have set it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let operator = crate::auth::new_api_token();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(
            d.join("directory.toml"),
            format!(
                "[[engineer]]\nuid = \"alice\"\npassword_argon2 = \"{}\"\ngroups = [\"support-l2\"]\n",
                crate::directory::hash_argon2("alice's password").unwrap()
            ),
        )
        .unwrap();
        // SQLite, or a new PostgreSQL database when the tests run on PostgreSQL.
        let store = rt.block_on(crate::store::tests::empty_store(d));
        eprintln!("store: {}", store.split("://").next().unwrap_or("?"));
        std::fs::write(
            d.join("broker.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndatabase = \"{store}\"\n\
                 directory = \"{}\"\noperator_token_sha256 = \"{}\"\n",
                d.join("data").display(),
                d.join("directory.toml").display(),
                crate::auth::token_hash(&operator)
            ),
        )
        .unwrap();
        let cfg = crate::BrokerConfig::load(&d.join("broker.toml")).unwrap();
        let (broker, url) = rt.block_on(async {
            let broker = Broker::open(cfg).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app =
                super::router(broker.clone()).into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (broker, url)
        });
        let mut w = World {
            rt,
            broker,
            url,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            callers: vec![("the operator", Some(operator.clone())), ("nobody", None)],
            _dir: dir,
        };
        let op = Some(operator.as_str());
        for (path, body) in [
            ("/v1/customers", json!({"id": "acme", "name": "ACME"})),
            (
                "/v1/clusters",
                json!({"id": "acme-prod", "customer": "acme"}),
            ),
        ] {
            let (status, text) = w.call("POST", path, op, Some(body.to_string().into_bytes()));
            assert_eq!(status, 201, "{path}: {text}");
        }
        for (who, name, role, customer) in [
            ("a reviewer", "rev", "reviewer", None),
            ("acme's approver", "appr", "approver", Some("acme")),
            ("acme's ticket system", "tix", "ticket_system", Some("acme")),
            ("the edge e1", "e1", "edge", None),
        ] {
            let body = json!({"name": name, "role": role, "customer": customer});
            let (status, text) = w.call(
                "POST",
                "/v1/tokens",
                op,
                Some(body.to_string().into_bytes()),
            );
            assert_eq!(status, 201, "{text}");
            let token = serde_json::from_str::<Value>(&text).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string();
            w.callers.push((who, Some(token)));
        }
        w
    }

    fn token(&self, who: &str) -> Option<&str> {
        self.callers
            .iter()
            .find(|(w, _)| *w == who)
            .and_then(|(_, t)| t.as_deref())
    }

    /// One request; the status and the body. A dropped connection (a handler that panicked)
    /// is a panic here.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        self.rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = self.http.request(method, format!("{}{path}", self.url));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    }
}

/// A failure if `status` is a server error, or a refusal not in the API's error shape.
fn answered_clearly(path: &str, status: u16, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{path}: {status} {text}");
    if status >= 400 {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| TestCaseError::fail(format!("{path}: {status} {text:?}: {e}")))?;
        prop_assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path}: {status} {text}"
        );
    }
    Ok(())
}

/// The configuration for a test run by hand with [`TestRunner`]: failures persist next to
/// this file like those of `proptest!`.
fn config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        source_file: Some(file!()),
        ..sallyport_audit::proptest_config(cases)
    }
}

/// What a field holds, to generate values that pass deserialization often enough for the
/// handlers to run.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Name,
    Text,
    Num,
    /// A TCP port (`u16`), sometimes one past.
    Port,
    Bool,
    Names,
    Key,
    Url,
    Ip,
}

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "acme", "acme-prod", "alice", "node1", "ubuntu", "support-l2", "SUP-1", "e1",
            "gw1", "reviewer", "approver", "ticket_system", "edge", "operator", "engineer",
            "open", "closed", "slack", "json", "session_started", "certificate_issued",
            "serial", "grant", "approval", "ticket", "12345",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9._-]{1,12}",
        1 => "\\PC{0,20}",
        1 => "[\\x00-\\x1f\\x7f/%.;:'\" -]{0,6}",
        1 => Just("x".repeat(300)),
    ]
    .boxed()
}

/// Numbers as the API's `u64` and `u16` fields take them, small, past now, or at the edges
/// of what a database column holds.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(Value::from),
        1 => (1_000_000_000u64..5_000_000_000).prop_map(Value::from),
        1 => Just(Value::from(u64::MAX)),
        1 => Just(Value::from(i64::MAX as u64 + 1)),
        1 => Just(Value::from(65_536)),
    ]
    .boxed()
}

/// Numbers no field takes.
fn odd_number() -> BoxedStrategy<Value> {
    prop_oneof![Just(Value::from(-1)), Just(json!(1.5)), Just(json!(1e300))].boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        odd_number(),
        name().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A value of the field's type, or any JSON.
fn typed(kind: Kind) -> BoxedStrategy<Value> {
    prop_oneof![6 => well_typed(kind), 1 => any_json()].boxed()
}

fn well_typed(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Name => name().prop_map(Value::String).boxed(),
        // Free text, control characters (NUL too) included.
        Kind::Text => prop_oneof!["\\PC{0,40}", "[\\x00-\\x1f\\x7f a-z]{0,8}"]
            .prop_map(Value::String)
            .boxed(),
        Kind::Num => number(),
        Kind::Port => (0u64..=65_536).prop_map(Value::from).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Names => proptest::collection::vec(name(), 0..4)
            .prop_map(|v| json!(v))
            .boxed(),
        Kind::Key => prop_oneof![
            Just(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"
                    .to_string()
            ),
            Just("ssh-ed25519 AAAA".to_string()),
            name(),
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Url => prop_oneof![
            Just("https://hooks.example.com/x".to_string()),
            Just("http://127.0.0.1:9/".to_string()),
            Just("file:///etc/passwd".to_string()),
            name(),
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Ip => prop_oneof![
            Just("10.0.0.1".to_string()),
            Just("::1".to_string()),
            Just("10.0.0.0/8".to_string()),
            name(),
        ]
        .prop_map(Value::String)
        .boxed(),
    }
}

/// A JSON body for `fields`: every field present and of its type (values still hostile), so
/// that the handlers run; or each field present or not, typed or not, maybe an unknown one;
/// or any JSON; or bytes that are not JSON.
fn body(fields: &'static [(&'static str, Kind)]) -> BoxedStrategy<Vec<u8>> {
    let to_bytes = |fields: Vec<(&str, Option<Value>)>, extra: Option<(String, Value)>| {
        let mut m = serde_json::Map::new();
        for (f, v) in fields {
            if let Some(v) = v {
                m.insert(f.to_string(), v);
            }
        }
        if let Some((k, v)) = extra {
            m.insert(k, v);
        }
        Value::Object(m).to_string().into_bytes()
    };
    let well_formed = fields
        .iter()
        .map(|&(f, kind)| well_typed(kind).prop_map(move |v| (f, Some(v))))
        .collect::<Vec<_>>()
        .prop_map(move |fields| to_bytes(fields, None));
    let mixed = fields
        .iter()
        .map(|&(f, kind)| proptest::option::weighted(0.85, typed(kind)).prop_map(move |v| (f, v)))
        .collect::<Vec<_>>();
    let mixed = (
        mixed,
        proptest::option::weighted(0.15, ("[a-z_]{1,8}", any_json())),
    )
        .prop_map(move |(fields, extra)| to_bytes(fields, extra));
    prop_oneof![
        5 => well_formed,
        4 => mixed,
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

use Kind::{Bool, Ip, Key, Name, Names, Num, Port, Text, Url};

/// The fields of an approval, created or edited.
const APPROVAL: &[(&str, Kind)] = &[
    ("cluster", Name),
    ("group", Name),
    ("logins", Names),
    ("max_session_secs", Num),
    ("valid_until", Num),
    ("valid_from", Num),
    ("just_in_time", Bool),
    ("per_session_mfa", Bool),
    ("observer_required", Bool),
    ("port_forwarding", Bool),
    ("source_networks", Names),
    ("approvers_required", Num),
];

/// Every route that reads a JSON body: method, path (with existing and made-up names), fields.
#[allow(clippy::type_complexity)]
const ENDPOINTS: &[(&str, &str, &[(&str, Kind)])] = &[
    ("POST", "/v1/customers", &[("id", Name), ("name", Text)]),
    ("POST", "/v1/clusters", &[("id", Name), ("customer", Name)]),
    (
        "POST",
        "/v1/clusters/acme-prod/nodes",
        &[
            ("name", Name),
            ("address", Ip),
            ("port", Port),
            ("host_keys", Names),
            ("trust_on_first_use", Bool),
        ],
    ),
    (
        "PATCH",
        "/v1/clusters/acme-prod/nodes/node1",
        &[
            ("address", Ip),
            ("port", Port),
            ("host_keys", Names),
            ("trust_on_first_use", Bool),
        ],
    ),
    ("POST", "/v1/engineers", &[("uid", Name), ("replace", Bool)]),
    ("POST", "/v1/engineers/bob/disable", &[("reason", Text)]),
    ("POST", "/v1/engineers/bob/enable", &[("reason", Text)]),
    ("POST", "/v1/accounts/nobody/disable", &[("reason", Text)]),
    (
        "POST",
        "/v1/accounts",
        &[
            ("username", Name),
            ("role", Name),
            ("customer", Name),
            ("password", Text),
        ],
    ),
    (
        "POST",
        "/v1/tokens",
        &[
            ("name", Name),
            ("role", Name),
            ("customer", Name),
            ("all_customers", Bool),
        ],
    ),
    ("POST", "/v1/approvals", APPROVAL),
    ("PUT", "/v1/approvals/ap-none", APPROVAL),
    ("PUT", "/v1/customers/acme/policies/p1", &[("body", Text)]),
    (
        "POST",
        "/v1/access-requests/rq-none/decision",
        &[
            ("approve", Bool),
            ("reason", Text),
            ("logins", Names),
            ("ttl_secs", Num),
        ],
    ),
    (
        "POST",
        "/v1/certificates",
        &[
            ("public_key", Key),
            ("ticket", Name),
            ("cluster", Name),
            ("logins", Names),
            ("ttl_secs", Num),
        ],
    ),
    (
        "POST",
        "/v1/revocations",
        &[("scope", Name), ("value", Name), ("reason", Text)],
    ),
    (
        "POST",
        "/v1/login",
        &[("user", Name), ("password", Text), ("totp", Name)],
    ),
    (
        "POST",
        "/v1/accounts/login",
        &[("user", Name), ("password", Text), ("totp", Name)],
    ),
    (
        "POST",
        "/v1/mfa/verify",
        &[
            ("engineer", Name),
            ("code", Name),
            ("grant", Name),
            ("ticket", Name),
            ("cluster", Name),
            ("source_ip", Ip),
        ],
    ),
    ("POST", "/v1/sessions/s-none/terminate", &[("reason", Text)]),
    (
        "POST",
        "/v1/gateway/live",
        &[
            ("session", Name),
            ("recording", Name),
            ("header", Text),
            ("at", Num),
            ("data", Text),
        ],
    ),
    (
        "PUT",
        "/v1/tickets/SUP-1",
        &[
            ("customer", Name),
            ("cluster", Name),
            ("assignee", Name),
            ("status", Name),
            ("title", Text),
        ],
    ),
    (
        "POST",
        "/v1/webhooks",
        &[
            ("url", Url),
            ("format", Name),
            ("events", Names),
            ("secret", Text),
            ("customer", Name),
        ],
    ),
    (
        "POST",
        "/v1/gateways/enroll",
        &[
            ("join_token", Name),
            ("node_ca_public_key", Key),
            ("host_ca_public_key", Key),
            ("audit_public_key", Key),
        ],
    ),
    (
        "POST",
        "/v1/edge/self",
        &[("host_key", Key), ("address", Name)],
    ),
    ("POST", "/v1/clusters/acme-prod/gateways", &[("name", Name)]),
    (
        "POST",
        "/v1/audit/records",
        &[
            ("records", Names),
            ("head", Num),
            ("signature", Text),
            ("public_key", Key),
        ],
    ),
];

/// An endpoint, a caller (the operator, who may do most, half the time) and a body for it.
fn request() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    let who = prop_oneof![1 => Just(0usize), 1 => 0usize..6];
    (0..ENDPOINTS.len(), who)
        .prop_flat_map(|(e, who)| body(ENDPOINTS[e].2).prop_map(move |b| (e, who, b)))
}

#[test]
fn json_bodies_never_give_a_server_error() {
    let w = World::start();
    let mut runner = TestRunner::new(config(256));
    let result = runner.run(&request(), |(e, who, body)| {
        let (method, path, _) = ENDPOINTS[e];
        let (_, token) = &w.callers[who % w.callers.len()];
        let (status, text) = w.call(method, path, token.as_deref(), Some(body));
        answered_clearly(path, status, &text)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving.
    assert_eq!(w.call("GET", "/v1/health", None, None).0, 200);
}

/// An edge's audit chain as the test builds it: its source and the key that signs its heads.
struct Chain {
    source: String,
    key: PrivateKey,
}

impl Chain {
    fn record(&self, prev: Option<&AuditRecord>, n: u64) -> AuditRecord {
        AuditRecord::next(
            &self.source,
            prev.map(|p| (p.seq, p.hash.as_str())),
            1_700_000_000_000 + n,
            "edge_refused",
            json!({"edge": "e1", "code": "expired", "engineer": "alice", "n": n}),
        )
    }

    /// `n` records continuing `after` (the stored ones).
    fn next(&self, after: &[AuditRecord], n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().or(after.last());
            out.push(self.record(prev, (after.len() + i) as u64));
        }
        out
    }

    fn sign(&self, key: &PrivateKey, last: &AuditRecord) -> String {
        sallyport_ca::chainsig::sign_head(key, &self.source, last.seq, &last.hash).unwrap()
    }

    fn batch(&self, records: &[AuditRecord], signature: Option<String>, key_line: bool) -> Value {
        let mut b = json!({"records": records, "signature": signature});
        if key_line {
            b["public_key"] = json!(self.key.public_key().to_openssh().unwrap());
        }
        b
    }
}

/// Recompute hashes (and chain them) from record `from` on.
fn rechain(records: &mut [AuditRecord], from: usize) {
    for i in from..records.len() {
        if i > 0 {
            records[i].prev_hash = records[i - 1].hash.clone();
        }
        records[i].hash = records[i].compute_hash();
    }
}

/// How a valid batch is broken.
#[derive(Debug, Clone)]
enum Breakage {
    /// Sent as is: must be stored.
    Intact,
    DataChanged(prop::sample::Index, Value),
    DataChangedRehashed(prop::sample::Index, Value),
    PrevHashChanged(prop::sample::Index),
    SeqGap(prop::sample::Index),
    SeqZero,
    StartsPastTheHead(u64),
    AnotherSource(String),
    ForeignKind(String),
    BadSubject(&'static str, String),
    NoEdgeField,
    Unsigned,
    SignedByAnotherKey {
        offer_it: bool,
    },
    SignatureOfAnotherHead,
    SignatureGarbage(String),
    PublicKeyGarbage(String),
    /// A stored record sent again with other contents, properly chained and signed.
    Fork(prop::sample::Index),
    /// The batch as JSON with a field removed, retyped or added.
    Malformed(u8, Value),
    Anything(Value),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        2 => Just(Breakage::Intact),
        1 => (idx(), any_json()).prop_map(|(i, v)| Breakage::DataChanged(i, v)),
        1 => (idx(), any_json()).prop_map(|(i, v)| Breakage::DataChangedRehashed(i, v)),
        1 => idx().prop_map(Breakage::PrevHashChanged),
        1 => idx().prop_map(Breakage::SeqGap),
        1 => Just(Breakage::SeqZero),
        1 => (1u64..1000).prop_map(Breakage::StartsPastTheHead),
        1 => prop_oneof![
            Just("edge:e2".to_string()),
            Just("broker".to_string()),
            Just("gateway:gw1".to_string()),
            "\\PC{0,12}",
        ]
        .prop_map(Breakage::AnotherSource),
        1 => prop_oneof![
            Just("command".to_string()),
            Just("certificate_issued".to_string()),
            Just("session_started".to_string()),
            "\\PC{0,16}",
        ]
        .prop_map(Breakage::ForeignKind),
        1 => (
            prop::sample::select(vec!["engineer", "ticket", "cluster", "node", "session"]),
            prop_oneof![Just("al\u{1b}[2Jice".to_string()), Just(String::new()), "[^a-zA-Z0-9]{1,4}", Just("x".repeat(65))],
        )
            .prop_map(|(f, v)| Breakage::BadSubject(f, v)),
        1 => Just(Breakage::NoEdgeField),
        1 => Just(Breakage::Unsigned),
        1 => any::<bool>().prop_map(|offer_it| Breakage::SignedByAnotherKey { offer_it }),
        1 => Just(Breakage::SignatureOfAnotherHead),
        1 => prop_oneof!["\\PC{0,40}", Just("x".repeat(5000))].prop_map(Breakage::SignatureGarbage),
        1 => name().prop_map(Breakage::PublicKeyGarbage),
        1 => idx().prop_map(Breakage::Fork),
        1 => (0u8..6, any_json()).prop_map(|(how, v)| Breakage::Malformed(how, v)),
        1 => any_json().prop_map(Breakage::Anything),
    ]
}

/// The body of a batch broken as `how` says, built on the chain stored so far.
fn broken_batch(chain: &Chain, stored: &[AuditRecord], n: usize, how: &Breakage) -> Value {
    let mut records = chain.next(stored, n);
    let last = |r: &[AuditRecord]| r.last().cloned().unwrap();
    let signed = |records: &[AuditRecord]| {
        chain.batch(records, Some(chain.sign(&chain.key, &last(records))), false)
    };
    let resigned = |records: &mut Vec<AuditRecord>, from: usize| {
        rechain(records, from);
        signed(records)
    };
    match how {
        Breakage::Intact => signed(&records),
        Breakage::DataChanged(i, v) => {
            let batch = signed(&records);
            let i = i.index(n);
            let mut batch = batch;
            batch["records"][i]["data"]["n"] = v.clone();
            if batch["records"][i]["data"] == json!(records[i].data) {
                batch["records"][i]["data"]["n"] = json!("changed");
            }
            batch
        }
        Breakage::DataChangedRehashed(i, v) => {
            // Hashes and the chain recomputed, the old signature kept.
            let sig = chain.sign(&chain.key, &last(&records));
            let i = i.index(n);
            records[i].data["n"] = json!([v, "changed"]);
            rechain(&mut records, i);
            chain.batch(&records, Some(sig), false)
        }
        Breakage::PrevHashChanged(i) => {
            let i = i.index(n);
            records[i].prev_hash = "0".repeat(63) + "1";
            records[i].hash = records[i].compute_hash();
            rechain(&mut records, i + 1);
            signed(&records)
        }
        Breakage::SeqGap(i) => {
            let i = i.index(n);
            for r in &mut records[i..] {
                r.seq += 1;
            }
            if i == 0 {
                records[0].hash = records[0].compute_hash();
                rechain(&mut records, 1);
            } else {
                rechain(&mut records, i);
            }
            signed(&records)
        }
        Breakage::SeqZero => {
            records[0].seq = 0;
            resigned(&mut records, 0)
        }
        Breakage::StartsPastTheHead(k) => {
            for r in &mut records {
                r.seq += k;
            }
            resigned(&mut records, 0)
        }
        Breakage::AnotherSource(s) => {
            for r in &mut records {
                r.source = s.clone();
            }
            resigned(&mut records, 0)
        }
        Breakage::ForeignKind(kind) => {
            records[n - 1].kind = kind.clone();
            resigned(&mut records, n - 1)
        }
        Breakage::BadSubject(field, value) => {
            records[0].data[*field] = json!(value);
            resigned(&mut records, 0)
        }
        Breakage::NoEdgeField => {
            records[0].data.as_object_mut().unwrap().remove("edge");
            resigned(&mut records, 0)
        }
        Breakage::Unsigned => chain.batch(&records, None, false),
        Breakage::SignedByAnotherKey { offer_it } => {
            let other = sallyport_ca::keys::generate_ed25519("").unwrap();
            let mut b = chain.batch(&records, Some(chain.sign(&other, &last(&records))), false);
            if *offer_it {
                b["public_key"] = json!(other.public_key().to_openssh().unwrap());
            }
            b
        }
        Breakage::SignatureOfAnotherHead => {
            let mut other = last(&records);
            other.seq += 1;
            chain.batch(&records, Some(chain.sign(&chain.key, &other)), false)
        }
        Breakage::SignatureGarbage(s) => chain.batch(&records, Some(s.clone()), false),
        Breakage::PublicKeyGarbage(s) => {
            let mut b = signed(&records);
            b["public_key"] = json!(s);
            b
        }
        Breakage::Fork(i) => {
            let i = i.index(stored.len());
            let mut again: Vec<AuditRecord> = stored[..=i].to_vec();
            again[i].data["n"] = json!("forked");
            again[i].hash = again[i].compute_hash();
            let again = again[i..].to_vec();
            signed(&again)
        }
        Breakage::Malformed(how, v) => {
            let mut b = signed(&records);
            let r = &mut b["records"][0];
            match how {
                0 => {
                    r.as_object_mut().unwrap().remove("hash");
                }
                1 => r["seq"] = json!(-1),
                2 => r["seq"] = json!("1"),
                3 => r["time"] = json!("yesterday"),
                4 if *v != json!([]) => b["records"] = v.clone(),
                _ => b["unknown"] = v.clone(),
            }
            if b == signed(&records) {
                b["records"] = json!("not a list");
            }
            b
        }
        Breakage::Anything(v) => v.clone(),
    }
}

/// What the broker holds of a chain: its records, signed heads (seq, hash, signature) and
/// pinned key (line, fingerprint).
type Held = (
    Vec<AuditRecord>,
    Vec<(u64, String, String)>,
    Option<(String, String)>,
);

/// What the broker holds of `source`'s chain. (Its reported head is not part of it: it is
/// reported with every batch, a refused one too, so that a stuck chain shows as INCOMPLETE.)
fn held(w: &World, source: &str) -> Held {
    w.rt.block_on(async {
        let s = &w.broker.store;
        let records = s.audit_chain(source, 0, 100_000).await.unwrap();
        let sigs = s
            .audit_signatures(source, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.seq, h.hash, h.signature))
            .collect();
        (records, sigs, s.audit_key(source).await.unwrap())
    })
}

#[test]
fn broken_audit_batches_are_refused_and_change_nothing() {
    let w = World::start();
    let edge = w.token("the edge e1").map(str::to_string);
    let chain = Chain {
        source: "edge:e1".into(),
        key: sallyport_ca::keys::generate_ed25519("").unwrap(),
    };
    // The first batch pins the key.
    let first = chain.next(&[], 3);
    let body = chain.batch(&first, Some(chain.sign(&chain.key, &first[2])), true);
    let (status, text) = w.call(
        "POST",
        "/v1/audit/records",
        edge.as_deref(),
        Some(body.to_string().into_bytes()),
    );
    assert_eq!(status, 200, "{text}");

    let mut runner = TestRunner::new(config(128));
    let result = runner.run(&(breakage(), 1usize..4), |(how, n)| {
        let before = held(&w, "edge:e1");
        let stored = before.0.clone();
        let body = broken_batch(&chain, &stored, n, &how);
        let (status, text) = w.call(
            "POST",
            "/v1/audit/records",
            edge.as_deref(),
            Some(body.to_string().into_bytes()),
        );
        answered_clearly("/v1/audit/records", status, &text)?;
        let after = held(&w, "edge:e1");
        if let Breakage::Intact = how {
            prop_assert_eq!(status, 200, "{}", text);
            prop_assert_eq!(after.0.len(), stored.len() + n);
            return Ok(());
        }
        // Only a batch without records (a head report) may be answered 200.
        let no_records = body.get("records").is_none_or(|r| r == &json!([]));
        prop_assert!(
            (400..500).contains(&status) || (status == 200 && no_records),
            "{:?} was accepted: {} {}",
            how,
            status,
            text
        );
        prop_assert!(after == before, "{:?} changed the stored chain", how);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Free text with a NUL character (which PostgreSQL's `text` cannot hold): stored or refused,
/// never a server error, on either store.
#[test]
fn free_text_with_a_nul_is_not_a_server_error() {
    let w = World::start();
    let op = w.token("the operator");
    for (method, path, body) in [
        (
            "POST",
            "/v1/customers",
            json!({"id": "nul", "name": "a\u{0}b"}),
        ),
        (
            "PUT",
            "/v1/tickets/SUP-NUL",
            json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice",
                   "status": "open", "title": "a\u{0}b"}),
        ),
        (
            "POST",
            "/v1/engineers/alice/disable",
            json!({"reason": "a\u{0}b"}),
        ),
    ] {
        let (status, text) = w.call(method, path, op, Some(body.to_string().into_bytes()));
        eprintln!("{path}: {status} {text}");
        assert!(status < 500, "{path}: {status} {text}");
    }
}
