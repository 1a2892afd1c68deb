//! The engineers' listener: the accept loop, the drain on shutdown, the connection limit
//! (`max_connections`, and how many are told "too many connections" at once), and the throttle
//! of refusals anyone can repeat (per connection once logged in, per source address before).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_audit::writers::EdgeKind;
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::conn::engineer_connection;
use super::{DISCONNECT_WAIT, Edge};
use crate::throttle::source_key;

/// Connections answered "too many connections" at once, past `max_connections`; past this too,
/// a connection is closed without a word (a flood must not cost a key exchange each).
pub(super) const MAX_REFUSING: usize = 64;
/// A refusal anyone can repeat is written at most this many times per key (a connection and a
/// code once logged in; before, a source address and a code) per `REFUSAL_WINDOW_SECS`; the
/// others are counted into the last one, written when the window or the connection ends.
pub(super) const REFUSALS_PER_WINDOW: u32 = 5;
pub(super) const REFUSAL_WINDOW_SECS: u64 = 60;

/// Send every SSH packet at once (TCP_NODELAY), as russh does for the sockets it accepts itself.
/// With Nagle's algorithm on, a small packet — a keystroke's echo, the gateway's window adjust
/// on its way to the engineer — waits for the engineer's delayed ACK of the previous one: an
/// upload through the edge ran at a third of `ssh -J`'s rate, held back by those waits.
fn no_delay(socket: &TcpStream) {
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an engineer connection");
    }
}

pub(super) fn full_message(max: usize) -> String {
    format!("sallyport edge: too many connections (at most {max} at once), try again later")
}

pub(super) fn full_reason(max: usize) -> String {
    format!(
        "the edge is full: {max} engineer connections (max_connections) are open; try again later"
    )
}

/// The throttle key of a refusal of `code` before login: the source address (see
/// [`crate::throttle::Throttle`]).
pub(super) fn unauthenticated_key(ip: Option<IpAddr>, code: &str) -> String {
    format!("src:{}:{code}", source_key(ip))
}

/// A connection let in: with a slot (`permit`), or, when the edge is full, to be told so.
pub(super) struct Admitted {
    /// `None` when the edge is full: every authentication is then refused.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    pub(super) _refusing: Option<OwnedSemaphorePermit>,
}

impl Edge {
    /// Let a new connection in; `None`: the edge is full and busy refusing others, the
    /// connection is closed without a word.
    pub(super) fn admit(&self, peer: SocketAddr) -> Option<Admitted> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        let refusing = if permit.is_none() {
            match self.refusing.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::warn!(%peer, "edge full, and busy refusing others: connection closed without a word");
                    return None;
                }
            }
        } else {
            None
        };
        Some(Admitted {
            permit,
            _refusing: refusing,
        })
    }

    /// Write a refusal anyone can repeat, unless more than a few of its `key` were written
    /// this minute (then it is counted into a later event; see [`crate::throttle::Throttle`]).
    pub(super) async fn audit_repeatable(&self, key: &str, data: Value) {
        if self.spool.is_none() {
            return;
        }
        let mut data = data;
        if let Some(n) = self.refusals.admit(key, now_secs(), &data) {
            crate::throttle::note_suppressed(&mut data, n);
            self.audit(EdgeKind::EdgeRefused, data).await;
        }
    }

    /// Write the refusals folded in under the keys starting with `prefix` (a connection that
    /// ended; `""`: every key), or, without a prefix, those whose window ended.
    pub(super) async fn flush_refusals(&self, prefix: Option<&str>) {
        let folded = match prefix {
            Some(p) => self.refusals.take(p),
            None => self.refusals.due(now_secs()),
        };
        for f in folded {
            self.audit(EdgeKind::EdgeRefused, f.into_event()).await;
        }
    }
}

/// How a shutdown went.
pub(super) struct Stopped {
    /// Every engineer connection ended by itself within the grace period.
    pub(super) drained: bool,
    /// Connections still open when the grace period ended (then disconnected).
    pub(super) disconnected: usize,
    pub(super) took: Duration,
}

/// Accept engineer connections until `shutdown`; then close the listener, let open connections
/// go on for the grace period, and disconnect what is left.
pub(super) async fn serve_engineers(
    edge: Arc<Edge>,
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Stopped {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    no_delay(&socket);
                    // What is logged for this connection, in russh's task and its callbacks
                    // too, says whose it is: the address, and the engineer once logged in.
                    let span = tracing::info_span!(
                        "connection",
                        %peer,
                        engineer = tracing::field::Empty,
                    );
                    edge.connections.spawn(
                        engineer_connection(edge.clone(), socket, peer, config.clone()).instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors, say: not a reason to stop serving the others.
                    tracing::warn!(error = %e, "cannot accept an engineer connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // From here on a new connection is refused by the system (and a TCP load balancer's health
    // check fails), while the open ones go on.
    drop(listener);
    edge.connections.close();
    let began = Instant::now();
    edge.draining.cancel();
    let grace = Duration::from_secs(edge.cfg.shutdown_grace_secs);
    let open = edge.open_connections();
    tracing::info!(
        connections = open,
        grace_secs = grace.as_secs(),
        "edge shutting down: no new connections; open ones may go on for the grace period"
    );
    edge.audit(
        EdgeKind::EdgeShutdown,
        json!({
            "edge": edge.cfg.name,
            "connections": open,
            "grace_secs": grace.as_secs(),
        }),
    )
    .await;
    let drained = tokio::time::timeout(grace, edge.connections.wait())
        .await
        .is_ok();
    let disconnected = edge.open_connections();
    if !drained {
        tracing::info!(
            connections = disconnected,
            "grace period over: disconnecting the remaining engineer connections"
        );
    }
    edge.stop.cancel();
    let _ = tokio::time::timeout(
        DISCONNECT_WAIT + Duration::from_secs(1),
        edge.connections.wait(),
    )
    .await;
    Stopped {
        drained,
        disconnected,
        took: began.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_engineer_connection_sends_small_packets_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        assert!(
            !socket.nodelay().unwrap(),
            "an accepted socket starts with Nagle on"
        );
        no_delay(&socket);
        assert!(socket.nodelay().unwrap());
    }
}
