//! What the edge does with an engineer's channel requests: no shell, no remote forwarding, and
//! `direct-tcpip` only to `<node>.<cluster>:22` of the certificate's own cluster, piped into a
//! channel of that cluster's gateway's tunnel.
//!
//! May this connection open this target is a pure function, `decide`, over plain facts (tested
//! with a table in `tests.rs`); `direct_tcpip` gathers them, audits a refusal, and opens the
//! forward.

use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use sallyport_audit::sanitize;
use sallyport_audit::writers::EdgeKind;
use serde_json::{Value, json};

use super::handler::EngineerHandler;
use crate::trust::split_target;

const EDGE_MESSAGE: &str = "This is sallyport's edge: it opens no shell. Reach a node through it, e.g.\r\n  ssh -F ~/.sallyport/ssh_config <node>.<cluster>\r\n(`sallyport login` writes that configuration.)\r\n";

/// A `direct-tcpip` request: where to, and from where the client says it comes.
pub(super) struct Target<'a> {
    pub(super) host: &'a str,
    pub(super) port: u32,
    pub(super) originator: (&'a str, u32),
}

/// The facts a forward is decided on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask<'a> {
    /// The edge is shutting down.
    pub(super) draining: bool,
    pub(super) host: &'a str,
    pub(super) port: u32,
    /// The cluster of the connection's certificate.
    pub(super) cert_cluster: &'a str,
    /// The certificate asks for per-session MFA ...
    pub(super) per_session_mfa: bool,
    /// ... and a forward was opened through this connection already.
    pub(super) mfa_session_used: bool,
}

/// Why a forward is refused.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    ShuttingDown,
    /// Not `<node>.<cluster>` on port 22.
    BadTarget,
    OtherCluster {
        cert_cluster: String,
        target_cluster: String,
    },
    /// Per-session MFA means per session: one code, one forward. A second session through this
    /// connection (ControlMaster, `ssh -J` reusing a jump connection) needs a new connection
    /// and a new code.
    MfaSessionUsed,
    /// `max_forwards_per_connection` are open through this connection.
    TooManyForwards {
        limit: usize,
    },
}

impl Refusal {
    /// The audit code.
    pub(super) fn code(&self) -> &'static str {
        match self {
            Refusal::ShuttingDown => "shutting_down",
            Refusal::BadTarget => "bad_target",
            Refusal::OtherCluster { .. } => "other_cluster",
            Refusal::MfaSessionUsed => "mfa_session_used",
            Refusal::TooManyForwards { .. } => "too_many_forwards",
        }
    }

    /// The audit reason.
    pub(super) fn reason(&self) -> String {
        match self {
            Refusal::ShuttingDown => {
                "the edge is shutting down: it opens no new forwards; connect again".into()
            }
            Refusal::BadTarget => "the edge forwards only to <node>.<cluster>:22".into(),
            Refusal::OtherCluster {
                cert_cluster,
                target_cluster,
            } => format!(
                "the certificate is for another cluster ({cert_cluster}), not {target_cluster}"
            ),
            Refusal::MfaSessionUsed => {
                "per-session MFA: a TOTP code opens one session; connect again (without a shared \
                 ControlMaster connection to the edge) and enter a new code"
                    .into()
            }
            Refusal::TooManyForwards { limit } => {
                format!("at most {limit} sessions at once through one connection to the edge")
            }
        }
    }

    /// What the client is told.
    pub(super) fn failure(&self) -> ChannelOpenFailure {
        match self {
            Refusal::ShuttingDown | Refusal::BadTarget => ChannelOpenFailure::ConnectFailed,
            Refusal::OtherCluster { .. } | Refusal::MfaSessionUsed => {
                ChannelOpenFailure::AdministrativelyProhibited
            }
            Refusal::TooManyForwards { .. } => ChannelOpenFailure::ResourceShortage,
        }
    }

    /// The audit event's own fields, besides the target.
    pub(super) fn fields(&self) -> Value {
        match self {
            Refusal::OtherCluster { target_cluster, .. } => {
                json!({"target_cluster": target_cluster})
            }
            Refusal::TooManyForwards { limit } => json!({"limit": limit}),
            Refusal::ShuttingDown | Refusal::BadTarget | Refusal::MfaSessionUsed => json!({}),
        }
    }
}

/// May an authenticated connection open a forward to this target: `Ok((node, cluster))`, or
/// why not. (The count of forwards open through the connection is checked after it, when a
/// slot is taken.)
pub(super) fn decide<'a>(ask: &Ask<'a>) -> Result<(&'a str, &'a str), Refusal> {
    if ask.draining {
        return Err(Refusal::ShuttingDown);
    }
    let Some((node, cluster)) = split_target(ask.host).filter(|_| ask.port == 22) else {
        return Err(Refusal::BadTarget);
    };
    if cluster != ask.cert_cluster {
        return Err(Refusal::OtherCluster {
            cert_cluster: ask.cert_cluster.to_string(),
            target_cluster: cluster.to_string(),
        });
    }
    if ask.per_session_mfa && ask.mfa_session_used {
        return Err(Refusal::MfaSessionUsed);
    }
    Ok((node, cluster))
}

fn refuse_shell_channel(channel: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
    session.channel_success(channel)?;
    session.extended_data(channel, 1, EDGE_MESSAGE.as_bytes().to_vec())?;
    session.exit_status_request(channel, 1)?;
    session.eof(channel)?;
    session.close(channel)
}

impl EngineerHandler {
    /// Audit a shell, exec or subsystem request on the edge itself, and answer with the message.
    pub(super) async fn refuse_shell(
        &mut self,
        channel: ChannelId,
        request: &str,
        extra: Value,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.conn.touch();
        let key_id = self.identity.as_ref().map(|i| i.key_id().to_string());
        tracing::warn!(peer = ?self.peer, login = self.login, key_id, request, "refused: the edge opens no shell");
        let mut extra = extra;
        crate::merge(&mut extra, json!({"request": request}));
        self.refused(
            key_id.as_deref(),
            "no_shell_on_edge",
            "the edge opens no shell: reach a node through it",
            extra,
        )
        .await;
        refuse_shell_channel(channel, session)
    }

    /// A remote forwarding request (`tcpip-forward`): refused and audited.
    pub(super) async fn refuse_remote_forward(&mut self, address: &str, port: u32) {
        self.conn.touch();
        let key_id = self.identity.as_ref().map(|i| i.key_id().to_string());
        tracing::warn!(peer = ?self.peer, login = self.login, "refused: remote forwarding on the edge");
        self.refused(
            key_id.as_deref(),
            "forward_on_edge",
            "the edge does not forward ports: only direct-tcpip to <node>.<cluster>:22",
            json!({"target": sanitize(&format!("{address}:{port}"))}),
        )
        .await;
    }

    /// A `direct-tcpip` request: refused (audited), or opened through a tunnel of the cluster.
    pub(super) async fn direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        to: Target<'_>,
        reply: ChannelOpenHandle,
    ) {
        self.conn.touch();
        let Some(id) = &self.identity else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        let key_id = id.key_id().to_string();
        let (host, port) = (to.host, to.port);
        let target = sanitize(&format!("{host}:{port}"));
        let limit = self.edge.limits().max_forwards_per_connection;
        let decided = decide(&Ask {
            draining: self.edge.draining.is_cancelled(),
            host,
            port,
            cert_cluster: id.cluster(),
            per_session_mfa: id.per_session_mfa(),
            mfa_session_used: self.mfa_session_used,
        })
        .and_then(|(node, cluster)| {
            let slot = crate::Slot::take(&self.conn.forwards, limit)
                .ok_or(Refusal::TooManyForwards { limit })?;
            Ok((node, cluster, slot))
        });
        let (node, cluster, slot) = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                let reason = refusal.reason();
                tracing::warn!(
                    engineer = id.engineer(),
                    host,
                    port,
                    code = refusal.code(),
                    reason,
                    "forward refused"
                );
                let mut extra = json!({"target": target});
                crate::merge(&mut extra, refusal.fields());
                self.refused(Some(&key_id), refusal.code(), &reason, extra)
                    .await;
                reply.reject(refusal.failure()).await;
                return;
            }
        };
        if id.per_session_mfa() {
            self.mfa_session_used = true;
        }
        let tunnels = self.edge.tunnels.of(cluster);
        // The originator the gateway sees is the engineer's address as the edge saw it, not what
        // the client claims: the gateway checks `source-address` against it again.
        let (originator, originator_port) = match self.peer {
            Some(p) => (p.ip().to_string(), u32::from(p.port())),
            None => (to.originator.0.to_string(), to.originator.1),
        };
        let host = host.to_string();
        let engineer = id.engineer().to_string();
        let mut session_event = self.connection_fields();
        crate::merge(
            &mut session_event,
            json!({
                "engineer": id.engineer(),
                "ticket": id.ticket(),
                "grant": id.grant(),
                "cluster": id.cluster(),
                "node": node,
                "target": target,
                "key_id": key_id,
                "serial": id.serial().to_string(),
                "per_session_mfa": id.per_session_mfa(),
            }),
        );
        let no_tunnel_reason = format!("no gateway of cluster {cluster} is connected to this edge");
        let no_tunnel = self.refusal(
            Some(&key_id),
            "no_tunnel",
            &no_tunnel_reason,
            json!({"target": target}),
        );
        // Tunnels are up, but every gateway refused the node (one it does not serve, or one it
        // cannot take now): a different fault from a missing tunnel.
        let gateway_refused_reason = format!(
            "the gateway of cluster {cluster} refused {node} (a node it does not serve, or it \
             cannot take a session now)"
        );
        let gateway_refused = self.refusal(
            Some(&key_id),
            "gateway_refused",
            &gateway_refused_reason,
            json!({"target": target}),
        );
        let (no_tunnel_key, gateway_refused_key) = (
            self.refusal_key("no_tunnel"),
            self.refusal_key("gateway_refused"),
        );
        let edge = self.edge.clone();
        let conn = self.conn.clone();
        // Opening the tunnel channel waits on the gateway's connection: never inside this
        // connection's loop.
        crate::spawn_in_span(async move {
            // Held for as long as the forward is open (or being opened).
            let _slot = slot;
            let any_tunnel = !tunnels.is_empty();
            for (tunnel_id, tunnel) in tunnels {
                match tunnel
                    .channel_open_forwarded_tcpip(
                        host.clone(),
                        22,
                        originator.clone(),
                        originator_port,
                    )
                    .await
                {
                    Ok(inner) => {
                        // The refusals are not needed any more: not held for the forward's life.
                        drop((no_tunnel, gateway_refused));
                        // Written before any byte passes; no record, no forward (fail closed).
                        if !edge
                            .audit(EdgeKind::EdgeSession, session_event.clone())
                            .await
                        {
                            let _ = inner.close().await;
                            reply.reject(ChannelOpenFailure::ResourceShortage).await;
                            return;
                        }
                        // Listed under its tunnel while it lasts: a dropped tunnel names it.
                        let _listed = edge.tunnels.forwarded(tunnel_id, &session_event);
                        drop(session_event);
                        reply.accept().await;
                        // Unread, message by message; every message either way is activity.
                        let forwards = conn.forwards.clone();
                        let conn_told = conn.clone();
                        let tunnels = edge.tunnels.clone();
                        crate::pipe::join(
                            channel,
                            inner,
                            || conn.touch(),
                            |side| async move {
                                // The tunnel dropped under the forward: the engineer is told why
                                // (when this is the connection's only forward; others may go on).
                                if side == crate::pipe::Vanished::B
                                    && forwards.load(std::sync::atomic::Ordering::SeqCst) <= 1
                                {
                                    tracing::warn!(
                                        engineer,
                                        host,
                                        "the tunnel dropped under a forward"
                                    );
                                    let dropped = tunnels.dropped_message(tunnel_id);
                                    conn_told.tunnel_gone(dropped).await;
                                }
                            },
                        )
                        .await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, host, "a tunnel refused the channel; trying the next")
                    }
                }
            }
            // The engineer's ssh prints the reason: "channel 0: open failed: connect failed:
            // sallyport: ...".
            let reason = if any_tunnel {
                tracing::warn!(
                    engineer,
                    host,
                    "every tunnel of this cluster refused the node"
                );
                edge.audit_repeatable(&gateway_refused_key, gateway_refused)
                    .await;
                gateway_refused_reason
            } else {
                tracing::warn!(engineer, host, "no tunnel to this cluster's gateway");
                edge.audit_repeatable(&no_tunnel_key, no_tunnel).await;
                no_tunnel_reason
            };
            reply
                .reject(ChannelOpenFailure::Other {
                    code: ChannelOpenFailure::ConnectFailed.code(),
                    reason: format!("sallyport: {reason}"),
                })
                .await;
        });
    }
}
