//! Evidence an outsider can check: a real session (ssh through the edge and the gateway) exported
//! as a signed bundle by ticket and by session, verified offline with the broker stopped, and
//! every change to a recording, an event or the manifest named by `audit verify --bundle`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::StatusCode;
use sallyport_api::admin::TokenCreated;
use sallyport_api::audit::BrokerAuditKey;
use sallyport_audit::bundle::Manifest;
use sallyport_broker::audit::AuditEvent;
use serde_json::Value;
use support::bastion::{alice_at_the_edge, ssh};
use support::broker::output_text as text;
use support::broker::*;

/// `sallyport audit export --<by> <value> --out <out> [extra]` as `api`.
fn export(api: &Api, by: &str, value: &str, out: &Path, extra: &[&str]) -> Output {
    let by = format!("--{by}");
    let out = out.to_str().unwrap();
    api.cli(&[&["audit", "export", &by, value, "--out", out][..], extra].concat())
}

/// SUP-1234's one finished recording and its session, once the broker stored the recording
/// and the session ended.
async fn recorded_session(w: &World) -> (String, String) {
    let fin = w
        .wait_audit("kind=recording_finished&ticket=SUP-1234", 1)
        .await;
    assert_eq!(fin.len(), 1, "{fin:#?}");
    let recording = field_str(&fin[0], "recording").to_string();
    let session = fin[0].session.clone().unwrap();
    let stored = w
        .wait_audit(&format!("kind=recording_stored&session={recording}"), 1)
        .await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let ended = w
        .wait_audit(&format!("kind=session_ended&session={session}"), 1)
        .await;
    assert_eq!(ended.len(), 1);
    (recording, session)
}

/// `sallyport audit verify --bundle DIR [extra]`, with no broker in the environment.
fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["audit", "verify", "--bundle"])
        .arg(dir)
        .args(extra)
        .env_remove("SALLYPORT_BROKER")
        .env_remove("SALLYPORT_TOKEN")
        .env_remove("SALLYPORT_CONFIG")
        .output()
        .unwrap()
}

/// `verify` of a bundle that does not hold: it exits 1; what it printed.
fn verify_fails(dir: &Path, extra: &[&str]) -> String {
    let out = verify(dir, extra);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A copy of the bundle to tamper with.
fn copy(dir: &Path, to: &Path) -> PathBuf {
    let out = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    to.to_path_buf()
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn a_session_exported_as_a_bundle_verifies_offline_and_every_change_is_named() {
    let (mut w, b, home) = alice_at_the_edge().await;
    let out = ssh(
        home.path(),
        &["node1.acme-prod", "echo bundle-proof; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // The session's recording reaches the broker, which records its SHA-256.
    let (recording, session) = recorded_session(&w).await;
    let exits = w
        .wait_audit(&format!("kind=channel_exit&session={session}"), 1)
        .await;
    assert_eq!(exits.len(), 1);

    // Someone who is not a reviewer is refused, and it is audited.
    let (s, v) = w.acme.get("/v1/audit/export?ticket=SUP-1234").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    w.assert_refused(&[("approver:acme:acme-admin", "audit_export")])
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let out = export(
        &w.acme,
        "ticket",
        "SUP-1234",
        &tmp.path().join("refused"),
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reviewers"), "{}", text(&out));
    // Exactly one of ticket, session, customer.
    let (s, _) = w.reviewer.get("/v1/audit/export").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The broker's audit key is public; pin it, and the chains' keys, out of band.
    let key: BrokerAuditKey = w.anon.get_ok("/v1/audit/key").await;
    let out = w.reviewer.cli(&["audit", "keys"]);
    assert!(out.status.success(), "{}", text(&out));
    let pinned = tmp.path().join("trusted-keys");
    std::fs::write(&pinned, &out.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&key.public_key),
        "{}",
        text(&out)
    );

    // Export by ticket and by session.
    let by_ticket = tmp.path().join("by-ticket");
    let out = export(&w.reviewer, "ticket", "SUP-1234", &by_ticket, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("audit verify --bundle"),
        "{}",
        text(&out)
    );
    let by_session = tmp.path().join("by-session");
    let out = export(&w.reviewer, "session", &session, &by_session, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["recordings"], 1, "{summary}");
    // The export itself is audited.
    let exported = w
        .picked("kind=audit_exported", |e| match e {
            AuditEvent::AuditExported { selection, .. } => Some(selection),
            _ => None,
        })
        .await;
    assert_eq!(exported.len(), 2, "{exported:#?}");
    assert_eq!(exported[0].ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(exported[1].session.as_deref(), Some(session.as_str()));
    // By customer: every cluster of acme.
    let by_customer = tmp.path().join("by-customer");
    let out = export(&w.reviewer, "customer", "acme", &by_customer, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let (s, _) = w.reviewer.get("/v1/audit/export?customer=nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A directory that is not empty is not overwritten.
    let out = export(&w.reviewer, "ticket", "SUP-1234", &by_ticket, &[]);
    assert!(!out.status.success(), "{}", text(&out));

    // What the bundles hold.
    let rec_path = by_ticket.join(format!("recordings/{recording}.cast"));
    assert!(rec_path.exists());
    for dir in [&by_ticket, &by_session] {
        let m: Manifest = serde_json::from_value(manifest(dir)).unwrap();
        assert_eq!(m.broker_key, key.public_key, "{m:?}");
        let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
        let kinds: Vec<Value> = events
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        for kind in [
            "command",
            "channel_exit",
            "recording_finished",
            "recording_stored",
        ] {
            assert!(
                kinds.iter().any(|e| e["kind"] == kind),
                "{kind} missing in {}: {events}",
                dir.display()
            );
        }
        assert!(dir.join("index.html").exists());
        assert!(dir.join("chain/signatures.jsonl").exists());
    }
    let ticket_events = std::fs::read_to_string(by_ticket.join("events.jsonl")).unwrap();
    assert!(
        ticket_events.contains("certificate_issued"),
        "{ticket_events}"
    );
    let html = std::fs::read_to_string(by_ticket.join("index.html")).unwrap();
    assert!(
        html.contains("bundle-proof"),
        "the viewer shows the recording"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));

    // Offline: the broker and the data plane are stopped.
    drop(b);
    w.stop_broker();

    for dir in [&by_ticket, &by_session, &by_customer] {
        let out = verify(dir, &[]);
        assert!(out.status.success(), "{}", text(&out));
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(t.contains("OK: the bundle verifies"), "{t}");
        assert!(t.contains("taken from the bundle"), "{t}");
        assert!(t.contains("matches the SHA-256 the broker recorded"), "{t}");
        let out = verify(dir, &["--keys", pinned.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let out = verify(dir, &["--json", "--keys", pinned.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["key_from"], "keys_file");
        // Every selected gateway event is linked to a signed head of its chain.
        for c in v["chains"].as_array().unwrap() {
            if c["source"].as_str().unwrap().starts_with("gateway:") {
                assert_eq!(c["unsigned"], serde_json::json!([]), "{v}");
                assert!(c["signatures"].as_u64().unwrap() >= 1, "{v}");
            }
        }
    }
    let out = verify(&by_ticket, &["--require-signed"]);
    assert!(out.status.success(), "{}", text(&out));

    // One byte of the recording.
    let t = copy(&by_ticket, &tmp.path().join("t-rec"));
    flip_byte(&t.join(format!("recordings/{recording}.cast")), 40);
    let o = verify_fails(&t, &[]);
    assert!(
        o.contains(&format!("recordings/{recording}.cast: its SHA-256")),
        "{o}"
    );
    assert!(o.contains("the recording was altered"), "{o}");

    // One event: the command's text, in events.jsonl.
    let t = copy(&by_ticket, &tmp.path().join("t-event"));
    let events = std::fs::read_to_string(t.join("events.jsonl")).unwrap();
    let (n, line) = events
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("bundle-proof") && l.contains("\"command\""))
        .unwrap();
    let e: Value = serde_json::from_str(line).unwrap();
    let edited: String = events
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == n {
                l.replacen("bundle-proof", "bundle-proog", 1)
            } else {
                l.to_string()
            };
            format!("{l}\n")
        })
        .collect();
    std::fs::write(t.join("events.jsonl"), edited).unwrap();
    let v: Value = serde_json::from_str(&verify_fails(&t, &["--json"])).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["file"] == "events.jsonl"
                && p["problem"].as_str().unwrap().contains("SHA-256")),
        "{v}"
    );
    assert!(
        problems.iter().any(|p| p["file"] == "events.jsonl"
            && p["line"] == n + 1
            && p["source"] == e["source"]
            && p["seq"] == e["seq"]
            && p["problem"].as_str().unwrap().contains("altered")),
        "{v}"
    );
    let out = verify(&t, &[]);
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains(&format!(
            "events.jsonl line {} (event {}#{})",
            n + 1,
            e["source"].as_str().unwrap(),
            e["seq"]
        )),
        "{o}"
    );

    // One byte of the manifest.
    let t = copy(&by_ticket, &tmp.path().join("t-manifest"));
    let m = std::fs::read_to_string(t.join("manifest.json")).unwrap();
    std::fs::write(
        t.join("manifest.json"),
        m.replacen("\"SUP-1234\"", "\"SUP-1235\"", 1),
    )
    .unwrap();
    let o = verify_fails(&t, &[]);
    assert!(
        o.contains("manifest.sig: the signature does not verify"),
        "{o}"
    );

    // The manifest re-signed with another key: the pinned key refuses it.
    let other = sallyport_ca::keys::generate_ed25519("not the broker").unwrap();
    let t = copy(&by_ticket, &tmp.path().join("t-resigned"));
    let bytes = std::fs::read(t.join("manifest.json")).unwrap();
    std::fs::write(
        t.join("manifest.sig"),
        sallyport_ca::chainsig::sign_manifest(&other, &bytes).unwrap(),
    )
    .unwrap();
    let o = verify_fails(&t, &["--keys", pinned.to_str().unwrap()]);
    assert!(
        o.contains("manifest.sig: the manifest was signed with another key"),
        "{o}"
    );

    // A whole forgery: the other key in keys.txt and the manifest, hashes updated, re-signed.
    // Alone it is consistent; against the pinned keys, the replaced key is named.
    let t = copy(&by_ticket, &tmp.path().join("t-forged"));
    let other_line = other.public_key().to_openssh().unwrap();
    let other_line = other_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let keys = std::fs::read_to_string(t.join("keys.txt")).unwrap();
    let keys: String = keys
        .lines()
        .map(|l| {
            if l.starts_with("broker ") {
                format!("broker {other_line}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(t.join("keys.txt"), &keys).unwrap();
    let mut m = manifest(&t);
    m["broker_key"] = Value::String(other_line.clone());
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == "keys.txt" {
            use sha2::Digest;
            f["sha256"] = Value::String(hex::encode(sha2::Sha256::digest(keys.as_bytes())));
            f["size"] = keys.len().into();
        }
    }
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(t.join("manifest.json"), &bytes).unwrap();
    std::fs::write(
        t.join("manifest.sig"),
        sallyport_ca::chainsig::sign_manifest(&other, &bytes).unwrap(),
    )
    .unwrap();
    let o = verify_fails(&t, &["--keys", pinned.to_str().unwrap()]);
    assert!(o.contains("KEY REPLACED"), "{o}");
    // Even with the bundle's own keys, the broker's chain is not signed by the forged key.
    let o = verify_fails(&t, &[]);
    assert!(o.contains("chain/signatures.jsonl line"), "{o}");

    // A recording removed from the bundle: the event that names it says so.
    let t = copy(&by_ticket, &tmp.path().join("t-missing"));
    std::fs::remove_file(t.join(format!("recordings/{recording}.cast"))).unwrap();
    let o = verify_fails(&t, &[]);
    assert!(
        o.contains(&format!("names recording {recording}")) && o.contains("not in the bundle"),
        "{o}"
    );
}

/// An edge's chain of `edge_refused` records, the ticket of each given: the records of other
/// tickets between the selected ones are what links them to the batch's signed head.
fn edge_chain(source: &str, tickets: &[&str]) -> Vec<sallyport_audit::AuditRecord> {
    let mut out: Vec<sallyport_audit::AuditRecord> = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        let last = out.last();
        out.push(sallyport_audit::AuditRecord::next(
            source,
            last.map(|r| (r.seq, r.hash.as_str())),
            now() * 1000 + i as u64,
            "edge_refused",
            serde_json::json!({"edge": "edge-x", "cluster": "acme-prod", "engineer": "alice",
                               "ticket": t, "code": "untrusted_ca", "reason": format!("try {i}")}),
        ));
    }
    out
}

#[tokio::test]
async fn selected_events_are_linked_to_their_chains_signed_head_by_the_records_between() {
    let mut w = World::start(Dir::File(vec![])).await;
    let (s, v) =
        w.op.post(
            "/v1/tokens",
            serde_json::json!({"name": "edge-x", "role": "edge"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let edge = w
        .anon
        .with(&read_as::<TokenCreated>("a created token", v).token);
    let key = sallyport_ca::keys::generate_ed25519("edge audit").unwrap();
    // One batch, signed at its last record (#5): T-LINK's records are #2 and #4.
    let records = edge_chain(
        "edge:edge-x",
        &["OTHER-1", "T-LINK", "OTHER-2", "T-LINK", "OTHER-3"],
    );
    let (s, v) = edge
        .post("/v1/audit/records", signed_batch(&key, &records, None))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-link");
    let out = export(&w.reviewer, "ticket", "T-LINK", &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let links = std::fs::read_to_string(dir.join("chain/links.jsonl")).unwrap();
    let seqs: Vec<u64> = links
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 5], "{links}");
    w.stop_broker();

    let out = verify(&dir, &["--json", "--require-signed"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let edge_chain = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == "edge:edge-x")
        .unwrap()
        .clone();
    assert_eq!(edge_chain["events"], 2, "{v}");
    assert_eq!(edge_chain["links"], 2, "{v}");
    assert_eq!(edge_chain["segments"], 1, "{v}");

    // A linking record changed: named by its file, line and event.
    let t = copy(&dir, &tmp.path().join("t-link-edited"));
    let edited = links.replacen("OTHER-2", "OTHER-9", 1);
    std::fs::write(t.join("chain/links.jsonl"), edited).unwrap();
    let o = verify_fails(&t, &[]);
    assert!(
        o.contains("chain/links.jsonl line 1 (event edge:edge-x#3): hash does not match"),
        "{o}"
    );
    // A linking record removed: the selected event is no longer linked to the signature.
    let t = copy(&dir, &tmp.path().join("t-link-removed"));
    let kept: String = links.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(t.join("chain/links.jsonl"), kept).unwrap();
    let v: Value =
        serde_json::from_str(&verify_fails(&t, &["--json", "--require-signed"])).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["source"] == "edge:edge-x"
                && p["seq"] == 2
                && p["problem"].as_str().unwrap().contains("UNSIGNED")),
        "{v}"
    );
}

/// The bundle's viewer, opened from disk in Chromium that can reach no network, plays a
/// terminal session: before play the screen is empty, after it the command and its output are
/// on it, and the command's row in the events opens its moment in the player.
#[tokio::test]
async fn the_bundles_viewer_plays_a_terminal_session_offline_in_chromium() {
    let (w, b, home) = alice_at_the_edge().await;
    // An interactive shell: recorded as a terminal, its command with its moment.
    use support::term::{tmux, wait_exit, wait_pane};
    let name = format!("sp-viewer-{}", std::process::id());
    tmux_shell(&name, home.path());
    send_keys(&name, &["sleep 1; echo viewer-pty-$((6*7))", "Enter"]);
    wait_pane(&name, "viewer-pty-42", 1);
    tmux(&["send-keys", "-t", &name, "exit", "Enter"]);
    wait_exit(&name);
    let _ = tmux(&["kill-session", "-t", &name]);
    let (recording, session) = recorded_session(&w).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let out = export(&w.reviewer, "session", &session, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    drop(b);

    let browser = support::browser::Browser::start_offline("the_bundles_viewer_plays").await;
    browser
        .goto(&format!("file://{}", dir.join("index.html").display()))
        .await;
    let rec = format!("#rec-{recording}");
    browser.wait_for(&recording).await;
    let screen = browser.text_of(&format!("{rec} pre.screen")).await;
    assert!(
        !screen.contains("viewer-pty-42"),
        "shown before playing: {screen}"
    );
    browser.shot("01-opened").await;
    // Fast, then wait for the output on the terminal.
    browser
        .client
        .find(fantoccini::Locator::Css(&format!("{rec} select")))
        .await
        .unwrap()
        .select_by_value("16")
        .await
        .unwrap();
    browser.click(&format!("{rec} button.play")).await;
    let mut shown = String::new();
    for _ in 0..100 {
        shown = browser.text_of(&format!("{rec} pre.screen")).await;
        if shown.contains("viewer-pty-42") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(shown.contains("viewer-pty-42"), "never played: {shown}");
    browser.shot("02-played").await;
    // The command's moment from the events table: the player goes back to it.
    let end = browser.text_of(&format!("{rec} .clock")).await;
    let moment = format!("button.moment[data-recording='{recording}']");
    let at: f64 = browser.attr_of(&moment, "data-at").await.parse().unwrap();
    browser.click(&moment).await;
    let clock = browser.text_of(&format!("{rec} .clock")).await;
    let now: f64 = clock.split(' ').next().unwrap().parse().unwrap();
    assert!(
        (now - (at - 0.5).max(0.0)).abs() < 0.05 && clock != end,
        "{clock} (at {at}, end {end})"
    );
    browser.shot("03-moment").await;
    browser.close().await;
}
