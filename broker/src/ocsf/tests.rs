use super::*;
use crate::audit::{AuditEvent, AuditRecord};
use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind};
use sallyport_ca::policy::DenyReason;
use serde_json::{Value, json};

fn record(source: &str, kind: &str, data: Value) -> AuditRecord {
    AuditRecord::next(source, Some((41, "ab")), 1_764_000_000_123, kind, data)
}

fn broker(e: &AuditEvent) -> AuditRecord {
    record("broker", e.kind(), e.data())
}

const GW: &str = "gateway:gw-1";
const EDGE: &str = "edge:edge-eu1";

fn session_fields(extra: Value) -> Value {
    let mut v = json!({"session": "s-1", "host": "node1.acme-prod", "cluster": "acme-prod",
        "node": "node1", "login": "ubuntu", "engineer": "alice", "ticket": "SUP-1",
        "grant": "g-1"});
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    v
}

/// (what, record, class_uid, activity_id, status_id)
fn cases() -> Vec<(&'static str, AuditRecord, u64, u64, u64)> {
    vec![
        (
            "login",
            broker(&AuditEvent::LoginSucceeded {
                engineer: "alice".into(),
                groups: vec!["support-l2".into()],
                source_ip: Some("10.1.2.3".into()),
            }),
            3002,
            1,
            1,
        ),
        (
            "failed login",
            broker(&AuditEvent::LoginFailed {
                engineer: "alice".into(),
                code: "bad_totp".into(),
                reason: "wrong TOTP code".into(),
                source_ip: None,
            }),
            3002,
            1,
            2,
        ),
        (
            "certificate issued",
            broker(&AuditEvent::CertificateIssued {
                engineer: "alice".into(),
                ticket: "SUP-1".into(),
                cluster: "acme-prod".into(),
                customer: "acme".into(),
                grant: "g".into(),
                approval: "a".into(),
                request: None,
                serial: "42".into(),
                key_id: "k".into(),
                logins: vec!["ubuntu".into()],
                valid_after: 1,
                valid_before: 2,
                public_key: "ssh-ed25519 AAAA".into(),
            }),
            3002,
            99,
            1,
        ),
        (
            "certificate denied",
            broker(&AuditEvent::CertificateDenied {
                engineer: "alice".into(),
                ticket: "SUP-1".into(),
                cluster: "acme-prod".into(),
                reasons: vec![DenyReason {
                    code: "ticket_closed".into(),
                    message: "the ticket is closed".into(),
                }],
            }),
            3002,
            99,
            2,
        ),
        (
            "console logout",
            broker(&AuditEvent::ConsoleLogout {
                account: "carol".into(),
                role: "approver".into(),
                customer: Some("acme".into()),
            }),
            3002,
            2,
            1,
        ),
        (
            "request decided",
            broker(&AuditEvent::AccessRequestDecided {
                request: "r".into(),
                engineer: "alice".into(),
                ticket: "SUP-1".into(),
                cluster: "acme-prod".into(),
                decided_by: "approver:acme:carol".into(),
                status: "approved".into(),
                reason: None,
                approvals: 1,
                approvers_required: 1,
                logins: vec![],
                ttl_secs: 60,
                narrowed: false,
            }),
            6003,
            3,
            1,
        ),
        (
            "approval created",
            broker(&AuditEvent::ApprovalSaved {
                approval: "a".into(),
                customer: "acme".into(),
                cluster: "acme-prod".into(),
                group: "g".into(),
                by: "approver:acme:carol".into(),
                created: true,
                detail: json!({}),
            }),
            6003,
            1,
            1,
        ),
        (
            "revoked",
            broker(&AuditEvent::Revoked {
                scope: "ticket".into(),
                target: "SUP-1".into(),
                serials: vec![],
                by: "reviewer:bob".into(),
                reason: "done".into(),
                engineer: None,
                ticket: Some("SUP-1".into()),
                cluster: None,
            }),
            6003,
            4,
            1,
        ),
        (
            "engineer disabled",
            broker(&AuditEvent::AdminChange {
                action: "disable_engineer".into(),
                target: "alice".into(),
                by: "operator:config".into(),
                customer: None,
                cluster: None,
                node: None,
                engineer: Some("alice".into()),
            }),
            3001,
            5,
            1,
        ),
        (
            "account enabled",
            broker(&AuditEvent::AdminChange {
                action: "enable_account".into(),
                target: "carol".into(),
                by: "operator:config".into(),
                customer: None,
                cluster: None,
                node: None,
                engineer: None,
            }),
            3001,
            2,
            1,
        ),
        (
            "token revoked",
            broker(&AuditEvent::AdminChange {
                action: "revoke_reviewer_token".into(),
                target: "bob".into(),
                by: "operator:config".into(),
                customer: None,
                cluster: None,
                node: None,
                engineer: None,
            }),
            3001,
            99,
            1,
        ),
        (
            "cluster created",
            broker(&AuditEvent::AdminChange {
                action: "create_cluster".into(),
                target: "acme-prod".into(),
                by: "operator:config".into(),
                customer: Some("acme".into()),
                cluster: Some("acme-prod".into()),
                node: None,
                engineer: None,
            }),
            6003,
            1,
            1,
        ),
        (
            "lockout",
            broker(&AuditEvent::RefusalBurst {
                principal: "engineer:alice".into(),
                engineer: Some("alice".into()),
                customer: None,
                source_ip: Some("10.0.0.7".into()),
                counter: "user".into(),
                failures: 5,
                locked_secs: 300,
            }),
            3001,
            9,
            1,
        ),
        (
            "webhook failed",
            broker(&AuditEvent::WebhookFailed {
                webhook: "w".into(),
                customer: Some("acme".into()),
                url: "https://hooks.example/…".into(),
                host: "hooks.example".into(),
                delivery: "d".into(),
                event: "broker#3".into(),
                event_kind: "certificate_issued".into(),
                attempts: 5,
                last_status: Some(500),
                last_error: "500".into(),
            }),
            6003,
            99,
            2,
        ),
        (
            "request refused",
            broker(&AuditEvent::Refused {
                by: "approver:acme:carol".into(),
                action: "read_recording".into(),
                reason: "another customer's".into(),
                customer: Some("globex".into()),
                cluster: None,
            }),
            6003,
            99,
            2,
        ),
        (
            "unknown token refused",
            broker(&AuditEvent::Refused {
                by: "unknown@10.9.9.9".into(),
                action: "GET /v1/audit/events".into(),
                reason: "an API token that was never issued".into(),
                customer: None,
                cluster: None,
            }),
            3002,
            1,
            2,
        ),
        (
            "an older broker's record",
            record("broker", "login_succeeded", json!({"who": "alice"})),
            6003,
            99,
            0,
        ),
        (
            "edge forwarded",
            record(
                EDGE,
                "edge_session",
                json!({"edge": "edge-eu1", "engineer": "alice", "cluster": "acme-prod",
                       "node": "node1", "peer": "192.0.2.7:50022"}),
            ),
            4007,
            1,
            1,
        ),
        (
            "edge refused a certificate",
            record(
                EDGE,
                "edge_refused",
                json!({"edge": "edge-eu1", "code": "revoked", "reason": "revoked"}),
            ),
            3002,
            1,
            2,
        ),
        (
            "gateway refused a certificate",
            record(
                GW,
                "session_refused",
                json!({"code": "expired", "reason": "expired", "cluster": "acme-prod"}),
            ),
            3002,
            1,
            2,
        ),
        (
            "session started",
            record(
                GW,
                "session_started",
                session_fields(json!({"peer": "127.0.0.1:4000", "serial": "42"})),
            ),
            4007,
            1,
            1,
        ),
        (
            "session ended",
            record(GW, "session_ended", session_fields(json!({}))),
            4007,
            2,
            1,
        ),
        (
            "session terminated",
            record(GW, "session_terminated", session_fields(json!({}))),
            4007,
            3,
            1,
        ),
        (
            "command",
            record(
                GW,
                "command",
                session_fields(json!({"command": "echo hi", "via": "exec", "channel": 0})),
            ),
            4007,
            6,
            1,
        ),
        (
            "exit 3",
            record(
                GW,
                "channel_exit",
                session_fields(json!({"exit_status": 3, "channel": 0})),
            ),
            4007,
            6,
            2,
        ),
        (
            "channel refused",
            record(
                GW,
                "channel_refused",
                session_fields(json!({"request": "agent", "reason": "no agent forwarding"})),
            ),
            4007,
            5,
            2,
        ),
        (
            "forward",
            record(
                GW,
                "forward",
                session_fields(json!({"target": "10.0.0.9:5432"})),
            ),
            4007,
            1,
            1,
        ),
        (
            "node unreachable",
            record(
                GW,
                "node_unreachable",
                session_fields(json!({"reason": "connection refused"})),
            ),
            4007,
            4,
            2,
        ),
        (
            "a kind nobody writes",
            record(GW, "no_such_kind", json!({})),
            6003,
            99,
            0,
        ),
    ]
}

#[test]
fn each_event_has_its_class_activity_and_status() {
    for (what, r, class_uid, activity_id, status_id) in cases() {
        let e = event(&r);
        assert_eq!(e["class_uid"], class_uid, "{what}: {e}");
        assert_eq!(e["category_uid"], class_uid / 1000, "{what}");
        assert_eq!(e["activity_id"], activity_id, "{what}: {e}");
        assert_eq!(e["type_uid"], class_uid * 100 + activity_id, "{what}");
        assert_eq!(e["status_id"], status_id, "{what}: {e}");
        assert_eq!(e["time"], r.time, "{what}");
        assert_eq!(e["metadata"]["uid"], format!("{}:{}", r.source, r.seq));
        assert_eq!(e["metadata"]["version"], OCSF_VERSION);
        assert_eq!(e["metadata"]["product"]["name"], "sallyport");
        assert_eq!(e["unmapped"]["data"], r.data, "{what}: ours are kept");
        assert_eq!(e["unmapped"]["hash"], r.hash);
        // What each class requires.
        let needs: &[&str] = match class_uid {
            4007 => &["dst_endpoint"],
            3002 => &["user", "service"],
            3001 => &["user"],
            6003 => &["actor", "api", "src_endpoint"],
            _ => unreachable!(),
        };
        for n in needs {
            assert!(
                e.get(*n).is_some_and(|v| !v.is_null()),
                "{what}: no {n}: {e}"
            );
        }
    }
}

#[test]
fn fields_land_where_a_siem_looks() {
    let r = record(
        GW,
        "session_started",
        session_fields(json!({"peer": "127.0.0.1:4000"})),
    );
    let e = event(&r);
    assert_eq!(e["src_endpoint"], json!({"ip": "127.0.0.1", "port": 4000}));
    assert_eq!(e["dst_endpoint"]["hostname"], "node1.acme-prod");
    assert_eq!(e["actor"]["user"]["name"], "alice");
    assert_eq!(e["metadata"]["correlation_uid"], "s-1");
    assert_eq!(e["auth_type_id"], 1);

    let r = broker(&AuditEvent::LoginFailed {
        engineer: "alice".into(),
        code: "bad_totp".into(),
        reason: "wrong TOTP code".into(),
        source_ip: Some("10.1.2.3".into()),
    });
    let e = event(&r);
    assert_eq!(e["user"]["name"], "alice");
    assert_eq!(e["src_endpoint"]["ip"], "10.1.2.3");
    assert_eq!(e["status_code"], "bad_totp");
    assert_eq!(e["status_detail"], "wrong TOTP code");
    assert_eq!(e["is_mfa"], true);
    assert_eq!(e["severity_id"], 3);

    let r = record(
        GW,
        "file_op",
        session_fields(
            json!({"via": "scp", "op": {"op": "file", "path": "dir/dump.tgz",
            "mode": "0644", "size": 5, "bytes": 5, "sha256": "abc", "status": "ok"}}),
        ),
    );
    let e = event(&r);
    assert_eq!(e["file"]["name"], "dump.tgz");
    assert_eq!(e["file"]["path"], "dir/dump.tgz");
    assert_eq!(e["file"]["size"], 5);
    assert_eq!(e["file"]["hashes"][0]["algorithm_id"], 3);
    assert_eq!(e["file"]["hashes"][0]["value"], "abc");

    let r = broker(&AuditEvent::Refused {
        by: "unknown@10.9.9.9".into(),
        action: "GET /v1/audit/events".into(),
        reason: "never issued".into(),
        customer: None,
        cluster: None,
    });
    let e = event(&r);
    assert_eq!(e["src_endpoint"]["ip"], "10.9.9.9");
    assert_eq!(e["user"]["name"], "unknown");

    let r = record(
        GW,
        "command",
        session_fields(json!({"command": "printf '\\033[2J'"})),
    );
    let m = event(&r)["message"].as_str().unwrap().to_string();
    assert!(m.contains("printf") && !m.contains('\u{1b}'), "{m}");
}

/// Every kind every chain can hold is placed: the matches are exhaustive by type, this checks
/// that each placement is a pair the class defines.
#[test]
fn every_kind_of_every_chain_is_placed_in_a_class_it_fits() {
    for k in GatewayKind::ALL {
        let e = event(&record(GW, k.as_str(), session_fields(json!({}))));
        assert!(
            [4007, 3002, 6003].contains(&e["class_uid"].as_u64().unwrap()),
            "{k:?}"
        );
        assert_ne!(e["status_id"], 0, "{k:?}");
    }
    for k in EdgeKind::ALL {
        let e = event(&record(EDGE, k.as_str(), json!({"edge": "edge-eu1"})));
        assert_ne!(e["status_id"], 0, "{k:?}");
    }
}
