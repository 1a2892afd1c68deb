//! The web console: login (password + TOTP), its session cookie, CSRF, security headers, the
//! scope of each role, and the pages through a real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;

use reqwest::StatusCode;
use sallyport_api::approvals::Approval;
use sallyport_api::audit::AuditEntry;
use sallyport_api::report::AccessReport;
use sallyport_api::requests::{AccessRequest, IssuePending, RequestStatus};
use sallyport_api::sessions::{LiveView, SessionSummary};
use sallyport_broker::audit::AuditEvent;
use serde_json::{Value, json};
use support::bastion::{self, alice_at_the_edge, trust_edge};
use support::broker::*;
use support::browser::{Browser, Console};
use support::ssh::Ssh;

fn code(secret: &str, offset: i64) -> String {
    let t = (now() as i64 + offset * 30) as u64;
    sallyport_broker::totp::code(secret, t).unwrap()
}

/// `ssh node1.acme-prod COMMAND` as the engineer would run it from a script (no stdin).
fn ssh_exec(home: &std::path::Path, command: &str) -> std::process::Command {
    let mut c = Ssh::engineer(home)
        .args(["node1.acme-prod", command])
        .command();
    c.stdin(Stdio::null());
    c
}

async fn logged_in(w: &World, name: &str, secret: &str, offset: i64) -> Console {
    let mut c = Console::new(&w.broker.url);
    let p = c
        .login(name, &format!("{name}-password-1"), &code(secret, offset))
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), "/console/");
    c
}

/// A pending just-in-time request of alice on acme-prod; returns its id.
async fn pending_request(w: &World, ticket: &str) -> String {
    w.jit_tickets(&[(ticket, "alice")]).await;
    let alice = w.session("alice", 0).await;
    let (_, key) = engineer_key();
    let (s, v) = alice
        .post_as::<IssuePending>(
            "/v1/certificates",
            json!({"public_key": key, "ticket": ticket}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v:?}");
    v.request.id
}

/// The console accounts acme-boss (acme's approver) and globex-boss (globex's); their TOTP
/// secrets.
async fn approvers(w: &World) -> (String, String) {
    let boss = w.account("acme-boss", "approver", Some("acme")).await;
    let globex = w.account("globex-boss", "approver", Some("globex")).await;
    (boss, globex)
}

/// The access request `id` as acme's approver token reads it.
async fn request(w: &World, id: &str) -> AccessRequest {
    w.acme.get_ok(&format!("/v1/access-requests/{id}")).await
}

/// Who decided and the request's status after it, of an `access_request_decided` event.
fn decision(e: &AuditEntry) -> (String, String) {
    (
        field_str(e, "decided_by").to_string(),
        field_str(e, "status").to_string(),
    )
}

/// Who decided, of each `access_request_decided` event, in the order search gives them.
async fn decided_by(w: &World) -> Vec<String> {
    let decided = w.audit("kind=access_request_decided").await;
    decided.iter().map(|e| decision(e).0).collect()
}

/// Asserts that the gateway's `session_terminated` event of the session `query` selects
/// (`session=...` or `ticket=...`) names `by`.
async fn assert_terminated_by(w: &World, query: &str, by: &str) {
    let ended = w
        .wait_audit(&format!("kind=session_terminated&{query}"), 1)
        .await;
    assert!(!ended.is_empty(), "no session_terminated with {query}");
    assert_eq!(field_str(&ended[0], "terminated_by"), by);
}

#[tokio::test]
async fn console_login_cookie_csrf_headers_and_scope_hold() {
    let w = World::start(Dir::Ldap {
        group_mode: "memberof",
    })
    .await;
    let (boss, globex) = approvers(&w).await;
    let sec = w.account("sec-anna", "reviewer", None).await;
    let rq = pending_request(&w, "JIT-9").await;

    // Without a session every page sends the browser to log in.
    let anon = Console::new(&w.broker.url);
    for path in [
        "/console/",
        "/console/sessions",
        "/console/requests",
        "/console/approvals",
    ] {
        let p = anon.get(path).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(p.location(), "/console/login", "{path}");
    }
    // The login page: strict headers, a nonce bound to a cookie.
    let login = anon.get("/console/login").await;
    assert_eq!(login.status, StatusCode::OK);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(login.headers["x-frame-options"], "DENY");
    assert_eq!(login.headers["x-content-type-options"], "nosniff");
    assert_eq!(login.headers["cache-control"], "no-store");
    assert!(!login.body.contains("<script>"), "no inline script");
    // A login form posted without its nonce (from another site) is refused before any check.
    let p = anon
        .post(
            "/console/login",
            &[
                ("user", "acme-boss"),
                ("password", "acme-boss-password-1"),
                ("totp", &code(&boss, 0)),
            ],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.set_cookie("sallyport_console").is_none());

    // A wrong code: refused, said plainly, audited.
    let mut c = Console::new(&w.broker.url);
    let p = c.login("acme-boss", "acme-boss-password-1", "000000").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
    assert!(
        p.body.contains("Wrong user name, password or code"),
        "{}",
        p.body
    );
    assert!(c.cookie.is_none());
    let failed = w
        .picked("kind=account_login_failed", |e| match e {
            AuditEvent::AccountLoginFailed { account, .. } => Some(account),
            _ => None,
        })
        .await
        .into_iter()
        .filter(|a| a == "acme-boss")
        .count();
    assert!(failed >= 1);
    // An engineer (directory user) is no console account.
    let p = c.login("alice", "alice-pw", &w.code("alice", 1)).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);

    // The approver logs in: the cookie is HttpOnly, SameSite=Strict, for /console only.
    let mut acme = Console::new(&w.broker.url);
    let p = acme
        .login("acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let (_, set) = p.set_cookie("sallyport_console").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{set}");
    }
    let home = acme.get("/console/").await;
    assert_eq!(home.status, StatusCode::OK, "{}", w.broker.log_text());
    assert!(home.body.contains("acme-boss"), "{}", home.body);
    // The pending request is on the approver's page, not on another customer's.
    let page = acme.get("/console/requests").await;
    assert!(page.body.contains(&rq), "{}", page.body);
    let other = logged_in(&w, "globex-boss", &globex, 0).await;
    let page = other.get("/console/requests").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(&rq), "{}", page.body);

    // A decision without the CSRF token, with another session's token, or from another
    // origin is refused, audited, and changes nothing.
    let path = format!("/console/requests/{rq}/decision");
    let acme_csrf = acme.csrf().await;
    let other_csrf = other.csrf().await;
    assert_ne!(acme_csrf, other_csrf);
    for (form, headers) in [
        (vec![("decision", "approve")], vec![]),
        (
            vec![("decision", "approve"), ("csrf", other_csrf.as_str())],
            vec![],
        ),
        (
            vec![("decision", "approve"), ("csrf", acme_csrf.as_str())],
            vec![("origin", "http://evil.example")],
        ),
    ] {
        let p = acme.post(&path, &form, &headers).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{form:?} {headers:?}");
        assert!(p.body.contains("security token"), "{}", p.body);
    }
    let refused = w.refusals("decide_request").await;
    assert!(
        refused
            .iter()
            .filter(|r| r.by == "approver:acme:acme-boss")
            .count()
            >= 3,
        "{refused:#?}"
    );
    let r = request(&w, &rq).await;
    assert_eq!(r.status, RequestStatus::Pending, "{r:?}");
    // Another customer's approver cannot decide it, even with a valid form of their own.
    let p = other
        .post(
            &path,
            &[("decision", "approve"), ("csrf", &other_csrf)],
            &[("origin", &w.broker.url)],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    // A reviewer reads requests but cannot decide them.
    let reviewer = logged_in(&w, "sec-anna", &sec, 0).await;
    let page = reviewer.get("/console/requests").await;
    assert!(page.body.contains(&rq));
    assert!(!page.body.contains("Approve</button>"), "{}", page.body);
    let p = reviewer
        .post(
            &path,
            &[("decision", "approve"), ("csrf", &reviewer.csrf().await)],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let r = request(&w, &rq).await;
    assert_eq!(r.status, RequestStatus::Pending, "{r:?}");
    // The approver's own form decides it, in the approver's name, for a shorter time than
    // asked (the form offers only shorter ones; a longer one is refused).
    let page = acme.get("/console/requests").await;
    assert!(page.body.contains("name=\"ttl\""), "{}", page.body);
    let r = request(&w, &rq).await;
    let asked = r.ttl_secs;
    assert!(asked > 900, "{r:?}");
    let longer = (asked + 60).to_string();
    let p = acme
        .post(
            &path,
            &[
                ("decision", "approve"),
                ("csrf", &acme_csrf),
                ("ttl", &longer),
            ],
            &[("origin", &w.broker.url)],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("cannot lengthen"), "{}", p.body);
    let p = acme
        .post(
            &path,
            &[
                ("decision", "approve"),
                ("csrf", &acme_csrf),
                ("reason", "ok for JIT-9"),
                ("ttl", "900"),
            ],
            &[("origin", &w.broker.url)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let r = request(&w, &rq).await;
    assert_eq!(r.status, RequestStatus::Approved, "{r:?}");
    assert_eq!(r.ttl_secs, 900, "{r:?}");
    let decided = decided_by(&w).await;
    assert_eq!(decided.last().unwrap(), "approver:acme:acme-boss");

    // Approvals: an approver creates one on its own cluster, never on another customer's.
    let csrf = acme_csrf.clone();
    let form = |cluster: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("cluster", cluster.to_string()),
            ("group", "support-l1".to_string()),
            ("logins", "ubuntu, postgres".to_string()),
            ("max_session_minutes", "30".to_string()),
            ("valid_days", "7".to_string()),
        ]
    };
    let as_refs = |f: &Vec<(&'static str, String)>| {
        f.iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<(&str, String)>>()
    };
    let f = as_refs(&form("globex-prod"));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = acme.post("/console/approvals", &f, &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let f = as_refs(&form("acme-dev"));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = acme.post("/console/approvals", &f, &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let list: Vec<Approval> = w.acme.get_ok("/v1/approvals?cluster=acme-dev").await;
    let made = list
        .iter()
        .find(|a| a.group == "support-l1")
        .unwrap_or_else(|| panic!("{list:?}"))
        .clone();
    assert_eq!(made.logins, ["ubuntu", "postgres"]);
    assert_eq!(made.max_session_secs, 1800);
    assert_eq!(made.created_by, "approver:acme:acme-boss");
    // Bad input: a clear error, nothing made.
    let mut bad = as_refs(&form("acme-dev"));
    bad[5].1 = "soon".into();
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = acme.post("/console/approvals", &bad, &[]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("whole number"), "{}", p.body);
    // Globex's approver does not see acme's approvals.
    let page = other.get("/console/approvals").await;
    assert!(!page.body.contains("acme-dev"), "{}", page.body);
    // Withdraw from the page.
    let id = &made.id;
    acme.submit(&format!("/console/approvals/{id}/withdraw"), &acme_csrf)
        .await;
    let a: Approval = w.acme.get_ok(&format!("/v1/approvals/{id}")).await;
    assert_eq!(
        a.withdrawn_by.as_deref(),
        Some("approver:acme:acme-boss"),
        "{a:?}"
    );

    // Logout ends the session: the old cookie opens nothing any more.
    let old = acme.clone();
    let p = acme
        .post("/console/logout", &[("csrf", &acme_csrf)], &[])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let (v, _) = p.set_cookie("sallyport_console").unwrap();
    assert_eq!(v, "");
    let p = old.get("/console/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/console/login");
    assert!(
        w.broker_events("kind=console_logout").await.iter().any(
            |e| matches!(e, AuditEvent::ConsoleLogout { account, .. } if account == "acme-boss")
        )
    );
    // A made-up cookie opens nothing either, and is audited.
    let mut forged = Console::new(&w.broker.url);
    forged.cookie = Some(format!("spc_{}", "0".repeat(64)));
    assert_eq!(
        forged.get("/console/sessions").await.status,
        StatusCode::SEE_OTHER
    );
    assert!(!w.refusals("console_session").await.is_empty());
    // Disabling the account ends its console sessions at once.
    assert_eq!(
        w.op.post(
            "/v1/accounts/globex-boss/disable",
            json!({"reason": "left"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(other.get("/console/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_idle_console_session_ends() {
    let w = World::ldap_with("console = { idle_secs = 2 }\n").await;
    let sec = w.account("sec-ivo", "reviewer", None).await;
    let c = logged_in(&w, "sec-ivo", &sec, 0).await;
    assert_eq!(c.get("/console/").await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let p = c.get("/console/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/console/login");
}

/// In Chromium: a reviewer finds a recorded session and reads its commands; the approver of
/// the node's customer sees it too, another customer's approver does not.
#[tokio::test]
async fn in_chromium_a_reviewer_and_an_approver_read_a_recorded_session() {
    let (w, _b, home) = alice_at_the_edge().await;
    let sec = w.account("sec-lena", "reviewer", None).await;
    let (boss, globex) = approvers(&w).await;
    let out = Ssh::engineer(home.path())
        .args(["node1.acme-prod", "echo console-check-42"])
        .output();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("console-check-42"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = w.wait_audit("kind=session_ended&ticket=SUP-1234", 1).await;
    let session = ended[0].session.clone().unwrap();
    w.wait_audit("kind=command&ticket=SUP-1234", 1).await;

    let browser = Browser::start("in_chromium_a_reviewer_and_an_approver_read").await;
    let base = &w.broker.url;
    // A wrong code: the page says what to do.
    browser
        .submit_login(base, "sec-lena", "sec-lena-password-1", "000000")
        .await;
    browser.wait_for("Wrong user name, password or code").await;
    assert_eq!(browser.path().await, "/console/login");
    browser.shot("01-login-refused").await;
    browser
        .login(base, "sec-lena", "sec-lena-password-1", &code(&sec, 0))
        .await;
    browser.wait_path("/console/").await;
    browser.shot("02-overview").await;
    browser.click("nav a[href='/console/sessions']").await;
    browser.wait_path("/console/sessions").await;
    let text = browser.wait_for("SUP-1234").await;
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains("SUP-1234"), "{text}");
    browser.shot("03-sessions").await;
    browser
        .click(&format!("a[href='/console/sessions/{session}']"))
        .await;
    browser
        .wait_path(&format!("/console/sessions/{session}"))
        .await;
    let text = browser.wait_for("echo console-check-42").await;
    assert!(text.contains("exit_status: 0"), "{text}");
    assert!(text.contains("node1 in acme-prod"), "{text}");
    browser.shot("04-session").await;
    // Local time shown by the script, UTC kept on hover.
    let title = browser.attr_of("time", "title").await;
    assert!(title.ends_with("UTC"), "{title}");
    // The audit chains verify, the gateway's and the broker's.
    browser.click("nav a[href='/console/chains']").await;
    browser.wait_path("/console/chains").await;
    let text = browser.wait_for("all verified").await;
    assert!(text.contains("gateway:gw-"), "{text}");
    assert!(text.contains("broker"), "{text}");
    browser.shot("05-chains").await;
    // The access report, with its chart.
    browser.click("nav a[href='/console/report']").await;
    browser.wait_path("/console/report").await;
    let text = browser.wait_for("Sessions per day").await;
    assert!(text.contains("SUP-1234"), "{text}");
    browser.shot("05-report").await;
    // Logout from the header.
    browser.click(".who button[type=submit]").await;
    browser.wait_path("/console/login").await;
    // The approver of acme sees the session; globex's approver does not, and its direct link
    // is not found (and audited).
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    browser
        .goto(&format!("{base}/console/sessions/{session}"))
        .await;
    browser.wait_for("echo console-check-42").await;
    browser.shot("06-approver-session").await;
    // Only reviewers get the evidence-bundle link.
    assert!(browser.text().await.contains("Recordings"));
    assert!(!browser.text().await.contains("Download evidence bundle"));
    browser.close().await;
    // A reviewer downloads the session's evidence bundle from its page; an approver cannot.
    let reviewer = logged_in(&w, "sec-lena", &sec, 1).await;
    let page = reviewer.get(&format!("/console/sessions/{session}")).await;
    assert!(
        page.body.contains("Download evidence bundle"),
        "{}",
        page.body
    );
    let p = reviewer
        .get(&format!("/console/sessions/{session}/bundle"))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let header = |h: &str| {
        p.headers
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(header("content-type").contains("gzip"), "{:?}", p.headers);
    assert!(header("content-disposition").starts_with("attachment"));
    let boss_console = logged_in(&w, "acme-boss", &boss, 1).await;
    let p = boss_console
        .get(&format!("/console/sessions/{session}/bundle"))
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let other = logged_in(&w, "globex-boss", &globex, 0).await;
    // Chains are the reviewers' page.
    let p = other.get("/console/chains").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let list = other.get("/console/sessions").await;
    assert!(!list.body.contains(&session), "{}", list.body);
    let p = other.get(&format!("/console/sessions/{session}")).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(!p.body.contains("console-check-42"));
    w.assert_refused(&[("approver:globex:globex-boss", "console_session_page")])
        .await;
}

/// An approver ends a live session from the console: the engineer's ssh ends with who and why;
/// another customer's approver and the engineer cannot end it.
#[tokio::test]
async fn an_approver_ends_a_live_session_and_the_engineer_sees_who() {
    let (w, b, home) = alice_at_the_edge().await;
    let (boss, globex) = approvers(&w).await;
    // Written by the node's login, which cannot enter the test's private temp dirs.
    let marker = std::path::PathBuf::from(format!("/tmp/sp-console-end-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // A program of its own name, to look for on the node after the session is ended.
    let sleeper = format!("sleep 59.{}", std::process::id());
    let ssh = ssh_exec(
        home.path(),
        &format!("touch {}; {sleeper}", marker.display()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(start.elapsed().as_secs() < 30, "{}", b.gateway.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let started = w
        .wait_audit("kind=session_started&ticket=SUP-1234", 1)
        .await;
    let session = started[0].session.clone().unwrap();
    // The CLI lists it for acme's approver token, not for globex's.
    let out = w.acme.cli(&["sessions", "list", "--live", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let first: SessionSummary = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(first.session, session, "{listed}");
    assert!(first.live);
    let out = w.globex.cli(&["sessions", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&session));
    let acme = logged_in(&w, "acme-boss", &boss, 0).await;
    let live = acme.get("/console/sessions?open=1").await;
    assert!(live.body.contains(&session), "{}", live.body);
    let page = acme.get(&format!("/console/sessions/{session}")).await;
    assert!(page.body.contains("End session"), "{}", page.body);
    // Withdrawing the approval first shows what it would end: alice's certificate (by serial)
    // and this live session; another customer's approver finds no such approval.
    let approvals: Vec<Approval> = w.acme.get_ok("/v1/approvals").await;
    let approval = approvals[0].id.clone();
    let confirm = acme
        .get(&format!("/console/approvals/{approval}/withdraw"))
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let serial = field_str(&started[0], "serial");
    assert!(confirm.body.contains(serial), "{}", confirm.body);
    assert!(confirm.body.contains(&session), "{}", confirm.body);
    assert!(
        confirm.body.contains("and end 1 session(s)"),
        "{}",
        confirm.body
    );
    let approvals_page = acme.get("/console/approvals").await;
    assert!(
        approvals_page
            .body
            .contains(&format!("/console/approvals/{approval}/withdraw")),
        "{}",
        approvals_page.body
    );
    // Neither another customer's approver nor the engineer can end it.
    let other = logged_in(&w, "globex-boss", &globex, 0).await;
    let p = other
        .get(&format!("/console/approvals/{approval}/withdraw"))
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    assert!(!p.body.contains(&session));
    let path = format!("/console/sessions/{session}/terminate");
    let p = other
        .post(
            &path,
            &[("csrf", &other.csrf().await), ("reason", "mine now")],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    let alice = w.session("alice", 1).await;
    let (s, _) = alice
        .post(
            &format!("/v1/sessions/{session}/terminate"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Nobody but reviewers, approvers and the operator lists sessions; only a gateway reads
    // the ended ones; a form without its CSRF token ends nothing. Each refusal is audited.
    assert_eq!(alice.get("/v1/sessions").await.0, StatusCode::FORBIDDEN);
    assert_eq!(w.tickets.get("/v1/sessions").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        w.acme.get("/v1/gateway/terminations").await.0,
        StatusCode::FORBIDDEN
    );
    let p = acme.post(&path, &[("reason", "no token")], &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    w.assert_refused(&[
        ("engineer:alice", "list_sessions"),
        ("ticket-system:tickets", "list_sessions"),
        ("approver:acme:acme-admin", "gateway_terminations"),
        ("approver:acme:acme-boss", "terminate_session"),
    ])
    .await;
    // A reason is required.
    let csrf = acme.csrf().await;
    let p = acme
        .post(&path, &[("csrf", &csrf), ("reason", " ")], &[])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut ssh = ssh;
    assert!(ssh.try_wait().unwrap().is_none(), "the session ended early");
    // The approver ends it.
    let asked = std::time::Instant::now();
    let p = acme
        .post(
            &path,
            &[("csrf", &csrf), ("reason", "not during the freeze")],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let out = ssh.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&marker);
    eprintln!(
        "the session ended {:?} after the approver asked",
        asked.elapsed()
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("ended by approver:acme:acme-boss: not during the freeze"),
        "{said}"
    );
    assert!(!out.status.success());
    let asked = w.wait_audit("kind=session_termination_requested", 1).await;
    assert_eq!(field_str(&asked[0], "by"), "approver:acme:acme-boss");
    assert_eq!(asked[0].session.as_deref(), Some(session.as_str()));
    assert_terminated_by(&w, "ticket=SUP-1234", "approver:acme:acme-boss").await;
    // Ended on the node too: the program no longer runs there (the engineer could not have
    // left it behind), and the channel's recording is finished and reaches the broker.
    let start = std::time::Instant::now();
    loop {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &sleeper])
            .output()
            .unwrap();
        if !ps.status.success() {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 15,
            "still running on the node: {}\n{}",
            String::from_utf8_lossy(&ps.stdout),
            b.gateway.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fin = w
        .wait_audit(&format!("kind=recording_finished&session={session}"), 1)
        .await;
    let recording = field_str(&fin[0], "recording");
    w.wait_audit(&format!("kind=recording_stored&session={recording}"), 1)
        .await;
    // The access report lists the session with its command, as a page, CSV and JSON; the CSV
    // cannot carry a spreadsheet formula; another customer's report does not list it.
    let page = acme.get("/console/report").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&session), "{}", page.body);
    // With its chart: today's bar counts this session.
    assert!(page.body.contains("<svg id=\"chart\""), "{}", page.body);
    let today = &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10];
    assert!(
        page.body
            .contains(&format!("<title>{today}: 1 session(s), 1 command(s)")),
        "{}",
        page.body
    );
    let csv = acme
        .get("/console/report?cluster=acme-prod&days=1&format=csv")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let row = csv
        .body
        .lines()
        .find(|l| l.contains(&session))
        .unwrap_or_else(|| panic!("{}", csv.body));
    assert!(row.contains(&sleeper), "{row}");
    assert!(row.contains("\"alice\""), "{row}");
    let json = acme.get("/console/report?format=json").await;
    let v: AccessReport = serde_json::from_str(&json.body).unwrap();
    assert!(
        v.sessions
            .iter()
            .any(|s| s.session == session && s.engineer == "alice")
    );
    let theirs = other.get("/console/report?format=csv").await;
    assert!(!theirs.body.contains(&session), "{}", theirs.body);
    let p = other.get("/console/report?cluster=acme-prod").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    // Search is scoped the same way: acme's approver finds the command, globex's does not.
    let q: String = url::form_urlencoded::byte_serialize(sleeper.as_bytes()).collect();
    let p = acme.get(&format!("/console/search?q={q}")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains(&session), "{}", p.body);
    let p = other.get(&format!("/console/search?q={q}")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(!p.body.contains(&session), "{}", p.body);
    // The same report from the CLI with the customer's API token (GET /v1/report): CSV to a
    // file, JSON, and a table; another customer's token neither lists it nor reads acme-prod's.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.csv");
    let out = w.acme.cli(&[
        "report",
        "--cluster",
        "acme-prod",
        "--days",
        "1",
        "--format",
        "csv",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let csv_file = std::fs::read_to_string(&file).unwrap();
    assert!(
        csv_file.starts_with("session,started,ended,engineer"),
        "{csv_file}"
    );
    let row = csv_file
        .lines()
        .find(|l| l.contains(&session))
        .unwrap_or_else(|| panic!("{csv_file}"));
    assert!(row.contains(&sleeper), "{row}");
    let out = w.acme.cli(&["report", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: AccessReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.cluster, "all");
    assert!(v.sessions.iter().any(|s| s.session == session), "{v:?}");
    let out = w.acme.cli(&["report", "--since", "2020-01-01"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&session) && table.contains(&sleeper),
        "{table}"
    );
    let out = w.globex.cli(&["report", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&session));
    let out = w.globex.cli(&["report", "--cluster", "acme-prod"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    assert_eq!(alice.get("/v1/report").await.0, StatusCode::FORBIDDEN);
    // An ended session cannot be ended again.
    let p = acme
        .post(&path, &[("csrf", &csrf), ("reason", "again")], &[])
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    w.assert_refused(&[
        ("approver:globex:globex-boss", "terminate_session"),
        ("approver:globex:globex-admin", "report"),
        ("engineer:alice", "report"),
    ])
    .await;
}

/// In Chromium: the player replays an interactive session's screens, jumps to a command of the
/// timeline, finds text on screen; a channel without a pty shows its output.
#[tokio::test]
async fn in_chromium_the_player_replays_an_interactive_session() {
    use support::term::{tmux, wait_exit, wait_pane};
    let (w, _b, home) = alice_at_the_edge().await;
    let sec = w.account("sec-rita", "reviewer", None).await;
    let name = format!("sp-console-{}", std::process::id());
    tmux_shell(&name, home.path());
    let send = |keys: &[&str]| send_keys(&name, keys);
    send(&["echo first-marker-7781", "Enter"]);
    wait_pane(&name, "first-marker-7781", 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    send(&["printf 'second-%s\\n' marker-9931", "Enter"]);
    wait_pane(&name, "second-marker-9931", 1);
    send(&["exit", "Enter"]);
    wait_exit(&name);
    tmux(&["kill-session", "-t", &name]);
    let stored = w.wait_audit("kind=recording_stored&limit=100", 1).await;
    let recording = stored[0].session.clone().unwrap();
    // The broker's record of the recording names whose it is.
    assert_eq!(stored[0].engineer.as_deref(), Some("alice"), "{stored:#?}");
    assert_eq!(stored[0].ticket.as_deref(), Some("SUP-1234"));
    let session = recording.rsplit_once("-c").unwrap().0.to_string();

    let browser = Browser::start("in_chromium_the_player_replays").await;
    let base = &w.broker.url;
    browser
        .login(base, "sec-rita", "sec-rita-password-1", &code(&sec, 0))
        .await;
    let ready = || async {
        for _ in 0..100 {
            if browser
                .client
                .find(fantoccini::Locator::Css("#player[data-ready='1']"))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the player never loaded: {}", browser.text().await);
    };
    let screen = || async { browser.text_of("#screen").await };
    // Search a fragment of a typed command; the hit opens the replay at that moment.
    browser.click("nav a[href='/console/search']").await;
    browser.fill("#q", "marker-9931 printf").await;
    browser.click("form.search button[type=submit]").await;
    let text = browser.wait_for("printf 'second-%s\\n' marker-9931").await;
    assert!(!text.contains("echo first-marker-7781"), "{text}");
    browser.shot("00-search").await;
    let hit = browser.attr_of("a.hit-replay", "href").await;
    browser.click("a.hit-replay").await;
    browser
        .wait_path(&format!("/console/recordings/{recording}"))
        .await;
    ready().await;
    let at_hit = screen().await;
    assert!(
        at_hit.contains("second-marker-9931"),
        "{at_hit}\n{hit}\n{}\n{:#?}",
        w.fetch_recording(&recording).await,
        w.audit(&format!("kind=command&session={session}")).await
    );
    browser.shot("00-search-hit-replay").await;
    browser
        .goto(&format!("{base}/console/sessions/{session}"))
        .await;
    browser.wait_for("echo first-marker-7781").await;
    browser.shot("01-session").await;
    let href = browser.attr_of("a.replay-link", "href").await;
    assert!(href.contains("?t="), "{href}");
    browser.click("a.replay-link").await;
    browser
        .wait_path(&format!("/console/recordings/{recording}"))
        .await;
    ready().await;
    // Opened at the first command: it is on screen, the second is not yet.
    let at_first = screen().await;
    browser.shot("02-player-at-command").await;
    assert!(
        at_first.contains("echo first-marker-7781"),
        "{at_first}\n{}\n{}",
        browser.path().await,
        browser.text().await
    );
    assert!(!at_first.contains("second-marker-9931"), "{at_first}");
    browser.shot("02-player-at-command").await;
    // Find text on screen: jumps to where it appears.
    browser.fill("#find", "second-marker-9931").await;
    browser.click("#find-next").await;
    let found = screen().await;
    assert!(found.contains("second-marker-9931"), "{found}");
    let status = browser.text_of("#player-status").await;
    assert!(status.starts_with("Found"), "{status}");
    browser.shot("03-player-found").await;
    // Play from the start at 16x to the end: the last screen shows both commands.
    browser.click("#seek").await;
    browser
        .client
        .execute(
            "document.getElementById('speed').value = '16'; return true;",
            vec![],
        )
        .await
        .unwrap();
    browser.click("#play").await;
    let mut ended = String::new();
    for _ in 0..100 {
        ended = screen().await;
        let label = browser.text_of("#play").await;
        if label == "Play" && ended.contains("exit") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ended.contains("first-marker-7781") && ended.contains("second-marker-9931"),
        "{ended}"
    );
    browser.shot("04-player-end").await;
    browser.close().await;
    let reads = w.audit("kind=recording_read").await;
    assert!(
        reads
            .iter()
            .any(|e| field_str(e, "by") == "reviewer:sec-rita"),
        "{reads:#?}"
    );
}

/// In Chromium: a customer approver watches an engineer's interactive session live (what was
/// on screen before the watch began, then each new line as it happens), read-only and audited
/// once; another customer's approver, the engineer and non-gateways cannot watch or feed it;
/// the approver ends the session from the watch view.
#[tokio::test]
async fn in_chromium_an_approver_watches_a_live_session_and_ends_it() {
    use support::term::{tmux, wait_exit, wait_pane};
    let (w, _b, home) = alice_at_the_edge().await;
    let (boss, globex) = approvers(&w).await;
    let name = format!("sp-watch-{}", std::process::id());
    tmux_shell(&name, home.path());
    let send = |keys: &[&str]| send_keys(&name, keys);
    // Output the typed line does not contain, so each is seen only once it ran.
    send(&["printf 'before-%s\\n' watch-5521", "Enter"]);
    wait_pane(&name, "before-watch-5521", 1);
    let session = w.started_session("SUP-1234").await;

    let browser = Browser::start("in_chromium_an_approver_watches").await;
    let base = &w.broker.url;
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    browser.click("nav a[href='/console/sessions']").await;
    browser.wait_path("/console/sessions").await;
    browser
        .click(&format!("a[href='/console/sessions/{session}/watch']"))
        .await;
    browser
        .wait_path(&format!("/console/sessions/{session}/watch"))
        .await;
    let text = browser.wait_for("before-watch-5521").await;
    assert!(text.contains("Read-only"), "{text}");
    browser.shot("01-watching").await;
    // A line typed while the approver watches appears without reloading the page.
    send(&["printf 'during-%s\\n' watch-8812", "Enter"]);
    wait_pane(&name, "during-watch-8812", 1);
    let text = browser.wait_for("during-watch-8812").await;
    assert!(text.contains("Live: updated"), "{text}");
    assert_eq!(
        browser.path().await,
        format!("/console/sessions/{session}/watch")
    );
    browser.shot("02-live-update").await;
    // Watching is audited once, however often the view asks.
    let watched = w
        .wait_audit(&format!("kind=session_watched&session={session}"), 1)
        .await;
    assert_eq!(watched.len(), 1, "{watched:#?}");
    assert_eq!(field_str(&watched[0], "by"), "approver:acme:acme-boss");
    assert_eq!(field_str(&watched[0], "customer"), "acme");
    // The same from a terminal, with the customer's API token.
    let out = w.acme.cli(&["sessions", "watch", &session, "--once"]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("during-watch-8812") && shown.contains("live"),
        "{shown}"
    );
    let out = w.globex.cli(&["sessions", "watch", &session, "--once"]);
    assert!(!out.status.success(), "{out:?}");

    // Not another customer's approver (not found, audited), not the engineer, and only a
    // gateway reads the watched sessions or sends a live recording.
    let other = logged_in(&w, "globex-boss", &globex, 0).await;
    for path in ["watch", "live"] {
        let p = other
            .get(&format!("/console/sessions/{session}/{path}"))
            .await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}: {}", p.body);
        assert!(!p.body.contains("watch-5521"), "{}", p.body);
    }
    let alice = w.session("alice", 1).await;
    let (s, _) = alice.get(&format!("/v1/sessions/{session}/live")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        w.acme.get("/v1/gateway/watches").await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = w
        .acme
        .post(
            "/v1/gateway/live",
            json!({"session": session, "recording": format!("{session}-c0"), "header": "{}",
                   "at": 0, "data": "[0.1, \"o\", \"forged\"]\n"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    w.assert_refused(&[
        ("approver:globex:globex-boss", "watch_session"),
        ("engineer:alice", "watch_session"),
        ("approver:acme:acme-admin", "gateway_watches"),
        ("approver:acme:acme-admin", "gateway_live"),
    ])
    .await;

    // The approver ends the session from the watch view; the view says it has ended.
    browser.fill("#terminate-reason", "seen enough").await;
    browser.click("#terminate").await;
    wait_pane(&name, "seen enough", 1);
    wait_exit(&name);
    let _ = tmux(&["kill-session", "-t", &name]);
    browser
        .goto(&format!("{base}/console/sessions/{session}/watch"))
        .await;
    browser.wait_for("The session has ended").await;
    browser.shot("03-ended").await;
    browser.close().await;
    assert_terminated_by(&w, &format!("session={session}"), "approver:acme:acme-boss").await;
}

/// A moderated session: the approval requires that an approver of the customer watches each
/// session. Nothing runs until one does (the engineer reads why, and no port forward opens);
/// once an approver watches, the command runs and the wait is audited; with nobody joining, the
/// command is refused after `observer_wait_secs` and never ran.
#[tokio::test]
async fn a_moderated_session_waits_for_an_observer_before_anything_runs() {
    let (w, mut b, home) = alice_at_the_edge()
        .approval(json!({"observer_required": true}))
        .await;
    let marker = std::path::PathBuf::from(format!("/tmp/sp-moderated-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let ssh = ssh_exec(home.path(), &format!("touch {}", marker.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let session = w.started_session("SUP-1234").await;
    // Held: nothing ran after a while.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!marker.exists(), "the command ran before anyone watched");
    assert!(
        w.audit(&format!("kind=observer_joined&session={session}"))
            .await
            .is_empty()
    );
    // Another customer's approver watching does not release it (not found), nor does the
    // vendor's reviewer (the customer asked for one of its own).
    let (s, _) = w.globex.get(&format!("/v1/sessions/{session}/live")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for _ in 0..5 {
        let (s, _) = w
            .reviewer
            .get(&format!("/v1/sessions/{session}/live"))
            .await;
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!marker.exists(), "released by another customer's approver");
    // The approver's list says the session waits for a watcher.
    let boss = w.account("acme-boss", "approver", Some("acme")).await;
    let console = logged_in(&w, "acme-boss", &boss, 0).await;
    let p = console.get("/console/sessions?open=1").await;
    assert!(p.body.contains(&session), "{}", p.body);
    assert!(p.body.contains("needs a watcher"), "{}", p.body);
    // acme's approver watches: the command runs.
    let v: LiveView = w.acme.get_ok(&format!("/v1/sessions/{session}/live")).await;
    assert!(v.live);
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed().as_secs() < 20,
            "the command did not run once watched:\n{}",
            b.gateway.log_text()
        );
        // The watch view asks twice a second while open.
        let _ = w.acme.get(&format!("/v1/sessions/{session}/live")).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let out = ssh.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n{}", b.gateway.log_text());
    assert!(said.contains("waiting for one to join"), "{said}");
    let _ = std::fs::remove_file(&marker);
    let joined = w
        .wait_audit(&format!("kind=observer_joined&session={session}"), 1)
        .await;
    assert!(
        joined[0]
            .field("waited_secs")
            .and_then(Value::as_u64)
            .unwrap()
            >= 4,
        "{joined:#?}"
    );
    // Once an observer joined (and the session ended), the list no longer asks for one.
    let p = console.get("/console/sessions").await;
    assert!(p.body.contains(&session), "{}", p.body);
    assert!(!p.body.contains("needs a watcher"), "{}", p.body);
    let watched = w
        .wait_audit(&format!("kind=session_watched&session={session}"), 2)
        .await;
    let by: Vec<&str> = watched.iter().map(|e| field_str(e, "by")).collect();
    assert!(by.contains(&"approver:acme:acme-admin"), "{by:?}");
    assert!(by.contains(&"reviewer:security"), "{by:?}");
    let commands = w
        .wait_audit(&format!("kind=command&session={session}"), 1)
        .await;
    assert!(
        commands[0]
            .command
            .as_deref()
            .unwrap()
            .contains("sp-moderated"),
        "{commands:#?}"
    );

    // Nobody joins: refused after the wait, and it never ran.
    b.reconfigure_gateway("observer_wait_secs = 3\n");
    let out = ssh_exec(home.path(), &format!("touch {}", marker.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("no approver of the customer joined to watch the session within 3 s"),
        "{said}"
    );
    assert!(!marker.exists(), "the command ran with nobody watching");
    let refused = w
        .wait_audit("kind=channel_refused&ticket=SUP-1234", 1)
        .await;
    assert!(
        refused
            .iter()
            .any(|e| field_str(e, "code") == "no_observer"),
        "{refused:#?}"
    );
}

/// An approver writes the customer's own policy in the console: starts from an example (made
/// about its own cluster), a policy that does not check comes back with the error in place and
/// is not saved, a good one is saved, listed, audited, changed and deleted; another customer's
/// approver sees none of it, a reviewer reads it, and a form without its token changes nothing.
#[tokio::test]
async fn in_chromium_an_approver_writes_a_policy_and_a_wrong_one_is_shown_in_place() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    let (boss, globex) = approvers(&w).await;
    let sec = w.account("sec-ora", "reviewer", None).await;
    let browser = Browser::start("in_chromium_an_approver_writes_a_policy").await;
    let base = &w.broker.url;
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    browser.click("nav a[href='/console/policies']").await;
    browser.wait_path("/console/policies").await;
    browser.wait_for("No policy of your own yet").await;
    browser
        .click("a[href='/console/policies?example=no-file-transfer#editor']")
        .await;
    browser.wait_for("Check and save").await;
    let body = browser.value_of("#policy-body").await;
    assert!(body.contains("forbid"), "{body}");
    // A policy that does not parse: the error in place, the text kept, nothing saved.
    browser
        .fill(
            "#policy-body",
            "forbid (principal, action, resource) when { oops ",
        )
        .await;
    browser.click("#editor button[type=submit]").await;
    let text = browser.wait_for("Not saved:").await;
    assert!(text.contains("oops"), "{text}");
    browser.shot("01-policy-refused").await;
    // A good one is saved and listed.
    browser.fill("#policy-name", "no-root").await;
    browser
        .fill(
            "#policy-body",
            "@id(\"acme_no_root\")\n@message(\"acme does not allow root\")\nforbid (principal, action == Sallyport::Action::\"channel\", resource == Sallyport::Cluster::\"acme-prod\")\nwhen { context.login == \"root\" };",
        )
        .await;
    browser.click("#editor button[type=submit]").await;
    browser.wait_path("/console/policies").await;
    let text = browser.wait_for("saved by").await;
    assert!(
        text.contains("no-root") && text.contains("acme does not allow root"),
        "{text}"
    );
    browser.shot("02-policy-saved").await;
    browser.close().await;
    let saved = w.broker_events("kind=customer_policy_saved").await;
    assert!(
        saved.iter().any(
            |e| matches!(e, AuditEvent::CustomerPolicySaved { policy, by, .. }
            if policy == "no-root" && by == "approver:acme:acme-boss")
        ),
        "{saved:#?}"
    );
    // Another customer's approver sees none of it; a reviewer reads it, without forms.
    let other = logged_in(&w, "globex-boss", &globex, 0).await;
    let p = other.get("/console/policies").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("no-root"), "{}", p.body);
    let reviewer = logged_in(&w, "sec-ora", &sec, 0).await;
    let p = reviewer.get("/console/policies").await;
    assert!(
        p.body.contains("no-root") && !p.body.contains("Check and save"),
        "{}",
        p.body
    );
    // Deleting needs the form's token; with it, the policy is gone.
    let acme = logged_in(&w, "acme-boss", &boss, 1).await;
    let p = acme
        .post("/console/policies/no-root/delete", &[], &[])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let p = other
        .post(
            "/console/policies/no-root/delete",
            &[("csrf", &other.csrf().await)],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    let p = acme
        .post(
            "/console/policies/no-root/delete",
            &[("csrf", &acme.csrf().await)],
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = acme.get("/console/policies").await;
    assert!(!p.body.contains("saved by"), "{}", p.body);
}

/// The customer's whole story in Chromium: an approver creates a just-in-time approval that
/// needs two approvers; the engineer's `sallyport login` waits; two approvers approve (never
/// the same one twice); the engineer's ssh runs; the approver watches the live session, sees the
/// typed command appear and ends the session; the access report's CSV lists the command.
#[tokio::test]
async fn in_chromium_the_customers_story_from_approval_to_report() {
    use support::term::{tmux, wait_exit, wait_pane};
    let (w, port) = bastion::world_knowing_the_edge().await;
    w.ticket("SUP-4242", "acme-prod", "alice", "open").await;
    let b = bastion::start(&w, port).await;
    let boss = w.account("acme-boss", "approver", Some("acme")).await;
    let second = w.account("acme-second", "approver", Some("acme")).await;
    let base = &w.broker.url;
    let browser = Browser::start("in_chromium_the_customers_story").await;

    // 1. The approval: just in time, two approvers.
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    browser.click("nav a[href='/console/approvals']").await;
    browser.wait_path("/console/approvals").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#cluster"))
        .await
        .unwrap()
        .select_by_value("acme-prod")
        .await
        .unwrap();
    browser.fill("#group", "support-l2").await;
    browser.fill("#logins", bastion::LOGIN).await;
    browser.click("#just_in_time").await;
    browser.fill("#approvers_required", "2").await;
    browser.shot("01-new-approval").await;
    browser
        .click("form[action='/console/approvals'] button[type=submit]")
        .await;
    browser.wait_for("support-l2").await;
    browser.shot("02-approval-created").await;
    let approvals: Vec<Approval> = w.acme.get_ok("/v1/approvals").await;
    let approval = approvals
        .iter()
        .find(|a| a.group == "support-l2" && a.cluster == "acme-prod")
        .unwrap_or_else(|| panic!("no approval made: {approvals:#?}"));
    assert!(approval.just_in_time, "{approval:#?}");
    assert_eq!(approval.approvers_required, 2, "{approval:#?}");

    // 2. The engineer logs in: the login waits for the approvers.
    let home = tempfile::tempdir().unwrap();
    let mut login = w.spawn_login_cli(home.path(), "alice", "SUP-4242", &w.code("alice", 0), &[]);
    let requested = w
        .wait_audit("kind=access_request_created&ticket=SUP-4242", 1)
        .await;
    let request = field_str(&requested[0], "request").to_string();

    // 3. Two approvers approve; the first one cannot count twice.
    let approve =
        format!("form[action='/console/requests/{request}/decision'] button[value=approve]");
    browser.goto(&format!("{base}/console/requests")).await;
    browser.wait_for("SUP-4242").await;
    browser.shot("03-pending-request").await;
    browser.click(&approve).await;
    browser.wait_for("1 of 2").await;
    assert!(
        login.try_wait().unwrap().is_none(),
        "the login ended with one approval of two"
    );
    browser.click("form[action='/console/logout'] button").await;
    browser.wait_path("/console/login").await;
    browser
        .login(
            base,
            "acme-second",
            "acme-second-password-1",
            &code(&second, 0),
        )
        .await;
    browser.goto(&format!("{base}/console/requests")).await;
    browser.wait_for("SUP-4242").await;
    browser.click(&approve).await;
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decided = w
        .wait_audit("kind=access_request_decided&ticket=SUP-4242", 2)
        .await;
    let decided: Vec<(String, String)> = decided.iter().map(decision).collect();
    let by: Vec<&str> = decided.iter().map(|(by, _)| by.as_str()).collect();
    assert!(
        by.contains(&"approver:acme:acme-boss") && by.contains(&"approver:acme:acme-second"),
        "{decided:#?}"
    );
    assert!(
        decided.iter().any(|(_, status)| status == "approved"),
        "{decided:#?}"
    );

    // 4. The engineer works; the approver watches and sees the typed command appear.
    trust_edge(home.path(), &b);
    let name = format!("sp-story-{}", std::process::id());
    tmux_shell(&name, home.path());
    send_keys(&name, &["printf 'story-%s\\n' before", "Enter"]);
    wait_pane(&name, "story-before", 1);
    let session = w.started_session("SUP-4242").await;
    browser
        .goto(&format!("{base}/console/sessions/{session}/watch"))
        .await;
    browser.wait_for("story-before").await;
    send_keys(&name, &["echo story-typed-$((40+2))", "Enter"]);
    wait_pane(&name, "story-typed-42", 1);
    browser.wait_for("story-typed-42").await;
    browser.shot("04-watching").await;

    // 5. The approver ends it; the engineer's ssh ends with who and why.
    browser.fill("#terminate-reason", "story over").await;
    browser.click("#terminate").await;
    wait_pane(&name, "story over", 1);
    wait_exit(&name);
    let _ = tmux(&["kill-session", "-t", &name]);
    assert_terminated_by(
        &w,
        &format!("session={session}"),
        "approver:acme:acme-second",
    )
    .await;

    // 6. The access report: the page, and its CSV lists the command.
    browser.click("nav a[href='/console/report']").await;
    browser.wait_path("/console/report").await;
    browser.wait_for("alice").await;
    browser.shot("05-report").await;
    let csv_href = browser.attr_of("#csv", "href").await;
    browser.close().await;
    let console = logged_in(&w, "acme-second", &second, 1).await;
    let mut csv = String::new();
    for _ in 0..50 {
        let p = console.get(&csv_href.replace(base.as_str(), "")).await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        csv = p.body;
        if csv.contains("story-typed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let row = csv
        .lines()
        .find(|l| l.contains(&session))
        .unwrap_or_else(|| panic!("no row for the session: {csv}"));
    assert!(row.contains("echo story-typed-$((40+2))"), "{row}");
    assert!(row.contains("SUP-4242") && row.contains("alice"), "{row}");
}

/// Start a passkey login in the page's script context: the password step; the answer kept in
/// `window.__pk` for [`PASSKEY_FINISH`]. Returns `{ok, ceremony}` or `{ok: false, error}`.
const PASSKEY_START: &str = r#"
const [user, password, done] = arguments;
const form = document.getElementById("login-form");
window.__pkUser = user;
window.sallyportPasskeys.post("/console/login/passkey/start", {user, password, nonce: form.elements.nonce.value})
  .then(s => { window.__pk = s; done({ok: true, ceremony: s.ceremony}); })
  .catch(e => done({ok: false, error: e.message}));
"#;

/// Answer the challenge in `window.__pk` with the virtual authenticator (with the credential
/// `arguments[0]` when given, else one the broker allowed) and send it. Returns `{ok, body}` or
/// `{ok: false, error, body}`; `body` is what was sent (to replay it).
const PASSKEY_FINISH: &str = r#"
const [credentialId, done] = arguments;
const P = window.sallyportPasskeys, s = window.__pk;
const form = document.getElementById("login-form");
const pk = Object.assign({}, s.publicKey);
pk.challenge = P.b64urlToBuf(pk.challenge);
const allow = credentialId ? [{type: "public-key", id: credentialId}] : pk.allowCredentials;
pk.allowCredentials = allow.map(c => ({type: c.type, id: P.b64urlToBuf(c.id)}));
navigator.credentials.get({publicKey: pk}).then(cred => {
  const body = {user: window.__pkUser, nonce: form.elements.nonce.value, ceremony: s.ceremony, credential: {
    id: cred.id, rawId: P.bufToB64url(cred.rawId), type: cred.type,
    response: {
      authenticatorData: P.bufToB64url(cred.response.authenticatorData),
      clientDataJSON: P.bufToB64url(cred.response.clientDataJSON),
      signature: P.bufToB64url(cred.response.signature),
      userHandle: cred.response.userHandle ? P.bufToB64url(cred.response.userHandle) : null},
    extensions: {}}};
  return P.post("/console/login/passkey/finish", body)
    .then(() => done({ok: true, body}), e => done({ok: false, error: e.message, body}));
}).catch(e => done({ok: false, error: "browser: " + e.name + ": " + e.message}));
"#;

/// Send a captured finish body again from this login page (with its own nonce).
const PASSKEY_REPLAY: &str = r#"
const [body, done] = arguments;
body.nonce = document.getElementById("login-form").elements.nonce.value;
window.sallyportPasskeys.post("/console/login/passkey/finish", body)
  .then(() => done({ok: true}), e => done({ok: false, error: e.message}));
"#;

async fn js(browser: &Browser, script: &str, args: Vec<Value>) -> Value {
    browser.client.execute_async(script, args).await.unwrap()
}

/// acme-boss starts a passkey login (password given), and the broker sends a challenge; what
/// the page's script returned.
async fn passkey_start_as_boss(browser: &Browser) -> Value {
    let start = js(
        browser,
        PASSKEY_START,
        vec![json!("acme-boss"), json!("acme-boss-password-1")],
    )
    .await;
    assert_eq!(start["ok"], true, "{start}");
    start
}

/// The `account_login_failed` events of `account`.
async fn failures_of(w: &World, account: &str) -> Vec<AuditEntry> {
    let mut ev = w.audit("kind=account_login_failed").await;
    ev.retain(|e| field_str(e, "account") == account);
    ev
}

/// The code of the newest `account_login_failed` event of `account` (after `after` such
/// events).
async fn login_failure(w: &World, account: &str, after: usize) -> String {
    let ev = failures_of(w, account).await;
    assert!(
        ev.len() > after,
        "no new login failure of {account}: {ev:#?}"
    );
    let newest = ev.iter().max_by_key(|e| e.seq).unwrap();
    field_str(newest, "code").to_string()
}

/// The `admin_change` events as (action, by, target).
async fn admin_changes(w: &World) -> Vec<(String, String, String)> {
    w.picked("kind=admin_change", |e| match e {
        AuditEvent::AdminChange {
            action, by, target, ..
        } => Some((action, by, target)),
        _ => None,
    })
    .await
}

async fn log_out(browser: &Browser, base: &str) {
    browser.goto(&format!("{base}/console/")).await;
    browser.click(".who button[type=submit]").await;
    browser.wait_for("Log in").await;
    browser.goto(&format!("{base}/console/login")).await;
    browser.wait_for("Log in with a passkey").await;
}

#[tokio::test]
async fn in_chromium_an_approver_adds_a_passkey_and_logs_in_with_it_and_attacks_are_refused() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    let boss = w.account("acme-boss", "approver", Some("acme")).await;
    let anna = w.account("sec-anna", "reviewer", None).await;
    // WebAuthn needs a domain name: the browser opens localhost, which it maps to 127.0.0.1.
    let base = &w.broker.url.replace("127.0.0.1", "localhost");
    let browser = Browser::start_localhost("in_chromium_passkeys").await;
    let authenticator = browser.add_virtual_authenticator().await;
    browser
        .login(base, "acme-boss", "acme-boss-password-1", &code(&boss, 0))
        .await;
    browser.click("a.account[href='/console/account']").await;
    browser.wait_for("No passkey yet").await;
    browser.shot("01-account-no-passkey").await;

    // Adding a passkey without the password typed again (a stolen cookie): refused, audited,
    // and the authenticator was never asked.
    browser.fill("#passkey-name", "Work laptop").await;
    browser.fill("#passkey-password", "not-my-password").await;
    browser.click("#passkey-add").await;
    let text = browser.wait_for("Not added:").await;
    assert!(text.contains("wrong password"), "{text}");
    assert!(
        browser
            .authenticator_credentials(&authenticator)
            .await
            .is_empty()
    );
    let refused = w.refusals("register_passkey").await;
    assert!(
        refused
            .iter()
            .any(|r| r.by == "approver:acme:acme-boss" && r.reason.contains("wrong password")),
        "{refused:#?}"
    );
    let f = login_failure(&w, "acme-boss", 0).await;
    assert_eq!(f, "bad_credentials");
    browser.shot("02-passkey-refused").await;

    // With the password: added, listed, audited naming the account.
    browser
        .fill("#passkey-password", "acme-boss-password-1")
        .await;
    browser.click("#passkey-add").await;
    browser.wait_for("Remove").await;
    assert_eq!(browser.text_of(".passkey-name").await, "Work laptop");
    let creds = browser.authenticator_credentials(&authenticator).await;
    assert_eq!(creds.len(), 1, "{creds:#?}");
    assert_eq!(creds[0]["rpId"], "localhost");
    let boss_cred = creds[0]["credentialId"].as_str().unwrap().to_string();
    let changes = admin_changes(&w).await;
    assert!(
        changes
            .iter()
            .any(|(action, by, target)| action == "register_passkey"
                && by == "approver:acme:acme-boss"
                && target.starts_with("acme-boss passkey pk_")),
        "{changes:#?}"
    );
    browser.shot("03-passkey-added").await;
    browser.resize(390, 844).await;
    browser.shot("04-passkey-added-phone").await;
    browser.resize(1280, 900).await;

    // Log out; a wrong password with the passkey button: refused before any challenge (the
    // authenticator signs nothing), said plainly, audited like a login with a code.
    log_out(&browser, base).await;
    browser.shot("05-login-with-passkey-button").await;
    let failures = failures_of(&w, "acme-boss").await.len();
    browser.fill("#user", "acme-boss").await;
    browser.fill("#password", "wrong-password").await;
    browser.click("#passkey-login").await;
    let text = browser.wait_for("wrong user name or password").await;
    assert!(!text.contains("Log out"), "{text}");
    let f = login_failure(&w, "acme-boss", failures).await;
    assert_eq!(f, "bad_credentials");
    let creds = browser.authenticator_credentials(&authenticator).await;
    let sign_count = creds[0]["signCount"].as_u64().unwrap();
    browser.shot("06-passkey-wrong-password").await;

    // The right password, then the passkey: logged in, audited with the method.
    browser.fill("#password", "acme-boss-password-1").await;
    browser.click("#passkey-login").await;
    browser.wait_for("Log out").await;
    assert_eq!(browser.path().await, "/console/");
    let creds = browser.authenticator_credentials(&authenticator).await;
    assert!(creds[0]["signCount"].as_u64().unwrap() > sign_count);
    let ok = w
        .picked("kind=account_login_succeeded", |e| match e {
            AuditEvent::AccountLoginSucceeded {
                account, method, ..
            } if account == "acme-boss" => Some(method),
            _ => None,
        })
        .await;
    assert!(
        ok.iter().any(|m| m.as_deref() == Some("passkey")),
        "{ok:#?}"
    );
    assert!(ok.iter().any(|m| m.as_deref() == Some("totp")), "{ok:#?}");

    // A replayed answer: the challenge worked once.
    log_out(&browser, base).await;
    passkey_start_as_boss(&browser).await;
    let done = js(&browser, PASSKEY_FINISH, vec![Value::Null]).await;
    assert_eq!(done["ok"], true, "{done}");
    let body = done["body"].clone();
    log_out(&browser, base).await;
    let failures = failures_of(&w, "acme-boss").await.len();
    let replay = js(&browser, PASSKEY_REPLAY, vec![body]).await;
    assert_eq!(replay["ok"], false, "{replay}");
    assert!(
        replay["error"].as_str().unwrap().contains("already used"),
        "{replay}"
    );
    let f = login_failure(&w, "acme-boss", failures).await;
    assert_eq!(f, "passkey_challenge_unknown");

    // Another account's passkey (sec-anna's, in the same authenticator) for acme-boss's login.
    browser
        .login(base, "sec-anna", "sec-anna-password-1", &code(&anna, 0))
        .await;
    browser.goto(&format!("{base}/console/account")).await;
    browser.fill("#passkey-name", "Anna's phone").await;
    browser
        .fill("#passkey-password", "sec-anna-password-1")
        .await;
    browser.click("#passkey-add").await;
    browser.wait_for("Remove").await;
    let creds = browser.authenticator_credentials(&authenticator).await;
    assert_eq!(creds.len(), 2, "{creds:#?}");
    let anna_cred = creds
        .iter()
        .map(|c| c["credentialId"].as_str().unwrap().to_string())
        .find(|c| *c != boss_cred)
        .unwrap();
    log_out(&browser, base).await;
    let failures = failures_of(&w, "acme-boss").await.len();
    passkey_start_as_boss(&browser).await;
    let done = js(&browser, PASSKEY_FINISH, vec![json!(anna_cred)]).await;
    assert_eq!(done["ok"], false, "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("another account"),
        "{done}"
    );
    let f = login_failure(&w, "acme-boss", failures).await;
    assert_eq!(f, "passkey_of_another_account");

    // A signature counter that went back (the stored one moved ahead, as after a copy of the
    // credential was used elsewhere): refused, audited.
    {
        use sqlx::Row;
        let mut db = w.store_db().await;
        let row = sqlx::query("SELECT id, passkey FROM passkeys WHERE account = 'acme-boss'")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let (id, text): (String, String) = (row.get(0), row.get(1));
        let mut pk: Value = serde_json::from_str(&text).unwrap();
        assert!(pk["cred"]["counter"].as_u64().unwrap() > 0, "{pk}");
        pk["cred"]["counter"] = json!(1_000_000);
        sqlx::query("UPDATE passkeys SET passkey = $1 WHERE id = $2")
            .bind(pk.to_string())
            .bind(&id)
            .execute(&mut db)
            .await
            .unwrap();
    }
    browser.goto(&format!("{base}/console/login")).await;
    browser.wait_for("Log in with a passkey").await;
    passkey_start_as_boss(&browser).await;
    let done = js(&browser, PASSKEY_FINISH, vec![Value::Null]).await;
    assert_eq!(done["ok"], false, "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("counter went back"),
        "{done}"
    );
    let f = login_failure(&w, "acme-boss", failures + 1).await;
    assert_eq!(f, "passkey_counter_regressed");
    let failures = failures_of(&w, "acme-boss").await.len();

    // An expired challenge (its deadline moved into the past in the store).
    browser.goto(&format!("{base}/console/login")).await;
    browser.wait_for("Log in with a passkey").await;
    let start = passkey_start_as_boss(&browser).await;
    {
        let mut db = w.store_db().await;
        let r = sqlx::query("UPDATE passkey_ceremonies SET expires_at = 0 WHERE id = $1")
            .bind(start["ceremony"].as_str().unwrap())
            .execute(&mut db)
            .await
            .unwrap();
        assert_eq!(r.rows_affected(), 1);
    }
    let done = js(&browser, PASSKEY_FINISH, vec![Value::Null]).await;
    assert_eq!(done["ok"], false, "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("expired"),
        "{done}"
    );
    let f = login_failure(&w, "acme-boss", failures).await;
    assert_eq!(f, "passkey_challenge_expired");

    // A passkey removed (on another device's session) while its challenge was out: refused.
    passkey_start_as_boss(&browser).await;
    let other = logged_in(&w, "acme-boss", &boss, 1).await;
    let page = other.get("/console/account").await;
    assert!(page.body.contains(">Work laptop<"), "{}", page.body);
    let at = page.body.find("/console/account/passkeys/pk_").unwrap();
    let action = &page.body[at..at + page.body[at..].find('"').unwrap()];
    let csrf = other.csrf().await;
    let p = other.post(action, &[("csrf", &csrf)], &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let changes = admin_changes(&w).await;
    assert!(
        changes
            .iter()
            .any(|(action, by, _)| action == "remove_passkey" && by == "approver:acme:acme-boss"),
        "{changes:#?}"
    );
    assert!(
        !other
            .get("/console/account")
            .await
            .body
            .contains(">Work laptop<")
    );
    let done = js(&browser, PASSKEY_FINISH, vec![Value::Null]).await;
    assert_eq!(done["ok"], false, "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("not registered"),
        "{done}"
    );
    let f = login_failure(&w, "acme-boss", failures + 1).await;
    assert_eq!(f, "unknown_passkey");
    // And with none left, the passkey button says to use the code.
    browser.fill("#user", "acme-boss").await;
    browser.fill("#password", "acme-boss-password-1").await;
    browser.click("#passkey-login").await;
    browser.wait_for("no passkey is registered").await;
    browser.shot("07-no-passkey-left").await;
    browser.close().await;
}

#[tokio::test]
async fn passkey_json_endpoints_refuse_before_any_challenge() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    let boss = w.account("acme-boss", "approver", Some("acme")).await;
    let anon = Console::new(&w.broker.url);
    let (nonce, cookie) = anon.login_nonce().await;
    let start = |password: &str, nonce: &str| json!({"user": "acme-boss", "password": password, "nonce": nonce});
    // No login-form nonce (a request from another site): refused before the password.
    let p = anon
        .post_json(
            "/console/login/passkey/start",
            &start("acme-boss-password-1", "forged"),
            &[("sallyport_login", &cookie)],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    // A wrong password: 401, no challenge, audited as a login failure.
    let p = anon
        .post_json(
            "/console/login/passkey/start",
            &start("wrong", &nonce),
            &[("sallyport_login", &cookie)],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
    assert!(!p.body.contains("challenge"), "{}", p.body);
    assert_eq!(login_failure(&w, "acme-boss", 0).await, "bad_credentials");
    // The right password but no passkey: said, audited, no challenge.
    let p = anon
        .post_json(
            "/console/login/passkey/start",
            &start("acme-boss-password-1", &nonce),
            &[("sallyport_login", &cookie)],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("no passkey is registered"), "{}", p.body);
    assert_eq!(login_failure(&w, "acme-boss", 1).await, "no_passkey");
    // An answer to a challenge that was never issued: refused and audited.
    let p = anon
        .post_json(
            "/console/login/passkey/finish",
            &json!({"user": "acme-boss", "nonce": nonce, "ceremony": "made-up", "credential": {}}),
            &[("sallyport_login", &cookie)],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
    assert_eq!(
        login_failure(&w, "acme-boss", 2).await,
        "passkey_challenge_unknown"
    );
    // Adding a passkey: the session's CSRF token and the password are both required.
    let c = logged_in(&w, "acme-boss", &boss, 0).await;
    let csrf = c.csrf().await;
    let p = c
        .post_json(
            "/console/account/passkeys/start",
            &json!({"csrf": "forged", "name": "Laptop", "password": "acme-boss-password-1"}),
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let p = c
        .post_json(
            "/console/account/passkeys/start",
            &json!({"csrf": csrf, "name": "Laptop", "password": "stolen-cookie-only"}),
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("wrong password"), "{}", p.body);
    let refused = w.refusals("register_passkey").await;
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.by == "approver:acme:acme-boss")
            .count(),
        2,
        "{refused:#?}"
    );
    // With both: a registration challenge for this relying party and this account.
    let p = c
        .post_json(
            "/console/account/passkeys/start",
            &json!({"csrf": csrf, "name": "Laptop", "password": "acme-boss-password-1"}),
            &[],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let v: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(v["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(v["publicKey"]["user"]["name"], "acme-boss");
    // A made-up answer to it: refused, audited, nothing stored; the challenge is spent.
    let bad = json!({"csrf": csrf, "ceremony": v["ceremony"], "credential": {"id": "x"}});
    let p = c
        .post_json("/console/account/passkeys/finish", &bad, &[])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    let p = c
        .post_json("/console/account/passkeys/finish", &bad, &[])
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("already used"), "{}", p.body);
    assert!(
        c.get("/console/account")
            .await
            .body
            .contains("No passkey yet")
    );
}
