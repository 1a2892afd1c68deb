//! Webhooks' pure parts: URLs, reachable addresses, shown URLs, backoff, signature, which
//! events are notified, the bodies.

use ring::hmac;
use serde_json::{Value, json};

use super::*;
use crate::audit::{AuditEvent, AuditRecord};

fn record(source: &str, kind: &str, data: Value) -> AuditRecord {
    AuditRecord::next(source, None, 1_780_000_000_123, kind, data)
}

#[test]
fn urls_are_https_or_loopback_http_when_allowed() {
    let cases: Vec<(&str, bool, Result<(), &str>)> = vec![
        ("https://hooks.example.com/x", false, Ok(())),
        ("https://203.0.113.1/x", false, Err("private network")),
        ("https://8.8.8.8/x", false, Ok(())),
        ("https://10.0.0.1/x", false, Err("private network")),
        (
            "https://169.254.169.254/latest",
            true,
            Err("private network"),
        ),
        ("https://[fd00::1]/x", false, Err("private network")),
        (
            "https://[::ffff:192.168.0.1]/x",
            false,
            Err("private network"),
        ),
        ("https://127.0.0.1/x", false, Err("private network")),
        ("https://127.0.0.1/x", true, Ok(())),
        ("http://127.0.0.1:8080/hook", true, Ok(())),
        ("http://localhost/hook", true, Ok(())),
        ("http://[::1]:9/hook", true, Ok(())),
        (
            "http://127.0.0.1:8080/hook",
            false,
            Err("allow_http_loopback"),
        ),
        ("http://hooks.example.com/x", true, Err("in clear")),
        ("http://192.168.1.5/x", true, Err("in clear")),
        ("ftp://hooks.example.com/x", true, Err("https://")),
        ("file:///etc/passwd", true, Err("https://")),
        (
            "https://user:pw@hooks.example.com/x",
            false,
            Err("password"),
        ),
        ("https://hooks.example.com/x#frag", false, Err("fragment")),
        ("not a url", false, Err("not a URL")),
    ];
    for (url, allow, want) in cases {
        match (check_url(url, allow, true), want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(word)) => assert!(e.0.contains(word), "{url}: {e}"),
            (got, want) => panic!("{url}: {got:?}, wanted {want:?}"),
        }
    }
    // The operator's vendor-wide webhooks may go to the vendor's own network.
    assert!(check_url("https://10.0.0.1/siem", false, false).is_ok());
    assert!(check_url("http://10.0.0.1/siem", true, false).is_err());
}

#[test]
fn only_public_addresses_are_reachable_for_customers() {
    let cases = [
        ("8.8.8.8", true),
        ("1.1.1.1", true),
        ("2606:4700::1111", true),
        ("10.1.2.3", false),
        ("172.16.0.1", false),
        ("192.168.1.1", false),
        ("169.254.169.254", false),
        ("100.64.0.1", false),
        ("0.0.0.0", false),
        ("255.255.255.255", false),
        ("224.0.0.1", false),
        ("198.18.0.1", false),
        ("::", false),
        ("fe80::1", false),
        ("fc00::1", false),
        ("::ffff:10.0.0.1", false),
        ("::ffff:8.8.8.8", true),
    ];
    for (ip, want) in cases {
        assert_eq!(reachable(ip.parse().unwrap(), false), want, "{ip}");
    }
    assert!(!reachable("127.0.0.1".parse().unwrap(), false));
    assert!(reachable("127.0.0.1".parse().unwrap(), true));
    assert!(reachable("::1".parse().unwrap(), true));
}

#[test]
fn shown_urls_keep_no_secret() {
    let cases = [
        (
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "https://hooks.slack.com/services/…",
        ),
        (
            "https://siem.example.com/sallyport",
            "https://siem.example.com/sallyport",
        ),
        ("https://siem.example.com/", "https://siem.example.com"),
        (
            "https://siem.example.com/in?token=abc",
            "https://siem.example.com/in/…",
        ),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
    ];
    for (url, want) in cases {
        let shown = shown_url(&url::Url::parse(url).unwrap());
        assert_eq!(shown, want);
        assert!(!shown.contains("SECRET") && !shown.contains("abc"));
    }
}

#[test]
fn backoff_grows_then_gives_up() {
    let waits: Vec<Option<u64>> = (1..=7).map(|a| backoff(a, 5, 6)).collect();
    assert_eq!(
        waits,
        vec![
            Some(5),
            Some(30),
            Some(120),
            Some(600),
            Some(3600),
            None,
            None
        ]
    );
    assert_eq!(backoff(1, 1, 2), Some(1));
    assert_eq!(backoff(2, 1, 2), None);
}

#[test]
fn the_signature_is_hmac_sha256_of_time_dot_body() {
    // RFC 4231 test case 2 ("Jefe"), with the message split as "<t>.<body>".
    let sig = signature("Jefe", 12, "what do ya want for nothing?");
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    let want = hex::encode(hmac::sign(&key, b"12.what do ya want for nothing?").as_ref());
    assert_eq!(sig, format!("t=12,v1={want}"));
    assert_ne!(signature("Jefe", 13, "what do ya want for nothing?"), sig);
    assert_ne!(signature("other", 12, "what do ya want for nothing?"), sig);
}

#[test]
fn which_events_are_notified() {
    let cases = [
        ("broker", "certificate_issued", true),
        ("broker", "access_request_created", true),
        ("broker", "access_request_decided", true),
        ("broker", "revoked", true),
        ("broker", "refusal_burst", true),
        ("broker", "login_failed", false),
        ("broker", "webhook_failed", false),
        ("gateway:gw-1", "session_started", true),
        ("gateway:gw-1", "session_ended", true),
        ("gateway:gw-1", "session_terminated", true),
        ("gateway:gw-1", "command", false),
        // Only the broker writes its kinds: a gateway naming one is not a notice.
        ("gateway:gw-1", "certificate_issued", false),
        ("edge:e1", "edge_session", false),
        ("other", "session_started", false),
    ];
    for (source, kind, want) in cases {
        assert_eq!(notified(source, kind), want, "{source} {kind}");
    }
    for kind in NOTIFIED {
        assert!(
            notified("broker", kind) || notified("gateway:g", kind),
            "{kind}"
        );
    }
    let e = AuditEvent::RefusalBurst {
        principal: "engineer:alice".into(),
        engineer: Some("alice".into()),
        customer: None,
        source_ip: None,
        counter: "user".into(),
        failures: 5,
        locked_secs: 300,
    };
    // The broker's kinds by name agree with the typed decision.
    let others = [
        e,
        AuditEvent::Revoked {
            scope: "serial".into(),
            target: "1".into(),
            serials: vec![],
            by: "operator:o".into(),
            reason: "r".into(),
            engineer: None,
            ticket: None,
            cluster: None,
        },
        AuditEvent::LoginFailed {
            engineer: "alice".into(),
            code: "bad_credentials".into(),
            reason: "r".into(),
            source_ip: None,
        },
        AuditEvent::WebhookFailed {
            webhook: "wh-1".into(),
            customer: None,
            url: "https://x".into(),
            host: "x".into(),
            delivery: "wd-1".into(),
            event: "broker#1".into(),
            event_kind: "revoked".into(),
            attempts: 6,
            last_status: None,
            last_error: "e".into(),
        },
        AuditEvent::SessionTerminationRequested {
            session: "s-1".into(),
            cluster: "acme-prod".into(),
            customer: "acme".into(),
            by: "approver:acme:a".into(),
            reason: "r".into(),
        },
    ];
    let decided: Vec<bool> = others.iter().map(event_notified).collect();
    assert_eq!(decided, vec![true, true, false, false, false]);
    for e in &others {
        assert_eq!(
            notified("broker", e.kind()),
            event_notified(e),
            "{}",
            e.kind()
        );
    }
}

#[test]
fn bodies_name_the_event_and_escape_for_slack() {
    let r = record(
        "gateway:gw-1",
        "session_terminated",
        json!({"session": "s-1", "engineer": "alice", "cluster": "acme-prod", "node": "node1",
               "ticket": "T-1", "reason": "ended by <!channel> & co"}),
    );
    let body: Value = serde_json::from_str(&json_body(&r, Some("acme"))).unwrap();
    assert_eq!(body["id"], "gateway:gw-1#1");
    assert_eq!(body["kind"], "session_terminated");
    assert_eq!(body["customer"], "acme");
    assert_eq!(body["cluster"], "acme-prod");
    assert_eq!(body["session"], "s-1");
    assert_eq!(body["time"], "2026-05-28T20:26:40.123Z");
    assert_eq!(body["data"]["reason"], "ended by <!channel> & co");
    let slack: Value = serde_json::from_str(&slack_body(&r, Some("acme"))).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("alice's session s-1 on node1.acme-prod was ended"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt; &amp; co"), "{text}");
    assert!(!text.contains('<'), "{text}");
}
