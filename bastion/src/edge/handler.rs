//! The engineer connection's russh handler: a thin adapter that hands each request to the
//! authentication (`auth.rs`) or to the channel requests and forwarding (`forward.rs`), and the
//! fields and throttle keys of its audit events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Response, Session};
use russh::{Channel, ChannelId};
use sallyport_audit::sanitize;
use sallyport_ca::{CertIdentity, KeyId};
use serde_json::{Value, json};

use super::Edge;
use super::conn::Conn;
use super::forward::Target;
use super::listener::{full_message, unauthenticated_key};
use super::mfa::PendingMfa;

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
    /// source address before (see [`crate::throttle::Throttle`]).
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
        tracing::Span::current().record("engineer", tracing::field::display(id.engineer()));
        self.identity = Some(id);
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
        Ok(self.on_certificate(user, cert).await)
    }

    async fn auth_certificate_refused(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<(), Self::Error> {
        self.on_certificate_refused(user, cert).await;
        Ok(())
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.on_plain_key(user, key.public_key).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.on_keyboard_interactive(user, response).await)
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
        self.refuse_remote_forward(address, *port).await;
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
        let target = Target {
            host,
            port,
            originator: (originator_address, originator_port),
        };
        self.direct_tcpip(channel, target, reply).await;
        Ok(())
    }
}
