//! The bytes of one session channel, both ways, between the engineer and the node: one task
//! carries what the engineer sends to the node, writing each command it holds to the audit spool
//! first; another carries what the node sends back, recording it, and passes the node's answers,
//! exit status and close on. Both are independent of the session's connection loop, so a slow
//! node never holds up another channel.
//!
//! Also here: the requests passed on to the node on a channel's behalf ([`NodeRequest`], the one
//! way to send one and relay its answer), and how a channel's program is ended on the node
//! ([`OnNode::end`]) whichever way its channel or its session ends ([`end_on_node`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, Pty, Sig};
use sallyport_audit::writers::GatewayKind;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use super::super::node::NodeClient;
use super::super::recorder::{ChannelRecorder, Event, RecordError};
use crate::Fields;
use crate::spool::Spool;

type NodeWrite = ChannelWriteHalf<russh::client::Msg>;

/// How long a program sent HUP and TERM has to exit before it is sent KILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// What a channel runs on the node, as far as ending it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Running {
    /// No program was asked for (yet).
    Nothing = 0,
    /// A shell or an exec: sshd signals its process group.
    Program = 1,
    /// A subsystem: sshd refuses to signal one; it ends when its channel closes.
    Subsystem = 2,
}

/// What ending a channel still open on the node takes (pure: [`ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The node closed it already: nothing.
    Nothing,
    /// Nothing runs in it that a signal reaches (no program, a subsystem, or a program that
    /// exited): it is closed.
    Close,
    /// Its program runs: HUP and TERM, KILL if it has not exited a second later, then it is
    /// closed.
    /// Closing alone would not do: OpenSSH's sshd lets a program without a pty run on when its
    /// channel closes (only a pty is cleaned up then).
    Signal,
}

/// How to end a channel, from what it runs and what the node said of it (pure).
pub(super) fn ending(running: Running, exited: bool, closed_by_node: bool) -> Ending {
    match (running, exited, closed_by_node) {
        (_, _, true) => Ending::Nothing,
        (Running::Program, false, false) => Ending::Signal,
        (Running::Program, true, false) | (Running::Nothing | Running::Subsystem, _, false) => {
            Ending::Close
        }
    }
}

/// A session channel on the node, as what ends it sees it: its write half and what the node
/// said of it. Shared by the channel's two tasks, its requests and the session.
pub(super) struct OnNode {
    pub write: Arc<NodeWrite>,
    /// A [`Running`], set when the program request is sent.
    running: AtomicU8,
    /// The program ended: the node sent its exit status or signal.
    exited: AtomicBool,
    /// The node closed the channel (or the connection to the node is gone).
    closed: AtomicBool,
    /// Woken when the program exits or the node closes the channel.
    changed: Notify,
    /// Held while the channel is being ended; `true` once it was.
    ended: tokio::sync::Mutex<bool>,
}

impl OnNode {
    fn new(write: Arc<NodeWrite>) -> OnNode {
        OnNode {
            write,
            running: AtomicU8::new(Running::Nothing as u8),
            exited: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
            ended: tokio::sync::Mutex::new(false),
        }
    }

    fn running(&self) -> Running {
        match self.running.load(Ordering::SeqCst) {
            1 => Running::Program,
            2 => Running::Subsystem,
            _ => Running::Nothing,
        }
    }

    /// The node still holds the channel open.
    pub fn open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    fn ending(&self) -> Ending {
        ending(
            self.running(),
            self.exited.load(Ordering::SeqCst),
            self.closed.load(Ordering::SeqCst),
        )
    }

    fn exited(&self) {
        self.exited.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether the program stopped running (it exited, or its channel closed) within `wait`.
    async fn stops_within(&self, wait: Duration) -> bool {
        let stopped = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.ending() != Ending::Signal {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(wait, stopped).await.is_ok()
    }

    /// End the channel on the node, once, whichever way it ends (the engineer closed it, their
    /// connection dropped, it could not be recorded, the session ended): nothing it started may
    /// run on unattended. Its program, while it runs, is sent HUP and TERM, then KILL if it has
    /// not exited a second later (sshd signals the program's process group, with or without a
    /// pty); then the channel is closed. A program that exited is never signalled. A second
    /// call waits for the first to finish.
    pub async fn end(&self) {
        let mut ended = self.ended.lock().await;
        if *ended {
            return;
        }
        if self.ending() == Ending::Signal {
            // HUP first, as when a terminal goes away: an interactive shell (which ignores TERM)
            // passes it on to its jobs, each a process group of its own that sshd's signals to
            // the shell's group do not reach, before it exits.
            let _ = self.write.signal(Sig::HUP).await;
            let _ = self.write.signal(Sig::TERM).await;
            if !self.stops_within(TERM_GRACE).await {
                let _ = self.write.signal(Sig::KILL).await;
            }
        }
        if self.ending() != Ending::Nothing {
            let _ = self.write.close().await;
        }
        *ended = true;
    }

    /// [`OnNode::end`] in a task of its own.
    pub fn end_soon(self: &Arc<Self>) {
        let node = self.clone();
        crate::spawn_in_span(async move { node.end().await });
    }
}

/// A channel of the session as its requests see it: the node's side and the recorder.
pub(super) struct Up {
    /// Shared with the task that carries the engineer's data to the node.
    pub node: Arc<OnNode>,
    pub rec: Arc<ChannelRecorder>,
    /// The node's answers to our want-reply requests, in order (shared with a request that
    /// waits for an observer).
    replies: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<bool>>>,
    /// Set while a program request that waited for an observer is at the node: its answer
    /// goes to the engineer from the task that reads the node, in order with what follows it
    /// (an exit status and a close right after the answer must not overtake it).
    pub reply_direct: Arc<AtomicBool>,
}

impl Up {
    /// The node's answer to the last want-reply request sent (`false` when the channel ended).
    pub async fn reply(&self) -> bool {
        self.replies.lock().await.recv().await.unwrap_or(false)
    }
}

/// What a channel asks the node to run.
#[derive(Debug, Clone)]
pub(super) enum Program {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

/// A request passed on to the node for a channel, once the gateway allowed (and audited) it.
#[derive(Debug, Clone)]
pub(super) enum NodeRequest {
    Pty {
        term: String,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: Vec<(Pty, u32)>,
    },
    Env {
        name: String,
        value: String,
    },
    Program(Program),
    WindowChange {
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
    },
    Signal(Sig),
}

impl NodeRequest {
    /// Whether the engineer waits for the node's answer to it.
    pub fn wants_reply(&self) -> bool {
        match self {
            NodeRequest::Pty { .. } | NodeRequest::Env { .. } | NodeRequest::Program(_) => true,
            NodeRequest::WindowChange { .. } | NodeRequest::Signal(_) => false,
        }
    }

    pub async fn send(&self, node: &OnNode) -> Result<(), russh::Error> {
        let write = &node.write;
        if let NodeRequest::Program(program) = self {
            let running = match program {
                Program::Shell | Program::Exec(_) => Running::Program,
                Program::Subsystem(_) => Running::Subsystem,
            };
            node.running.store(running as u8, Ordering::SeqCst);
        }
        match self {
            NodeRequest::Pty {
                term,
                cols,
                rows,
                pix_width,
                pix_height,
                modes,
            } => {
                write
                    .request_pty(true, term, *cols, *rows, *pix_width, *pix_height, modes)
                    .await
            }
            NodeRequest::Env { name, value } => write.set_env(true, name, value).await,
            NodeRequest::Program(Program::Shell) => write.request_shell(true).await,
            NodeRequest::Program(Program::Exec(command)) => write.exec(true, command.clone()).await,
            NodeRequest::Program(Program::Subsystem(name)) => {
                write.request_subsystem(true, name).await
            }
            NodeRequest::WindowChange {
                cols,
                rows,
                pix_width,
                pix_height,
            } => {
                write
                    .window_change(*cols, *rows, *pix_width, *pix_height)
                    .await
            }
            NodeRequest::Signal(sig) => write.signal(sig.clone()).await,
        }
    }
}

/// Pass the node's answer to a request on to the engineer.
pub(super) async fn answer(to_engineer: &russh::server::Handle, channel: ChannelId, ok: bool) {
    let _ = if ok {
        to_engineer.channel_success(channel).await
    } else {
        to_engineer.channel_failure(channel).await
    };
}

/// Where a bridged channel's events go and what it holds while it is open.
pub(super) struct Bridged {
    pub spool: Arc<Spool<GatewayKind>>,
    /// The common fields of the channel's events (session, channel, recording...).
    pub fields: Fields,
    pub rec: Arc<ChannelRecorder>,
    /// The channel's place under `max_channels_per_session`, free once the node closed it.
    pub slot: crate::Slot,
}

/// Join the engineer's session channel to the node's: start the two tasks that carry its data,
/// and return how the session's requests reach the node's side, and the node's side itself.
pub(super) fn start(
    channel: Channel<Msg>,
    node_channel: Channel<russh::client::Msg>,
    to_engineer: russh::server::Handle,
    b: Bridged,
) -> (Up, Arc<OnNode>) {
    let id = channel.id();
    let (read, write) = node_channel.split();
    let node = Arc::new(OnNode::new(Arc::new(write)));
    let (tx, rx) = mpsc::unbounded_channel();
    let reply_direct = Arc::new(AtomicBool::new(false));
    let (from_engineer, _) = channel.split();
    crate::spawn_in_span(engineer_to_node(
        from_engineer,
        node.clone(),
        to_engineer.clone(),
        id,
        b.rec.clone(),
        b.spool.clone(),
        b.fields.clone(),
    ));
    let up = Up {
        node: node.clone(),
        rec: b.rec.clone(),
        replies: Arc::new(tokio::sync::Mutex::new(rx)),
        reply_direct: reply_direct.clone(),
    };
    let back = NodeToEngineer {
        read,
        node: node.clone(),
        to_engineer,
        id,
        replies: tx,
        reply_direct,
        b,
    };
    crate::spawn_in_span(back.run());
    (up, node)
}

/// Engineer -> node: a task of its own reads the engineer's channel, so the connection's loop
/// never waits on the node (with russh's window following consumption, the engineer can send no
/// more than the window ahead of what reached the node). When the engineer's side of the channel
/// ends (they closed it, or their connection is gone), the channel is ended on the node.
async fn engineer_to_node(
    mut from_engineer: russh::ChannelReadHalf,
    node: Arc<OnNode>,
    to_engineer: russh::server::Handle,
    id: ChannelId,
    rec: Arc<ChannelRecorder>,
    spool: Arc<Spool<GatewayKind>>,
    fields: Fields,
) {
    let write = &node.write;
    while let Some(msg) = from_engineer.wait().await {
        let (data, eof) = match msg {
            ChannelMsg::Data { data } => (Some(data), false),
            ChannelMsg::Eof => (None, true),
            // Nothing a client sends as extended data is input a node should see: not passed
            // on, so it cannot bypass the recording.
            ChannelMsg::ExtendedData { .. } => continue,
            ChannelMsg::Close => break,
            _ => continue,
        };
        // What the bytes hold (an entered line, a line read by an interpreter, an sftp request;
        // at EOF a last line without its newline) is written durably before they go on; when it
        // cannot be, nothing more reaches the node.
        let events = match &data {
            _ if unrecorded() => Ok(Vec::new()),
            Some(d) => rec.input(d),
            None => rec.input_eof(),
        };
        let recorded = match events {
            Ok(events) => {
                let written = record(&spool, &fields, events.clone()).await;
                if written.is_err() {
                    // Never reached the node: not a command later either.
                    rec.refuse(&events);
                }
                written.map_err(|()| format!("\r\n{UNRECORDABLE}"))
            }
            Err(e) => {
                recording_failed(&spool, &fields, &e).await;
                Err(unrecordable_channel(&e))
            }
        };
        if let Err(message) = recorded {
            let _ = to_engineer.extended_data(id, 1, message.into_bytes()).await;
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
    node.end().await;
}

/// Node -> engineer, with the recording of what the node sends.
struct NodeToEngineer {
    read: russh::ChannelReadHalf,
    node: Arc<OnNode>,
    to_engineer: russh::server::Handle,
    id: ChannelId,
    replies: mpsc::UnboundedSender<bool>,
    reply_direct: Arc<AtomicBool>,
    b: Bridged,
}

impl NodeToEngineer {
    /// Until the node closes the channel. Once the engineer can no longer hear from it (their
    /// side is gone, or the channel can no longer be recorded), the channel is ended on the
    /// node, and what the node still sends is read (for whether its program exited) but neither
    /// passed on nor recorded.
    async fn run(mut self) {
        let (id, handle) = (self.id, &self.to_engineer);
        let (spool, fields, rec) = (&self.b.spool, &self.b.fields, &self.b.rec);
        let mut heard = true;
        while let Some(msg) = self.read.wait().await {
            let (data, ext) = match msg {
                ChannelMsg::Data { data } => (data, None),
                ChannelMsg::ExtendedData { data, ext } => (data, Some(ext)),
                ChannelMsg::Eof => {
                    if heard {
                        let _ = handle.eof(id).await;
                    }
                    continue;
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    self.node.exited();
                    let mut d = fields.value();
                    d["exit_status"] = json!(exit_status);
                    let _ = spool.append(GatewayKind::ChannelExit, d).await;
                    if heard {
                        let _ = handle.exit_status_request(id, exit_status).await;
                    }
                    continue;
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => {
                    self.node.exited();
                    let mut d = fields.value();
                    d["exit_signal"] = json!(format!("{signal_name:?}"));
                    let _ = spool.append(GatewayKind::ChannelExit, d).await;
                    if heard {
                        let _ = handle
                            .exit_signal_request(
                                id,
                                signal_name,
                                core_dumped,
                                error_message,
                                lang_tag,
                            )
                            .await;
                    }
                    continue;
                }
                ChannelMsg::Success | ChannelMsg::Failure => {
                    let ok = matches!(msg, ChannelMsg::Success);
                    if self.reply_direct.swap(false, Ordering::SeqCst) {
                        answer(handle, id, ok).await;
                    } else {
                        let _ = self.replies.send(ok);
                    }
                    continue;
                }
                ChannelMsg::Close => break,
                _ => continue,
            };
            if !heard {
                continue;
            }
            let output = if unrecorded() {
                Ok(Vec::new())
            } else {
                rec.output(&data)
            };
            match output {
                // Output-driven events are an index into the recording: a failed write of one
                // ends nothing by itself (the next input is refused).
                Ok(events) => {
                    let _ = record(spool, fields, events).await;
                }
                Err(e) => {
                    // Nothing more is recorded, so nothing more may run: end the channel.
                    recording_failed(spool, fields, &e).await;
                    let _ = handle
                        .extended_data(id, 1, unrecordable_channel(&e).into_bytes())
                        .await;
                    heard = false;
                    self.node.end_soon();
                    continue;
                }
            }
            let sent = match ext {
                None => handle.data(id, data).await,
                Some(ext) => handle.extended_data(id, ext, data).await,
            };
            if sent.is_err() {
                heard = false;
                self.node.end_soon();
            }
        }
        self.node.closed();
        match rec.finish() {
            Ok((events, file)) => {
                let _ = record(spool, fields, events).await;
                if let Some(file) = file {
                    let mut d = fields.value();
                    d["file"] = json!(file.file_name().and_then(|n| n.to_str()));
                    let _ = spool.append(GatewayKind::RecordingFinished, d).await;
                }
            }
            Err(e) => recording_failed(spool, fields, &e).await,
        }
        // The slot is free before the engineer hears of the close: a channel opened as soon as
        // this one ended is not refused for a slot still held.
        drop(self.b.slot);
        let _ = self.to_engineer.close(id).await;
    }
}

/// The session has ended (the engineer left, it was terminated, its certificate expired or
/// was revoked, the gateway stops): each of its channels still open on the node is ended there
/// ([`OnNode::end`]: a program still running is sent HUP and TERM, then KILL a second later, and
/// the channel is closed), all at once, and then the connection to the node ends. The channels'
/// recordings are finished as their node side closes.
pub(super) async fn end_on_node(
    chans: Vec<Arc<OnNode>>,
    upstream: russh::client::Handle<NodeClient>,
) {
    let mut ending = tokio::task::JoinSet::new();
    for node in chans {
        ending.spawn(async move { node.end().await }.in_current_span());
    }
    while ending.join_next().await.is_some() {}
    let _ = upstream
        .disconnect(russh::Disconnect::ByApplication, "the session ended", "en")
        .await;
}

/// A bench build (`--features bench-unrecorded`) run with `SALLYPORT_BENCH_UNRECORDED=1` passes
/// channel data on without the recorder, so that `bench/throughput.sh` can measure what recording
/// costs. Without the feature this is `false`, and nothing can make it otherwise.
#[cfg(feature = "bench-unrecorded")]
fn unrecorded() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("SALLYPORT_BENCH_UNRECORDED").is_some_and(|v| v == "1");
        if on {
            tracing::warn!(
                "bench build: channel data is NOT recorded (SALLYPORT_BENCH_UNRECORDED=1)"
            );
        }
        on
    })
}

#[cfg(not(feature = "bench-unrecorded"))]
const fn unrecorded() -> bool {
    false
}

/// Write events durably, in one group commit; `Err` when they could not be.
async fn record(spool: &Spool<GatewayKind>, fields: &Fields, events: Vec<Event>) -> Result<(), ()> {
    let events: Vec<(GatewayKind, Value)> = events
        .into_iter()
        .map(|(kind, extra)| {
            let mut d = fields.value();
            crate::merge(&mut d, extra);
            (kind, d)
        })
        .collect();
    spool.append_all(events).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "audit spool unwritable");
    })
}

/// What the engineer reads when their channel cannot be recorded any more.
pub(super) fn unrecordable_channel(e: &RecordError) -> String {
    format!(
        "\r\nsallyport: this channel can no longer be recorded ({e}), so the gateway ended it; \
         nothing after this reached the node. Tell the operator.\r\n"
    )
}

/// The channel's recording failed: say so in the audit log (the channel ends).
async fn recording_failed(spool: &Spool<GatewayKind>, fields: &Fields, e: &RecordError) {
    let mut d = fields.value();
    d["reason"] = json!(e.to_string());
    let _ = spool.append(GatewayKind::RecordingFailed, d).await;
}

/// What the engineer reads when the audit spool cannot be written.
pub(super) const UNRECORDABLE: &str = "sallyport: this gateway cannot write its audit log right now, so it refuses new activity (nothing ran on the node). Tell the operator.\r\n";
