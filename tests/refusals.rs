//! The matrix of refusals, in process (`support::inproc`): a broker, an edge, a gateway and a
//! node in this test's runtime, certificates minted here field by field, a russh client as the
//! engineer. Each row is one attempt to reach `node1.acme-prod`; a refused row asserts where
//! it was refused, the audit event it produced (kind and code, at the broker), and that nothing
//! reached the node. The valid row runs its command and finds it in the audit log.
//!
//! The same refusals through real OpenSSH and processes are in `bastion.rs` and `attacks.rs`.
//!
//! Integration tests may unwrap (see the workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use russh::keys::ssh_key::HashAlg;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use sallyport_api::audit::AuditEntry;
use sallyport_ca::cert::EXT_TICKET;
use support::broker::{now, opt_str};
use support::inproc::{CertSpec, Engineer, LOGIN, NODE_EXIT, Outcome, World, bounded, new_key};

/// Where an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    EdgeLogin,
    EdgeForward,
    GatewayLogin,
}

struct Row {
    name: &'static str,
    engineer: Engineer,
    /// Picks the row's audit event out of the others of its kind: any of these fields (ticket,
    /// key id, the key's fingerprint) has this value.
    marks: Vec<(&'static str, String)>,
    refused: Option<(At, &'static str, &'static str)>,
}

fn refused_at(o: &Outcome) -> Option<At> {
    match o {
        Outcome::EdgeAuthRefused => Some(At::EdgeLogin),
        Outcome::ForwardRefused(_) => Some(At::EdgeForward),
        Outcome::GatewayAuthRefused => Some(At::GatewayLogin),
        Outcome::Ran { .. } | Outcome::ExecRefused(_) => None,
    }
}

/// A mark's field of an event: its ticket (a subject field) or one of its own fields.
fn marked<'a>(e: &'a AuditEntry, field: &str) -> Option<&'a str> {
    match field {
        "ticket" => e.ticket.as_deref(),
        _ => opt_str(e, field),
    }
}

/// A row whose certificate is `spec` signed by `ca` for a fresh key, marked by its ticket.
fn row(
    w: &World,
    name: &'static str,
    ticket: &str,
    spec: CertSpec,
    ca: &russh::keys::PrivateKey,
    refused: Option<(At, &'static str, &'static str)>,
) -> Row {
    let key = new_key();
    Row {
        name,
        marks: vec![
            ("ticket", ticket.to_string()),
            ("key_id", spec.key_id.clone()),
        ],
        engineer: w.engineer(&key, spec.sign(ca, &key)),
        refused,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_refused_where_it_should_be_audited_and_reaches_no_node() {
    let w = World::start().await;
    let ca = w.user_ca().clone();
    let acme = |ticket: &str| CertSpec::engineer("alice", ticket, "acme-prod");
    let t = now();
    let mut rows = vec![
        row(
            &w,
            "a certificate from a CA nobody trusts",
            "T-CA",
            acme("T-CA"),
            &new_key(),
            Some((At::EdgeLogin, "edge_refused", "untrusted_ca")),
        ),
        row(
            &w,
            "an expired certificate",
            "T-EXP",
            acme("T-EXP").valid(t - 7200, t - 3600),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "expired")),
        ),
        row(
            &w,
            "a certificate not valid yet",
            "T-NYV",
            acme("T-NYV").valid(t + 3600, t + 7200),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "not_yet_valid")),
        ),
        row(
            &w,
            "a principal of another cluster",
            "T-PRIN",
            acme("T-PRIN").principals(&[&format!("globex-prod:{LOGIN}")]),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "foreign_principal")),
        ),
        row(
            &w,
            "a login the certificate does not name",
            "T-LOGIN",
            acme("T-LOGIN").principals(&["acme-prod:root"]),
            &ca,
            Some((
                At::GatewayLogin,
                "session_refused",
                "login_not_in_certificate",
            )),
        ),
        row(
            &w,
            "a certificate of another cluster, aimed at acme-prod",
            "T-GLX",
            CertSpec::engineer("alice", "T-GLX", "globex-prod"),
            &ca,
            Some((At::EdgeForward, "edge_refused", "other_cluster")),
        ),
        row(
            &w,
            "a client outside source-address",
            "T-SRC",
            acme("T-SRC").source_address("203.0.113.0/24"),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "source_address_mismatch")),
        ),
        row(
            &w,
            "a host certificate from the user CA",
            "T-HOST",
            acme("T-HOST").cert_type(CertType::Host),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "not_user_certificate")),
        ),
        row(
            &w,
            "agent forwarding, which sallyport never grants",
            "T-AGENT",
            acme("T-AGENT").extension("permit-agent-forwarding", Some("")),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "forbidden_extension")),
        ),
        row(
            &w,
            "a critical option sallyport does not know",
            "T-FORCE",
            acme("T-FORCE").critical("force-command", "/bin/sh"),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "unknown_critical_option")),
        ),
        row(
            &w,
            "an extension naming another ticket than the key id",
            "T-MISMATCH",
            acme("T-MISMATCH").extension(EXT_TICKET, Some("T-OTHER")),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "extension_mismatch")),
        ),
    ];

    // Revoked through the broker's API, by serial and by grant (the key id's).
    for (name, ticket, scope) in [
        (
            "a certificate revoked by its serial",
            "T-REV-SERIAL",
            "serial",
        ),
        ("a certificate revoked by its grant", "T-REV-GRANT", "grant"),
    ] {
        let r = row(
            &w,
            name,
            ticket,
            acme(ticket),
            &ca,
            Some((At::EdgeLogin, "edge_refused", "revoked")),
        );
        let cert = r.engineer.cert.clone().unwrap();
        w.record_issued(&cert).await;
        let value = match scope {
            "serial" => cert.serial().to_string(),
            _ => format!("g-{}", ticket.to_lowercase()),
        };
        w.revoke(&cert, scope, &value).await;
        rows.push(r);
    }

    // The gateway's own tunnel certificate (its host key, from the cluster's host CA, principal
    // `gateway:acme-prod`), presented at the engineers' listener.
    let gw = &w.gateway;
    let gateway_key_id = format!("sallyport-gateway:{}", gw.id);
    let gateway_cert = {
        let mut b = Builder::new_with_random_nonce(
            &mut russh::keys::key::safe_rng(),
            gw.host_key.public_key(),
            t - 60,
            t + 3600,
        )
        .unwrap();
        b.serial(sallyport_ca::cert::random_serial()).unwrap();
        b.key_id(gateway_key_id.as_str()).unwrap();
        b.cert_type(CertType::User).unwrap();
        b.valid_principal(format!("gateway:{}", gw.cluster))
            .unwrap();
        b.sign(&gw.host_ca).unwrap()
    };
    rows.push(Row {
        name: "the gateway's certificate presented as an engineer's",
        engineer: w.engineer(&gw.host_key, gateway_cert),
        marks: vec![("key_id", gateway_key_id)],
        refused: Some((At::EdgeLogin, "edge_refused", "untrusted_ca")),
    });

    // A plain key, no certificate.
    let plain = new_key();
    let mut e = w.engineer(&plain, acme("T-PLAIN").sign(&ca, &plain));
    e.cert = None;
    rows.push(Row {
        name: "a plain key without a certificate",
        engineer: e,
        marks: vec![(
            "fingerprint",
            plain.public_key().fingerprint(HashAlg::Sha256).to_string(),
        )],
        refused: Some((At::EdgeLogin, "edge_refused", "not_a_certificate")),
    });

    // Forwards the edge must not open: not a node name, and a node acme-prod does not have.
    let mut r = row(
        &w,
        "a forward to an address, not <node>.<cluster>",
        "T-ADDR",
        acme("T-ADDR"),
        &ca,
        Some((At::EdgeForward, "edge_refused", "bad_target")),
    );
    r.engineer.target = ("127.0.0.1".into(), 22);
    rows.push(r);
    let mut r = row(
        &w,
        "a forward to a node the cluster does not have",
        "T-GHOST",
        acme("T-GHOST"),
        &ca,
        Some((At::EdgeForward, "edge_refused", "gateway_refused")),
    );
    r.engineer.target = ("ghost.acme-prod".into(), 22);
    rows.push(r);

    // And the one that gets in.
    rows.push(row(
        &w,
        "a valid certificate",
        "T-OK",
        acme("T-OK"),
        &ca,
        None,
    ));

    for r in &rows {
        let before = w.node.counts();
        let command = format!("echo {}", r.name.replace(' ', "-"));
        let outcome = r.engineer.exec(&command).await;
        let pick = |e: &AuditEntry| {
            r.marks
                .iter()
                .any(|(f, v)| marked(e, f) == Some(v.as_str()))
        };
        match r.refused {
            Some((at, kind, code)) => {
                assert_eq!(refused_at(&outcome), Some(at), "{}: {outcome:?}", r.name);
                let e = w
                    .wait_event(kind, |e| pick(e) && opt_str(e, "code") == Some(code))
                    .await;
                assert!(
                    opt_str(&e, "reason").is_some_and(|s| !s.is_empty()),
                    "{}: the event says why: {e:?}",
                    r.name
                );
                assert_eq!(
                    w.node.counts(),
                    before,
                    "{}: something reached the node",
                    r.name
                );
            }
            None => {
                assert_eq!(
                    outcome,
                    Outcome::Ran {
                        status: NODE_EXIT,
                        output: format!("node ran: {command}\n"),
                    },
                    "{}",
                    r.name
                );
                let (c, l, x) = before;
                assert_eq!(w.node.counts(), (c + 1, l + 1, x + 1), "{}", r.name);
                let e = w
                    .wait_event("command", |e| {
                        pick(e) && e.command.as_deref() == Some(command.as_str())
                    })
                    .await;
                assert_eq!(e.engineer.as_deref(), Some("alice"), "{e:?}");
                assert_eq!(e.node.as_deref(), Some("node1"), "{e:?}");
                w.wait_event("edge_session", pick).await;
            }
        }
    }
    // Of all the attempts, only the valid one reached the node, and only its command is in the
    // audit log.
    assert_eq!(w.node.counts(), (1, 1, 1));
    let commands = w.events("command").await;
    assert_eq!(commands.len(), 1, "{commands:#?}");
    assert_eq!(
        *w.node.commands.lock().unwrap(),
        [format!("echo {}", "a-valid-certificate")]
    );
}

/// Wait (bounded) for the answer to a request sent with want_reply on `ch`: `true` when it was
/// granted.
async fn answered(ch: &mut russh::Channel<russh::client::Msg>, what: &str) -> bool {
    loop {
        match support::inproc::bounded(what, ch.wait()).await {
            Some(russh::ChannelMsg::Success) => return true,
            Some(russh::ChannelMsg::Failure) | None => return false,
            Some(_) => continue,
        }
    }
}

/// Inside a session the gateway asks its channel policy about every request: agent forwarding,
/// a variable that changes how programs load, a port forward the certificate does not allow and
/// a remote forward are refused, each an audit event with its code; none reaches the node, and
/// the session goes on (its exec runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_session_the_gateway_refuses_and_audits_what_is_not_allowed_and_the_session_goes_on()
 {
    let w = World::start().await;
    let key = new_key();
    let spec = CertSpec::engineer("alice", "T-CHAN", "acme-prod");
    let Ok(s) = w
        .engineer(&key, spec.sign(w.user_ca(), &key))
        .session()
        .await
    else {
        panic!("the valid certificate was refused");
    };
    let mut ch = bounded("a session channel", s.gateway.channel_open_session())
        .await
        .unwrap();
    ch.agent_forward(true).await.unwrap();
    assert!(!answered(&mut ch, "agent forwarding").await);
    ch.set_env(true, "LD_PRELOAD", "/tmp/x.so").await.unwrap();
    assert!(!answered(&mut ch, "LD_PRELOAD").await);
    let target = w.node_addr;
    let forward = bounded(
        "a port forward",
        s.gateway.channel_open_direct_tcpip(
            target.ip().to_string(),
            u32::from(target.port()),
            "127.0.0.1",
            0,
        ),
    )
    .await;
    assert!(forward.is_err(), "the port forward was opened");
    let remote = bounded("a remote forward", s.gateway.tcpip_forward("127.0.0.1", 0)).await;
    assert!(
        remote.is_err(),
        "the remote forward was granted: {remote:?}"
    );

    let ticket = |e: &AuditEntry| e.ticket.as_deref() == Some("T-CHAN");
    for (kind, request, code) in [
        ("channel_refused", "agent", "agent_forwarding_refused"),
        ("channel_refused", "env", "environment_not_allowed"),
        (
            "forward_refused",
            "direct_tcpip",
            "port_forwarding_not_approved",
        ),
        (
            "forward_refused",
            "tcpip_forward",
            "remote_forwarding_refused",
        ),
    ] {
        let e = w
            .wait_event(kind, |e| {
                ticket(e)
                    && opt_str(e, "request") == Some(request)
                    && opt_str(e, "code") == Some(code)
            })
            .await;
        assert!(
            opt_str(&e, "reason").is_some_and(|r| !r.is_empty()),
            "{e:?}"
        );
    }
    // The session goes on: its exec runs and is recorded.
    assert_eq!(
        s.exec("echo after").await,
        Outcome::Ran {
            status: NODE_EXIT,
            output: "node ran: echo after\n".into()
        }
    );
    w.wait_event("command", |e| {
        ticket(e) && e.command.as_deref() == Some("echo after")
    })
    .await;
    // The node saw the two session channels and the exec, and nothing that was refused.
    let reached = w.node.requests.lock().unwrap().clone();
    assert_eq!(
        reached,
        ["session", "session"],
        "one per session channel opened"
    );
    assert_eq!(*w.node.commands.lock().unwrap(), ["echo after"]);
}
