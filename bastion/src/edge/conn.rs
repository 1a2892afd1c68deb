//! One engineer connection: what its task and its handler share, and its supervision. The edge
//! ends it when the edge is full, when no byte passed for `idle_timeout_secs`, when it did not log
//! in within `login_grace_secs`, when its certificate is revoked or expires, and when the
//! shutdown's grace period is over; what the engineer reads and what is audited then is
//! `Close::notice` and `Close::code`, pure and tested with a table.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::Disconnect;
use sallyport_audit::writers::EdgeKind;
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::cut::CutStream;
use super::handler::EngineerHandler;
use super::listener::{Admitted, full_message, full_reason, unauthenticated_key};
use super::{DISCONNECT_WAIT, Edge, FULL_REFUSAL_WITHIN};
use crate::trust::Trust;

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
    /// The tunnel of this connection's forward dropped: the connection's task tells the
    /// engineer (see [`Conn::tunnel_gone`]), then notifies `gone_told`.
    pub(super) gone: Notify,
    pub(super) gone_told: Notify,
    /// Set when the edge dropped that tunnel itself (and audited the cut sessions): what the
    /// engineer is told instead.
    pub(super) gone_message: Mutex<Option<String>>,
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
            gone: Notify::new(),
            gone_told: Notify::new(),
            gone_message: Mutex::new(None),
            auth_seen: AtomicBool::new(false),
            full_audited: AtomicBool::new(false),
            who: Mutex::new(None),
            forwards: Arc::default(),
            cert: Mutex::new(None),
        }
    }

    /// The throttle key of this connection's refusals of `code` (see
    /// [`crate::throttle::Throttle`]).
    pub(super) fn refusal_key(&self, code: &str) -> String {
        format!("{}:{code}", self.id)
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.fetch_max(ms, Ordering::Relaxed);
    }

    /// The gateway's tunnel that this connection's forward went through dropped (the gateway
    /// died or its network was cut): have the connection's task disconnect the engineer saying
    /// so, and wait (two seconds at most) until the notice is queued, so that it reaches the
    /// engineer before the forward's channel closes (OpenSSH's jump host exits at that close).
    /// `dropped`: the edge dropped the tunnel itself, with this message for the engineer (the
    /// cut session is audited there, not again here).
    pub(super) async fn tunnel_gone(&self, dropped: Option<String>) {
        if let Ok(mut m) = self.gone_message.lock() {
            *m = dropped;
        }
        self.gone.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.gone_told.notified()).await;
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
        } else if cert.valid_before() <= now_secs() {
            Some(Close::Expired)
        } else {
            None
        }
    }
}

/// Why the edge itself ends a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// The tunnel of the connection's only forward dropped: the session behind it is gone.
    TunnelGone,
    /// The edge dropped that tunnel itself (revoked, expired; audited there).
    TunnelDropped,
}

/// The limits a connection's notices name.
pub(super) struct Limits {
    pub(super) max_connections: usize,
    /// The idle timeout (for a connection refused for being full: how long it had to name its
    /// key).
    pub(super) idle: Duration,
    pub(super) login_grace: Duration,
    pub(super) shutdown_grace_secs: u64,
}

impl Close {
    /// The SSH disconnect the engineer gets: its reason code and message.
    pub(super) fn notice(self, limits: &Limits) -> (Disconnect, String) {
        match self {
            Close::Full => (
                Disconnect::TooManyConnections,
                full_message(limits.max_connections),
            ),
            Close::Idle => (
                Disconnect::ByApplication,
                format!(
                    "sallyport edge: no traffic for {} s, disconnected (idle_timeout_secs)",
                    limits.idle.as_secs()
                ),
            ),
            Close::Shutdown => (
                Disconnect::ByApplication,
                format!(
                    "sallyport edge: shutting down, disconnected after a grace period of {} s; \
                     connect again",
                    limits.shutdown_grace_secs
                ),
            ),
            Close::NotLoggedIn => (
                Disconnect::ByApplication,
                format!(
                    "sallyport edge: not logged in within {} s, disconnected (login_grace_secs)",
                    limits.login_grace.as_secs()
                ),
            ),
            Close::Revoked => (
                Disconnect::ByApplication,
                "sallyport edge: your certificate was revoked, disconnected".to_string(),
            ),
            Close::Expired => (
                Disconnect::ByApplication,
                "sallyport edge: your certificate expired, disconnected: log in again".to_string(),
            ),
            Close::TunnelGone => (
                Disconnect::ByApplication,
                "sallyport edge: the cluster's gateway went away (its tunnel to the edge \
                 dropped: the gateway stopped or its network was cut), and your session with it; \
                 connect again once the gateway is back"
                    .to_string(),
            ),
            Close::TunnelDropped => (
                Disconnect::ByApplication,
                "sallyport edge: the edge dropped the gateway's tunnel, and your session with it"
                    .to_string(),
            ),
        }
    }

    /// The code of the `edge_disconnected` event of an authenticated connection; `None`: not
    /// that event (the edge full is an `edge_full` refusal, not logging in in time a
    /// `login_timeout` one).
    pub(super) fn code(self) -> Option<&'static str> {
        match self {
            Close::Idle => Some("idle_timeout"),
            Close::Revoked => Some("revoked"),
            Close::Expired => Some("expired"),
            Close::Shutdown => Some("shutdown"),
            Close::TunnelGone => Some("tunnel_gone"),
            Close::Full | Close::NotLoggedIn | Close::TunnelDropped => None,
        }
    }
}

/// A `login_timeout` refusal (audited per source address).
async fn login_timeout(edge: &Edge, conn: &Conn, peer: SocketAddr, reason: String, tried: bool) {
    edge.audit_repeatable(
        &unauthenticated_key(Some(peer.ip()), "login_timeout"),
        json!({
            "edge": edge.cfg.name,
            "code": "login_timeout",
            "reason": reason,
            "authentication_tried": tried,
            "connection": conn.id,
            "source_ip": peer.ip().to_string(),
            "peer": peer.to_string(),
        }),
    )
    .await;
}

/// One engineer connection: its SSH session (russh's task), watched for the edge being full,
/// idleness and the end of the grace period.
pub(super) async fn engineer_connection(
    edge: Arc<Edge>,
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
) {
    let Some(Admitted { permit, _refusing }) = edge.admit(peer) else {
        return;
    };
    let full = permit.is_none();
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
    let login_grace = Duration::from_secs(edge.limits().login_grace_secs.max(1));
    let limits = Limits {
        max_connections: edge.cfg.max_connections,
        // A refused connection gets a short while to name its key; others the idle timeout.
        idle: if full {
            FULL_REFUSAL_WITHIN
        } else {
            edge.idle_timeout()
        },
        login_grace,
        shutdown_grace_secs: edge.cfg.shutdown_grace_secs,
    };
    let limit = limits.idle;
    // Cut when the session cannot be ended politely (see `CutStream`).
    let (socket, cut) = CutStream::new(socket);
    let login_deadline = tokio::time::Instant::now() + login_grace;
    let setup_limit = if full { limit } else { limit.min(login_grace) };
    let session = match tokio::time::timeout(
        setup_limit,
        // Boxed: the set-up's state is freed once the session runs in russh's own task,
        // instead of staying part of this task for the connection's life.
        Box::pin(russh::server::run_stream(config, socket, handler)),
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
                let reason = format!(
                    "sallyport edge: not logged in within {} s, disconnected \
                     (login_grace_secs); the SSH handshake did not finish",
                    login_grace.as_secs()
                );
                login_timeout(&edge, &conn, peer, reason, false).await;
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
                () = conn.gone.notified() => {
                    let dropped = conn.gone_message.lock().map(|m| m.is_some()).unwrap_or(false);
                    break Some(if dropped { Close::TunnelDropped } else { Close::TunnelGone });
                }
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
                () = edge.stop.cancelled() => break Some(Close::Shutdown),
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
        if close.is_none() && conn.who().is_some() {
            tracing::info!("the engineer closed the connection");
        }
        if let Some(close) = close {
            let (code, message) = match conn.gone_message.lock().ok().and_then(|mut m| m.take()) {
                Some(message) if close == Close::TunnelDropped => {
                    (Disconnect::ByApplication, message)
                }
                _ => close.notice(&limits),
            };
            if close == Close::NotLoggedIn {
                tracing::info!(%peer, "disconnecting a connection that did not log in in time");
                let tried = conn.auth_seen.load(Ordering::SeqCst);
                login_timeout(&edge, &conn, peer, message.clone(), tried).await;
            }
            if let Some(what) = close.code() {
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
                conn.gone_told.notify_one();
                let _ = (&mut session).await;
            })
            .await;
            // A client that never finished the handshake cannot be sent a disconnect (nor one
            // that reads nothing of it): cut the socket under russh's task, which then ends.
            if ended.is_err() {
                cut.cancel();
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
