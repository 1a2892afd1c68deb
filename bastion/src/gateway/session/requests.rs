//! The requests of a session channel: each is asked of the policy, audited durably before it
//! reaches the node, starts what the channel's recorder records, and is then passed on
//! (`bridge::NodeRequest`). A program (shell, exec, subsystem) in a moderated session waits for
//! an observer without holding the connection.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use russh::server::Session;
use russh::{ChannelId, Pty, Sig};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::policy::ChannelRequest;
use serde_json::{Value, json};
use sha2::Digest;

use super::bridge::{self, NodeRequest, Program};
use super::{EngineerSession, channel_num};
use crate::record::exec::ExecKind;

const WAITING_FOR_OBSERVER: &str = "sallyport: this access requires that an approver of the \
customer watches the session: waiting for one to join (they open it under Sessions in the \
console); it starts as soon as one does\r\n";

/// A terminal's size: columns, rows, and the same in pixels.
pub(super) type Size = (u32, u32, u32, u32);

/// What an exec request runs, as the policy and the audit log see it (pure: [`exec_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExecPlan {
    pub command: String,
    pub kind: ExecKind,
    /// `sftp` or `scp` when the command moves files, otherwise empty.
    pub file_transfer: &'static str,
}

/// What the command is decides how the channel is recorded and what policies see: an sftp
/// server or scp moves files (wrapped in sudo, env... or not), an interpreter runs the lines it
/// reads on stdin.
pub(super) fn exec_plan(data: &[u8]) -> ExecPlan {
    let command = String::from_utf8_lossy(data).to_string();
    let kind = crate::record::exec::classify(&command);
    let file_transfer = match &kind {
        ExecKind::SftpServer => "sftp",
        ExecKind::Scp(_) => "scp",
        ExecKind::Interpreter { .. } | ExecKind::Command => "",
    };
    ExecPlan {
        command,
        kind,
        file_transfer,
    }
}

impl ExecPlan {
    pub fn request(&self) -> ChannelRequest {
        ChannelRequest::Exec {
            command: self.command.clone(),
            file_transfer: self.file_transfer.to_string(),
        }
    }

    /// The `command` event written before the command reaches the node.
    pub fn command_event(&self, channel: u32) -> Value {
        let mut detail = json!({"channel": channel, "command": self.command, "via": "exec"});
        if let ExecKind::Interpreter { program } = &self.kind {
            detail["interpreter"] = json!(program);
        }
        if !self.file_transfer.is_empty() {
            detail["file_transfer"] = json!(self.file_transfer);
        }
        detail
    }
}

/// The `env` event of a variable passed on: its value only when it is a display setting,
/// otherwise its length and SHA-256 (values may hold secrets) (pure).
pub(super) fn env_event(channel: u32, name: &str, value: &str) -> Value {
    let mut detail = json!({"channel": channel, "env_name": name,
        "value_len": value.len(), "value_sha256": hex::encode(sha2::Sha256::digest(value))});
    if display_setting(name) {
        detail["value"] = json!(value.chars().take(64).collect::<String>());
    }
    detail
}

/// Variables whose value is shown in the audit log: they only say how to show text.
fn display_setting(name: &str) -> bool {
    matches!(name, "LANG" | "TERM" | "COLORTERM" | "TZ") || name.starts_with("LC_")
}

/// A signal's name as policies see it: `INT`, `TERM`, ... (without `SIG`).
pub(super) fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

impl EngineerSession {
    pub(super) async fn pty(
        &mut self,
        channel: ChannelId,
        term: &str,
        (cols, rows, pix_width, pix_height): Size,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if let Err(message) = self.ask(Some(channel), ChannelRequest::Pty).await {
            session.extended_data(channel, 1, message.into_bytes())?;
            return session.channel_failure(channel);
        }
        let (engineer, ticket) = match &self.identity {
            Some(i) => (i.engineer(), i.ticket()),
            None => ("", ""),
        };
        let title = format!("{engineer} {ticket} {}@{}", self.login, self.host);
        if let Err(e) = self.with_recorder(channel, |r| r.start_pty(cols, rows, term, &title)) {
            return self.cannot_record(channel, &e, session).await;
        }
        let request = NodeRequest::Pty {
            term: term.to_string(),
            cols,
            rows,
            pix_width,
            pix_height,
            modes: modes.to_vec(),
        };
        self.pass_on(channel, request, session).await
    }

    pub(super) async fn env(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let request = ChannelRequest::Env {
            name: name.to_string(),
        };
        if self.ask(Some(channel), request).await.is_err() {
            return session.channel_failure(channel);
        }
        // Every variable passed is audited before the node sees it.
        let detail = env_event(channel_num(channel), name, value);
        if !self.audit(GatewayKind::Env, detail).await {
            return session.channel_failure(channel);
        }
        let request = NodeRequest::Env {
            name: name.to_string(),
            value: value.to_string(),
        };
        self.pass_on(channel, request, session).await
    }

    pub(super) async fn shell(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
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

    pub(super) async fn exec(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let plan = exec_plan(data);
        if let Err(message) = self.ask(Some(channel), plan.request()).await {
            return Self::end_with_message(channel, &message, session);
        }
        // Durable before the command reaches the node.
        let num = channel_num(channel);
        if !self
            .audit(GatewayKind::Command, plan.command_event(num))
            .await
        {
            return Self::unrecordable(channel, session);
        }
        let started = match &plan.kind {
            ExecKind::SftpServer => {
                let event = json!({"channel": num, "via": "exec"});
                if !self.audit(GatewayKind::SftpStarted, event).await {
                    return Self::unrecordable(channel, session);
                }
                self.with_recorder(channel, |r| r.start_sftp())
            }
            ExecKind::Scp(t) => {
                let event = json!({"channel": num, "via": "scp", "transfer": t});
                if !self.audit(GatewayKind::FileTransfer, event).await {
                    return Self::unrecordable(channel, session);
                }
                let (direction, target) = (t.direction, t.path.clone());
                self.with_recorder(channel, |r| r.start_scp(direction, &target))
            }
            ExecKind::Interpreter { .. } | ExecKind::Command => {
                let interpreter = matches!(plan.kind, ExecKind::Interpreter { .. });
                self.with_recorder(channel, |r| r.start_stream(&plan.command, interpreter))
            }
        };
        if let Err(e) = started {
            return self.cannot_record(channel, &e, session).await;
        }
        self.start_program(channel, Program::Exec(data.to_vec()), session)
            .await
    }

    pub(super) async fn subsystem(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
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

    pub(super) async fn window_change(
        &mut self,
        channel: ChannelId,
        (cols, rows, pix_width, pix_height): Size,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if self
            .ask(Some(channel), ChannelRequest::WindowChange)
            .await
            .is_err()
        {
            return Ok(());
        }
        if let Err(e) = self.with_recorder(channel, |r| r.resize(cols, rows)) {
            return self.cannot_record(channel, &e, session).await;
        }
        let request = NodeRequest::WindowChange {
            cols,
            rows,
            pix_width,
            pix_height,
        };
        self.pass_on(channel, request, session).await
    }

    pub(super) async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let request = ChannelRequest::Signal {
            name: signal_name(&signal),
        };
        if self.ask(Some(channel), request).await.is_err() {
            return Ok(());
        }
        self.pass_on(channel, NodeRequest::Signal(signal), session)
            .await
    }

    /// No agent is ever forwarded: the node never sees a request for one. The policy is asked
    /// so that the refusal is explained and audited the same way as every other.
    pub(super) async fn agent(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if let Err(message) = self.ask(Some(channel), ChannelRequest::Agent).await {
            tracing::debug!(message, "agent forwarding refused");
        }
        session.channel_failure(channel)
    }

    /// As with the agent: X11 is never passed on, whatever the policy says.
    pub(super) async fn x11(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if let Err(message) = self.ask(Some(channel), ChannelRequest::X11).await {
            tracing::debug!(message, "X11 forwarding refused");
        }
        session.channel_failure(channel)
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
        let (node, reply_direct) = (up.node.clone(), up.reply_direct.clone());
        let (gw, sid, released) = (self.gw.clone(), self.sid.clone(), self.released.clone());
        let handle = session.handle();
        let fields = self.fields(json!({"channel": channel_num(channel)}));
        let closed = self.closed.clone();
        crate::spawn_in_span(async move {
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
            if request.send(&node).await.is_err() && reply_direct.swap(false, SeqCst) {
                bridge::answer(&handle, channel, false).await;
            }
        });
        Ok(())
    }
}
