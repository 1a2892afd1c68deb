//! The OpenAPI document (`broker/openapi.json`) checked against the API's own types
//! (`sallyport-api`): for each typed body the document describes, the fields it names are the
//! type's fields, each of the type's JSON kind (string, integer, boolean, array, object, null
//! where the type may be absent), and a field is required by the document exactly when the type
//! cannot be read without it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use sallyport_api::approvals::PolicyDeleted;
use sallyport_api::audit::{
    AuditChain, AuditEntry, AuditEvents, AuditHead, AuditKey, AuditKeys, AuditSignatures,
    AuditSources, BrokerAuditKey, HeadSignature, StreamEvent,
};
use sallyport_api::certificates::{
    CaKeys, IssueRequest, Issued, Revocations, RevokeRequest, RevokeScope, Revoked,
};
use sallyport_api::gateways::{
    AuditBatch, BatchStored, EnrollRequest, Enrolled, Gateway, GatewayCreated, GatewayNode,
    GatewaySelf, HostCa, NamedPolicy, NewGateway, RecordingStored,
};
use sallyport_api::health::Health;
use sallyport_api::identity::{EdgeRegistered, EdgeSelf};
use sallyport_api::login::{LoginRequest, LoginResponse, MfaVerified, MfaVerifyRequest};
use sallyport_api::report::{AccessReport, ReportRow};
use sallyport_api::requests::{AccessRequest, Decision, IssuePending, RequestStatus};
use sallyport_api::sessions::{
    LiveAck, LiveChannel, LiveChunk, LiveView, SessionSummary, Sessions, TerminateRequest,
    Termination, TerminationRequested, Terminations, Watches,
};
use sallyport_api::webhooks::{
    Deliveries, Delivery, Webhook, WebhookCreated, WebhookDeleted, WebhookInput, Webhooks,
};
use sallyport_api::{ErrorBody, ErrorDetail, Reason};

fn document() -> Value {
    serde_json::from_str(super::OPENAPI).expect("broker/openapi.json is JSON")
}

/// Follow a `$ref` to its schema.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let path = r.strip_prefix("#/").expect("a local $ref");
            let target = path.split('/').fold(doc, |v, part| &v[part]);
            resolve(doc, target)
        }
        None => schema,
    }
}

/// The schema of the JSON request body of `method path`.
fn request_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let s = &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    assert!(
        s.is_object(),
        "{method} {path}: the document has no request body schema"
    );
    resolve(doc, s)
}

/// The schema of the JSON answer `status` to `method path`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let r = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    let s = &r["content"]["application/json"]["schema"];
    assert!(
        s.is_object(),
        "{method} {path} {status}: the document has no schema"
    );
    resolve(doc, s)
}

/// What is wrong with `value` under `schema` (names and kinds; formats and bounds are the
/// broker's checks, not the type's).
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let nullable = schema["nullable"] == json!(true);
    let kind = schema["type"].as_str();
    match (value, kind) {
        (Value::Null, _) if nullable => {}
        (Value::Null, Some(_)) => out.push(format!(
            "{at}: the type may write null; the document does not say nullable"
        )),
        (Value::String(_), Some("string")) | (Value::Bool(_), Some("boolean")) => {}
        (Value::Number(n), Some("integer")) if n.is_u64() || n.is_i64() => {}
        (Value::Number(_), Some("number")) => {}
        (Value::Array(items), Some("array")) => {
            for (i, item) in items.iter().enumerate() {
                mismatches(doc, &schema["items"], item, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Object(fields), Some("object")) => {
            let Some(props) = schema["properties"].as_object() else {
                return; // a free-form object (an audit record's data)
            };
            // An object open to more fields (an audit event's own fields) names only some.
            let open = schema["additionalProperties"] == json!(true);
            for (name, v) in fields {
                match props.get(name) {
                    Some(p) => mismatches(doc, p, v, &format!("{at}.{name}"), out),
                    None if open => {}
                    None => out.push(format!(
                        "{at}.{name}: a field of the type the document does not name"
                    )),
                }
            }
            for name in props.keys() {
                if !fields.contains_key(name) {
                    out.push(format!(
                        "{at}.{name}: named by the document, not a field of the type"
                    ));
                }
            }
        }
        (v, k) => out.push(format!(
            "{at}: the type writes {v}, the document says {k:?}"
        )),
    }
}

/// Check a type against the schema of its body: `full` is a value with every field set (so it
/// writes every field it has).
fn check<T: Serialize + DeserializeOwned>(
    doc: &Value,
    what: &str,
    schema: &Value,
    full: &T,
) -> Vec<String> {
    let mut out = Vec::new();
    let value = serde_json::to_value(full).expect("serializes");
    mismatches(doc, schema, &value, what, &mut out);
    // Required: the type cannot be read without the field.
    let documented: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Value::Object(fields) = &value {
        for name in fields.keys() {
            let mut without = fields.clone();
            without.remove(name);
            let type_requires = serde_json::from_value::<T>(Value::Object(without)).is_err();
            let doc_requires = documented.contains(&name.as_str());
            if type_requires != doc_requires {
                out.push(format!(
                    "{what}.{name}: the type {} it, the document {} it",
                    if type_requires {
                        "requires"
                    } else {
                        "does not require"
                    },
                    if doc_requires {
                        "requires"
                    } else {
                        "does not require"
                    },
                ));
            }
        }
    }
    out
}

/// The schema of the items of the list `field` of `schema`.
fn items<'a>(doc: &'a Value, schema: &'a Value, field: &str) -> &'a Value {
    let list = resolve(doc, &schema["properties"][field]);
    resolve(doc, &list["items"])
}

fn strings(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

#[test]
fn the_documented_bodies_are_the_api_types() {
    let doc = document();
    let record = crate::audit::AuditRecord {
        source: "edge:e".into(),
        seq: 1,
        time: 1,
        kind: "edge_session".into(),
        data: json!({"cluster": "c"}),
        prev_hash: "0".repeat(64),
        hash: "1".repeat(64),
    };
    let req = |p, m| request_schema(&doc, p, m);
    let login = || LoginRequest {
        user: "alice".into(),
        password: "pw".to_string().into(),
        totp: "123456".into(),
    };
    let mut problems = Vec::new();
    problems.extend(check(
        &doc,
        "POST /v1/login",
        req("/v1/login", "post"),
        &login(),
    ));
    problems.extend(check(
        &doc,
        "POST /v1/accounts/login",
        req("/v1/accounts/login", "post"),
        &login(),
    ));
    problems.extend(check(
        &doc,
        "POST /v1/audit/unseal",
        req("/v1/audit/unseal", "post"),
        &sallyport_api::audit::UnsealRequest {
            source: "gateway:g".into(),
            seq: 4,
            reason: "SUP-1: what ran at 10:02".into(),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/mfa/verify",
        req("/v1/mfa/verify", "post"),
        &MfaVerifyRequest {
            engineer: "alice".into(),
            code: "123456".to_string().into(),
            grant: "g".into(),
            ticket: Some("SUP-1".into()),
            cluster: Some("c".into()),
            source_ip: Some([127, 0, 0, 1].into()),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/certificates",
        req("/v1/certificates", "post"),
        &IssueRequest {
            public_key: "ssh-ed25519 A".into(),
            ticket: "SUP-1".into(),
            cluster: Some("c".into()),
            logins: Some(strings("ubuntu")),
            ttl_secs: Some(60),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/edge/self",
        req("/v1/edge/self", "post"),
        &EdgeSelf {
            host_key: "ssh-ed25519 A".into(),
            address: Some("edge:2222".into()),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/gateways/enroll",
        req("/v1/gateways/enroll", "post"),
        &EnrollRequest {
            join_token: "spj_x".into(),
            node_ca_public_key: "a".into(),
            host_ca_public_key: "b".into(),
            audit_public_key: "c".into(),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/clusters/{cluster}/gateways",
        req("/v1/clusters/{cluster}/gateways", "post"),
        &NewGateway { name: "gw1".into() },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/audit/records",
        req("/v1/audit/records", "post"),
        &AuditBatch {
            records: vec![record],
            head: Some(1),
            signature: Some("sig".into()),
            public_key: Some("ssh-ed25519 A".into()),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/access-requests/{request}/decision",
        req("/v1/access-requests/{request}/decision", "post"),
        &Decision {
            approve: true,
            reason: Some("ok".into()),
            logins: Some(strings("ubuntu")),
            ttl_secs: Some(60),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/sessions/{session}/terminate",
        req("/v1/sessions/{session}/terminate", "post"),
        &TerminateRequest { reason: "r".into() },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/gateway/live",
        req("/v1/gateway/live", "post"),
        &LiveChunk {
            session: "s".into(),
            recording: "s-c0".into(),
            header: "{}".into(),
            at: 1,
            data: "[]\n".into(),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/webhooks",
        req("/v1/webhooks", "post"),
        &WebhookInput {
            url: "https://x/".into(),
            format: Some("json".into()),
            events: strings("revoked"),
            secret: Some("s".repeat(24)),
            customer: Some("acme".into()),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/revocations",
        req("/v1/revocations", "post"),
        &RevokeRequest {
            scope: RevokeScope::Ticket,
            value: "SUP-1".into(),
            reason: "r".into(),
        },
    ));
    let gateway = Gateway {
        id: "gw-1".into(),
        cluster: "c".into(),
        name: "gw1".into(),
        created_at: 1,
        enrolled_at: Some(2),
        node_ca_public_key: Some("a".into()),
        host_ca_public_key: Some("b".into()),
        revoked_at: Some(3),
    };
    let list = response_schema(&doc, "/v1/clusters/{cluster}/gateways", "get", "200");
    let item = resolve(&doc, &list["items"]);
    problems.extend(check(&doc, "Gateway", item, &gateway));
    problems.extend(check(
        &doc,
        "GET /v1/clusters/{cluster}/gateways",
        list,
        &vec![gateway],
    ));
    let error = ErrorBody {
        error: ErrorDetail {
            code: "denied".into(),
            message: "m".into(),
            reasons: Some(vec![Reason {
                code: "c".into(),
                message: "m".into(),
            }]),
        },
    };
    let errors = resolve(&doc, &doc["components"]["schemas"]["Error"]);
    problems.extend(check(&doc, "Error", errors, &error));
    assert!(
        problems.is_empty(),
        "broker/openapi.json and the API's types disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_documented_answers_are_the_api_types() {
    let doc = document();
    let answer = |p, m, status| response_schema(&doc, p, m, status);
    let session = LoginResponse {
        token: "t".into(),
        expires_at: 1,
        user: "alice".into(),
        role: "engineer".into(),
        groups: strings("g"),
        customer: Some("acme".into()),
    };
    let mut problems = Vec::new();
    for path in ["/v1/login", "/v1/accounts/login"] {
        problems.extend(check(&doc, path, answer(path, "post", "200"), &session));
    }
    problems.extend(check(
        &doc,
        "POST /v1/mfa/verify 200",
        answer("/v1/mfa/verify", "post", "200"),
        &MfaVerified { ok: true },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/certificates 200",
        answer("/v1/certificates", "post", "200"),
        &Issued {
            certificate: "c".into(),
            serial: "1".into(),
            key_id: "k".into(),
            grant: "g".into(),
            engineer: "alice".into(),
            ticket: "SUP-1".into(),
            customer: "acme".into(),
            cluster: "c".into(),
            logins: strings("ubuntu"),
            valid_after: 1,
            valid_before: 2,
            permit_port_forwarding: false,
            per_session_mfa: true,
            edge: Some("edge:2222".into()),
            edges: vec!["edge:2222".into(), "edge-b:2222".into()],
            host_ca_public_keys: strings("ssh-ed25519 A"),
            edge_host_keys: strings("ssh-ed25519 B"),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/gateways/enroll 200",
        answer("/v1/gateways/enroll", "post", "200"),
        &Enrolled {
            gateway: "gw-1".into(),
            cluster: "c".into(),
            credential: "spg_x".into(),
            audit_key_fingerprint: "SHA256:x".into(),
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/audit/records 200",
        answer("/v1/audit/records", "post", "200"),
        &BatchStored {
            stored: 1,
            acknowledged_through: 1,
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/edge/self 200",
        answer("/v1/edge/self", "post", "200"),
        &EdgeRegistered {
            name: "edge-eu1".into(),
            host_key_fingerprint: "SHA256:x".into(),
            address: Some("edge:2222".into()),
            changed: true,
        },
    ));
    problems.extend(check(
        &doc,
        "POST /v1/clusters/{cluster}/gateways 201",
        answer("/v1/clusters/{cluster}/gateways", "post", "201"),
        &GatewayCreated {
            id: "gw-1".into(),
            name: "gw1".into(),
            cluster: "c".into(),
            join_token: "spj_x".into(),
            join_token_expires_at: 1,
        },
    ));
    problems.extend(more_answers(&doc));
    assert!(
        problems.is_empty(),
        "broker/openapi.json and the API's types disagree:\n{}",
        problems.join("\n")
    );
}

fn request() -> AccessRequest {
    AccessRequest {
        id: "rq-1".into(),
        engineer: "alice".into(),
        ticket: "SUP-1".into(),
        cluster: "c".into(),
        approval: "ap-1".into(),
        status: RequestStatus::Pending,
        created_at: 1,
        decided_by: Some("bob".into()),
        decided_at: Some(2),
        reason: Some("ok".into()),
        logins: strings("ubuntu"),
        ttl_secs: 60,
        approvers_required: 1,
        approved_by: strings("bob"),
    }
}

fn webhook() -> Webhook {
    Webhook {
        id: "wh-1".into(),
        customer: Some("acme".into()),
        url: "https://x/".into(),
        format: "json".into(),
        events: strings("*"),
        created_by: "operator:op".into(),
        created_at: 1,
        enabled: true,
    }
}

/// The answers of sessions, webhooks, the audit log, the report, revocations, the CA keys and
/// access requests.
fn more_answers(doc: &Value) -> Vec<String> {
    let answer = |p, m, status| response_schema(doc, p, m, status);
    let mut problems = Vec::new();
    let session = SessionSummary {
        session: "s".into(),
        engineer: "alice".into(),
        ticket: "SUP-1".into(),
        cluster: "c".into(),
        node: "n".into(),
        login: Some("ubuntu".into()),
        peer: Some("10.0.0.1:2".into()),
        serial: Some("42".into()),
        started_ms: 1,
        ended_ms: Some(2),
        live: false,
        commands: 3,
    };
    let sessions = answer("/v1/sessions", "get", "200");
    let item = items(doc, sessions, "sessions");
    problems.extend(check(doc, "SessionSummary", item, &session));
    let all = Sessions {
        sessions: vec![session],
    };
    problems.extend(check(doc, "GET /v1/sessions", sessions, &all));
    problems.extend(check(
        doc,
        "POST /v1/sessions/{session}/terminate 202",
        answer("/v1/sessions/{session}/terminate", "post", "202"),
        &TerminationRequested {
            session: "s".into(),
            cluster: "c".into(),
            requested_by: "reviewer:r".into(),
            reason: "r".into(),
        },
    ));
    let termination = Termination {
        session: "s".into(),
        by: "reviewer:r".into(),
        reason: "r".into(),
    };
    let terminations = answer("/v1/gateway/terminations", "get", "200");
    let item = items(doc, terminations, "terminations");
    problems.extend(check(doc, "Termination", item, &termination));
    problems.extend(check(
        doc,
        "GET /v1/gateway/terminations",
        terminations,
        &Terminations {
            terminations: vec![termination],
        },
    ));
    let channel = LiveChannel {
        recording: "s-c0".into(),
        pty: true,
        title: "t".into(),
        width: 80,
        height: 24,
        rows: strings("$"),
        stream: "x".into(),
        seconds: 1.5,
    };
    let live = answer("/v1/sessions/{session}/live", "get", "200");
    let item = items(doc, live, "channels");
    problems.extend(check(doc, "LiveChannel", item, &channel));
    problems.extend(check(
        doc,
        "GET /v1/sessions/{session}/live",
        live,
        &LiveView {
            session: "s".into(),
            cluster: "c".into(),
            live: true,
            channels: vec![channel],
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/gateway/watches",
        answer("/v1/gateway/watches", "get", "200"),
        &Watches {
            sessions: strings("s"),
            observed: strings("s"),
        },
    ));
    let ack = LiveAck {
        watched: true,
        next: Some(Some(9)),
    };
    for status in ["200", "409"] {
        let what = format!("POST /v1/gateway/live {status}");
        problems.extend(check(
            doc,
            &what,
            answer("/v1/gateway/live", "post", status),
            &ack,
        ));
    }
    let row = ReportRow {
        session: "s".into(),
        started: "2026-01-01T00:00:00Z".into(),
        ended: Some("2026-01-01T01:00:00Z".into()),
        engineer: "alice".into(),
        ticket: "SUP-1".into(),
        cluster: "c".into(),
        node: "n".into(),
        login: "ubuntu".into(),
        duration_secs: 3600,
        commands: strings("ls"),
        files: strings("/etc/hosts (1 bytes, sha256 x)"),
        refusals: 0,
    };
    let report = answer("/v1/report", "get", "200");
    problems.extend(check(
        doc,
        "ReportRow",
        items(doc, report, "sessions"),
        &row,
    ));
    problems.extend(check(
        doc,
        "GET /v1/report",
        report,
        &AccessReport {
            cluster: "all".into(),
            days: 30,
            since: "2026-01-01T00:00:00Z".into(),
            until: "2026-01-31T00:00:00Z".into(),
            sessions: vec![row],
        },
    ));
    let hooks = answer("/v1/webhooks", "get", "200");
    problems.extend(check(
        doc,
        "Webhook",
        items(doc, hooks, "webhooks"),
        &webhook(),
    ));
    problems.extend(check(
        doc,
        "GET /v1/webhooks",
        hooks,
        &Webhooks {
            webhooks: vec![webhook()],
        },
    ));
    problems.extend(check(
        doc,
        "POST /v1/webhooks 201",
        answer("/v1/webhooks", "post", "201"),
        &WebhookCreated {
            webhook: webhook(),
            secret: Some("s".repeat(24)),
        },
    ));
    problems.extend(check(
        doc,
        "DELETE /v1/webhooks/{webhook}",
        answer("/v1/webhooks/{webhook}", "delete", "200"),
        &WebhookDeleted {
            id: "wh-1".into(),
            deleted: true,
            cancelled_deliveries: 2,
        },
    ));
    let delivery = Delivery {
        id: "d-1".into(),
        webhook: "wh-1".into(),
        customer: Some("acme".into()),
        url: "https://x/".into(),
        event: "broker#1".into(),
        kind: "revoked".into(),
        status: "failed".into(),
        attempts: 3,
        next_at: Some(4),
        last_error: Some("refused".into()),
        last_status: Some(500),
        created_at: 1,
        delivered_at: Some(2),
    };
    for path in [
        "/v1/webhooks/deliveries",
        "/v1/webhooks/{webhook}/deliveries",
    ] {
        let list = answer(path, "get", "200");
        problems.extend(check(
            doc,
            "Delivery",
            items(doc, list, "deliveries"),
            &delivery,
        ));
        let all = Deliveries {
            deliveries: vec![delivery.clone()],
        };
        problems.extend(check(doc, path, list, &all));
    }
    let record = crate::audit::AuditRecord::next(
        "gateway:g",
        None,
        1,
        "command",
        json!({"engineer": "alice", "ticket": "SUP-1", "cluster": "c", "node": "n",
               "session": "s", "command": "ls", "exit": 0}),
    );
    let event = AuditEntry::of(&record, "1970-01-01T00:00:00.001Z".into());
    let events = answer("/v1/audit/events", "get", "200");
    let item = items(doc, events, "events");
    problems.extend(check(doc, "AuditEntry", item, &event));
    problems.extend(check(
        doc,
        "GET /v1/audit/events",
        events,
        &AuditEvents {
            events: vec![event.clone()],
            next: Some("1:broker:1".into()),
        },
    ));
    problems.extend(check(
        doc,
        "AuditStreamEvent",
        &doc["components"]["schemas"]["AuditStreamEvent"],
        &StreamEvent {
            cursor: "gateway:g:1".into(),
            event,
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/audit/key",
        answer("/v1/audit/key", "get", "200"),
        &BrokerAuditKey {
            source: "broker".into(),
            public_key: "ssh-ed25519 A".into(),
            fingerprint: "SHA256:x".into(),
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/health",
        answer("/v1/health", "get", "200"),
        &Health::ok(),
    ));
    let head = AuditHead {
        source: "gateway:g".into(),
        reported: 3,
        reported_at: 4,
    };
    let sources = answer("/v1/audit/sources", "get", "200");
    problems.extend(check(doc, "AuditHead", items(doc, sources, "heads"), &head));
    problems.extend(check(
        doc,
        "GET /v1/audit/sources",
        sources,
        &AuditSources {
            sources: strings("broker"),
            heads: vec![head],
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/audit/chain",
        answer("/v1/audit/chain", "get", "200"),
        &AuditChain {
            records: vec![crate::audit::AuditRecord {
                source: "broker".into(),
                seq: 1,
                time: 1,
                kind: "revoked".into(),
                data: json!({}),
                prev_hash: "0".repeat(64),
                hash: "1".repeat(64),
            }],
        },
    ));
    let signature = HeadSignature {
        seq: 1,
        hash: "h".into(),
        signature: "sig".into(),
    };
    let signatures = answer("/v1/audit/signatures", "get", "200");
    let item = items(doc, signatures, "signatures");
    problems.extend(check(doc, "HeadSignature", item, &signature));
    problems.extend(check(
        doc,
        "GET /v1/audit/signatures",
        signatures,
        &AuditSignatures {
            source: "broker".into(),
            signatures: vec![signature],
        },
    ));
    let key = AuditKey {
        source: "gateway:g".into(),
        public_key: "ssh-ed25519 A".into(),
        fingerprint: "SHA256:x".into(),
        pinned_at: Some(1),
        pinned_by: "enrollment".into(),
    };
    problems.extend(check(
        doc,
        "POST /v1/audit/unseal 200",
        answer("/v1/audit/unseal", "post", "200"),
        &sallyport_api::audit::Unsealed {
            source: "gateway:g".into(),
            seq: 4,
            session: "s1".into(),
            line: 3,
            text: "touch /tmp/x".into(),
        },
    ));
    let keys = answer("/v1/audit/keys", "get", "200");
    problems.extend(check(doc, "AuditKey", items(doc, keys, "keys"), &key));
    problems.extend(check(
        doc,
        "GET /v1/audit/keys",
        keys,
        &AuditKeys { keys: vec![key] },
    ));
    problems.extend(check(
        doc,
        "POST /v1/certificates 202",
        answer("/v1/certificates", "post", "202"),
        &IssuePending {
            status: "pending".into(),
            message: "waits".into(),
            request: request(),
            used_request: Some("rq-0".into()),
        },
    ));
    let revoked = Revoked {
        serial: "42".into(),
        grant: "g".into(),
        engineer: "alice".into(),
        key_id: "k".into(),
    };
    let revocations = answer("/v1/revocations", "post", "200");
    problems.extend(check(
        doc,
        "Revoked",
        items(doc, revocations, "revoked"),
        &revoked,
    ));
    problems.extend(check(
        doc,
        "POST /v1/revocations",
        revocations,
        &Revocations {
            revoked: vec![revoked],
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/ca",
        answer("/v1/ca", "get", "200"),
        &CaKeys {
            user_ca: "ssh-ed25519 A".into(),
            trusted_user_cas: strings("ssh-ed25519 A"),
            signature: "sig".into(),
        },
    ));
    let node = GatewayNode {
        name: "n1".into(),
        address: "10.0.0.1".into(),
        port: 22,
        host_keys: strings("ssh-ed25519 A"),
        trust_on_first_use: true,
    };
    let policy = NamedPolicy {
        name: "p".into(),
        body: "forbid(principal, action, resource);".into(),
    };
    let own = answer("/v1/gateway/self", "get", "200");
    problems.extend(check(doc, "GatewayNode", items(doc, own, "nodes"), &node));
    problems.extend(check(
        doc,
        "NamedPolicy",
        items(doc, own, "policies"),
        &policy,
    ));
    problems.extend(check(
        doc,
        "GET /v1/gateway/self",
        own,
        &GatewaySelf {
            id: "gw-1".into(),
            name: "gw1".into(),
            cluster: "c".into(),
            customer: Some("acme".into()),
            nodes: vec![node],
            policies: vec![policy],
            user_ca: strings("ssh-ed25519 A"),
            hidden_input_key: Some("sallyport-seal-x25519 AAAA".into()),
        },
    ));
    problems.extend(check(
        doc,
        "GET /v1/clusters/{cluster}/host-ca",
        answer("/v1/clusters/{cluster}/host-ca", "get", "200"),
        &HostCa {
            cluster: "c".into(),
            host_ca_public_keys: strings("ssh-ed25519 A"),
        },
    ));
    problems.extend(check(
        doc,
        "DELETE /v1/customers/{customer}/policies/{name}",
        answer("/v1/customers/{customer}/policies/{name}", "delete", "200"),
        &PolicyDeleted {
            deleted: "p".into(),
        },
    ));
    for status in ["200", "201"] {
        problems.extend(check(
            doc,
            &format!("PUT /v1/recordings/{{session}} {status}"),
            answer("/v1/recordings/{session}", "put", status),
            &RecordingStored {
                session: "s".into(),
                size: 1,
                sha256: "0".repeat(64),
                stored: status == "201",
            },
        ));
    }
    problems.extend(check(
        doc,
        "GET /v1/access-requests",
        answer("/v1/access-requests", "get", "200"),
        &vec![request()],
    ));
    for (path, method) in [
        ("/v1/access-requests/{request}", "get"),
        ("/v1/access-requests/{request}/decision", "post"),
    ] {
        problems.extend(check(doc, path, answer(path, method, "200"), &request()));
    }
    problems
}

/// The check itself finds what it is for.
#[test]
fn the_check_finds_a_missing_field_a_stray_one_and_a_wrong_kind() {
    let doc = json!({});
    let schema = json!({"type": "object", "properties": {
        "user": {"type": "string"}, "totp": {"type": "integer"}, "extra": {"type": "string"}},
        "required": ["user"]});
    let problems = check(
        &doc,
        "login",
        &schema,
        &LoginRequest {
            user: "a".into(),
            password: "p".to_string().into(),
            totp: "1".into(),
        },
    );
    let text = problems.join("\n");
    for expected in [
        "login.password: a field of the type the document does not name",
        "login.extra: named by the document, not a field of the type",
        "login.totp: the type writes \"1\"",
        "login.totp: the type requires it, the document does not require it",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // An object open to more fields takes a field it does not name, and still checks those
    // it names.
    let open = json!({"type": "object", "additionalProperties": true, "properties": {
        "user": {"type": "integer"}, "password": {"type": "string"}, "totp": {"type": "string"}},
        "required": ["user", "password", "totp"]});
    let mut schema = open.clone();
    schema["properties"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    let text = mismatches_of(&doc, &schema);
    assert!(text.contains("login.user: the type writes"), "{text}");
    assert!(!text.contains("login.password"), "{text}");
    schema["additionalProperties"] = json!(false);
    let text = mismatches_of(&doc, &schema);
    assert!(
        text.contains("login.password: a field of the type the document does not name"),
        "{text}"
    );
}

fn mismatches_of(doc: &Value, schema: &Value) -> String {
    let login = LoginRequest {
        user: "a".into(),
        password: "p".to_string().into(),
        totp: "1".into(),
    };
    let mut out = Vec::new();
    let value = serde_json::to_value(&login).expect("serializes");
    mismatches(doc, schema, &value, "login", &mut out);
    out.join("\n")
}
