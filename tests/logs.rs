//! What the edge and the gateway log about a session: each line inside a session names it (the
//! gateway's `session{id node engineer}` span, the edge's `connection{peer engineer}`), with the
//! same session id as the audit log, and nothing written to a file carries terminal colours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::bastion::{self, ssh};
use support::broker::assert_printed;

/// The first line of `log` that contains `needle`; panics with the whole log if none does.
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
}

#[tokio::test]
async fn a_sessions_log_lines_name_the_session_the_node_and_the_engineer() {
    let (w, b, home) = bastion::alice_at_the_edge().await;

    let out = ssh(home.path(), &["node1.acme-prod", "echo logged"]);
    assert_printed(&out, "logged", "");
    let started = w.audit("kind=session_started&engineer=alice").await;
    assert_eq!(started.len(), 1, "{started:?}");
    let session = started[0].session.clone().unwrap();

    // The gateway: the session's start and end, each inside the session's span.
    assert!(
        b.gateway.wait_log("session ended", Duration::from_secs(30)),
        "{}",
        b.gateway.log_text()
    );
    let log = b.gateway.log_text();
    let span = format!("session{{id={session} node=node1.acme-prod engineer=alice}}");
    for what in ["session started", "session ended"] {
        let line = line_with(&log, what);
        assert!(line.contains(&span), "{span} not in {line:?}");
    }
    assert!(line_with(&log, "session started").contains("login="));

    // The edge: the engineer's connection from its address, and once logged in, by name.
    assert!(
        b.edge.wait_log(
            "the engineer closed the connection",
            Duration::from_secs(30)
        ),
        "{}",
        b.edge.log_text()
    );
    let log = b.edge.log_text();
    let authenticated = line_with(&log, "engineer authenticated at the edge");
    assert!(
        authenticated.contains("connection{peer=127.0.0.1:"),
        "{authenticated:?}"
    );
    let closed = line_with(&log, "the engineer closed the connection");
    assert!(
        closed.contains("connection{peer=127.0.0.1:") && closed.contains(" engineer=alice}"),
        "{closed:?}"
    );

    // Logs written to a file carry no terminal colour codes.
    for (who, log) in [("gateway", b.gateway.log_text()), ("edge", log)] {
        assert!(
            !log.contains('\u{1b}'),
            "{who} log has escape codes:\n{log}"
        );
    }
}
