//! The control plane end to end: a real `sallyport broker` process, a real OpenLDAP slapd, a
//! real store (SQLite, or PostgreSQL with SALLYPORT_TEST_STORE=postgres), real `ssh-keygen`,
//! `ssh` and `sshd`. Each refusal is checked for its reason and its audit event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use reqwest::StatusCode;
use sallyport_api::admin::{Enrollment, TokenCreated};
use sallyport_api::audit::AuditEntry;
use sallyport_api::certificates::{CaKeys, Issued};
use sallyport_api::requests::{AccessRequest, IssuePending, RequestStatus};
use sallyport_broker::audit::AuditEvent;
use serde_json::{Value, json};
use support::broker::*;
use support::ssh::Ssh;
use support::sshd::SshdNode;

/// Ask for a certificate; returns (status, body).
async fn ask(session: &Api, ticket: &str, extra: Value) -> (StatusCode, Value) {
    let (_, key) = engineer_key();
    let mut body = json!({"public_key": key, "ticket": ticket});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    session.post("/v1/certificates", body).await
}

/// The certificate is refused with exactly these reason codes, and the refusal is audited.
async fn assert_denied(w: &World, session: &Api, ticket: &str, extra: Value, want: &[&str]) {
    let before = w.audit("kind=certificate_denied").await.len();
    let (s, v) = ask(session, ticket, extra).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.get("certificate").is_none());
    let e = error_of(&v);
    assert_eq!(e.code, "denied");
    assert_eq!(reason_codes(&e), want, "{v}");
    assert!(!e.message.is_empty());
    let events = w.broker_events("kind=certificate_denied").await;
    assert_eq!(events.len(), before + 1);
    let AuditEvent::CertificateDenied { reasons, .. } = events.last().unwrap() else {
        panic!("{events:?}")
    };
    let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, want);
}

/// The request a `202` to `POST /v1/certificates` waits on.
fn pending(v: Value) -> AccessRequest {
    read_as::<IssuePending>("a pending certificate", v).request
}

/// The certificate of a `200` to `POST /v1/certificates`.
fn issued(v: Value) -> Issued {
    read_as("an issued certificate", v)
}

/// Where access request `rq` stands, as acme's approver reads it.
async fn request_status(w: &World, rq: &str) -> RequestStatus {
    let path = format!("/v1/access-requests/{rq}");
    w.acme.get_ok::<AccessRequest>(&path).await.status
}

/// The `access_request_decided` events: (status, approvals, narrowed, logins, ttl_secs).
async fn decisions(w: &World) -> Vec<(String, u64, bool, Vec<String>, u64)> {
    w.picked("kind=access_request_decided", |e| match e {
        AuditEvent::AccessRequestDecided {
            status,
            approvals,
            narrowed,
            logins,
            ttl_secs,
            ..
        } => Some((status, approvals, narrowed, logins, ttl_secs)),
        other => panic!("not a decision: {other:?}"),
    })
    .await
}

/// The code of the last `login_failed` event `query` selects.
async fn last_login_failure(w: &World, query: &str) -> String {
    match w.broker_events(query).await.pop() {
        Some(AuditEvent::LoginFailed { code, .. }) => code,
        other => panic!("not a login failure: {other:?}"),
    }
}

/// A broker with the seeded world, its directory the test slapd read with `memberOf`.
async fn memberof_world() -> World {
    World::start(Dir::Ldap {
        group_mode: "memberof",
    })
    .await
}

#[tokio::test]
async fn engineer_in_approved_group_gets_a_certificate_that_sshd_accepts() {
    let w = memberof_world().await;
    let node_login = "sallyport-node";
    w.approve("acme-prod", "support-l2", &[node_login], json!({}))
        .await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;

    // The engineer's own command, as a script would run it.
    let home = tempfile::tempdir().unwrap();
    let issued: Issued = read_as(
        "login --json",
        w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0)),
    );
    let key = home.path().join("acme-prod");
    let cert = home.path().join("acme-prod-cert.pub");
    use std::os::unix::fs::PermissionsExt;
    for f in [&key, &cert] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    let config = std::fs::read_to_string(home.path().join("ssh_config")).unwrap();
    assert!(config.contains("Host *.acme-prod") && config.contains(&cert.display().to_string()));

    // ssh-keygen -L shows key id, serial, principals, validity and extensions.
    let l = run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&cert));
    let text = String::from_utf8_lossy(&l.stdout).to_string();
    let grant = &issued.grant;
    let key_id = format!("sallyport:eng=alice;ticket=SUP-1234;grant={grant};cluster=acme-prod");
    assert!(text.contains(&format!("Key ID: \"{key_id}\"")), "{text}");
    assert!(
        text.contains(&format!("Serial: {}", issued.serial)),
        "{text}"
    );
    assert!(text.contains("acme-prod:sallyport-node"), "{text}");
    assert!(
        text.contains("permit-pty")
            && text.contains("grant@sallyport.dev")
            && text.contains("ticket@sallyport.dev"),
        "{text}"
    );
    assert!(
        !text.contains("permit-agent-forwarding") && !text.contains("permit-port-forwarding"),
        "{text}"
    );
    let lifetime = issued.valid_before - issued.valid_after;
    assert!(
        (3600..=3600 + 60).contains(&lifetime),
        "lifetime {lifetime}"
    );
    assert!(issued.valid_after <= now() - 55, "backdated");

    // A stock sshd trusting the user CA accepts it and logs the key id with the ticket.
    let (_, ca) = w.anon.get_as::<CaKeys>("/v1/ca").await;
    let node = SshdNode::start(&ca.user_ca, node_login, &["acme-prod:sallyport-node"]);
    let kh = home.path().join("node_known_hosts");
    std::fs::write(&kh, node.known_hosts_line()).unwrap();
    let out = Ssh::bare()
        .opt("StrictHostKeyChecking=yes")
        .opt(format!("UserKnownHostsFile={}", kh.display()))
        .key(&key)
        .opt(format!("CertificateFile={}", cert.display()))
        .args([
            "-p",
            &node.port().to_string(),
            &format!("{node_login}@127.0.0.1"),
            "echo hi-from-node",
        ])
        .output();
    assert_printed(&out, "hi-from-node", "");
    assert!(node.wait_for_log("SUP-1234", wait(5)), "{}", node.log());
    assert!(node.log().contains(&key_id), "{}", node.log());

    // `sallyport status` shows it with its remaining time.
    let st = run(Command::new(BIN)
        .args(["status", "--json"])
        .env("SALLYPORT_HOME", home.path()));
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["certificates"][0]["key_id"], key_id.as_str());
    assert!(st["certificates"][0]["remaining_secs"].as_u64().unwrap() > 3000);

    // Audit: the login and the issue, tied to the ticket.
    let issued_ev = w.audit("kind=certificate_issued&ticket=SUP-1234").await;
    assert_eq!(issued_ev.len(), 1);
    assert_eq!(issued_ev[0].engineer.as_deref(), Some("alice"));
    let AuditEvent::CertificateIssued {
        engineer,
        key_id: k,
        ..
    } = broker_event(&issued_ev[0])
    else {
        panic!("{issued_ev:?}")
    };
    assert_eq!((engineer.as_str(), k.as_str()), ("alice", key_id.as_str()));
    assert_eq!(
        w.audit("kind=login_succeeded&engineer=alice").await.len(),
        1
    );
}

#[tokio::test]
async fn group_search_mode_finds_groups_too() {
    let w = World::start(Dir::Ldap {
        group_mode: "search",
    })
    .await;
    w.approve("acme-prod", "dbas", &["ops"], json!({})).await;
    w.ticket("SUP-2", "acme-prod", "dave", "open").await;
    let s = w.session("dave", 0).await;
    let (st, v) = ask(&s, "SUP-2", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(issued(v).logins, ["ops"]);
}

#[tokio::test]
async fn login_refusals_are_clear_and_audited() {
    let w = memberof_world().await;
    // (user, password, totp offset or a literal code, status, audit code)
    let cases: Vec<(&str, &str, Option<&str>, StatusCode, &str)> = vec![
        (
            "alice",
            "wrong-pw",
            None,
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
        ),
        (
            "mallory",
            "mallory-pw",
            None,
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
        ),
        (
            "alice",
            "",
            None,
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
        ),
        (
            "bob",
            "bob-pw",
            Some("000000"),
            StatusCode::UNAUTHORIZED,
            "bad_totp",
        ),
        (
            "*)(uid=*",
            "x",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_user_name",
        ),
        (
            "alice)(|(uid=*",
            "alice-pw",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_user_name",
        ),
    ];
    for (user, pw, code, status, audit_code) in cases {
        let code = code
            .map(str::to_string)
            .unwrap_or_else(|| w.code(if user == "bob" { "bob" } else { "alice" }, 0));
        let (s, v) = w.login(user, pw, &code).await;
        assert_eq!(s, status, "{user}: {v}");
        assert!(v.get("token").is_none());
        assert!(!error_of(&v).message.is_empty());
        assert_eq!(
            last_login_failure(&w, "kind=login_failed").await,
            audit_code,
            "{user}"
        );
    }
    // Wrong password and unknown user read the same.
    let a = w.login("alice", "nope", &w.code("alice", 1)).await.1;
    let b = w.login("nobody", "nope", &w.code("alice", 1)).await.1;
    assert_eq!(error_of(&a).message, error_of(&b).message);
    // Hostile names never reached a session: nobody logged in.
    assert!(w.audit("kind=login_succeeded").await.is_empty());
}

#[tokio::test]
async fn totp_codes_are_single_use() {
    let w = memberof_world().await;
    let code = w.code("alice", 0);
    assert_eq!(w.login("alice", "alice-pw", &code).await.0, StatusCode::OK);
    let (s, v) = w.login("alice", "alice-pw", &code).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).message.contains("already used"), "{v}");
    assert_eq!(
        last_login_failure(&w, "kind=login_failed").await,
        "totp_replayed"
    );
    // Another engineer's same-step code is theirs to use.
    assert_eq!(
        w.login("bob", "bob-pw", &w.code("bob", 0)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn totp_replay_is_refused_across_two_broker_processes_sharing_the_store() {
    let w = memberof_world().await;
    // A second replica on the same store (PostgreSQL in the postgres run, the same SQLite file
    // otherwise), with the same keys.
    let second = w.broker.replica();
    let other = Api::new(&second.url, None);
    let code = w.code("alice", 0);
    let body = json!({"user": "alice", "password": "alice-pw", "totp": code});
    // Both at once: exactly one wins.
    let (a, b) = tokio::join!(
        w.anon.post("/v1/login", body.clone()),
        other.post("/v1/login", body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::UNAUTHORIZED],
        "{a:?} {b:?}"
    );
    // And once more at each: refused.
    assert_eq!(
        other.post("/v1/login", body.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.anon.post("/v1/login", body).await.0,
        StatusCode::UNAUTHORIZED
    );
    let replays = w
        .broker_events("kind=login_failed")
        .await
        .iter()
        .filter(|e| matches!(e, AuditEvent::LoginFailed { code, .. } if code == "totp_replayed"))
        .count();
    assert_eq!(replays, 3);
}

#[tokio::test]
async fn failed_logins_lock_the_user_out() {
    let w = World::ldap_with("[login]\nmax_failures = 3\nlockout_secs = 600\n").await;
    for _ in 0..3 {
        assert_eq!(
            w.login("bob", "bad", "123456").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password and code are refused while locked out.
    let (s, v) = w.login("bob", "bob-pw", &w.code("bob", 0)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(error_of(&v).code, "locked_out");
    assert_eq!(
        last_login_failure(&w, "kind=login_failed").await,
        "locked_out"
    );
    // Others are not affected.
    assert_eq!(
        w.login("alice", "alice-pw", &w.code("alice", 0)).await.0,
        StatusCode::OK
    );
    // Parallel guesses cannot race the lockout: each attempt is counted before it is checked,
    // so at most max_failures of 40 at once are checked at all.
    let guesses = (0..40).map(|i| {
        let w = &w;
        async move { w.login("carol", &format!("guess-{i}"), "123456").await.0 }
    });
    let answers = join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let locked = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 3, "{checked} guesses were checked: {answers:?}");
    assert_eq!(checked + locked, 40, "{answers:?}");
}

#[tokio::test]
async fn ldap_down_fails_closed_with_503() {
    let w = World::start(Dir::LdapDown).await;
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(error_of(&v).message.contains("LDAP"), "{v}");
    assert!(v.get("token").is_none());
    assert_eq!(
        last_login_failure(&w, "kind=login_failed").await,
        "directory_unavailable"
    );
}

#[tokio::test]
async fn every_check_before_a_certificate_refuses_with_its_reason() {
    let w = memberof_world().await;
    let ap = w
        .approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("OPEN-1", "acme-prod", "alice", "open").await;
    w.ticket("CLOSED-1", "acme-prod", "alice", "closed").await;
    w.ticket("BOB-1", "acme-prod", "bob", "open").await;
    w.ticket("DEV-1", "acme-dev", "alice", "open").await;
    w.ticket("CAROL-1", "acme-prod", "carol", "open").await;
    let alice = w.session("alice", 0).await;

    assert_denied(&w, &alice, "CLOSED-1", json!({}), &["ticket_not_open"]).await;
    assert_denied(&w, &alice, "BOB-1", json!({}), &["ticket_not_assigned"]).await;
    assert_denied(
        &w,
        &alice,
        "OPEN-1",
        json!({"cluster": "acme-dev"}),
        &["not_in_approved_group", "ticket_other_cluster"],
    )
    .await;
    assert_denied(
        &w,
        &alice,
        "DEV-1",
        json!({"cluster": "acme-prod"}),
        &["ticket_other_cluster"],
    )
    .await;
    assert_denied(
        &w,
        &alice,
        "OPEN-1",
        json!({"logins": ["root"]}),
        &["login_not_approved"],
    )
    .await;
    assert_denied(&w, &alice, "NOPE-1", json!({}), &["ticket_unknown"]).await;
    let carol = w.session("carol", 0).await;
    assert_denied(&w, &carol, "CAROL-1", json!({}), &["not_in_approved_group"]).await;

    // Allowed, then the approval is withdrawn: refused, and the issued certificate is revoked.
    let (s, v) = ask(&alice, "OPEN-1", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let serial = issued(v).serial;
    assert_eq!(
        w.acme.delete(&format!("/v1/approvals/{ap}")).await.0,
        StatusCode::OK
    );
    assert_denied(&w, &alice, "OPEN-1", json!({}), &["approval_withdrawn"]).await;
    let revoked = w.broker_events("kind=revoked").await;
    let Some(AuditEvent::Revoked { serials, .. }) = revoked.last() else {
        panic!("{revoked:?}")
    };
    assert!(serials.contains(&serial));

    // An approval that runs out.
    w.approve(
        "acme-prod",
        "support-l2",
        &["ubuntu"],
        json!({"valid_until": now() + 2}),
    )
    .await;
    tokio::time::sleep(wait(3)).await;
    assert_denied(&w, &alice, "OPEN-1", json!({}), &["approval_expired"]).await;
}

#[tokio::test]
async fn a_customers_own_forbid_policy_refuses() {
    let w = memberof_world().await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let policy = r#"@id("acme_freeze")
@message("acme has frozen all access to acme-prod during its audit")
forbid (principal, action == Sallyport::Action::"issue", resource == Sallyport::Cluster::"acme-prod")
when { context.now > 0 };"#;
    // Another customer cannot set it for acme, and cannot aim it at acme's cluster either.
    let (s, _) = w
        .globex
        .put(
            "/v1/customers/acme/policies/freeze",
            json!({"body": policy}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = w
        .globex
        .put(
            "/v1/customers/globex/policies/freeze",
            json!({"body": policy}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // A permit or a policy that does not check is refused when saved.
    let (s, _) = w
        .acme
        .put(
            "/v1/customers/acme/policies/p",
            json!({"body": "@id(\"p\") @message(\"m\") permit(principal, action, resource);"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = w
        .acme
        .put(
            "/v1/customers/acme/policies/freeze",
            json!({"body": policy}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let alice = w.session("alice", 0).await;
    assert_denied(&w, &alice, "T-1", json!({}), &["customer:acme_freeze"]).await;
    let (_, v) = ask(&alice, "T-1", json!({})).await;
    assert!(error_of(&v).message.contains("frozen"), "{v}");
}

#[tokio::test]
async fn just_in_time_requests_are_decided_by_a_customer_approver() {
    let w = memberof_world().await;
    w.jit_tickets(&[("JIT-1", "alice"), ("JIT-2", "dave")])
        .await;
    let alice = w.session("alice", 0).await;
    let (s, v) = ask(&alice, "JIT-1", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let rq = pending(v).id;
    // Asking again waits on the same request.
    let (_, v2) = ask(&alice, "JIT-1", json!({})).await;
    assert_eq!(pending(v2).id, rq);
    // The engineer cannot decide it; another customer's approver cannot either.
    let path = format!("/v1/access-requests/{rq}/decision");
    assert_eq!(
        alice.post(&path, json!({"approve": true})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.globex.post(&path, json!({"approve": true})).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = w
        .acme
        .post(&path, json!({"approve": true, "reason": "ok for SUP"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Decided once only.
    assert_eq!(
        w.acme.post(&path, json!({"approve": false})).await.0,
        StatusCode::CONFLICT
    );
    let (s, v) = ask(&alice, "JIT-1", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(issued(v).certificate.starts_with("ssh-ed25519-cert-v01"));
    // One approved request, one certificate: asking again makes a new request for a customer
    // approver, never a second certificate.
    let (s, v) = ask(&alice, "JIT-1", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let rq2 = pending(v).id;
    assert_ne!(rq2, rq);
    assert_eq!(request_status(&w, &rq).await, RequestStatus::Used);
    assert_eq!(
        w.audit("kind=certificate_issued&ticket=JIT-1").await.len(),
        1
    );
    // Two logins racing on one approved request: one certificate between them.
    let (s, _) = w
        .acme
        .post(
            &format!("/v1/access-requests/{rq2}/decision"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (a, b) = tokio::join!(
        ask(&alice, "JIT-1", json!({})),
        ask(&alice, "JIT-1", json!({}))
    );
    let ok = [a.0, b.0].iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{a:?} {b:?}");
    assert_eq!(
        w.audit("kind=certificate_issued&ticket=JIT-1").await.len(),
        2
    );

    // A denied request: refused with its reason.
    let dave = w.session("dave", 0).await;
    let (s, v) = ask(&dave, "JIT-2", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let rq = pending(v).id;
    let (s, _) = w
        .decide(&rq, json!({"approve": false, "reason": "not now"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_denied(&w, &dave, "JIT-2", json!({}), &["request_denied"]).await;
    let decided = decisions(&w).await;
    assert_eq!(decided.len(), 3);
    assert_eq!(decided.iter().filter(|e| e.0 == "denied").count(), 1);
}

/// An approval may need two approvers for each request; a request names what its approvers
/// see (logins, lifetime) and the one certificate from it carries no more; changing the
/// approval voids its open requests.
/// An approver may approve less than was asked (some of the logins, a shorter lifetime),
/// never more; a denial narrows nothing; the one certificate carries the narrowed terms, and
/// the decision event names them.
#[tokio::test]
async fn an_approver_narrows_a_request_and_the_certificate_carries_only_that() {
    let w = memberof_world().await;
    w.jit_tickets_as(&["ubuntu", "deploy"], &[("N-1", "alice")])
        .await;
    let alice = w.session("alice", 0).await;
    let asked = json!({"logins": ["ubuntu", "deploy"], "ttl_secs": 3600});
    let (s, v) = ask(&alice, "N-1", asked.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let rq = pending(v).id;
    let path = format!("/v1/access-requests/{rq}/decision");
    // Wider than asked, a login not asked for, nothing at all, too short, or narrowing a
    // denial: refused, and nothing is decided.
    for body in [
        json!({"approve": true, "ttl_secs": 7200}),
        json!({"approve": true, "logins": ["root"]}),
        json!({"approve": true, "logins": []}),
        json!({"approve": true, "ttl_secs": 10}),
        json!({"approve": false, "ttl_secs": 600}),
    ] {
        let (s, v) = w.acme.post(&path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(!error_of(&v).message.is_empty(), "{v}");
    }
    assert_eq!(request_status(&w, &rq).await, RequestStatus::Pending);
    let (s, v) = w
        .acme
        .post(
            &path,
            json!({"approve": true, "logins": ["ubuntu"], "ttl_secs": 900, "reason": "read-only login, 15 minutes"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r: AccessRequest = read_as("a decided request", v);
    assert_eq!(r.status, RequestStatus::Approved, "{r:?}");
    assert_eq!((r.logins, r.ttl_secs), (vec!["ubuntu".to_string()], 900));
    let decided = decisions(&w).await;
    let (_, _, narrowed, logins, ttl_secs) = decided.last().unwrap();
    assert!(*narrowed, "{decided:?}");
    assert_eq!((logins, *ttl_secs), (&vec!["ubuntu".to_string()], 900));
    // Asked again for the wider terms: not a certificate (that is a new request).
    let (s, v) = ask(&alice, "N-1", asked).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_ne!(pending(v).id, rq);
    // The engineer's next ask on the approved terms: a new pending request replaced the
    // approved one above, so start again and take the narrowed certificate this time.
    w.ticket("N-2", "acme-prod", "alice", "open").await;
    let (_, v) = ask(&alice, "N-2", json!({"logins": ["ubuntu", "deploy"]})).await;
    let rq2 = pending(v).id;
    let (s, v) = w
        .acme
        .post(
            &format!("/v1/access-requests/{rq2}/decision"),
            json!({"approve": true, "logins": ["deploy"], "ttl_secs": 600}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = ask(
        &alice,
        "N-2",
        json!({"logins": ["deploy"], "ttl_secs": 600}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cert = issued(v);
    assert_eq!(cert.logins, ["deploy"], "{cert:?}");
    let lifetime = cert.valid_before - now();
    assert!(lifetime <= 600, "longer than approved: {cert:?}");
}

#[tokio::test]
async fn a_quorum_of_approvers_decides_and_a_request_binds_its_certificate() {
    let w = memberof_world().await;
    // A quorum only makes sense for just-in-time requests.
    let (s, v) = w
        .acme
        .post("/v1/approvals", json!({"cluster": "acme-prod", "group": "support-l2", "logins": ["ubuntu"], "max_session_secs": 3600, "valid_until": now() + 3600, "approvers_required": 2}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let ap = w
        .approve(
            "acme-prod",
            "support-l2",
            &["ubuntu", "deploy"],
            json!({"just_in_time": true, "approvers_required": 2}),
        )
        .await;
    w.ticket("Q-1", "acme-prod", "alice", "open").await;
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            json!({"name": "acme-second", "role": "approver", "customer": "acme"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let second = w.op.with(&read_as::<TokenCreated>("a token", v).token);
    let alice = w.session("alice", 0).await;

    let (s, v) = ask(
        &alice,
        "Q-1",
        json!({"logins": ["ubuntu"], "ttl_secs": 600}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let r = pending(v);
    let rq = r.id;
    assert_eq!(r.logins, ["ubuntu"]);
    assert_eq!(r.ttl_secs, 600);
    assert_eq!(r.approvers_required, 2);
    let path = format!("/v1/access-requests/{rq}/decision");
    // One approver is not enough, and voting twice does not count twice.
    let (s, r) = w
        .acme
        .post_as::<AccessRequest>(&path, json!({"approve": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r:?}");
    assert_eq!(r.status, RequestStatus::Pending, "{r:?}");
    assert_eq!(r.approved_by.len(), 1, "{r:?}");
    let (s, e) = w.acme.post_err(&path, json!({"approve": true})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e.message.contains("2 distinct approvers"), "{e}");
    let (s, v) = ask(
        &alice,
        "Q-1",
        json!({"logins": ["ubuntu"], "ttl_secs": 600}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "one approval of two gave a certificate: {v}"
    );
    assert_eq!(pending(v).id, rq);
    let (s, r) = second
        .post_as::<AccessRequest>(&path, json!({"approve": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r:?}");
    assert_eq!(r.status, RequestStatus::Approved, "{r:?}");
    let votes = decisions(&w).await;
    assert_eq!(votes.len(), 2);
    assert!(votes.iter().any(|e| e.0 == "pending" && e.1 == 1));
    assert!(votes.iter().any(|e| e.0 == "approved" && e.1 == 2));

    // Asking for a login the approvers did not see is a new request, not a certificate.
    let (s, v) = ask(&alice, "Q-1", json!({"logins": ["ubuntu", "deploy"]})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let more = pending(v);
    let rq_more = more.id;
    assert_ne!(rq_more, rq);
    assert_eq!(more.logins, ["ubuntu", "deploy"]);
    // It replaces the approved one: approvers see one open request, the new one.
    assert_eq!(request_status(&w, &rq).await, RequestStatus::Superseded);
    let (s, v) = w
        .acme
        .post(
            &format!("/v1/access-requests/{rq_more}/decision"),
            json!({"approve": false, "reason": "no deploy"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_denied(
        &w,
        &alice,
        "Q-1",
        json!({"logins": ["ubuntu"]}),
        &["request_denied"],
    )
    .await;

    // Without --login the certificate carries the request's logins, and no longer than its
    // lifetime even when asked for more.
    w.ticket("Q-2", "acme-prod", "alice", "open").await;
    let (s, v) = ask(&alice, "Q-2", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let rq_q2 = pending(v).id;
    for approver in [&w.acme, &second] {
        let (s, v) = approver
            .post(
                &format!("/v1/access-requests/{rq_q2}/decision"),
                json!({"approve": true}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = ask(&alice, "Q-2", json!({"ttl_secs": 86_400})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cert = issued(v);
    assert_eq!(cert.logins, ["ubuntu", "deploy"], "{cert:?}");
    let lifetime = cert.valid_before - now();
    assert!(
        lifetime <= 3600,
        "the certificate outlives what was approved: {cert:?}"
    );

    // An approved request is void once the approval changes before it is used.
    w.ticket("Q-3", "acme-prod", "alice", "open").await;
    let (_, v) = ask(&alice, "Q-3", json!({})).await;
    let rq3 = pending(v).id;
    for approver in [&w.acme, &second] {
        let (s, v) = approver
            .post(
                &format!("/v1/access-requests/{rq3}/decision"),
                json!({"approve": true}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = w
        .acme
        .put(&format!("/v1/approvals/{ap}"), json!({"cluster": "acme-prod", "group": "support-l2", "logins": ["ubuntu"], "max_session_secs": 3600, "valid_until": now() + 3600, "just_in_time": true, "approvers_required": 2}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(request_status(&w, &rq3).await, RequestStatus::Void);
    let (s, v) = ask(&alice, "Q-3", json!({})).await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "a voided request gave a certificate: {v}"
    );
    assert_eq!(pending(v).logins, ["ubuntu"]);
    assert_eq!(w.audit("kind=certificate_issued&ticket=Q-1").await.len(), 0);
    assert_eq!(w.audit("kind=certificate_issued&ticket=Q-3").await.len(), 0);
}

#[tokio::test]
async fn hostile_requests_change_nothing() {
    let w = memberof_world().await;
    let ap = w
        .approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let approvals_before = w.op.get("/v1/approvals").await.1;

    // A customer approver on another customer's cluster.
    let (s, v) = w.globex.post("/v1/approvals", json!({"cluster": "acme-prod", "group": "support-l1", "logins": ["root"], "max_session_secs": 3600, "valid_until": now() + 3600})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        w.globex.delete(&format!("/v1/approvals/{ap}")).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = w.globex.put(&format!("/v1/approvals/{ap}"), json!({"cluster": "acme-prod", "group": "support-l1", "logins": ["root"], "max_session_secs": 3600, "valid_until": now() + 3600})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let refused = w.broker_events("kind=refused").await;
    assert!(refused.len() >= 3);
    let AuditEvent::Refused { cluster, .. } = &refused[0] else {
        panic!("{refused:?}")
    };
    assert_eq!(cluster.as_deref(), Some("acme-prod"));

    // JWTs: alg none, another key, garbage.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = json!({"sub": "alice", "role": "engineer", "groups": ["support-l2"], "mfa": true, "iat": now(), "exp": now() + 600, "aud": "sallyport", "iss": "sallyport-broker", "jti": "x"});
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    );
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another key, not the broker's..."),
    )
    .unwrap();
    for token in [none.as_str(), other_key.as_str(), "not.a.jwt", "spt_0000"] {
        let (s, v) = ask(&w.anon.with(token), "T-1", json!({})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {v}");
        error_of(&v);
    }
    assert_eq!(
        ask(&w.anon, "T-1", json!({})).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Malformed and oversized JSON.
    let alice = w.session("alice", 0).await;
    let (s, v) = alice
        .raw(
            reqwest::Method::POST,
            "/v1/certificates",
            Some("{\"public_key\": ".into()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_of(&v).code, "bad_request");
    let big = json!({"public_key": "x".repeat(200_000), "ticket": "T-1"}).to_string();
    let (s, v) = alice
        .raw(reqwest::Method::POST, "/v1/certificates", Some(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_of(&v).code, "too_large");
    let (s, _) = alice
        .post(
            "/v1/certificates",
            json!({"public_key": "ssh-ed25519 AAAA garbage", "ticket": "T-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = alice
        .post(
            "/v1/certificates",
            json!({"public_key": engineer_key().1, "ticket": "../../etc/passwd"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.tickets.put("/v1/tickets/T-2", json!({"customer": "acme", "cluster": "acme-prod", "assignee": "*)(uid=*", "status": "open"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Nothing changed; no certificate was issued.
    assert_eq!(w.op.get("/v1/approvals").await.1, approvals_before);
    assert!(w.audit("kind=certificate_issued").await.is_empty());
    assert_eq!(w.op.get("/v1/tickets/T-2").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revoked_certificates_are_in_the_krl_that_ssh_keygen_reads() {
    let w = memberof_world().await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    w.ticket("T-2", "acme-prod", "dave", "open").await;
    w.ticket("T-3", "acme-prod", "alice", "open").await;
    let dir = tempfile::tempdir().unwrap();
    let mut certs = Vec::new();
    for (who, ticket, offset) in [
        ("alice", "T-1", -1),
        ("dave", "T-2", 0),
        ("alice", "T-3", 1),
    ] {
        let s = w.session(who, offset).await;
        let (st, v) = ask(&s, ticket, json!({})).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let path = dir.path().join(format!("{ticket}-cert.pub"));
        let cert = issued(v);
        std::fs::write(&path, cert.certificate).unwrap();
        certs.push((cert.serial, path));
    }
    let krl_ok = |revoked: &[bool]| {
        let w = &w;
        let dir = dir.path().to_path_buf();
        let certs = certs.clone();
        let revoked = revoked.to_vec();
        async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let resp = reqwest::get(format!("{}/v1/krl", w.broker.url))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let krl = dir.join("krl");
            let bytes = resp.bytes().await.unwrap();
            // Revocation by serial only: the public KRL names nobody.
            let text = String::from_utf8_lossy(&bytes);
            for secret in ["sallyport:", "eng=", "alice", "dave", "acme-prod", "T-"] {
                assert!(!text.contains(secret), "the KRL names {secret:?}");
            }
            std::fs::write(&krl, &bytes).unwrap();
            for ((_, cert), want) in certs.iter().zip(revoked) {
                let out = run(Command::new("ssh-keygen")
                    .arg("-Q")
                    .arg("-f")
                    .arg(&krl)
                    .arg(cert));
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                assert_eq!(text.contains("REVOKED"), want, "{}: {text}", cert.display());
                assert_eq!(out.status.success(), !want);
            }
        }
    };
    krl_ok(&[false, false, false]).await;
    // By serial, by the reviewer.
    let (s, v) = w
        .reviewer
        .post(
            "/v1/revocations",
            json!({"scope": "serial", "value": certs[0].0, "reason": "laptop lost"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    krl_ok(&[true, false, false]).await;
    // Closing a ticket revokes what was issued for it.
    w.ticket("T-2", "acme-prod", "dave", "closed").await;
    krl_ok(&[true, true, false]).await;
    // By engineer: their certificates, and their session tokens too.
    let alice_before = w.session("alice", 0).await;
    let (s, _) =
        w.op.post(
            "/v1/revocations",
            json!({"scope": "engineer", "value": "alice", "reason": "left"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    krl_ok(&[true, true, true]).await;
    let (s, v) = ask(&alice_before, "T-3", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).message.contains("session was revoked"), "{v}");
    // An engineer or the ticket system may not revoke; globex may not revoke acme's.
    let (s, _) = w
        .tickets
        .post(
            "/v1/revocations",
            json!({"scope": "engineer", "value": "dave", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = w
        .globex
        .post(
            "/v1/revocations",
            json!({"scope": "ticket", "value": "T-2", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let revoked = w.broker_events("kind=revoked").await;
    assert_eq!(revoked.len(), 3);
    let AuditEvent::Revoked { scope, ticket, .. } = &revoked[1] else {
        panic!("{revoked:?}")
    };
    assert_eq!((scope.as_str(), ticket.as_deref()), ("ticket", Some("T-2")));
}

#[tokio::test]
async fn audit_verify_names_the_first_altered_event() {
    let w = memberof_world().await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    let alice = w.session("alice", 0).await;
    assert_eq!(ask(&alice, "T-1", json!({})).await.0, StatusCode::OK);
    let reviewer_token = w.reviewer.token.clone().unwrap();
    let verify = || {
        run(Command::new(BIN)
            .args(["audit", "verify", "--json"])
            .env("SALLYPORT_BROKER", &w.broker.url)
            .env("SALLYPORT_TOKEN", &reviewer_token))
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["ok"], true);
    let total = line["events"].as_u64().unwrap();
    assert!(total >= 10, "{line}");

    // `audit search --json`: one object per line with the contract's fields.
    let out = run(Command::new(BIN)
        .args(["audit", "search", "--json", "--ticket", "T-1"])
        .env("SALLYPORT_BROKER", &w.broker.url)
        .env("SALLYPORT_TOKEN", &reviewer_token));
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries: Vec<AuditEntry> = lines
        .iter()
        .map(|e| read_as("an audit search line", e.clone()))
        .collect();
    assert!(entries.iter().any(|e| e.kind == "certificate_issued"));
    for e in &lines {
        for k in [
            "kind", "time", "engineer", "ticket", "cluster", "node", "session",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }

    // Edit one row in the database: verify fails and names it.
    let mut db = w.store_db().await;
    let seq = w.audit("kind=login_succeeded&engineer=alice").await[0].seq as i64;
    let changed = sqlx::query("UPDATE audit_events SET data = REPLACE(data, 'alice', 'mallory') WHERE source = 'broker' AND seq = $1")
        .bind(seq)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["ok"], false);
    assert_eq!(line["seq"], seq, "{line}");
    // The broker's store read directly gives the same answer.
    let out = run(Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&w.broker.config));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("BROKEN at event #{seq}")), "{text}");
}

#[tokio::test]
async fn embedded_directory_works_without_ldap() {
    let w = World::start(Dir::File(vec![
        ("alice", "alice-pw", vec!["support-l2"]),
        ("bob", "bob-pw", vec![]),
    ]))
    .await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("T-1", "acme-prod", "alice", "open").await;
    w.ticket("T-2", "acme-prod", "bob", "open").await;
    let alice = w.session("alice", 0).await;
    assert_eq!(ask(&alice, "T-1", json!({})).await.0, StatusCode::OK);
    assert_eq!(
        w.login("alice", "wrong", &w.code("alice", 1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let bob = w.session("bob", 0).await;
    assert_denied(&w, &bob, "T-2", json!({}), &["not_in_approved_group"]).await;
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let w = World::start(Dir::File(vec![])).await;
    let (s, v) = w.anon.get("/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.0.3");
    for p in [
        "/v1/login",
        "/v1/certificates",
        "/v1/krl",
        "/v1/approvals",
        "/v1/audit/events",
        "/v1/revocations",
        "/v1/edge/self",
    ] {
        assert!(v["paths"].get(p).is_some(), "{p}");
    }
    let (s, e) = w.anon.get_err("/v1/no-such-thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e.code, "not_found");
}

#[tokio::test]
async fn totp_secrets_are_sealed_in_the_database_and_bound_to_their_row() {
    let w = World::start(Dir::File(vec![
        ("alice", "alice-pw", vec!["support-l2"]),
        ("bob", "bob-pw", vec!["support-l1"]),
    ]))
    .await;
    use sqlx::Row;
    let mut db = w.store_db().await;
    let stored = |uid: &'static str| {
        sqlx::query("SELECT totp_secret FROM engineers WHERE uid = $1").bind(uid)
    };
    let alice: String = stored("alice").fetch_one(&mut db).await.unwrap().get(0);
    // Neither the secret nor anything a code could be made from is in the row.
    assert!(alice.starts_with("enc1:"), "{alice}");
    assert!(!alice.contains(&w.secret("alice")), "{alice}");
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Accounts too.
    let (s, v) =
        w.op.post(
            "/v1/accounts",
            json!({"username": "acme-boss", "role": "approver", "customer": "acme", "password": "a-long-password-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acct: String = sqlx::query("SELECT totp_secret FROM accounts WHERE username = 'acme-boss'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert!(acct.starts_with("enc1:"), "{acct}");
    let enrolled: Enrollment = read_as("an account's enrollment", v);
    assert!(!acct.contains(&enrolled.totp_secret), "{acct}");

    // Alice's sealed secret copied onto bob's row does not open there: bob cannot log in with
    // alice's codes, and he is told to ask the operator.
    let changed = sqlx::query("UPDATE engineers SET totp_secret = $1 WHERE uid = 'bob'")
        .bind(&alice)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let (s, v) = w.login("bob", "bob-pw", &w.code("alice", 1)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.to_string().contains("tell the operator"), "{v}");
    let (s, _) = w.login("bob", "bob-pw", &w.code("bob", 1)).await;
    assert_ne!(s, StatusCode::OK);

    // A secret planted in clear (someone who can write the database but not read the broker's
    // key) is refused, and audited.
    let planted = plant_totp_in_clear(&mut db, "bob").await;
    let code = sallyport_broker::totp::code(planted, now()).unwrap();
    let (s, v) = w.login("bob", "bob-pw", &code).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.to_string().contains("stored in clear"), "{v}");
    assert_eq!(
        last_login_failure(&w, "kind=login_failed&engineer=bob").await,
        "totp_unreadable"
    );
}

/// Secrets an older version stored in clear are sealed by the first start of a version that
/// seals (the start that makes the TOTP key), each sealing audited, and still work.
#[tokio::test]
async fn secrets_stored_in_clear_by_an_older_version_are_sealed_at_start() {
    let mut w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    use sqlx::Row;
    let mut db = w.store_db().await;
    // An older version's store and data directory: every secret in clear, no TOTP key.
    w.stop_broker();
    for e in ENGINEERS {
        sqlx::query("UPDATE engineers SET totp_secret = $1 WHERE uid = $2")
            .bind(w.secret(e))
            .bind(e)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let key = w.broker.dir.join("data/totp.key");
    std::fs::remove_file(&key).unwrap();
    // A first start that stopped half-way (the new key staged, nothing sealed) is finished by
    // the next start, with the same key.
    let staged = w.broker.dir.join("data/totp.key.new");
    std::fs::write(&staged, [9u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    w.start_broker_again();
    assert!(!staged.exists());
    assert_eq!(std::fs::read(&key).unwrap(), [9u8; 32]);
    for e in ENGINEERS {
        let stored: String = sqlx::query("SELECT totp_secret FROM engineers WHERE uid = $1")
            .bind(e)
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
        assert!(stored.starts_with("enc1:"), "{e}: {stored}");
    }
    let sealed = sealings(&w).await;
    for e in ENGINEERS {
        assert!(
            sealed
                .iter()
                .any(|(target, by)| *target == format!("engineer:{e}") && by == "broker"),
            "{sealed:#?}"
        );
    }
    // The next start seals nothing more; the sealed secrets work.
    w.stop_broker();
    w.start_broker_again();
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(sealings(&w).await.len(), ENGINEERS.len());
}

/// The `seal_totp_secret` admin changes: (target, by).
async fn sealings(w: &World) -> Vec<(String, String)> {
    w.picked("kind=admin_change&limit=100", |e| match e {
        AuditEvent::AdminChange {
            action, target, by, ..
        } if action == "seal_totp_secret" => Some((target, by)),
        _ => None,
    })
    .await
}
