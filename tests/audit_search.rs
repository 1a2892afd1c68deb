//! Full-text search over the audit log through the real broker (`GET /v1/audit/events?q=`) and
//! the real CLI (`sallyport audit search --command`), on SQLite or PostgreSQL
//! (SALLYPORT_TEST_STORE=postgres): commands typed in a real interactive ssh session, 100,000
//! seeded events, literal special characters, filters combined with text, paging, who may search.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use sallyport_api::audit::{AuditEntry, AuditEvents};
use sallyport_audit::AuditRecord;
use sallyport_audit::text::search_text;
use sallyport_broker::audit::AuditEvent;
use serde_json::{Value, json};
use support::bastion::alice_at_the_edge;
use support::broker::*;
use support::term::Term;

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A chain of records of `source` from (kind, data) pairs, `step_ms` apart from `start_ms`.
fn chain(
    source: &str,
    start_ms: u64,
    step_ms: u64,
    events: Vec<(&str, Value)>,
) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::with_capacity(events.len());
    for (i, (kind, data)) in events.into_iter().enumerate() {
        let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
        let r = AuditRecord::next(source, prev, start_ms + i as u64 * step_ms, kind, data);
        out.push(r);
    }
    out
}

async fn seed(w: &World, records: &[AuditRecord]) {
    let store = sallyport_broker::store::Store::connect(&w.broker.store)
        .await
        .unwrap();
    for batch in records.chunks(20_000) {
        store.import(batch).await.unwrap();
    }
    store.pool.close().await;
}

/// Every event the search API returns for `query`, following `next` from page to page.
async fn search_all(w: &World, query: &str) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(c) => format!("/v1/audit/events?{query}&before={}", enc(c)),
            None => format!("/v1/audit/events?{query}"),
        };
        let page: AuditEvents = w.reviewer.get_ok(&path).await;
        out.extend(page.events);
        match page.next {
            Some(c) => before = Some(c),
            None => return out,
        }
    }
}

fn keys(events: &[AuditEntry]) -> Vec<(u64, String, u64)> {
    events
        .iter()
        .map(|e| (e.time_ms, e.source.clone(), e.seq))
        .collect()
}

/// What a search must return, newest first: the seeded records whose indexed text contains
/// every word (ignoring case) and that pass `filter`.
fn expected(
    records: &[AuditRecord],
    q: &str,
    filter: impl Fn(&AuditRecord) -> bool,
) -> Vec<(u64, String, u64)> {
    let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    let mut out: Vec<(u64, String, u64)> = records
        .iter()
        .filter(|r| {
            search_text(&r.source, &r.kind, &r.data).is_some_and(|t| {
                let t = t.to_lowercase();
                words.iter().all(|w| t.contains(w.as_str()))
            }) && filter(r)
        })
        .map(|r| (r.time, r.source.clone(), r.seq))
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

const VOCABULARY: [&str; 12] = [
    "ls -la /var/log",
    "cd /srv/app",
    "tail -n 200 /var/log/syslog",
    "sudo systemctl status nginx",
    "df -h",
    "cat /etc/hosts",
    "grep -i error app.log",
    "ps aux | grep java",
    "kubectl get pods -n payments",
    "journalctl -u postgresql --since today",
    "free -m",
    "uptime",
];

/// 100,000 events of 1,000 sessions on two gateway chains: commands, lines on screen, file
/// operations and events without text; three sessions hold the needles.
fn world_of_events(start_ms: u64) -> Vec<AuditRecord> {
    let engineers = ["alice", "bob", "carol", "dave"];
    let mut per_source: Vec<Vec<(&str, Value)>> = vec![Vec::new(), Vec::new()];
    for s in 0..1000usize {
        let session = format!("s{s:04}");
        let engineer = engineers[s % 4];
        let ticket = format!("T-{}", s % 50);
        let (cluster, node) = if s % 3 == 0 {
            ("globex-prod", format!("db{}", s % 7))
        } else {
            ("acme-prod", format!("node{}", s % 5))
        };
        let subject = json!({"engineer": engineer, "ticket": ticket, "cluster": cluster,
            "node": node, "session": session});
        let with = |extra: Value| {
            let mut v = subject.clone();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let events = &mut per_source[s % 2];
        events.push(("session_started", with(json!({"login": "ops"}))));
        for i in 0..99usize {
            let text = match (s, i) {
                (17, 40) => "sudo systemctl restart nginx".to_string(),
                (523, 12) => "SUDO SystemCtl RESTART postgresql".to_string(),
                (800, 3) => "echo zqxj-needle-7f3a > /tmp/marker".to_string(),
                _ => VOCABULARY[(s * 7 + i) % VOCABULARY.len()].to_string(),
            };
            let ev = match i % 5 {
                0 | 1 => (
                    "command",
                    with(json!({"command": text, "via": "interactive"})),
                ),
                2 => (
                    "line_entered",
                    with(json!({"line": i, "shown": text, "via": "interactive"})),
                ),
                3 => (
                    "file_op",
                    with(
                        json!({"via": "sftp", "op": {"op": "open", "path": format!("/srv/data/{session}/f{i}.csv")}}),
                    ),
                ),
                _ => ("channel_exit", with(json!({"exit_status": 0}))),
            };
            // The needles are commands, whatever their slot.
            let ev = if matches!((s, i), (17, 40) | (523, 12) | (800, 3)) {
                (
                    "command",
                    with(json!({"command": text, "via": "interactive"})),
                )
            } else {
                ev
            };
            events.push(ev);
        }
    }
    let mut out = Vec::new();
    for (n, events) in per_source.into_iter().enumerate() {
        out.extend(chain(
            &format!("gateway:seed{n}"),
            start_ms + n as u64,
            10,
            events,
        ));
    }
    out
}

#[tokio::test]
async fn search_by_text_across_100000_seeded_events_finds_the_right_sessions() {
    let w = World::start(Dir::File(vec![])).await;
    let start_ms = sallyport_ca::clock::now_ms() - 86_400_000;
    let records = world_of_events(start_ms);
    assert_eq!(records.len(), 100_000);
    seed(&w, &records).await;

    let sessions = |events: &[AuditEntry]| -> BTreeSet<String> {
        events.iter().map(|e| e.session.clone().unwrap()).collect()
    };
    // A fragment of a command finds it, whatever the case, and words match in any order.
    for q in [
        "systemctl restart",
        "temctl rest",
        "RESTART SYSTEMCTL",
        "restart",
    ] {
        let got = search_all(&w, &format!("q={}&limit=100", enc(q))).await;
        assert_eq!(
            sessions(&got),
            BTreeSet::from(["s0017".to_string(), "s0523".to_string()]),
            "{q}"
        );
        assert_eq!(keys(&got), expected(&records, q, |_| true), "{q}");
        assert!(got.iter().all(|e| e.kind == "command"), "{q}");
    }
    let got = search_all(&w, "q=zqxj-needle").await;
    assert_eq!(sessions(&got), BTreeSet::from(["s0800".to_string()]));
    assert_eq!(
        got[0].command.as_deref(),
        Some("echo zqxj-needle-7f3a > /tmp/marker")
    );
    // Nothing matches only part of a word list.
    assert!(search_all(&w, "q=systemctl+zqxj").await.is_empty());
    // File paths are found too.
    let got = search_all(&w, &format!("q={}", enc("/srv/data/s0042/f13"))).await;
    assert_eq!(
        keys(&got),
        expected(&records, "/srv/data/s0042/f13", |_| true)
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, "file_op");

    // A common word, page by page (cursor paging, newest first), equals the expectation, with
    // the filters combined.
    let r = |r: &AuditRecord, f: &str| r.subject(f);
    type Filter = Box<dyn Fn(&AuditRecord) -> bool>;
    let mid = start_ms + 300_000;
    let cases: Vec<(&str, String, Filter)> = vec![
        ("nginx", String::new(), Box::new(|_| true)),
        (
            "var/log",
            "&engineer=bob".into(),
            Box::new(move |x| r(x, "engineer").as_deref() == Some("bob")),
        ),
        (
            "grep",
            "&ticket=T-7&kind=line_entered".into(),
            Box::new(move |x| r(x, "ticket").as_deref() == Some("T-7") && x.kind == "line_entered"),
        ),
        (
            "pods",
            "&cluster=globex-prod&node=db3".into(),
            Box::new(move |x| {
                r(x, "cluster").as_deref() == Some("globex-prod")
                    && r(x, "node").as_deref() == Some("db3")
            }),
        ),
        (
            "status",
            "&session=s0123".into(),
            Box::new(move |x| r(x, "session").as_deref() == Some("s0123")),
        ),
        (
            "cat /etc",
            format!(
                "&source=gateway:seed1&since={}&until={}",
                start_ms + 100_000,
                mid
            ),
            Box::new(move |x| {
                x.source == "gateway:seed1" && x.time >= start_ms + 100_000 && x.time < mid
            }),
        ),
        // Words shorter than three characters are found too (without the trigram index).
        ("df -h", String::new(), Box::new(|_| true)),
    ];
    for (q, filters, filter) in cases {
        let want = expected(&records, q, filter);
        assert!(!want.is_empty(), "{q} {filters}");
        let got = search_all(&w, &format!("q={}{filters}&limit=2500", enc(q))).await;
        assert_eq!(keys(&got), want, "{q} {filters}");
    }

    // The CLI: newest first, the same JSON objects; a full page says how to get the next.
    let out = w.reviewer.cli(&[
        "audit",
        "search",
        "--command",
        "systemctl restart",
        "--engineer",
        "bob",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["command"], "sudo systemctl restart nginx");
    assert_eq!(lines[0]["session"], "s0017");
    for k in [
        "kind", "time", "engineer", "ticket", "cluster", "node", "session",
    ] {
        assert!(lines[0].get(k).is_some(), "{k}");
    }
    let out = w
        .reviewer
        .cli(&["audit", "search", "--command", "uptime", "--limit", "3"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let cursor = err
        .trim()
        .strip_prefix("more events: add --before ")
        .unwrap_or_else(|| panic!("{err}"));
    let out = w.reviewer.cli(&[
        "audit",
        "search",
        "--command",
        "uptime",
        "--limit",
        "3",
        "--before",
        cursor,
        "--json",
    ]);
    assert!(out.status.success());
    let page2: Vec<AuditEntry> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(keys(&page2), expected(&records, "uptime", |_| true)[3..6]);
}

#[tokio::test]
async fn special_characters_in_the_query_are_literal_text() {
    let w = World::start(Dir::File(vec![])).await;
    let texts = [
        r#"echo "quoted" it"#,
        "rm -rf /tmp/x*",
        "rm -rf /tmp/xy",
        "grep -v foo:bar /etc/app.conf",
        "echo 100%_done",
        "echo 100x_done",
        "echo 100xydone",
        "SELECT a FROM t WHERE b NEAR c",
        "echo a OR b",
        "'; DROP TABLE audit_events; --",
        r"type C:\temp\new.txt",
        "echo {col}: ^start",
        "naïve ünïcode",
    ];
    let start_ms = sallyport_ca::clock::now_ms() - 3_600_000;
    let records = chain(
        "gateway:special",
        start_ms,
        1000,
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    "command",
                    json!({"command": t, "via": "exec", "session": format!("x{i}")}),
                )
            })
            .collect(),
    );
    seed(&w, &records).await;
    let queries = [
        r#""quoted""#,
        r#"""#,
        "quoted\"",
        "x*",
        "*",
        "-rf",
        "-v",
        "foo:bar",
        ":",
        "100%_done",
        "%",
        "_",
        "%_",
        "100_",
        "NEAR",
        "NEAR(",
        "a OR b",
        "OR",
        "AND",
        "'; DROP TABLE audit_events; --",
        "') OR 1=1 --",
        "\" OR \"\"=\"",
        r"C:\temp",
        r"\",
        r"\n",
        "{col}:",
        "^start",
        "NAïVE",
        "ünï",
    ];
    for q in queries {
        let got = search_all(&w, &format!("q={}", enc(q))).await;
        assert_eq!(keys(&got), expected(&records, q, |_| true), "query {q:?}");
    }
    // Spot checks of what the oracle says.
    let one = |q: &'static str| {
        let w = &w;
        async move {
            search_all(w, &format!("q={}", enc(q)))
                .await
                .iter()
                .map(|e| e.command.clone().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(one("x*").await, ["rm -rf /tmp/x*"]);
    assert_eq!(one("100%_done").await, ["echo 100%_done"]);
    assert_eq!(
        one("'; DROP TABLE audit_events; --").await,
        ["'; DROP TABLE audit_events; --"]
    );
    assert!(one("') OR 1=1 --").await.is_empty());
    assert_eq!(one(r#""quoted""#).await, [r#"echo "quoted" it"#]);
    // The table is still there, and everything in it.
    assert_eq!(w.audit("source=gateway:special").await.len(), texts.len());
    // A bad cursor or a query too long is a 400 naming the problem.
    for path in [
        "/v1/audit/events?q=x&before=yesterday".to_string(),
        format!("/v1/audit/events?q={}", "a+".repeat(17)),
        format!("/v1/audit/events?q={}", "a".repeat(513)),
    ] {
        let (s, e) = w.reviewer.get_err(&path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {e:?}");
        assert_eq!(e.code, "bad_request");
    }
}

#[tokio::test]
async fn reviewers_search_everything_approvers_their_own_clusters_others_are_refused() {
    let w = World::start(Dir::File(vec![("alice", "alice-pw", vec!["support-l2"])])).await;
    let records = chain(
        "gateway:g",
        sallyport_ca::clock::now_ms() - 1000,
        1,
        vec![
            (
                "command",
                json!({"command": "cat /etc/shadow", "via": "exec", "cluster": "acme-prod"}),
            ),
            (
                "command",
                json!({"command": "cat /etc/shadow.bak", "via": "exec", "cluster": "globex-prod"}),
            ),
            (
                "command",
                json!({"command": "cat /etc/shadow-", "via": "exec"}),
            ),
        ],
    );
    seed(&w, &records).await;
    for api in [&w.reviewer, &w.op] {
        let v: AuditEvents = api.get_ok("/v1/audit/events?q=shadow").await;
        assert_eq!(v.events.len(), 3);
    }
    // A customer's approver finds only what happened on its own clusters, by text or not, and
    // asking for another customer's cluster finds nothing.
    for (api, cluster, other) in [
        (&w.acme, "acme-prod", "globex-prod"),
        (&w.globex, "globex-prod", "acme-prod"),
    ] {
        for query in ["q=shadow", "kind=command", "engineer=alice&q=cat"] {
            let v: AuditEvents = api.get_ok(&format!("/v1/audit/events?{query}")).await;
            let found = &v.events;
            assert!(
                found.len() <= 1 && found.iter().all(|e| e.cluster.as_deref() == Some(cluster)),
                "{query}: {v:?}"
            );
        }
        let (_, v) = api.get_as::<AuditEvents>("/v1/audit/events?q=shadow").await;
        assert_eq!(v.events.len(), 1, "{v:?}");
        let (_, v) = api
            .get_as::<AuditEvents>(&format!("/v1/audit/events?q=shadow&cluster={other}"))
            .await;
        assert!(v.events.is_empty(), "{v:?}");
        let out = api.cli(&["audit", "search", "--command", "shadow", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.lines().count(), 1, "{printed}");
        assert!(printed.contains(cluster), "{printed}");
    }
    let before = w.audit("kind=refused").await.len();
    let engineer = w.session("alice", 0).await;
    for api in [&w.tickets, &engineer] {
        let (s, v) = api.get("/v1/audit/events?q=shadow").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(v.to_string().contains("reviewers"), "{v}");
        let out = api.cli(&["audit", "search", "--command", "shadow"]);
        assert!(!out.status.success());
    }
    assert_eq!(
        w.anon.get("/v1/audit/events?q=shadow").await.0,
        StatusCode::UNAUTHORIZED
    );
    let refused = w.broker_events("kind=refused").await;
    assert_eq!(refused.len(), before + 4, "{refused:#?}");
    assert!(
        refused[before..]
            .iter()
            .all(|e| matches!(e, AuditEvent::Refused { action, .. } if action == "audit_search"))
    );
}

#[tokio::test]
async fn a_command_typed_in_an_interactive_session_is_found_by_a_fragment_of_its_text() {
    let (w, _b, home) = alice_at_the_edge().await;
    let tag = format!("fts{}", std::process::id());
    let t = Term::ssh("search", home.path(), 120, 40, "");
    t.wait(":~$", 1);
    t.type_text(&format!("echo deploy-{tag} | tr a-z A-Z"));
    t.send(&["Enter"]);
    t.wait(&format!("DEPLOY-{}", tag.to_uppercase()), 1);
    t.type_text("exit");
    t.send(&["Enter"]);
    t.wait_exit();

    // A fragment of the line, in another case, finds the command and the line on screen.
    let q = format!("q={}", enc(&format!("PLOY-{tag} | TR")));
    let found = w.wait_audit(&q, 2).await;
    let command = found
        .iter()
        .find(|e| e.kind == "command")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(
        command.command.as_deref().unwrap().trim_end(),
        format!("echo deploy-{tag} | tr a-z A-Z")
    );
    assert_eq!(field_str(command, "via"), "interactive");
    assert_eq!(command.engineer.as_deref(), Some("alice"));
    assert_eq!(command.ticket.as_deref(), Some("SUP-1234"));
    assert!(found.iter().any(|e| e.kind == "line_entered"), "{found:#?}");
    assert!(found.iter().all(|e| e.session == command.session));
    // The same through the CLI.
    let out = w.reviewer.cli(&[
        "audit",
        "search",
        "--command",
        &format!("deploy-{tag}"),
        "--kind",
        "command",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!("command=\"echo deploy-{tag} | tr a-z A-Z")),
        "{text}"
    );
}
