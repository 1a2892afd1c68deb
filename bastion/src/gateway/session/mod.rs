//! One engineer session at the gateway. The inner SSH server's callbacks (`handler.rs`, a thin
//! adapter) call into [`EngineerSession`], which holds the session's state and makes its
//! decisions: the engineer's certificate, checked again, and the session limits (`auth.rs`), each
//! channel request (`requests.rs`), port forwards (`forward.rs`). The connection to the node uses
//! a per-session certificate; the bytes of each channel travel both ways in tasks of their own
//! (`bridge.rs`), each command written to the audit spool before it reaches the node.
//!
//! [`serve`] is the session's own task: it runs the connection, ends it when the gateway stops,
//! and once it is over ends what the session left on the node and writes `session_ended`, once,
//! whichever way the session ended.

mod auth;
mod bridge;
mod forward;
mod handler;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::CertIdentity;
use sallyport_ca::clock::now_secs;
use sallyport_ca::policy::{ChannelFacts, ChannelRequest, DenyReason};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::Gateway;
use super::node::{self, NodeClient};
use super::recorder::{ChannelRecorder, RecordError};
use bridge::unrecordable_channel;
use bridge::{NodeRequest, OnNode, UNRECORDABLE, Up};

/// How long a session told to end (the gateway stops) may take to close its connection.
const END_WAIT: Duration = Duration::from_secs(5);

/// One engineer session: who it is, what it opened, and the decisions on what it asks.
pub struct EngineerSession {
    gw: Arc<Gateway>,
    /// `<node>.<cluster>` as the engineer addressed it.
    host: String,
    node: String,
    peer: String,
    sid: String,
    identity: Option<CertIdentity>,
    cert: Option<Certificate>,
    login: String,
    upstream: Option<russh::client::Handle<NodeClient>>,
    chans: HashMap<ChannelId, Up>,
    /// Every session channel opened on the node that the node still holds open (kept after the
    /// engineer closes theirs, until it is ended there: what still runs is ended with the
    /// session).
    node_chans: Vec<Arc<OnNode>>,
    /// Set when the session ends, for the tasks that watch it.
    closed: Arc<AtomicBool>,
    /// Channels open in this session (sessions and forwards).
    open: Arc<AtomicUsize>,
    /// This session's place under the gateway's session limits, held while it is open.
    slots: Vec<crate::Slot>,
    /// Past a session limit: what the engineer is told when the session is ended at once.
    over_limit: Option<String>,
    /// A certificate russh refused itself was audited on this connection (the client offers it
    /// twice: once to ask, once signed).
    refused_seen: bool,
    /// Programs may start: the session needs no observer, or one has joined.
    released: Arc<AtomicBool>,
}

impl EngineerSession {
    fn new(gw: Arc<Gateway>, host: String, peer: String) -> EngineerSession {
        let node = host.split('.').next().unwrap_or_default().to_string();
        let mut b = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b);
        EngineerSession {
            gw,
            host,
            node,
            peer,
            sid: format!("s-{}", hex::encode(b)),
            identity: None,
            cert: None,
            login: String::new(),
            upstream: None,
            chans: HashMap::new(),
            node_chans: Vec::new(),
            closed: Arc::default(),
            open: Arc::default(),
            slots: Vec::new(),
            over_limit: None,
            refused_seen: false,
            released: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The common fields of this session's audit events.
    fn fields(&self, extra: Value) -> Value {
        let mut v = json!({
            "session": self.sid,
            "host": self.host,
            "cluster": self.gw.cluster,
            "node": self.node,
            "login": self.login,
            "engineer": self.identity.as_ref().map(|i| i.engineer()),
            "ticket": self.identity.as_ref().map(|i| i.ticket()),
            "grant": self.identity.as_ref().map(|i| i.grant()),
        });
        crate::merge(&mut v, extra);
        v
    }

    /// Write an event durably; `false` (and the caller refuses) when the spool cannot be written.
    async fn audit(&self, kind: GatewayKind, extra: Value) -> bool {
        match self.gw.spool.append(kind, self.fields(extra)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit spool unwritable: refusing");
                false
            }
        }
    }

    /// Fail closed when the audit spool cannot be written: nothing reaches the node; tell the
    /// engineer why and end the channel.
    fn unrecordable(channel: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
        Self::end_with_message(channel, UNRECORDABLE, session)
    }

    /// End a channel whose shell, exec or subsystem request is refused, with a message. Answered
    /// as accepted, then ended with the message and status 1: OpenSSH exits at once on a failed
    /// request, without showing anything the channel carried.
    fn end_with_message(
        channel: ChannelId,
        message: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        session.channel_success(channel)?;
        session.extended_data(channel, 1, message.as_bytes().to_vec())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    /// Ask the policy about a channel request. A refusal is audited (with the policy's codes and
    /// messages) and returned as the text the engineer reads.
    async fn ask(&self, channel: Option<ChannelId>, request: ChannelRequest) -> Result<(), String> {
        let Some(id) = self.identity.as_ref() else {
            return Err("sallyport: not authenticated\r\n".into());
        };
        let facts = ChannelFacts {
            engineer: id.engineer().to_string(),
            group: id.group().map(str::to_string),
            customer: String::new(),
            cluster: self.gw.cluster.clone(),
            node: self.node.clone(),
            login: self.login.clone(),
            ticket: id.ticket().to_string(),
            port_forwarding: id.permit_port_forwarding(),
            now: now_secs(),
            request,
        };
        let Err(reasons) = self.gw.decide_channel(facts.clone()) else {
            return Ok(());
        };
        let (kind, detail) = refusal_event(&facts.request, &reasons, channel.map(channel_num));
        self.audit(kind, detail).await;
        Err(refusal_text(&reasons))
    }

    async fn ensure_upstream(&mut self) -> Result<(), node::NodeError> {
        if self.upstream.is_some() {
            return Ok(());
        }
        let id = self
            .identity
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not authenticated"))?;
        let entry = self
            .gw
            .node(&self.node)
            .ok_or_else(|| node::NodeError::Unknown(self.node.clone()))?;
        let fields = self.fields(json!({}));
        let h = node::connect(
            &self.gw,
            &entry,
            &self.login,
            &self.sid,
            id.engineer(),
            id.ticket(),
            id.permit_port_forwarding(),
            fields,
        )
        .await?;
        self.upstream = Some(h);
        Ok(())
    }

    /// The node could not be reached for a channel: audited and the channel refused with the
    /// reason the gateway saw, which the engineer's ssh prints ("channel 0: open failed:
    /// connect failed: sallyport: ..."). A refused host key (audited already) also ends the
    /// session: nothing of it can reach that node.
    async fn node_failed(
        &mut self,
        e: node::NodeError,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        let message = e.message(&self.node);
        let refusal = ChannelOpenFailure::Other {
            code: ChannelOpenFailure::ConnectFailed.code(),
            reason: format!("sallyport: {message}"),
        };
        match e {
            node::NodeError::KeyRefused(r) => {
                tracing::warn!(
                    node = self.node,
                    code = r.code,
                    "the node's host key was refused"
                );
                reply.reject(refusal).await;
                let _ = session.disconnect(
                    russh::Disconnect::ByApplication,
                    &format!("sallyport: {}", r.message),
                    "en",
                );
            }
            node::NodeError::Unknown(_)
            | node::NodeError::Unreachable { .. }
            | node::NodeError::CertificateRefused { .. }
            | node::NodeError::Other(_) => {
                tracing::warn!(error = %e, node = self.node, code = e.code(), attempts = e.attempts(), "cannot reach the node");
                let mut detail = json!({"code": e.code(), "reason": message});
                if let Some(n) = e.attempts() {
                    detail["attempts"] = json!(n);
                }
                self.audit(GatewayKind::NodeUnreachable, detail).await;
                reply.reject(refusal).await;
            }
        }
    }

    /// A slot for a new channel, or `None` (refused and audited) past `max_channels_per_session`.
    async fn channel_slot(&self, request: &str) -> Option<crate::Slot> {
        let limit = self.gw.limits().max_channels_per_session;
        if let Some(slot) = crate::Slot::take(&self.open, limit) {
            return Some(slot);
        }
        tracing::warn!(session = self.sid, limit, "refused: too many channels");
        self.gw
            .audit_repeatable(
                &format!("{}:too_many_channels", self.sid),
                GatewayKind::ChannelRefused,
                self.fields(
                    json!({"request": request, "code": "too_many_channels", "limit": limit,
                       "reason": format!("at most {limit} channels at once in one session")}),
                ),
            )
            .await;
        None
    }

    /// Act on a channel's recorder (start what it records, resize it); `Ok` for an unknown channel.
    fn with_recorder(
        &self,
        channel: ChannelId,
        f: impl FnOnce(&ChannelRecorder) -> Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        match self.chans.get(&channel) {
            Some(up) => f(&up.rec),
            None => Ok(()),
        }
    }

    /// The channel cannot be recorded: audited, the node's side closed, the engineer told.
    async fn cannot_record(
        &mut self,
        channel: ChannelId,
        e: &RecordError,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.audit(
            GatewayKind::RecordingFailed,
            json!({"channel": channel_num(channel), "reason": e.to_string()}),
        )
        .await;
        if let Some(up) = self.chans.remove(&channel) {
            up.node.end_soon();
        }
        session.extended_data(channel, 1, unrecordable_channel(e).into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    /// Pass a request on to the node for `channel` and, when the engineer waits for one, the
    /// node's answer back (a failure when the channel is gone or the request could not be sent).
    async fn pass_on(
        &self,
        channel: ChannelId,
        request: NodeRequest,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let sent = match self.chans.get(&channel) {
            Some(up) => request.send(&up.node).await.is_ok(),
            None => false,
        };
        if !request.wants_reply() {
            return Ok(());
        }
        let ok = match self.chans.get(&channel) {
            Some(up) if sent => up.reply().await,
            _ => false,
        };
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
    /// A session channel: opened on the node too, and joined to it by a bridge.
    async fn open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        let id = channel.id();
        let Some(slot) = self.channel_slot("session").await else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        if let Err(e) = self.ensure_upstream().await {
            self.node_failed(e, reply, session).await;
            return;
        }
        let Some(up) = self.upstream.as_ref() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        let Ok(node_channel) = up.channel_open_session().await else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        reply.accept().await;
        let rec = Arc::new(
            ChannelRecorder::new(
                &self.gw.cfg.data_dir.join("recordings"),
                &self.sid,
                channel_num(id),
                self.gw.cfg.stream_record_cap_bytes,
            )
            .sealing_to(self.gw.seal_key()),
        );
        let fields = crate::Fields::new(
            &self.fields(json!({"channel": channel_num(id), "recording": rec.recording_id()})),
        );
        let bridged = bridge::Bridged {
            spool: self.gw.spool.clone(),
            fields,
            rec,
            slot,
        };
        let (up, on_node) = bridge::start(channel, node_channel, session.handle(), bridged);
        self.chans.insert(id, up);
        self.node_chans.retain(|node| node.open());
        self.node_chans.push(on_node);
    }

    /// The engineer closed a channel. Their Close also reaches the channel's bridge, which
    /// ends the node's side after the data before it (and the program, if it still runs).
    fn channel_closed(&mut self, channel: ChannelId) {
        self.chans.remove(&channel);
    }

    /// The session is over: it frees its place under the limits, ends what it left running
    /// on the node, and, when an engineer was let in, writes the refusals folded in under it
    /// and then `session_ended`. Called once, by [`serve`].
    async fn end(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        self.slots.clear();
        let chans = std::mem::take(&mut self.node_chans);
        if let Some(upstream) = self.upstream.take() {
            self.gw
                .tasks
                .spawn(bridge::end_on_node(chans, upstream).in_current_span());
        }
        if self.identity.is_none() {
            return;
        }
        self.gw
            .flush_refusals(Some(&format!("{}:", self.sid)))
            .await;
        match self
            .gw
            .spool
            .append(GatewayKind::SessionEnded, self.fields(json!({})))
            .await
        {
            Ok(_) => {
                self.gw.session_closed(&self.sid);
                tracing::info!("session ended");
            }
            // The session's mark stays: the gateway's next start writes its end.
            Err(e) => {
                tracing::error!(error = %e, session = self.sid, "audit spool unwritable: session_ended not written");
            }
        }
    }
}

fn channel_num(c: ChannelId) -> u32 {
    u32::from(c)
}

/// Run one engineer session on `stream` (a channel of an edge's tunnel) until it is over, then
/// end it ([`EngineerSession::end`]). When the gateway stops, the session is told so and
/// disconnected first.
pub(super) async fn serve(
    gw: Arc<Gateway>,
    config: Arc<russh::server::Config>,
    stream: russh::ChannelStream<russh::client::Msg>,
    host: String,
    peer: String,
) {
    let session = EngineerSession::new(gw.clone(), host, peer);
    // What is logged for this session, here, in russh's task and in its callbacks, says which
    // session (its id in the audit log), node and, once known, engineer.
    let span = tracing::info_span!(
        "session",
        id = %session.sid,
        node = %session.host,
        engineer = tracing::field::Empty,
    );
    run(gw, config, stream, session).instrument(span).await;
}

async fn run(
    gw: Arc<Gateway>,
    config: Arc<russh::server::Config>,
    stream: russh::ChannelStream<russh::client::Msg>,
    session: EngineerSession,
) {
    let stopping = gw.stopping.clone();
    let session = Arc::new(Mutex::new(session));
    let adapter = handler::Adapter(session.clone());
    // Boxed: the set-up's state (russh's session before it runs in its own task) is freed once
    // it has started, instead of staying part of this task for the session's life.
    match Box::pin(russh::server::run_stream(config, stream, adapter)).await {
        Ok(running) => {
            let handle = running.handle();
            tokio::pin!(running);
            let ended = tokio::select! {
                r = &mut running => Some(r),
                () = stopping.cancelled() => {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "sallyport gateway: shutting down".into(),
                            "en".into(),
                        )
                        .await;
                    tokio::time::timeout(END_WAIT, &mut running).await.ok()
                }
            };
            match ended {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!(error = ?e, "inner session ended with an error"),
                None => tracing::warn!("an inner session did not close in time"),
            }
        }
        Err(e) => tracing::debug!(error = ?e, "inner session did not start"),
    }
    // The connection is over (or given up on): no callback runs any more, or none will finish.
    match tokio::time::timeout(END_WAIT, session.lock()).await {
        Ok(mut s) => s.end().await,
        Err(_) => tracing::error!("an inner session's state stayed busy: it was not ended"),
    }
}

/// The audit event of a channel request the policy refused: its kind (a forward's own) and
/// what it says, the policy's codes and messages among it (pure).
fn refusal_event(
    request: &ChannelRequest,
    reasons: &[DenyReason],
    channel: Option<u32>,
) -> (GatewayKind, Value) {
    let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
    let messages: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
    let mut detail = json!({
        "request": request.kind(),
        "code": codes.first().copied().unwrap_or_default(),
        "codes": codes,
        "reason": messages.join("; "),
    });
    if let Some(c) = channel {
        detail["channel"] = json!(c);
    }
    let kind = match request {
        ChannelRequest::Exec { command, .. } => {
            detail["command"] = json!(command);
            GatewayKind::ChannelRefused
        }
        ChannelRequest::Subsystem { name } => {
            detail["subsystem"] = json!(name);
            GatewayKind::ChannelRefused
        }
        ChannelRequest::Env { name } => {
            detail["env_name"] = json!(name);
            GatewayKind::ChannelRefused
        }
        ChannelRequest::Signal { name } => {
            detail["signal"] = json!(name);
            GatewayKind::ChannelRefused
        }
        ChannelRequest::DirectTcpip { host, port }
        | ChannelRequest::TcpipForward { host, port } => {
            detail["target"] = json!(format!("{host}:{port}"));
            GatewayKind::ForwardRefused
        }
        ChannelRequest::Pty
        | ChannelRequest::Shell
        | ChannelRequest::WindowChange
        | ChannelRequest::Agent
        | ChannelRequest::X11 => GatewayKind::ChannelRefused,
    };
    (kind, detail)
}

/// What the engineer reads of a refusal: each of the policy's messages on a line.
fn refusal_text(reasons: &[DenyReason]) -> String {
    reasons
        .iter()
        .map(|r| format!("sallyport: {}\r\n", r.message))
        .collect()
}
