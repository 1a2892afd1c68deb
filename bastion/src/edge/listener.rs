//! The engineers' listener: the accept loop and the drain on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;

use sallyport_audit::writers::EdgeKind;

use super::DISCONNECT_WAIT;
use super::Edge;
use super::conn::engineer_connection;

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
                    tokio::spawn(engineer_connection(edge.clone(), socket, peer, config.clone()));
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
    let began = Instant::now();
    edge.draining.store(true, Ordering::SeqCst);
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
    let mut open_rx = edge.open.subscribe();
    let drained = tokio::time::timeout(grace, open_rx.wait_for(|n| *n == 0))
        .await
        .is_ok();
    let disconnected = edge.open_connections();
    if !drained {
        tracing::info!(
            connections = disconnected,
            "grace period over: disconnecting the remaining engineer connections"
        );
    }
    edge.stop.send_replace(true);
    let _ = tokio::time::timeout(
        DISCONNECT_WAIT + Duration::from_secs(1),
        open_rx.wait_for(|n| *n == 0),
    )
    .await;
    Stopped {
        drained,
        disconnected,
        took: began.elapsed(),
    }
}

/// Counts an engineer connection as open while it lives.
pub(super) struct OpenGuard(Arc<Edge>);

impl OpenGuard {
    pub(super) fn new(edge: &Arc<Edge>) -> OpenGuard {
        edge.open.send_modify(|n| *n += 1);
        OpenGuard(edge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
