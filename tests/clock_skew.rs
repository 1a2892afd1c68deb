//! Clocks that disagree: the edge or the gateway run with their clock moved (libfaketime),
//! against a broker and a node on the machine's clock. Certificates are backdated by 60 s: a
//! clock behind by less than that changes nothing; one further behind, or a gateway ahead of its
//! nodes, is refused with an audit event that names the clocks — and nothing runs on the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use sallyport_api::audit::AuditEntry;
use support::bastion::{self, Bastion, moved_clock, ssh};
use support::broker::*;

/// Alice logged in for SUP-1234, through an edge and a gateway (on the machine's clock).
async fn logged_in() -> (World, Bastion, tempfile::TempDir) {
    let (w, b, home) = bastion::alice_at_the_edge().audited().await;
    (w, b, home)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ssh node1 'echo MARK'` succeeds, prints MARK, and the command is in the audit log once.
async fn runs_and_is_recorded(w: &World, b: &Bastion, home: &Path, mark: &str) {
    let out = ssh(home, &["node1.acme-prod", &format!("echo {mark}")]);
    assert_printed(&out, mark, &b.logs());
    let cmds = w.wait_audit(&format!("kind=command&text={mark}"), 1).await;
    assert_eq!(cmds.len(), 1, "{cmds:#?}");
}

/// `ssh node1 'echo MARK'` is refused: nothing printed, ssh's exit status 255, the node never
/// saw the command.
fn refused(b: &Bastion, home: &Path, mark: &str) -> String {
    let out = ssh(home, &["node1.acme-prod", &format!("echo {mark}")]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(mark),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!b.node.log().contains(mark));
    stderr(&out)
}

/// The one event of `kind` from `source_prefix` whose `code` is `code`, waiting for it.
async fn refusal(w: &World, kind: &str, source_prefix: &str, code: &str) -> AuditEntry {
    let events = w.wait_audit(&format!("kind={kind}"), 1).await;
    let of: Vec<&AuditEntry> = events
        .iter()
        .filter(|e| e.source.starts_with(source_prefix))
        .filter(|e| opt_str(e, "code") == Some(code))
        .collect();
    assert!(!of.is_empty(), "no {kind} with code {code}: {events:#?}");
    of[0].clone()
}

/// The gateway restarted with its clock moved, its tunnel up again.
fn gateway_moved(b: &mut Bastion, offset: &str) {
    b.restart_gateway_with_env(&moved_clock(offset));
    assert!(
        b.gateway.wait_log("tunnel up", Duration::from_secs(30)),
        "{}",
        b.gateway.log_text()
    );
}

/// The edge refused the gateway's tunnel: it says which clock is ahead, in its log and its
/// audit log; the gateway's log says to check the clocks.
async fn tunnel_refused_for_the_clocks(w: &World, b: &Bastion) {
    assert!(
        b.edge
            .wait_log("gateway certificate refused", Duration::from_secs(30)),
        "{}",
        b.edge.log_text()
    );
    assert!(
        b.gateway.wait_log(
            "check that this gateway's clock agrees",
            Duration::from_secs(30)
        ),
        "{}",
        b.gateway.log_text()
    );
    let e = refusal(w, "edge_refused", "edge:", "gateway_certificate").await;
    assert!(
        field_str(&e, "reason").contains("the gateway's clock is ahead of the edge's"),
        "{e:?}"
    );
    assert_eq!(e.cluster.as_deref(), Some("acme-prod"), "{e:?}");
}

#[tokio::test]
async fn a_gateway_clock_behind_by_less_than_the_backdate_changes_nothing() {
    let (w, mut b, home) = logged_in().await;
    gateway_moved(&mut b, "-40s");
    runs_and_is_recorded(&w, &b, home.path(), "skew-inside-backdate").await;
}

#[tokio::test]
async fn a_gateway_clock_far_behind_refuses_the_certificate_and_says_check_the_clocks() {
    let (w, mut b, home) = logged_in().await;
    gateway_moved(&mut b, "-10m");
    refused(&b, home.path(), "skew-gateway-behind");
    // The edge let it through (its clock is right); the gateway refused it before any session
    // began, and says why.
    let e = refusal(&w, "session_refused", "gateway:", "not_yet_valid").await;
    assert!(
        field_str(&e, "reason").contains("check the clocks"),
        "{e:?}"
    );
    assert_eq!(field_str(&e, "key_ownership"), "not proven", "{e:?}");
    let started = w.events("kind=session_started").await;
    assert!(started.is_empty(), "{started:#?}");
    assert!(
        !b.node.log().contains("Accepted"),
        "the node saw a login: {}",
        b.node.log()
    );
    // With the gateway's clock right again, the same certificate works.
    b.restart_gateway();
    runs_and_is_recorded(&w, &b, home.path(), "skew-gateway-fixed").await;
}

#[tokio::test]
async fn a_gateway_clock_far_ahead_is_refused_at_the_edge_and_says_which_clock() {
    let (w, mut b, home) = logged_in().await;
    b.restart_gateway_with_env(&moved_clock("+5m"));
    tunnel_refused_for_the_clocks(&w, &b).await;
    let said = refused(&b, home.path(), "skew-gateway-ahead");
    assert!(
        said.contains("no gateway of cluster acme-prod is connected"),
        "{said}"
    );
    assert!(w.events("kind=session_started").await.is_empty());
}

#[tokio::test]
async fn an_edge_clock_far_behind_refuses_certificates_and_says_which_clock() {
    let (w, mut b, home) = logged_in().await;
    b.restart_edge_with_env("edge-2.log", &moved_clock("-10m"));
    // The gateway's tunnel certificate, made by a clock 10 minutes ahead of the edge's.
    tunnel_refused_for_the_clocks(&w, &b).await;
    // The engineer's certificate, from the broker's clock.
    refused(&b, home.path(), "skew-edge-behind");
    let e = refusal(&w, "edge_refused", "edge:", "not_yet_valid").await;
    assert!(
        field_str(&e, "reason").contains("check the clocks"),
        "{e:?}"
    );
    assert!(w.events("kind=session_started").await.is_empty());
    assert!(!b.node.log().contains("Accepted"), "{}", b.node.log());
}

#[tokio::test]
async fn a_gateway_ahead_beyond_the_backdate_fails_the_engineers_host_certificate_check() {
    let (w, mut b, home) = logged_in().await;
    // Edge and gateway both 5 minutes ahead of the broker and the node: the engineer's
    // certificate is good at both, but the host certificate the gateway shows for the node is
    // not valid yet by the engineer's clock, and OpenSSH says so.
    b.restart_edge_with_env("edge-2.log", &moved_clock("+5m"));
    gateway_moved(&mut b, "+5m");
    let said = refused(&b, home.path(), "skew-gateway-ahead-of-all");
    assert!(
        said.contains("Certificate invalid: not yet valid"),
        "{said}"
    );
    assert!(w.events("kind=session_started").await.is_empty());
    assert!(!b.node.log().contains("Accepted"), "{}", b.node.log());
}
