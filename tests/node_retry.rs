//! The gateway's connection to a node, through the real path (ssh → edge → gateway → sshd) with
//! a TCP front before the node that closes chosen connections before any byte, as sshd does past
//! its `MaxStartups`: a dropped connection is tried again (and logged), up to five attempts, the
//! last failure told to the engineer and audited with the count; a refused host key is final
//! (one connection, one event).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::bastion::{self, Bastion, try_touch};
use support::broker::*;

/// A TCP front on 127.0.0.1 for the node's sshd: its first `drop_first` connections are closed
/// before any byte (as sshd past `MaxStartups`), the others piped to the node. Counts them.
struct Front {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Front {
    fn start(node_port: u16, drop_first: usize) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if count.fetch_add(1, Ordering::SeqCst) < drop_first {
                    drop(conn);
                    continue;
                }
                let Ok(node) = TcpStream::connect(("127.0.0.1", node_port)) else {
                    continue;
                };
                pipe(conn.try_clone().unwrap(), node.try_clone().unwrap());
                pipe(node, conn);
            }
        });
        Front { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// node1 now answers at `port` (with `more` changes); the gateway reads it at its restart.
async fn move_node(w: &World, b: &mut Bastion, port: u16, more: Value) {
    let mut change = json!({"address": "127.0.0.1", "port": port});
    if let Value::Object(more) = more {
        for (k, v) in more {
            change[k] = v;
        }
    }
    let (s, v) =
        w.op.patch("/v1/clusters/acme-prod/nodes/node1", change)
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    b.restart_gateway();
}

const RETRY_LINE: &str = "the node dropped the connection before the SSH handshake was over";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_drops_connections_before_its_banner_is_tried_again() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("/tmp/sp-node-retry-{}", std::process::id());

    // The first three connections are dropped: the fourth gets through, the session runs.
    let front = Front::start(b.node.port(), 3);
    move_node(&w, &mut b, front.port, json!({})).await;
    let (ran, said) = try_touch(home.path(), &tag);
    let log = b.gateway.log_text();
    assert!(ran, "{said}\n{log}");
    assert_eq!(front.connections(), 4);
    assert_eq!(log.matches(RETRY_LINE).count(), 3, "{log}");
    assert!(log.contains("attempt=3"), "{log}");
    assert!(
        w.audit("kind=node_unreachable&ticket=SUP-1234")
            .await
            .is_empty()
    );

    // A node that drops every connection: five attempts, then the engineer reads why, and the
    // audit event says how many.
    let wall = Front::start(b.node.port(), usize::MAX);
    move_node(&w, &mut b, wall.port, json!({})).await;
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(!ran, "{said}");
    assert!(
        said.contains("sallyport: the gateway cannot reach node node1 (5 attempts)"),
        "{said}"
    );
    assert_eq!(wall.connections(), 5);
    let ev = w
        .wait_audit("kind=node_unreachable&ticket=SUP-1234", 1)
        .await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(field_str(&ev[0], "code"), "unreachable");
    assert_eq!(*field_of(&ev[0], "attempts"), 5);
    assert!(
        opt_str(&ev[0], "reason").is_some_and(|r| r.contains("(5 attempts)")),
        "{ev:#?}"
    );
    assert_eq!(b.gateway.log_text().matches(RETRY_LINE).count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_key_is_not_tried_again() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("/tmp/sp-node-noretry-{}", std::process::id());

    // Every connection gets through to the node, which shows a key other than the registered.
    let front = Front::start(b.node.port(), 0);
    let (_, other) = engineer_key();
    move_node(&w, &mut b, front.port, json!({"host_keys": [other]})).await;
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(!ran, "a command ran on a node showing an unregistered key");
    assert!(said.contains("is not the one registered for it"), "{said}");
    assert_eq!(front.connections(), 1);
    let refused = w
        .wait_audit("kind=node_key_refused&ticket=SUP-1234", 1)
        .await;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(field_str(&refused[0], "code"), "node_key_changed");
    let log = b.gateway.log_text();
    assert!(!log.contains(RETRY_LINE), "{log}");
    assert!(
        w.audit("kind=node_unreachable&ticket=SUP-1234")
            .await
            .is_empty()
    );
}
