//! The engineer connection's russh handler: authentication and channel requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::keys::{Certificate, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use sallyport_audit::sanitize;
use sallyport_ca::{CertIdentity, KeyId, check_user_cert};
use serde_json::{Value, json};

use crate::trust::split_target;
use sallyport_audit::writers::EdgeKind;

use super::Edge;
use super::auth::{MFA_TRIES, MfaVerdict, PendingMfa};
use super::conn::{Conn, full_reason, unauthenticated_key};
use super::full_message;
use super::pipe::pipe;

pub struct EngineerHandler {
    pub(super) edge: Arc<Edge>,
    pub(super) peer: Option<SocketAddr>,
    /// The user name of the last authentication request, made safe for the log.
    pub(super) login: String,
    /// Set only when the connection is authenticated: the certificate passed and, when it asks
    /// for it, the TOTP code too.
    pub(super) identity: Option<CertIdentity>,
    pub(super) pending_mfa: Option<PendingMfa>,
    /// A TOTP code opens one session: set once a forward was opened under per-session MFA.
    pub(super) mfa_session_used: bool,
    /// A certificate reached the edge's check on this connection (its refusal is audited).
    pub(super) certificate_seen: bool,
    /// Shared with the connection's task: activity, identity, and the request to end it.
    pub(super) conn: Arc<Conn>,
    /// `None` when the edge is full: every authentication is then refused.
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

pub(super) const EDGE_MESSAGE: &str = "This is sallyport's edge: it opens no shell. Reach a node through it, e.g.\r\n  ssh -F ~/.sallyport/ssh_config <node>.<cluster>\r\n(`sallyport login` writes that configuration.)\r\n";

/// The subject fields named by a certificate's key id, when it is sallyport's.
pub(super) fn key_id_subjects(key_id: &str) -> Value {
    match key_id.parse::<KeyId>() {
        Ok(k) => json!({
            "engineer": k.engineer(),
            "ticket": k.ticket(),
            "grant": k.grant(),
            "cluster": k.cluster(),
        }),
        Err(_) => json!({"engineer": null, "ticket": null, "grant": null, "cluster": null}),
    }
}

impl EngineerHandler {
    /// The fields every event of this connection has.
    pub(super) fn connection_fields(&self) -> Value {
        json!({
            "edge": self.edge.cfg.name,
            "connection": self.conn.id,
            "login": self.login,
            "source_ip": self.peer.map(|p| p.ip().to_string()),
            "peer": self.peer.map(|p| p.to_string()),
        })
    }

    /// An `edge_refused` event: `key_id` names the engineer, ticket and cluster when it parses.
    pub(super) fn refusal(
        &self,
        key_id: Option<&str>,
        code: &str,
        reason: &str,
        extra: Value,
    ) -> Value {
        let mut v = self.connection_fields();
        crate::merge(
            &mut v,
            json!({"code": code, "reason": reason, "key_id": key_id.map(sanitize)}),
        );
        crate::merge(&mut v, key_id_subjects(key_id.unwrap_or_default()));
        crate::merge(&mut v, extra);
        v
    }

    /// Audit a refusal: a few per minute per code and connection once logged in, per code and
    /// source address before (see [`Throttle`]).
    pub(super) async fn refused(
        &self,
        key_id: Option<&str>,
        code: &str,
        reason: &str,
        extra: Value,
    ) {
        let data = self.refusal(key_id, code, reason, extra);
        self.edge
            .audit_repeatable(&self.refusal_key(code), data)
            .await;
    }

    /// The throttle key of a refusal of `code` on this connection.
    pub(super) fn refusal_key(&self, code: &str) -> String {
        if self.identity.is_some() {
            self.conn.refusal_key(code)
        } else {
            unauthenticated_key(self.peer.map(|p| p.ip()), code)
        }
    }

    /// The edge is full: audit it (once per connection, naming the key the client offered),
    /// and have the connection's task disconnect it with the message the banner showed.
    pub(super) async fn refuse_full(&mut self, key_id: Option<&str>, extra: Value) -> Auth {
        if !self.conn.full_audited.swap(true, Ordering::SeqCst) {
            tracing::warn!(peer = ?self.peer, login = self.login, key_id, "edge full: connection refused");
            let max = self.edge.cfg.max_connections;
            let mut extra = extra;
            crate::merge(&mut extra, json!({"max_connections": max}));
            self.refused(key_id, "edge_full", &full_reason(max), extra)
                .await;
        }
        self.conn.kick.notify_one();
        Auth::reject()
    }

    /// An authentication request: a sign of life (and, when the edge is full, a client that
    /// reached authentication, whose refusal is audited even if it names no key).
    pub(super) fn auth_request(&mut self, user: &str) {
        self.login = crate::sanitize_login(user);
        self.conn.auth_seen.store(true, Ordering::SeqCst);
        self.conn.touch();
    }

    /// The connection is authenticated as `id`: remember who, for `edge_disconnected`.
    pub(super) fn authenticated(&mut self, id: CertIdentity) {
        if let Ok(mut who) = self.conn.who.lock() {
            *who = Some(json!({
                "connection": self.conn.id,
                "login": self.login,
                "key_id": id.key_id().to_string(),
                "engineer": id.engineer(),
                "ticket": id.ticket(),
                "grant": id.grant(),
                "cluster": id.cluster(),
                "serial": id.serial().to_string(),
            }));
        }
        self.identity = Some(id);
    }

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
        refuse_shell(channel, session)
    }
}

impl russh::server::Handler for EngineerHandler {
    type Error = russh::Error;

    /// When the edge is full, the engineer reads why before anything else.
    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .permit
            .is_none()
            .then(|| format!("{}\r\n", full_message(self.edge.cfg.max_connections))))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        self.certificate_seen = true;
        self.pending_mfa = None;
        let key_id = cert.key_id().to_string();
        let serial = json!({"serial": cert.serial().to_string()});
        if self.permit.is_none() {
            return Ok(self.refuse_full(Some(&key_id), serial).await);
        }
        let trust = &self.edge.trust;
        let result = check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        );
        if result.is_ok()
            && let Ok(mut kept) = self.conn.cert.lock()
        {
            *kept = Some(cert.clone());
        }
        match result {
            Ok(id) if id.per_session_mfa() && self.edge.authed.is_none() => {
                let reason = "the certificate asks for per-session MFA, and this edge has no \
                              broker token (token_file) to check TOTP codes with";
                tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), "certificate refused at the edge: {reason}");
                self.refused(Some(&key_id), "mfa_unavailable", reason, serial)
                    .await;
                Ok(Auth::reject())
            }
            Ok(id) if id.per_session_mfa() => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "certificate accepted at the edge; asking for the per-session TOTP code");
                self.identity = None;
                self.pending_mfa = Some(PendingMfa {
                    user: user.to_string(),
                    id,
                    failures: 0,
                });
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: true,
                })
            }
            Ok(id) => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "engineer authenticated at the edge");
                self.authenticated(id);
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                tracing::warn!(peer = ?self.peer, user, key_id = cert.key_id(), code = refusal.code(), reason = %refusal, "certificate refused at the edge");
                self.refused(Some(&key_id), refusal.code(), &refusal.to_string(), serial)
                    .await;
                Ok(Auth::reject())
            }
        }
    }

    /// A certificate russh refused itself (expired, not yet valid, or a CA signature that does
    /// not verify): refused whatever happens here; audited once per connection with the code our
    /// own check gives (a certificate from an untrusted CA is called that, an expired one of
    /// ours `expired`). The client has not proven it holds the key yet.
    async fn auth_certificate_refused(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<(), Self::Error> {
        self.auth_request(user);
        if self.certificate_seen || self.permit.is_none() {
            return Ok(());
        }
        self.certificate_seen = true;
        let trust = &self.edge.trust;
        let (code, reason) = match check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        ) {
            Err(refusal) => (refusal.code().to_string(), refusal.to_string()),
            // russh's clock and ours disagree by a second at the edge of the window.
            Ok(_) => (
                "outside_validity".to_string(),
                "the certificate is outside its validity window".to_string(),
            ),
        };
        let key_id = cert.key_id().to_string();
        tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "certificate refused at the edge");
        self.refused(
            Some(&key_id),
            &code,
            &reason,
            json!({"serial": cert.serial().to_string(), "key_ownership": "not proven"}),
        )
        .await;
        Ok(())
    }

    /// A plain key (not a certificate) whose signature verified. Refused; audited when no
    /// certificate reached the edge's check on this connection.
    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        if self.permit.is_none() {
            let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
            return Ok(self
                .refuse_full(None, json!({"fingerprint": fingerprint}))
                .await);
        }
        if !self.certificate_seen {
            let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
            tracing::warn!(peer = ?self.peer, user, fingerprint, "plain key refused at the edge: no valid certificate was presented");
            let public_key = key
                .public_key
                .to_openssh()
                .ok()
                .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
            self.refused(
                None,
                "not_a_certificate",
                "only sallyport certificates are accepted: a plain key was offered without a \
                 certificate; run `sallyport login`",
                json!({"fingerprint": fingerprint, "public_key": public_key}),
            )
            .await;
            // One event per connection is enough.
            self.certificate_seen = true;
        }
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.auth_request(user);
        // Only for a connection whose certificate passed and asks for it, under the same name.
        let Some(pending) = &self.pending_mfa else {
            tracing::debug!(peer = ?self.peer, "keyboard-interactive without a certificate: refused");
            return Ok(Auth::reject());
        };
        if pending.user != user {
            self.pending_mfa = None;
            return Ok(Auth::reject());
        }
        let Some(mut response) = response else {
            let prompt = format!("TOTP code for {}: ", pending.id.engineer());
            return Ok(Auth::Partial {
                name: "sallyport per-session MFA".into(),
                instructions: format!(
                    "Ticket {} on {} asks for a TOTP code for each session.",
                    pending.id.ticket(),
                    pending.id.cluster()
                )
                .into(),
                prompts: vec![(prompt.into(), false)].into(),
            });
        };
        let code: String = response
            .next()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim()
                    .chars()
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        let key_id = pending.id.key_id().to_string();
        if code.is_empty() {
            // No answer (a client in batch mode cannot prompt): refused without asking the
            // broker, so it does not count toward the engineer's lockout, and not asked again.
            tracing::warn!(peer = ?self.peer, user, key_id, "no per-session TOTP code was typed: refused");
            self.refused(
                Some(&key_id),
                "mfa_no_code",
                "the certificate asks for a per-session TOTP code and none was typed (ssh in \
                 batch mode cannot prompt for it)",
                json!({}),
            )
            .await;
            self.pending_mfa = None;
            return Ok(Auth::reject());
        }
        let peer_ip = self.peer.map(|p| p.ip());
        let verdict = self.edge.verify_mfa(&pending.id, &code, peer_ip).await;
        match verdict {
            MfaVerdict::Verified => {
                let Some(p) = self.pending_mfa.take() else {
                    return Ok(Auth::reject());
                };
                tracing::info!(peer = ?self.peer, user, engineer = p.id.engineer(), ticket = p.id.ticket(), cluster = p.id.cluster(), "engineer authenticated at the edge (certificate and per-session TOTP)");
                self.authenticated(p.id);
                Ok(Auth::Accept)
            }
            MfaVerdict::Refused { code, reason } => {
                tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "per-session TOTP code refused at the edge");
                self.refused(Some(&key_id), code, &reason, json!({})).await;
                let failures = match self.pending_mfa.as_mut() {
                    Some(p) => {
                        p.failures += 1;
                        p.failures
                    }
                    None => MFA_TRIES,
                };
                if failures >= MFA_TRIES || code == "mfa_locked_out" {
                    self.pending_mfa = None;
                    return Ok(Auth::reject());
                }
                Ok(Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: false,
                })
            }
            MfaVerdict::Unavailable(reason) => {
                tracing::error!(peer = ?self.peer, user, key_id, reason, "cannot check the per-session TOTP code: refused");
                self.refused(
                    Some(&key_id),
                    "mfa_unavailable",
                    &format!("the per-session TOTP code cannot be checked: {reason}"),
                    json!({}),
                )
                .await;
                self.pending_mfa = None;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.conn.touch();
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_shell(channel, "shell", json!({}), session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = sanitize(&String::from_utf8_lossy(data));
        self.refuse_shell(channel, "exec", json!({"command": command}), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_shell(
            channel,
            "subsystem",
            json!({"subsystem": sanitize(name)}),
            session,
        )
        .await
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
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
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.conn.touch();
        let Some(id) = &self.identity else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let key_id = id.key_id().to_string();
        let target = sanitize(&format!("{host}:{port}"));
        if self.edge.draining.load(Ordering::SeqCst) {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                "refused: the edge is shutting down"
            );
            self.refused(
                Some(&key_id),
                "shutting_down",
                "the edge is shutting down: it opens no new forwards; connect again",
                json!({"target": target}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        }
        let Some((node, cluster)) = split_target(host).filter(|_| port == 22) else {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                port,
                "refused: not a <node>.<cluster> name on port 22"
            );
            self.refused(
                Some(&key_id),
                "bad_target",
                "the edge forwards only to <node>.<cluster>:22",
                json!({"target": target}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if cluster != id.cluster() {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                port,
                cert_cluster = id.cluster(),
                "refused: the certificate is for another cluster or port"
            );
            let reason = format!(
                "the certificate is for another cluster ({}), not {cluster}",
                id.cluster()
            );
            self.refused(
                Some(&key_id),
                "other_cluster",
                &reason,
                json!({"target": target, "target_cluster": cluster}),
            )
            .await;
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        // Per-session MFA means per session: one code, one forward. A second session through
        // this connection (ControlMaster, `ssh -J` reusing a jump connection) needs a new
        // connection and a new code.
        if id.per_session_mfa() && self.mfa_session_used {
            tracing::warn!(
                engineer = id.engineer(),
                host,
                "refused: a per-session TOTP code opens one session"
            );
            self.refused(
                Some(&key_id),
                "mfa_session_used",
                "per-session MFA: a TOTP code opens one session; connect again (without a shared \
                 ControlMaster connection to the edge) and enter a new code",
                json!({"target": target}),
            )
            .await;
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let limit = self.edge.limits().max_forwards_per_connection;
        let Some(slot) = crate::Slot::take(&self.conn.forwards, limit) else {
            tracing::warn!(
                engineer = id.engineer(),
                limit,
                "refused: too many forwards"
            );
            self.refused(
                Some(&key_id),
                "too_many_forwards",
                &format!("at most {limit} sessions at once through one connection to the edge"),
                json!({"target": target, "limit": limit}),
            )
            .await;
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        if id.per_session_mfa() {
            self.mfa_session_used = true;
        }
        let tunnels = self.edge.tunnels.of(cluster);
        // The originator the gateway sees is the engineer's address as the edge saw it, not what
        // the client claims: the gateway checks `source-address` against it again.
        let (originator, originator_port) = match self.peer {
            Some(p) => (p.ip().to_string(), u32::from(p.port())),
            None => (originator_address.to_string(), originator_port),
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
        tokio::spawn(async move {
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
                        let _listed = edge.tunnels.forwarded(tunnel_id, session_event);
                        reply.accept().await;
                        pipe(channel, inner, conn.clone()).await;
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
        Ok(())
    }
}

pub(super) fn refuse_shell(channel: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
    session.channel_success(channel)?;
    session.extended_data(channel, 1, EDGE_MESSAGE.as_bytes().to_vec())?;
    session.exit_status_request(channel, 1)?;
    session.eof(channel)?;
    session.close(channel)
}
