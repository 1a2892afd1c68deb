//! One engineer session at the gateway: the inner SSH server's handler. It authenticates the
//! engineer's certificate again, connects to the node with a per-session certificate, passes
//! each channel request on (pty, shell, exec, sftp, env, window-change, signals) and bridges the
//! data both ways, writing each command to the audit spool before it reaches the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf, Pty, Sig};
use sallyport_ca::policy::{ChannelFacts, ChannelRequest};
use sallyport_ca::{CertIdentity, check_user_cert};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::mpsc;

use super::Gateway;
use super::node::{self, NodeClient};
use super::recorder::{ChannelRecorder, Event, RecordError};
use crate::record::exec::ExecKind;

struct Up {
    /// Shared with the task that carries the engineer's data to the node.
    write: Arc<ChannelWriteHalf<russh::client::Msg>>,
    rec: Arc<ChannelRecorder>,
    /// The node's answers to our want-reply requests, in order.
    replies: mpsc::UnboundedReceiver<bool>,
}

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
    /// Set when the session ends, for the tasks that watch it.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Channels open in this session (sessions and forwards).
    open: Arc<std::sync::atomic::AtomicUsize>,
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
            closed: Arc::default(),
            open: Arc::default(),
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
    async fn audit(&self, kind: &str, extra: Value) -> bool {
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
                "channel_refused"
            }
            ChannelRequest::Subsystem { name } => {
                detail["subsystem"] = json!(name);
                "channel_refused"
            }
            ChannelRequest::Env { name } => {
                detail["env_name"] = json!(name);
                "channel_refused"
            }
            ChannelRequest::Signal { name } => {
                detail["signal"] = json!(name);
                "channel_refused"
            }
            ChannelRequest::DirectTcpip { host, port }
            | ChannelRequest::TcpipForward { host, port } => {
                detail["target"] = json!(format!("{host}:{port}"));
                "forward_refused"
            }
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::WindowChange
            | ChannelRequest::Agent
            | ChannelRequest::X11 => "channel_refused",
        };
        self.audit(kind, detail).await;
        Err(messages
            .iter()
            .map(|m| format!("sallyport: {m}\r\n"))
            .collect())
    }

    async fn ensure_upstream(&mut self) -> anyhow::Result<()> {
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
            .ok_or_else(|| anyhow::anyhow!("unknown node {}", self.node))?;
        let h = node::connect(
            &self.gw,
            &entry,
            &self.login,
            &self.sid,
            id.engineer(),
            id.ticket(),
            id.permit_port_forwarding(),
        )
        .await?;
        self.upstream = Some(h);
        Ok(())
    }

    /// A slot for a new channel, or `None` (refused and audited) past `max_channels_per_session`.
    async fn channel_slot(&self, request: &str) -> Option<crate::Slot> {
        let limit = self.gw.cfg.max_channels_per_session;
        if let Some(slot) = crate::Slot::take(&self.open, limit) {
            return Some(slot);
        }
        tracing::warn!(session = self.sid, limit, "refused: too many channels");
        self.audit(
            "channel_refused",
            json!({"request": request, "code": "too_many_channels", "limit": limit,
                   "reason": format!("at most {limit} channels at once in one session")}),
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
            "recording_failed",
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

    /// Wait for the node's answer to a want-reply request and pass it on.
    async fn relay_reply(
        &mut self,
        channel: ChannelId,
        sent: Result<(), russh::Error>,
        session: &mut Session,
    ) -> Result<bool, russh::Error> {
        let ok = match (sent, self.chans.get_mut(&channel)) {
            (Ok(()), Some(up)) => up.replies.recv().await.unwrap_or(false),
            _ => false,
        };
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(ok)
    }
}

/// Write events durably, in one group commit; `Err` when they could not be.
async fn record(spool: &crate::spool::Spool, fields: &Value, events: Vec<Event>) -> Result<(), ()> {
    let events: Vec<(&str, Value)> = events
        .into_iter()
        .map(|(kind, extra)| {
            let mut d = fields.clone();
            crate::merge(&mut d, extra);
            (kind, d)
        })
        .collect();
    spool.append_all(events).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "audit spool unwritable");
    })
}

/// What the engineer reads when their channel cannot be recorded any more.
fn unrecordable_channel(e: &RecordError) -> String {
    format!(
        "\r\nsallyport: this channel can no longer be recorded ({e}), so the gateway ended it; \
         nothing after this reached the node. Tell the operator.\r\n"
    )
}

/// The channel's recording failed: say so in the audit log (the channel ends).
async fn recording_failed(spool: &crate::spool::Spool, fields: &Value, e: &RecordError) {
    let mut d = fields.clone();
    d["reason"] = json!(e.to_string());
    let _ = spool.append("recording_failed", d).await;
}

const UNRECORDABLE: &str = "sallyport: this gateway cannot write its audit log right now, so it refuses new activity (nothing ran on the node). Tell the operator.\r\n";

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
                "session_refused",
                json!({"key_id": cert.key_id(), "code": code, "reason": reason, "peer": self.peer}),
            )
            .await;
            return Ok(Auth::reject());
        }
        let Ok(id) = checked else {
            return Ok(Auth::reject());
        };
        self.identity = Some(id);
        self.cert = Some(cert.clone());
        // If this cannot be written, the session is still let in: every channel request needs its
        // own durable event first, and is refused with a message saying why.
        self.audit("session_started", json!({"key_id": cert.key_id(), "serial": cert.serial().to_string(), "peer": self.peer})).await;
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        // Revocation reaches live sessions: the KRL is re-read every second.
        let (Some(cert), handle, trust) =
            (self.cert.clone(), session.handle(), self.gw.trust.clone())
        else {
            return Ok(());
        };
        let spool = self.gw.spool.clone();
        let fields = self.fields(json!({}));
        let closed = self.closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let expired = cert.valid_before() <= crate::now();
                if expired || trust.is_revoked(&cert) {
                    let reason = if expired {
                        "the certificate expired"
                    } else {
                        "the certificate was revoked"
                    };
                    let mut data = fields.clone();
                    data["reason"] = json!(reason);
                    let _ = spool.append("session_terminated", data).await;
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
            tracing::warn!(error = %e, node = self.node, "cannot reach the node");
            self.audit("node_unreachable", json!({"reason": e.to_string()}))
                .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
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
        let (mut read, write) = node_channel.split();
        let write = Arc::new(write);
        let (tx, rx) = mpsc::unbounded_channel();
        let rec = Arc::new(ChannelRecorder::new(
            &self.gw.cfg.data_dir.join("recordings"),
            &self.sid,
            channel_num(id),
            self.gw.cfg.stream_record_cap_bytes,
        ));
        self.chans.insert(
            id,
            Up {
                write: write.clone(),
                rec: rec.clone(),
                replies: rx,
            },
        );
        let handle = session.handle();
        let spool = self.gw.spool.clone();
        let fields =
            self.fields(json!({"channel": channel_num(id), "recording": rec.recording_id()}));
        // Engineer -> node: a task of its own reads the engineer's channel, so this connection's
        // loop never waits on the node (with russh's window following consumption, the engineer
        // can send no more than the window ahead of what reached the node).
        {
            let (mut from_engineer, _) = channel.split();
            let (write, rec, spool, fields, to_engineer) = (
                write.clone(),
                rec.clone(),
                spool.clone(),
                fields.clone(),
                session.handle(),
            );
            tokio::spawn(async move {
                while let Some(msg) = from_engineer.wait().await {
                    let (data, eof) = match msg {
                        ChannelMsg::Data { data } => (Some(data), false),
                        ChannelMsg::Eof => (None, true),
                        // Nothing a client sends as extended data is input a node should see:
                        // not passed on, so it cannot bypass the recording.
                        ChannelMsg::ExtendedData { .. } => continue,
                        ChannelMsg::Close => {
                            let _ = write.close().await;
                            break;
                        }
                        _ => continue,
                    };
                    // What the bytes hold (an entered line, a line read by an interpreter, an
                    // sftp request; at EOF a last line without its newline) is written durably
                    // before they go on; when it cannot be, nothing more reaches the node.
                    let events = match &data {
                        Some(d) => rec.input(d),
                        None => rec.input_eof(),
                    };
                    let recorded = match events {
                        Ok(events) => record(&spool, &fields, events)
                            .await
                            .map_err(|()| format!("\r\n{UNRECORDABLE}")),
                        Err(e) => {
                            recording_failed(&spool, &fields, &e).await;
                            Err(unrecordable_channel(&e))
                        }
                    };
                    if let Err(message) = recorded {
                        let _ = to_engineer.extended_data(id, 1, message.into_bytes()).await;
                        let _ = write.close().await;
                        let _ = to_engineer.close(id).await;
                        break;
                    }
                    let sent = match data {
                        Some(d) => write.data_bytes(d).await,
                        None => write.eof().await,
                    };
                    if sent.is_err() && !eof {
                        break;
                    }
                }
            });
        }
        // Node -> engineer.
        tokio::spawn(async move {
            while let Some(msg) = read.wait().await {
                let (data, ext) = match msg {
                    ChannelMsg::Data { data } => (data, None),
                    ChannelMsg::ExtendedData { data, ext } => (data, Some(ext)),
                    ChannelMsg::Eof => {
                        let _ = handle.eof(id).await;
                        continue;
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        let mut d = fields.clone();
                        d["exit_status"] = json!(exit_status);
                        let _ = spool.append("channel_exit", d).await;
                        let _ = handle.exit_status_request(id, exit_status).await;
                        continue;
                    }
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    } => {
                        let mut d = fields.clone();
                        d["exit_signal"] = json!(format!("{signal_name:?}"));
                        let _ = spool.append("channel_exit", d).await;
                        let _ = handle
                            .exit_signal_request(
                                id,
                                signal_name,
                                core_dumped,
                                error_message,
                                lang_tag,
                            )
                            .await;
                        continue;
                    }
                    ChannelMsg::Success => {
                        let _ = tx.send(true);
                        continue;
                    }
                    ChannelMsg::Failure => {
                        let _ = tx.send(false);
                        continue;
                    }
                    ChannelMsg::Close => break,
                    _ => continue,
                };
                match rec.output(&data) {
                    // Output-driven events are an index into the recording: a failed write of
                    // one ends nothing by itself (the next input is refused).
                    Ok(events) => {
                        let _ = record(&spool, &fields, events).await;
                    }
                    Err(e) => {
                        // Nothing more is recorded, so nothing more may run: end the channel.
                        recording_failed(&spool, &fields, &e).await;
                        let _ = handle
                            .extended_data(id, 1, unrecordable_channel(&e).into_bytes())
                            .await;
                        let _ = write.close().await;
                        break;
                    }
                }
                let sent = match ext {
                    None => handle.data(id, data).await,
                    Some(ext) => handle.extended_data(id, ext, data).await,
                };
                if sent.is_err() {
                    break;
                }
            }
            match rec.finish() {
                Ok((events, file)) => {
                    let _ = record(&spool, &fields, events).await;
                    if let Some(file) = file {
                        let mut d = fields.clone();
                        d["file"] = json!(file.file_name().and_then(|n| n.to_str()));
                        let _ = spool.append("recording_finished", d).await;
                    }
                }
                Err(e) => recording_failed(&spool, &fields, &e).await,
            }
            let _ = handle.close(id).await;
            drop(slot);
        });
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
        let sent = match self.chans.get(&channel) {
            Some(up) => {
                up.write
                    .request_pty(
                        true, term, col_width, row_height, pix_width, pix_height, modes,
                    )
                    .await
            }
            None => Err(russh::Error::WrongChannel),
        };
        self.relay_reply(channel, sent, session).await?;
        Ok(())
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
        if !self.audit("env", detail).await {
            return session.channel_failure(channel);
        }
        let sent = match self.chans.get(&channel) {
            Some(up) => up.write.set_env(true, name, value).await,
            None => Err(russh::Error::WrongChannel),
        };
        self.relay_reply(channel, sent, session).await?;
        Ok(())
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
            .audit("shell", json!({"channel": channel_num(channel)}))
            .await
        {
            return Self::unrecordable(channel, session);
        }
        // Without a pty, what the engineer sends is read by the shell as commands: kept, and
        // each line it reads is a command.
        if let Err(e) = self.with_recorder(channel, |r| r.start_stream("shell", true)) {
            return self.cannot_record(channel, &e, session).await;
        }
        let sent = match self.chans.get(&channel) {
            Some(up) => up.write.request_shell(true).await,
            None => Err(russh::Error::WrongChannel),
        };
        self.relay_reply(channel, sent, session).await?;
        Ok(())
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
        if !self.audit("command", detail).await {
            return Self::unrecordable(channel, session);
        }
        let started = match &kind {
            ExecKind::SftpServer => {
                if !self
                    .audit(
                        "sftp_started",
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
                        "file_transfer",
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
        let sent = match self.chans.get(&channel) {
            Some(up) => up.write.exec(true, data.to_vec()).await,
            None => Err(russh::Error::WrongChannel),
        };
        self.relay_reply(channel, sent, session).await?;
        Ok(())
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
            .audit("sftp_started", json!({"channel": channel_num(channel)}))
            .await
        {
            return Self::unrecordable(channel, session);
        }
        if let Err(e) = self.with_recorder(channel, |r| r.start_sftp()) {
            return self.cannot_record(channel, &e, session).await;
        }
        let sent = match self.chans.get(&channel) {
            Some(up) => up.write.request_subsystem(true, name).await,
            None => Err(russh::Error::WrongChannel),
        };
        self.relay_reply(channel, sent, session).await?;
        Ok(())
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
        if let Some(up) = self.chans.get(&channel) {
            let _ = up
                .write
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::Signal {
            name: signal_name(&signal),
        };
        if self.ask(Some(channel), request).await.is_err() {
            return Ok(());
        }
        if let Some(up) = self.chans.get(&channel) {
            let _ = up.write.signal(signal).await;
        }
        Ok(())
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
            self.audit("forward_refused", json!({"request": "tcpip_forward", "target": format!("{address}:{port}"), "reason": "remote port forwarding is not supported by this gateway"})).await;
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
        _session: &mut Session,
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
            self.audit("forward_refused", json!({"request": "direct_tcpip", "target": target, "reason": "the certificate does not allow port forwarding"})).await;
        }
        if !certified || decided.is_err() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        // Recorded before any byte reaches the target.
        if !self
            .audit(
                "forward",
                json!({"request": "direct-tcpip", "target": target}),
            )
            .await
        {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        if let Err(e) = self.ensure_upstream().await {
            self.audit("node_unreachable", json!({"reason": e.to_string()}))
                .await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
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
                    let mut a = channel.into_stream();
                    let mut b = node_channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    drop(slot);
                });
            }
            Err(e) => {
                self.audit(
                    "forward_failed",
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
        if self.identity.is_some() {
            let spool = self.gw.spool.clone();
            let data = self.fields(json!({}));
            tokio::spawn(async move {
                let _ = spool.append("session_ended", data).await;
            });
        }
    }
}
