//! One engineer connection: what its task and its handler share, and its supervision (the edge
//! full, idleness, the login grace, the certificate lapsing, shutdown).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::Disconnect;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::throttle::source_key;
use crate::trust::Trust;
use sallyport_audit::writers::EdgeKind;

use super::Edge;
use super::handler::EngineerHandler;
use super::listener::OpenGuard;
use super::{DISCONNECT_WAIT, FULL_REFUSAL_WITHIN, full_message};

/// What one engineer connection's task and its handler share.
pub(super) struct Conn {
    /// Names the connection in its events (`connection`): `c-` and 12 hex digits.
    pub(super) id: String,
    pub(super) started: Instant,
    /// Milliseconds after `started` of the last sign of the engineer: a byte forwarded either
    /// way, or an authentication, channel or global request.
    pub(super) last_active: AtomicU64,
    /// The handler asks the connection's task to end the connection (the edge is full).
    pub(super) kick: Notify,
    /// An authentication request reached the handler.
    pub(super) auth_seen: AtomicBool,
    /// This connection's `edge_full` refusal was audited.
    pub(super) full_audited: AtomicBool,
    /// The authenticated engineer's audit fields, for `edge_disconnected`.
    pub(super) who: Mutex<Option<Value>>,
    /// Forwards open (or being opened) through this connection.
    pub(super) forwards: Arc<AtomicUsize>,
    /// The certificate that passed, re-checked every second against the KRL and its validity
    /// for as long as the connection lasts.
    pub(super) cert: Mutex<Option<russh::keys::Certificate>>,
}

impl Conn {
    pub(super) fn new() -> Conn {
        let mut b = [0u8; 6];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b);
        Conn {
            id: format!("c-{}", hex::encode(b)),
            started: Instant::now(),
            last_active: AtomicU64::new(0),
            kick: Notify::new(),
            auth_seen: AtomicBool::new(false),
            full_audited: AtomicBool::new(false),
            who: Mutex::new(None),
            forwards: Arc::default(),
            cert: Mutex::new(None),
        }
    }

    /// The throttle key of this connection's refusals of `code` (see [`Throttle`]).
    pub(super) fn refusal_key(&self, code: &str) -> String {
        format!("{}:{code}", self.id)
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.fetch_max(ms, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_active.load(Ordering::Relaxed),
        ))
    }

    pub(super) fn who(&self) -> Option<Value> {
        self.who.lock().ok().and_then(|w| w.clone())
    }

    /// Why the authenticated connection's certificate no longer holds, if it does not.
    pub(super) fn cert_lapsed(&self, trust: &Trust) -> Option<Close> {
        let guard = self.cert.lock().ok()?;
        let cert = guard.as_ref()?;
        if trust.is_revoked(cert) {
            Some(Close::Revoked)
        } else if cert.valid_before() <= crate::now() {
            Some(Close::Expired)
        } else {
            None
        }
    }
}

/// Why the edge itself ends a connection.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Close {
    Full,
    Idle,
    Shutdown,
    /// Not logged in within `login_grace_secs`.
    NotLoggedIn,
    /// The certificate was revoked (the KRL) while the connection was open.
    Revoked,
    /// The certificate expired while the connection was open.
    Expired,
}

/// One engineer connection: its SSH session (russh's task), watched for the edge being full,
/// idleness and the end of the grace period.
pub(super) async fn engineer_connection(
    edge: Arc<Edge>,
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
) {
    let _open = OpenGuard::new(&edge);
    let permit = edge.slots.clone().try_acquire_owned().ok();
    let full = permit.is_none();
    let _refusing = if full {
        match edge.refusing.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(%peer, "edge full, and busy refusing others: connection closed without a word");
                return;
            }
        }
    } else {
        None
    };
    let conn = Arc::new(Conn::new());
    let handler = EngineerHandler {
        edge: edge.clone(),
        peer: Some(peer),
        login: String::new(),
        identity: None,
        pending_mfa: None,
        mfa_session_used: false,
        certificate_seen: false,
        conn: conn.clone(),
        permit,
    };
    // A refused connection gets a short while to name its key; others the idle timeout.
    let limit = if full {
        FULL_REFUSAL_WITHIN
    } else {
        edge.idle_timeout()
    };
    let mut stop = edge.stop.subscribe();
    // A second handle on the socket, to cut it when the session cannot be ended politely.
    let (socket, killer) = match socket.into_std().and_then(|std| {
        let killer = std.try_clone()?;
        Ok((TcpStream::from_std(std)?, killer))
    }) {
        Ok((socket, killer)) => (socket, Some(killer)),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot take a second handle on a connection");
            return;
        }
    };
    let login_grace = Duration::from_secs(edge.limits().login_grace_secs.max(1));
    let login_deadline = tokio::time::Instant::now() + login_grace;
    let setup_limit = if full { limit } else { limit.min(login_grace) };
    let session = match tokio::time::timeout(
        setup_limit,
        russh::server::run_stream(config, socket, handler),
    )
    .await
    {
        Ok(Ok(session)) => Some(session),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "engineer connection setup failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "engineer connection did not finish the SSH handshake in time");
            if !full {
                edge.audit_repeatable(
                    &unauthenticated_key(Some(peer.ip()), "login_timeout"),
                    json!({
                        "edge": edge.cfg.name,
                        "code": "login_timeout",
                        "reason": format!(
                            "sallyport edge: not logged in within {} s, disconnected \
                             (login_grace_secs); the SSH handshake did not finish",
                            login_grace.as_secs()
                        ),
                        "authentication_tried": false,
                        "connection": conn.id,
                        "source_ip": peer.ip().to_string(),
                        "peer": peer.to_string(),
                    }),
                )
                .await;
            }
            None
        }
    };
    if let Some(mut session) = session {
        let handle = session.handle();
        let close = loop {
            let left = limit.saturating_sub(conn.idle_for());
            tokio::select! {
                r = &mut session => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "engineer connection ended");
                    }
                    break None;
                }
                () = conn.kick.notified() => break Some(Close::Full),
                () = tokio::time::sleep_until(login_deadline), if conn.who().is_none() && !full => {
                    if conn.who().is_none() {
                        break Some(Close::NotLoggedIn);
                    }
                }
                () = tokio::time::sleep(left) => {
                    if conn.idle_for() >= limit {
                        break Some(if full { Close::Full } else { Close::Idle });
                    }
                }
                _ = stop.wait_for(|s| *s) => break Some(Close::Shutdown),
                // Every second (the guard of an arm is only read when the loop turns, so this
                // one always runs): the certificate of a logged-in connection still holds.
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if conn.who().is_some()
                        && let Some(lapsed) = conn.cert_lapsed(&edge.trust)
                    {
                        break Some(lapsed);
                    }
                }
            }
        };
        if let Some(close) = close {
            let (code, message) = match close {
                Close::Full => (
                    Disconnect::TooManyConnections,
                    full_message(edge.cfg.max_connections),
                ),
                Close::Idle => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: no traffic for {} s, disconnected (idle_timeout_secs)",
                        limit.as_secs()
                    ),
                ),
                Close::Shutdown => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: shutting down, disconnected after a grace period of {} s; \
                         connect again",
                        edge.cfg.shutdown_grace_secs
                    ),
                ),
                Close::NotLoggedIn => (
                    Disconnect::ByApplication,
                    format!(
                        "sallyport edge: not logged in within {} s, disconnected (login_grace_secs)",
                        login_grace.as_secs()
                    ),
                ),
                Close::Revoked => (
                    Disconnect::ByApplication,
                    "sallyport edge: your certificate was revoked, disconnected".to_string(),
                ),
                Close::Expired => (
                    Disconnect::ByApplication,
                    "sallyport edge: your certificate expired, disconnected: log in again"
                        .to_string(),
                ),
            };
            if close == Close::NotLoggedIn {
                tracing::info!(%peer, "disconnecting a connection that did not log in in time");
                edge.audit_repeatable(
                    &unauthenticated_key(Some(peer.ip()), "login_timeout"),
                    json!({
                        "edge": edge.cfg.name,
                        "code": "login_timeout",
                        "reason": message,
                        "authentication_tried": conn.auth_seen.load(Ordering::SeqCst),
                        "connection": conn.id,
                        "source_ip": peer.ip().to_string(),
                        "peer": peer.to_string(),
                    }),
                )
                .await;
            }
            if close != Close::Full && close != Close::NotLoggedIn {
                let what = match close {
                    Close::Idle => "idle_timeout",
                    Close::Revoked => "revoked",
                    Close::Expired => "expired",
                    Close::Shutdown | Close::Full | Close::NotLoggedIn => "shutdown",
                };
                match conn.who() {
                    // Only an authenticated connection is worth an audit event.
                    Some(mut event) => {
                        tracing::info!(%peer, engineer = event["engineer"].as_str(), reason = what, "disconnecting an engineer connection");
                        crate::merge(
                            &mut event,
                            json!({
                                "edge": edge.cfg.name,
                                "source_ip": peer.ip().to_string(),
                                "peer": peer.to_string(),
                                "code": what,
                                "reason": message,
                                "idle_secs": conn.idle_for().as_secs(),
                            }),
                        );
                        edge.audit(EdgeKind::EdgeDisconnected, event).await;
                    }
                    None => {
                        tracing::info!(%peer, reason = what, "disconnecting an unauthenticated connection")
                    }
                }
            }
            let ended = tokio::time::timeout(DISCONNECT_WAIT, async {
                let _ = handle.disconnect(code, message, String::new()).await;
                let _ = (&mut session).await;
            })
            .await;
            // A client that never finished the handshake cannot be sent a disconnect: cut the
            // socket under russh's task, which then ends.
            if ended.is_err()
                && let Some(k) = &killer
            {
                let _ = k.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    // A full edge's refusal of a client that never named a key (or gave up first).
    if full
        && conn.auth_seen.load(Ordering::SeqCst)
        && !conn.full_audited.swap(true, Ordering::SeqCst)
    {
        tracing::warn!(%peer, "edge full: connection refused");
        edge.audit_repeatable(
            &unauthenticated_key(Some(peer.ip()), "edge_full"),
            json!({
                "edge": edge.cfg.name,
                "code": "edge_full",
                "reason": full_reason(edge.cfg.max_connections),
                "max_connections": edge.cfg.max_connections,
                "key_id": null,
                "engineer": null, "ticket": null, "grant": null, "cluster": null,
                "login": null,
                "connection": conn.id,
                "source_ip": peer.ip().to_string(),
                "peer": peer.to_string(),
            }),
        )
        .await;
    }
    // This connection's refusals that were folded in are written now, with their counts.
    edge.flush_refusals(Some(&format!("{}:", conn.id))).await;
}

/// The throttle key of a refusal of `code` before login: the source address (see [`Throttle`]).
pub(super) fn unauthenticated_key(ip: Option<IpAddr>, code: &str) -> String {
    format!("src:{}:{code}", source_key(ip))
}

pub(super) fn full_reason(max: usize) -> String {
    format!(
        "the edge is full: {max} engineer connections (max_connections) are open; try again later"
    )
}
