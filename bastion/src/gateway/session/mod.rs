//! One engineer session at the gateway: the inner SSH server's handler. It authenticates the
//! engineer's certificate again, connects to the node with a per-session certificate, passes
//! each channel request on (pty, shell, exec, sftp, env, window-change, signals) and bridges the
//! data both ways, writing each command to the audit spool before it reaches the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::policy::{ChannelFacts, ChannelRequest};
use sallyport_ca::{CertIdentity, check_user_cert};
use serde_json::{Value, json};
use sha2::Digest;

mod bridge;

use super::Gateway;
use super::node::{self, NodeClient};
use super::recorder::{ChannelRecorder, RecordError};
use crate::record::exec::ExecKind;
use bridge::{
    NodeChannel, NodeRequest, Program, UNRECORDABLE, Up, end_on_node, unrecordable_channel,
};

const WAITING_FOR_OBSERVER: &str = "sallyport: this access requires that an approver of the \
customer watches the session: waiting for one to join (they open it under Sessions in the \
console); it starts as soon as one does\r\n";

pub struct Inner {
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
    /// Every session channel opened on the node, and whether the node still holds it open
    /// (kept after the engineer closes theirs: what still runs there is ended with the session).
    node_chans: Vec<NodeChannel>,
    /// Set when the session ends, for the tasks that watch it.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Channels open in this session (sessions and forwards).
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// This session's place under the gateway's session limits, held while it is open.
    _slots: Vec<crate::Slot>,
    /// Past a session limit: what the engineer is told when the session is ended at once.
    over_limit: Option<String>,
    /// Programs may start: the session needs no observer, or one has joined.
    released: Arc<std::sync::atomic::AtomicBool>,
}

impl Inner {
    pub fn new(gw: Arc<Gateway>, host: String, peer: String) -> Inner {
        let node = host.split('.').next().unwrap_or_default().to_string();
        let mut b = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b);
        Inner {
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
            _slots: Vec::new(),
            over_limit: None,
            released: Arc::new(std::sync::atomic::AtomicBool::new(true)),
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
            now: crate::now(),
            request,
        };
        let Err(reasons) = self.gw.decide_channel(facts.clone()) else {
            return Ok(());
        };
        let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
        let messages: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
        let mut detail = json!({
            "request": facts.request.kind(),
            "code": codes.first().copied().unwrap_or_default(),
            "codes": codes,
            "reason": messages.join("; "),
        });
        if let Some(c) = channel {
            detail["channel"] = json!(channel_num(c));
        }
        let kind = match &facts.request {
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
        self.audit(kind, detail).await;
        Err(messages
            .iter()
            .map(|m| format!("sallyport: {m}\r\n"))
            .collect())
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
            | node::NodeError::Unreachable(_)
            | node::NodeError::CertificateRefused { .. }
            | node::NodeError::Other(_) => {
                tracing::warn!(error = %e, node = self.node, code = e.code(), "cannot reach the node");
                self.audit(
                    GatewayKind::NodeUnreachable,
                    json!({"code": e.code(), "reason": message}),
                )
                .await;
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
            let _ = up.write.close().await;
        }
        session.extended_data(channel, 1, unrecordable_channel(e).into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    /// Ask the node to run the channel's program and pass its answer on. In a moderated session
    /// nobody watches yet, the engineer is told, and the program is asked for (and answered)
    /// once an observer joins, or refused after `observer_wait_secs`: the connection's loop is
    /// not held meanwhile.
    async fn start_program(
        &mut self,
        channel: ChannelId,
        program: Program,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.released.load(SeqCst) {
            return self
                .pass_on(channel, NodeRequest::Program(program), session)
                .await;
        }
        let Some(up) = self.chans.get(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.extended_data(channel, 1, WAITING_FOR_OBSERVER.as_bytes().to_vec())?;
        let (write, reply_direct) = (up.write.clone(), up.reply_direct.clone());
        let (gw, sid, released) = (self.gw.clone(), self.sid.clone(), self.released.clone());
        let handle = session.handle();
        let fields = self.fields(json!({"channel": channel_num(channel)}));
        let closed = self.closed.clone();
        tokio::spawn(async move {
            let wait = Duration::from_secs(gw.cfg.observer_wait_secs.max(1));
            let start = std::time::Instant::now();
            loop {
                if released.load(SeqCst) {
                    break;
                }
                if gw.is_observed(&sid) {
                    if released
                        .compare_exchange(false, true, SeqCst, SeqCst)
                        .is_ok()
                    {
                        let mut d = fields.clone();
                        d["waited_secs"] = json!(start.elapsed().as_secs());
                        let _ = gw.spool.append(GatewayKind::ObserverJoined, d).await;
                    }
                    break;
                }
                if closed.load(SeqCst) {
                    return;
                }
                if start.elapsed() >= wait {
                    let reason = format!(
                        "no approver of the customer joined to watch the session within {} s",
                        wait.as_secs()
                    );
                    let mut d = fields.clone();
                    d["code"] = json!("no_observer");
                    d["reason"] = json!(reason);
                    let _ = gw.spool.append(GatewayKind::ChannelRefused, d).await;
                    // As `end_with_message`: the request is answered, then the engineer reads why
                    // and the channel ends with status 1 (a failure answer would make ssh close
                    // the channel before it printed the reason). Nothing ran on the node.
                    let _ = handle.channel_success(channel).await;
                    let _ = handle
                        .extended_data(channel, 1, format!("sallyport: {reason}\r\n").into_bytes())
                        .await;
                    let _ = handle.exit_status_request(channel, 1).await;
                    let _ = handle.eof(channel).await;
                    let _ = handle.close(channel).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            reply_direct.store(true, SeqCst);
            let request = NodeRequest::Program(program);
            if request.send(&write).await.is_err() && reply_direct.swap(false, SeqCst) {
                bridge::answer(&handle, channel, false).await;
            }
        });
        Ok(())
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
            Some(up) => request.send(&up.write).await.is_ok(),
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
}

/// A signal's name as policies see it: `INT`, `TERM`, ... (without `SIG`).
fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Variables whose value is shown in the audit log: they only say how to show text.
fn display_setting(name: &str) -> bool {
    matches!(name, "LANG" | "TERM" | "COLORTERM" | "TZ") || name.starts_with("LC_")
}

fn channel_num(c: ChannelId) -> u32 {
    u32::from(c)
}

impl russh::server::Handler for Inner {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let trust = &self.gw.trust;
        // The edge names the engineer's address as the originator of the tunnel channel (it is
        // authenticated and pinned, so its word is taken): `source-address` is checked here too.
        let peer_ip = self
            .peer
            .rsplit_once(':')
            .and_then(|(ip, _)| ip.trim_matches(['[', ']']).parse().ok());
        let checked = check_user_cert(
            cert,
            &trust.cas(),
            crate::now(),
            &|c| trust.is_revoked(c),
            peer_ip,
        );
        let refusal = match &checked {
            Ok(id) if id.cluster() != self.gw.cluster => Some((
                "other_cluster".to_string(),
                "the certificate is for another cluster".to_string(),
            )),
            Ok(id) if !id.allows_login(user) => Some((
                "login_not_in_certificate".to_string(),
                format!("the certificate does not allow the login {user}"),
            )),
            Ok(_) => None,
            Err(r) => Some((r.code().to_string(), r.to_string())),
        };
        self.login = crate::sanitize_login(user);
        if let Some((code, reason)) = refusal {
            self.audit(
                GatewayKind::SessionRefused,
                json!({"key_id": cert.key_id(), "code": code, "reason": reason, "peer": self.peer}),
            )
            .await;
            return Ok(Auth::reject());
        }
        let Ok(id) = checked else {
            return Ok(Auth::reject());
        };
        match self.gw.session_slots(id.engineer()) {
            Ok(slots) => self._slots = slots,
            Err((code, reason, limit)) => {
                tracing::warn!(
                    engineer = id.engineer(),
                    code,
                    limit,
                    "refused: session limit"
                );
                // Anyone holding a certificate can repeat it: a few events a minute per
                // engineer and limit, the others counted.
                self.gw
                    .audit_repeatable(
                        &format!("engineer:{}:{code}", id.engineer()),
                        GatewayKind::SessionRefused,
                        self.fields(json!({"key_id": cert.key_id(), "engineer": id.engineer(),
                                           "code": code, "reason": reason, "limit": limit,
                                           "peer": self.peer})),
                    )
                    .await;
                // Accepted only to say why: no identity, so nothing is served, and the session
                // is ended at once with the reason (a refused key would only read "Permission
                // denied").
                self.over_limit = Some(format!("sallyport: {reason}"));
                return Ok(Auth::Accept);
            }
        }
        // A moderated session: nothing runs until an approver of the customer watches it.
        self.released
            .store(!id.observer_required(), std::sync::atomic::Ordering::SeqCst);
        self.identity = Some(id);
        self.cert = Some(cert.clone());
        // If this cannot be written, the session is still let in: every channel request needs its
        // own durable event first, and is refused with a message saying why.
        let observer_required = !self.released.load(std::sync::atomic::Ordering::SeqCst);
        self.audit(GatewayKind::SessionStarted, json!({"key_id": cert.key_id(), "serial": cert.serial().to_string(), "peer": self.peer, "observer_required": observer_required})).await;
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(reason) = &self.over_limit {
            session.disconnect(russh::Disconnect::ByApplication, reason, "en")?;
            return Ok(());
        }
        // Revocation reaches live sessions: the KRL is re-read every second.
        let (Some(cert), handle, trust) =
            (self.cert.clone(), session.handle(), self.gw.trust.clone())
        else {
            return Ok(());
        };
        let spool = self.gw.spool.clone();
        let fields = self.fields(json!({}));
        let closed = self.closed.clone();
        let (gw, sid) = (self.gw.clone(), self.sid.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let expired = cert.valid_before() <= crate::now();
                let ended_by = gw.termination(&sid);
                if expired || trust.is_revoked(&cert) || ended_by.is_some() {
                    let mut data = fields.clone();
                    let reason = match &ended_by {
                        Some((by, why)) => {
                            data["terminated_by"] = json!(by);
                            format!("the session was ended by {by}: {why}")
                        }
                        None if expired => "the certificate expired".to_string(),
                        None => "the certificate was revoked".to_string(),
                    };
                    data["reason"] = json!(reason);
                    let _ = spool.append(GatewayKind::SessionTerminated, data).await;
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            format!("sallyport: {reason}"),
                            "en".into(),
                        )
                        .await;
                    return;
                }
                if closed.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        let Some(slot) = self.channel_slot("session").await else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        if let Err(e) = self.ensure_upstream().await {
            self.node_failed(e, reply, session).await;
            return Ok(());
        }
        let Some(up) = self.upstream.as_ref() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let Ok(node_channel) = up.channel_open_session().await else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        let rec = Arc::new(ChannelRecorder::new(
            &self.gw.cfg.data_dir.join("recordings"),
            &self.sid,
            channel_num(id),
            self.gw.cfg.stream_record_cap_bytes,
        ));
        let fields =
            self.fields(json!({"channel": channel_num(id), "recording": rec.recording_id()}));
        let bridged = bridge::Bridged {
            spool: self.gw.spool.clone(),
            fields,
            rec,
            slot,
        };
        let (up, on_node) = bridge::start(channel, node_channel, session.handle(), bridged);
        self.chans.insert(id, up);
        self.node_chans
            .retain(|(open, _)| open.load(std::sync::atomic::Ordering::Relaxed));
        self.node_chans.push(on_node);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Err(message) = self.ask(Some(channel), ChannelRequest::Pty).await {
            session.extended_data(channel, 1, message.into_bytes())?;
            return session.channel_failure(channel);
        }
        let title = format!(
            "{} {} {}@{}",
            self.identity
                .as_ref()
                .map(|i| i.engineer())
                .unwrap_or_default(),
            self.identity
                .as_ref()
                .map(|i| i.ticket())
                .unwrap_or_default(),
            self.login,
            self.host
        );
        if let Err(e) = self.with_recorder(channel, |r| {
            r.start_pty(col_width, row_height, term, &title)
        }) {
            return self.cannot_record(channel, &e, session).await;
        }
        let request = NodeRequest::Pty {
            term: term.to_string(),
            cols: col_width,
            rows: row_height,
            pix_width,
            pix_height,
            modes: modes.to_vec(),
        };
        self.pass_on(channel, request, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Env {
            name: name.to_string(),
        };
        if self.ask(Some(channel), request).await.is_err() {
            return session.channel_failure(channel);
        }
        // Every variable passed is audited before the node sees it: its value only when it is a
        // display setting, otherwise its length and SHA-256 (values may hold secrets).
        let mut detail = json!({"channel": channel_num(channel), "env_name": name,
            "value_len": value.len(), "value_sha256": hex::encode(sha2::Sha256::digest(value))});
        if display_setting(name) {
            detail["value"] = json!(value.chars().take(64).collect::<String>());
        }
        if !self.audit(GatewayKind::Env, detail).await {
            return session.channel_failure(channel);
        }
        let request = NodeRequest::Env {
            name: name.to_string(),
            value: value.to_string(),
        };
        self.pass_on(channel, request, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Err(message) = self.ask(Some(channel), ChannelRequest::Shell).await {
            return Self::end_with_message(channel, &message, session);
        }
        if !self
            .audit(GatewayKind::Shell, json!({"channel": channel_num(channel)}))
            .await
        {
            return Self::unrecordable(channel, session);
        }
        // Without a pty, what the engineer sends is read by the shell as commands: kept, and
        // each line it reads is a command.
        if let Err(e) = self.with_recorder(channel, |r| r.start_stream("shell", true)) {
            return self.cannot_record(channel, &e, session).await;
        }
        self.start_program(channel, Program::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).to_string();
        // What the command is decides how the channel is recorded and what policies see: an sftp
        // server or scp moves files (wrapped in sudo, env... or not), an interpreter runs the
        // lines it reads on stdin.
        let kind = crate::record::exec::classify(&command);
        let file_transfer = match &kind {
            ExecKind::SftpServer => "sftp",
            ExecKind::Scp(_) => "scp",
            ExecKind::Interpreter { .. } | ExecKind::Command => "",
        };
        let request = ChannelRequest::Exec {
            command: command.clone(),
            file_transfer: file_transfer.to_string(),
        };
        if let Err(message) = self.ask(Some(channel), request).await {
            return Self::end_with_message(channel, &message, session);
        }
        // Durable before the command reaches the node.
        let mut detail =
            json!({"channel": channel_num(channel), "command": command, "via": "exec"});
        if let ExecKind::Interpreter { program } = &kind {
            detail["interpreter"] = json!(program);
        }
        if !file_transfer.is_empty() {
            detail["file_transfer"] = json!(file_transfer);
        }
        if !self.audit(GatewayKind::Command, detail).await {
            return Self::unrecordable(channel, session);
        }
        let started = match &kind {
            ExecKind::SftpServer => {
                if !self
                    .audit(
                        GatewayKind::SftpStarted,
                        json!({"channel": channel_num(channel), "via": "exec"}),
                    )
                    .await
                {
                    return Self::unrecordable(channel, session);
                }
                self.with_recorder(channel, |r| r.start_sftp())
            }
            ExecKind::Scp(t) => {
                if !self
                    .audit(
                        GatewayKind::FileTransfer,
                        json!({"channel": channel_num(channel), "via": "scp", "transfer": t}),
                    )
                    .await
                {
                    return Self::unrecordable(channel, session);
                }
                let direction = t.direction;
                self.with_recorder(channel, |r| r.start_scp(direction))
            }
            ExecKind::Interpreter { .. } | ExecKind::Command => {
                let interpreter = matches!(kind, ExecKind::Interpreter { .. });
                self.with_recorder(channel, |r| r.start_stream(&command, interpreter))
            }
        };
        if let Err(e) = started {
            return self.cannot_record(channel, &e, session).await;
        }
        self.start_program(channel, Program::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Subsystem {
            name: name.to_string(),
        };
        if let Err(message) = self.ask(Some(channel), request).await {
            return Self::end_with_message(channel, &message, session);
        }
        if name != "sftp" {
            // Only sftp is parsed and recorded; the base policy refuses every other subsystem.
            return Self::end_with_message(channel, "sallyport: only sftp is allowed\r\n", session);
        }
        if !self
            .audit(
                GatewayKind::SftpStarted,
                json!({"channel": channel_num(channel)}),
            )
            .await
        {
            return Self::unrecordable(channel, session);
        }
        if let Err(e) = self.with_recorder(channel, |r| r.start_sftp()) {
            return self.cannot_record(channel, &e, session).await;
        }
        self.start_program(channel, Program::Subsystem(name.to_string()), session)
            .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self
            .ask(Some(channel), ChannelRequest::WindowChange)
            .await
            .is_err()
        {
            return Ok(());
        }
        if let Err(e) = self.with_recorder(channel, |r| r.resize(col_width, row_height)) {
            return self.cannot_record(channel, &e, session).await;
        }
        let request = NodeRequest::WindowChange {
            cols: col_width,
            rows: row_height,
            pix_width,
            pix_height,
        };
        self.pass_on(channel, request, session).await
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Signal {
            name: signal_name(&signal),
        };
        if self.ask(Some(channel), request).await.is_err() {
            return Ok(());
        }
        self.pass_on(channel, NodeRequest::Signal(signal), session)
            .await
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // No agent is ever forwarded: the node never sees a request for one. The policy is asked
        // so that the refusal is explained and audited the same way as every other.
        if let Err(message) = self.ask(Some(channel), ChannelRequest::Agent).await {
            tracing::debug!(message, "agent forwarding refused");
        }
        session.channel_failure(channel)?;
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // As with the agent: never passed on, whatever the policy says.
        if let Err(message) = self.ask(Some(channel), ChannelRequest::X11).await {
            tracing::debug!(message, "X11 forwarding refused");
        }
        session.channel_failure(channel)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let request = ChannelRequest::TcpipForward {
            host: address.to_string(),
            port: *port,
        };
        // Not supported by the gateway whatever the policy says (the base policy refuses it).
        if let Err(message) = self.ask(None, request).await {
            tracing::debug!(message, "remote forwarding refused");
        } else {
            self.audit(GatewayKind::ForwardRefused, json!({"request": "tcpip_forward", "target": format!("{address}:{port}"), "reason": "remote port forwarding is not supported by this gateway"})).await;
        }
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = format!("{host}:{port}");
        let request = ChannelRequest::DirectTcpip {
            host: host.to_string(),
            port,
        };
        // The certificate's permit-port-forwarding is also checked here, apart from the policy.
        let certified = self
            .identity
            .as_ref()
            .is_some_and(|i| i.permit_port_forwarding());
        let Some(slot) = self.channel_slot("direct_tcpip").await else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let decided = self.ask(None, request).await;
        if !certified && decided.is_ok() {
            self.audit(GatewayKind::ForwardRefused, json!({"request": "direct_tcpip", "target": target, "reason": "the certificate does not allow port forwarding"})).await;
        }
        // The engineer's ssh prints the reason ("open failed: administratively prohibited:
        // sallyport: ...").
        let prohibited = |reason: &str| ChannelOpenFailure::Other {
            code: ChannelOpenFailure::AdministrativelyProhibited.code(),
            reason: reason.trim_end().to_string(),
        };
        if let Err(message) = &decided {
            reply.reject(prohibited(message)).await;
            return Ok(());
        }
        if !certified {
            reply
                .reject(prohibited(
                    "sallyport: the certificate does not allow port forwarding",
                ))
                .await;
            return Ok(());
        }
        // A moderated session forwards nothing before an observer joined.
        if !self.released.load(std::sync::atomic::Ordering::SeqCst) {
            let reason = "this access requires that an approver of the customer watches the session; none has joined yet";
            self.audit(
                GatewayKind::ForwardRefused,
                json!({"request": "direct_tcpip", "target": target, "code": "no_observer",
                       "reason": reason}),
            )
            .await;
            reply
                .reject(prohibited(&format!("sallyport: {reason}")))
                .await;
            return Ok(());
        }
        // Recorded before any byte reaches the target.
        if !self
            .audit(
                GatewayKind::Forward,
                json!({"request": "direct-tcpip", "target": target}),
            )
            .await
        {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        if let Err(e) = self.ensure_upstream().await {
            self.node_failed(e, reply, session).await;
            return Ok(());
        }
        let Some(up) = self.upstream.as_ref() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        // The node's sshd opens the connection from the node, as `ssh -L` to the node would.
        match up
            .channel_open_direct_tcpip(host, port, originator_address, originator_port)
            .await
        {
            Ok(node_channel) => {
                reply.accept().await;
                tokio::spawn(async move {
                    crate::pipe::join(channel, node_channel, || {}).await;
                    drop(slot);
                });
            }
            Err(e) => {
                self.audit(
                    GatewayKind::ForwardFailed,
                    json!({"target": target, "reason": e.to_string()}),
                )
                .await;
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    // Data, extended data and EOF from the engineer travel through the channel's queue to the
    // task started in `channel_open_session` (so they stay in order); the handler callbacks for
    // them keep russh's defaults.

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The engineer's Close also reaches the data task, which closes the node's channel after
        // the data before it.
        self.chans.remove(&channel);
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let chans = std::mem::take(&mut self.node_chans);
        let upstream = self.upstream.take();
        if upstream.is_some() {
            tokio::spawn(end_on_node(chans, upstream));
        }
        if self.identity.is_some() {
            let spool = self.gw.spool.clone();
            let data = self.fields(json!({}));
            // This session's refusals that were folded in are written first, with their counts.
            let gw = self.gw.clone();
            let prefix = format!("{}:", self.sid);
            tokio::spawn(async move {
                gw.flush_refusals(Some(&prefix)).await;
                let _ = spool.append(GatewayKind::SessionEnded, data).await;
            });
        }
    }
}
