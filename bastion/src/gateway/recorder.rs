//! The recording of one channel at the gateway: pty sessions as asciicast v2 (input and output,
//! with interactive command lines found by the detector), the stdin and output of channels
//! without a pty (exec, and shells without a pty; each direction capped, with its byte count and
//! SHA-256 past the cap), sftp operations parsed from the subsystem stream and classic scp
//! parsed from its exec stream. Recording fails closed: any failure (a file that cannot be
//! written, a panic in the screen model or a parser, a poisoned lock) makes every later call an
//! error, and the session ends the channel. This module holds the state and turns what the pure
//! `record` modules find into audit events; the session does the I/O.
//!
//! Files: `data_dir/recordings/<session>-c<channel>.cast.part` while the channel is open, renamed
//! to `.cast` when it ends; the uploader sends finished files to the broker and deletes them once
//! it has them (after `recording_retention_secs`, as `.cast.uploaded`). Names come from the
//! session id and channel number only, never from user input.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::record::asciicast::AsciicastWriter;
use crate::record::detector::DetectorEvent;
use crate::record::exec::{StdinLine, StdinLines};
use crate::record::pty::{PtyRecorder, Step};
use crate::record::scp::{ScpDirection, ScpParser};
use crate::record::sftp::SftpParser;
use sallyport_audit::writers::GatewayKind;

/// One direction of a non-pty channel: what was kept, what passed, and its digest.
struct Direction {
    bytes: u64,
    sha: Sha256,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            bytes: 0,
            sha: Sha256::new(),
        }
    }

    /// Count and hash `bytes`; the part that still fits under `cap`.
    fn pass<'a>(&mut self, bytes: &'a [u8], cap: u64) -> &'a [u8] {
        let keep = cap.saturating_sub(self.bytes) as usize;
        self.bytes += bytes.len() as u64;
        self.sha.update(bytes);
        &bytes[..bytes.len().min(keep)]
    }

    fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

struct Stream {
    writer: AsciicastWriter,
    input: Direction,
    output: Direction,
    /// Set when a command interpreter reads the channel's stdin: each line is a command.
    lines: Option<StdinLines>,
}

enum State {
    Idle,
    Pty(Box<PtyRecorder>),
    /// A channel without a pty (exec, or a shell without a pty): its stdin and output, each up
    /// to the cap.
    Stream(Box<Stream>),
    Sftp(Box<SftpParser>),
    /// Classic scp: the protocol parsed, each file with its size and SHA-256 (the contents are
    /// not kept in the recording).
    Scp(Box<ScpParser>),
}

struct Inner {
    state: State,
    /// A shell, exec or subsystem request was taken: the channel's program is running.
    program: bool,
    /// Bounds the events the node's output alone can cause.
    throttle: Throttle,
    file: Option<std::fs::File>,
    /// Why this channel can no longer be recorded; once set, every call fails.
    failed: Option<String>,
    /// Lines whose Enter was refused (its events could not be written, so it never reached
    /// the node): never reported as commands afterwards.
    refused_lines: Vec<Value>,
    /// When the channel last passed anything (seconds after its start).
    active_at: f64,
}

/// A pty channel quiet for this long lets its screen model rest (see
/// [`crate::record::detector::Detector::rest`]): 60 KiB become a few hundred bytes.
pub const REST_AFTER: Duration = Duration::from_secs(10);

pub struct ChannelRecorder {
    path: PathBuf,
    start: Instant,
    cap: u64,
    inner: Arc<Mutex<Inner>>,
}

/// An audit event: kind and fields.
pub type Event = (GatewayKind, Value);

/// The channel can no longer be recorded: the session must end it, forwarding nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

impl ChannelRecorder {
    pub fn new(dir: &Path, session: &str, channel: u32, cap: u64) -> ChannelRecorder {
        ChannelRecorder {
            path: dir.join(format!("{session}-c{channel}.cast.part")),
            start: Instant::now(),
            cap,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Idle,
                program: false,
                throttle: Throttle::default(),
                file: None,
                failed: None,
                refused_lines: Vec::new(),
                active_at: 0.0,
            })),
        }
    }

    /// The name the broker stores the recording under.
    pub fn recording_id(&self) -> String {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".cast.part").to_string())
            .unwrap_or_default()
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Run `f` on the state, failing closed: a poisoned lock, an earlier failure, a failed write
    /// or a panic anywhere in recording (the screen model, a parser) is an error, and stays one.
    fn with<T>(&self, f: impl FnOnce(&mut Inner, &Path, f64, u64) -> T) -> Result<T, RecordError> {
        let t = self.t();
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| RecordError("the recorder failed earlier".into()))?;
        if let Some(why) = &inner.failed {
            return Err(RecordError(why.clone()));
        }
        inner.active_at = t;
        let out =
            std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut inner, &self.path, t, self.cap)));
        match out {
            Ok(v) => match &inner.failed {
                Some(why) => Err(RecordError(why.clone())),
                None => Ok(v),
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = what, path = %self.path.display(), "the recorder panicked: ending the channel");
                let why = "the recorder failed (an internal error)".to_string();
                inner.failed = Some(why.clone());
                inner.state = State::Idle;
                Err(RecordError(why))
            }
        }
    }

    fn write(inner: &mut Inner, path: &Path, lines: &[String]) {
        if lines.is_empty() || inner.failed.is_some() {
            return;
        }
        if inner.file.is_none() {
            if let Some(dir) = path.parent() {
                let _ = crate::private::create_dir(dir);
            }
            match crate::private::create_file(path) {
                Ok(f) => inner.file = Some(f),
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "cannot write a recording");
                    inner.failed = Some(format!("its recording cannot be written ({e})"));
                    return;
                }
            }
        }
        if let Some(f) = inner.file.as_mut() {
            for l in lines {
                if let Err(e) = f.write_all(l.as_bytes()) {
                    tracing::error!(error = %e, path = %path.display(), "cannot write a recording");
                    inner.failed = Some(format!("its recording cannot be written ({e})"));
                    return;
                }
            }
        }
    }

    pub fn start_pty(
        &self,
        cols: u32,
        rows: u32,
        term: &str,
        title: &str,
    ) -> Result<(), RecordError> {
        self.with(|inner, path, _, _| {
            if inner.program || matches!(inner.state, State::Pty(_)) {
                // What runs would no longer be recorded the way it started.
                inner.failed = Some("a second pty request on one channel".into());
                return;
            }
            let rec = PtyRecorder::new(cols, rows, term, crate::now()).with_title(title);
            let header = rec.header();
            inner.state = State::Pty(Box::new(rec));
            Self::write(inner, path, &[header]);
        })?;
        rest_when_quiet(Arc::downgrade(&self.inner), self.start);
        Ok(())
    }

    /// A pty channel quiet for `quiet` lets its screen model rest; whether it rests now.
    #[cfg(test)]
    pub fn rest_if_quiet(&self, quiet: Duration) -> bool {
        rest_if_quiet(&self.inner, self.start, quiet)
    }

    /// A shell or exec request: with a pty the pty recording goes on; without, the channel's
    /// stdin and output are kept (each up to the cap).
    /// `interpreter`: what the channel reads on stdin is run as commands (a shell without a pty,
    /// `bash -s`, `python3 -`...): each line is a `command` event (`via: "stdin"`).
    pub fn start_stream(&self, title: &str, interpreter: bool) -> Result<(), RecordError> {
        self.with(|inner, path, _, _| {
            if !Self::program_starts(inner) || matches!(inner.state, State::Pty(_)) {
                return;
            }
            let writer = AsciicastWriter::new(80, 24, "dumb", crate::now())
                .with_title(title.chars().take(200).collect::<String>());
            let header = writer.header();
            inner.state = State::Stream(Box::new(Stream {
                writer,
                input: Direction::new(),
                output: Direction::new(),
                lines: interpreter.then(StdinLines::new),
            }));
            Self::write(inner, path, &[header]);
        })
    }

    /// The sftp subsystem (or an sftp server run by exec) without a pty.
    pub fn start_sftp(&self) -> Result<(), RecordError> {
        self.with(|inner, _, _, _| {
            if Self::program_starts(inner) && !matches!(inner.state, State::Pty(_)) {
                inner.state = State::Sftp(Box::new(SftpParser::new()));
            }
        })
    }

    /// The remote side of classic scp without a pty.
    pub fn start_scp(&self, direction: ScpDirection) -> Result<(), RecordError> {
        self.with(|inner, _, _, _| {
            if Self::program_starts(inner) && !matches!(inner.state, State::Pty(_)) {
                inner.state = State::Scp(Box::new(ScpParser::new(direction)));
            }
        })
    }

    /// A channel runs one program: a second shell, exec or subsystem request would change how
    /// its input is read, so it ends the channel.
    fn program_starts(inner: &mut Inner) -> bool {
        if inner.program {
            inner.failed = Some("a second shell, exec or subsystem request on one channel".into());
            return false;
        }
        inner.program = true;
        true
    }

    pub fn resize(&self, cols: u32, rows: u32) -> Result<(), RecordError> {
        self.with(|inner, path, t, _| {
            if let State::Pty(rec) = &mut inner.state {
                let step = rec.resize(t, cols, rows);
                Self::write(inner, path, &step.lines);
            }
        })
    }

    /// Bytes from the node to the engineer.
    pub fn output(&self, bytes: &[u8]) -> Result<Vec<Event>, RecordError> {
        self.with(|inner, path, t, cap| {
            let evs = match &mut inner.state {
                State::Pty(rec) => {
                    let step = rec.output(t, bytes);
                    Self::write(inner, path, &step.lines);
                    inner.throttle.bound(t, events(step))
                }
                State::Stream(st) => {
                    let kept = st.output.pass(bytes, cap);
                    let line = (!kept.is_empty())
                        .then(|| st.writer.output(t, kept))
                        .flatten();
                    Self::write(inner, path, &line.into_iter().collect::<Vec<_>>());
                    vec![]
                }
                State::Sftp(p) => sftp_events(p.server_data(bytes)),
                State::Scp(p) => scp_events(p.server_data(bytes)),
                State::Idle => vec![],
            };
            at(drop_refused(&inner.refused_lines, evs), t)
        })
    }

    /// The events of an input could not be written, so the input never reached the node: the
    /// lines entered in it are not reported as commands later (when the node's echo would have
    /// decided them, or when the channel ends).
    pub fn refuse(&self, events: &[Event]) {
        if let Ok(mut inner) = self.inner.lock() {
            for (kind, v) in events {
                if *kind == GatewayKind::LineEntered
                    && let Some(line) = v.get("line")
                {
                    inner.refused_lines.push(line.clone());
                }
            }
        }
    }

    /// Bytes typed (or sent) by the engineer.
    pub fn input(&self, bytes: &[u8]) -> Result<Vec<Event>, RecordError> {
        self.with(|inner, path, t, cap| {
            let evs = match &mut inner.state {
                State::Pty(rec) => {
                    let step = rec.input(t, bytes);
                    Self::write(inner, path, &step.lines);
                    events(step)
                }
                State::Stream(st) => {
                    let Stream {
                        writer,
                        input,
                        lines,
                        ..
                    } = st.as_mut();
                    let kept = input.pass(bytes, cap);
                    let line = (!kept.is_empty())
                        .then(|| writer.input(t, kept, true))
                        .flatten();
                    let commands: Vec<StdinLine> = lines
                        .as_mut()
                        .map(|l| l.feed(bytes).into_iter().map(|e| e.line).collect())
                        .unwrap_or_default();
                    Self::write(inner, path, &line.into_iter().collect::<Vec<_>>());
                    stdin_events(commands)
                }
                State::Sftp(p) => sftp_events(p.client_data(bytes)),
                State::Scp(p) => scp_events(p.client_data(bytes)),
                State::Idle => vec![],
            };
            at(drop_refused(&inner.refused_lines, evs), t)
        })
    }

    /// The engineer sent EOF: a last line without its newline is read by the interpreter now.
    pub fn input_eof(&self) -> Result<Vec<Event>, RecordError> {
        self.with(|inner, _, _, _| match &mut inner.state {
            State::Stream(st) => match st.lines.as_mut() {
                Some(lines) => stdin_events(lines.finish().into_iter().collect()),
                None => vec![],
            },
            State::Pty(_) | State::Sftp(_) | State::Scp(_) | State::Idle => vec![],
        })
    }

    /// The channel ended: last events, and the finished file (if anything was recorded).
    pub fn finish(&self) -> Result<(Vec<Event>, Option<PathBuf>), RecordError> {
        self.with(|inner, path, t, cap| {
            let state = std::mem::replace(&mut inner.state, State::Idle);
            let evs = match state {
                State::Pty(mut rec) => {
                    let step = rec.finish(t);
                    Self::write(inner, path, &step.lines);
                    let mut evs = inner.throttle.bound(t, events(step));
                    evs.extend(inner.throttle.summary());
                    evs
                }
                State::Stream(st) => {
                    let Stream {
                        mut writer,
                        input,
                        output,
                        lines: _,
                    } = *st;
                    let lines = writer.finish(t);
                    Self::write(inner, path, &lines);
                    vec![(
                        GatewayKind::OutputRecorded,
                        json!({"bytes": output.bytes, "truncated": output.bytes > cap || input.bytes > cap,
                               "output_sha256": output.digest(), "input_bytes": input.bytes,
                               "input_sha256": input.digest(), "cap_bytes": cap}),
                    )]
                }
                State::Sftp(mut p) => sftp_events(p.finish()),
                State::Scp(mut p) => scp_events(p.finish()),
                State::Idle => vec![],
            };
            let evs = drop_refused(&inner.refused_lines, evs);
            let file = inner.file.take();
            let done = match file {
                Some(f) if inner.failed.is_none() => {
                    let _ = f.sync_all();
                    let finished = path.with_extension("");
                    std::fs::rename(path, &finished).ok().map(|_| finished)
                }
                _ => None,
            };
            (evs, done)
        })
    }
}

/// Events that the node's output alone can cause (a full-screen program starting or ending)
/// are bounded per channel: at most [`Throttle::PER_WINDOW`] per [`Throttle::WINDOW_SECS`]; the
/// rest are counted, and the next one written (or a last one when the channel ends) says how
/// many were left out. A node printing mode switches in a loop cannot flood the audit spool.
#[derive(Default)]
struct Throttle {
    window_start: f64,
    in_window: u32,
    suppressed: u64,
}

impl Throttle {
    const WINDOW_SECS: f64 = 10.0;
    const PER_WINDOW: u32 = 20;
    const KINDS: [GatewayKind; 1] = [GatewayKind::FullScreen];

    fn bound(&mut self, t: f64, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for (kind, mut data) in events {
            if !Self::KINDS.contains(&kind) {
                out.push((kind, data));
                continue;
            }
            if t - self.window_start >= Self::WINDOW_SECS {
                self.window_start = t;
                self.in_window = 0;
            }
            if self.in_window >= Self::PER_WINDOW {
                self.suppressed += 1;
                continue;
            }
            self.in_window += 1;
            if self.suppressed > 0 {
                data["suppressed_before"] = json!(std::mem::take(&mut self.suppressed));
            }
            out.push((kind, data));
        }
        out
    }

    /// What was left out since the last event written.
    fn summary(&mut self) -> Option<Event> {
        (self.suppressed > 0).then(|| {
            (
                GatewayKind::FullScreenSuppressed,
                json!({"count": std::mem::take(&mut self.suppressed),
                       "reason": "the node switched terminal modes faster than the audit log records them"}),
            )
        })
    }
}

/// Lines an interpreter read on stdin, as commands.
/// While the channel's recorder lives, look every half [`REST_AFTER`] whether it has been quiet
/// for that long, and let its screen model rest.
fn rest_when_quiet(inner: Weak<Mutex<Inner>>, start: Instant) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(REST_AFTER / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            rest_if_quiet(&inner, start, REST_AFTER);
        }
    });
}

fn rest_if_quiet(inner: &Mutex<Inner>, start: Instant, quiet: Duration) -> bool {
    let Ok(mut inner) = inner.lock() else {
        return false;
    };
    let quiet_for = start.elapsed().as_secs_f64() - inner.active_at;
    if inner.failed.is_some() || quiet_for < quiet.as_secs_f64() {
        return false;
    }
    match &mut inner.state {
        // The model's own calls into vt100 are made under catch_unwind.
        State::Pty(rec) => rec.rest(),
        State::Idle | State::Stream(_) | State::Sftp(_) | State::Scp(_) => false,
    }
}

fn stdin_events(lines: Vec<StdinLine>) -> Vec<Event> {
    lines
        .into_iter()
        .map(|l| {
            let mut v = json!({"command": l.text, "via": "stdin"});
            if l.truncated {
                v["truncated"] = json!(true);
                v["line_bytes"] = json!(l.bytes);
                v["line_sha256"] = json!(l.sha256);
            }
            (GatewayKind::Command, v)
        })
        .collect()
}

/// `evs` without the commands of lines whose Enter was refused (see [`ChannelRecorder::refuse`]).
fn drop_refused(refused: &[Value], evs: Vec<Event>) -> Vec<Event> {
    if refused.is_empty() {
        return evs;
    }
    evs.into_iter()
        .filter(|(kind, v)| {
            !(*kind == GatewayKind::Command
                && ["line", "last_line"]
                    .iter()
                    .any(|k| v.get(*k).is_some_and(|l| refused.contains(l))))
        })
        .collect()
}

/// Each event says when it happened in the recording (`at`, seconds since the channel's
/// recording started): the console's player opens a command's moment from it.
fn at(mut evs: Vec<Event>, t: f64) -> Vec<Event> {
    for (_, v) in &mut evs {
        if let Some(m) = v.as_object_mut() {
            m.entry("at")
                .or_insert(json!((t * 1000.0).round() / 1000.0));
        }
    }
    evs
}

fn events(step: Step) -> Vec<Event> {
    step.events
        .into_iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(d) if d.echo_off => Some((GatewayKind::InputHidden, json!({"reason": "typed without echo at a prompt asking for a secret; kept neither as a command nor in the recording", "line": d.line, "chars": d.hidden_chars}))),
            DetectorEvent::Command(d) => Some((
                GatewayKind::Command,
                json!({"command": d.command, "via": "interactive", "line": d.line, "last_line": d.last_line, "located": d.located, "carried": d.carried}),
            )),
            DetectorEvent::Entered { line, shown } => Some((
                GatewayKind::LineEntered,
                json!({"line": line, "shown": shown, "via": "interactive"}),
            )),
            DetectorEvent::FullScreen { entered } => Some((GatewayKind::FullScreen, json!({"entered": entered}))),
            DetectorEvent::LineEcho { .. } => None,
        })
        .collect()
}

fn scp_events(ops: Vec<crate::record::scp::ScpOp>) -> Vec<Event> {
    ops.into_iter()
        .map(|op| (GatewayKind::FileOp, json!({"via": "scp", "op": op})))
        .collect()
}

fn sftp_events(ops: Vec<crate::record::sftp::SftpOp>) -> Vec<Event> {
    ops.into_iter()
        .map(|op| (GatewayKind::FileOp, json!({"via": "sftp", "op": op})))
        .collect()
}

/// What a recording left unfinished by a stopped gateway becomes: its header and every whole
/// event line, up to the first line the crash cut (or anything after it), and a marker saying
/// where it ends. `None` when not even the header is whole.
pub fn repair_unfinished(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut last_t = 0.0f64;
    let mut lines = text.split_inclusive('\n');
    let header = lines.next()?;
    let parsed: serde_json::Value = serde_json::from_str(header.trim_end()).ok()?;
    if !header.ends_with('\n') || parsed.get("version").and_then(Value::as_u64) != Some(2) {
        return None;
    }
    out.push_str(header);
    for line in lines {
        if !line.ends_with('\n') {
            break;
        }
        let Ok((t, _, _)) = serde_json::from_str::<(f64, String, String)>(line.trim_end()) else {
            break;
        };
        last_t = last_t.max(t);
        out.push_str(line);
    }
    let note = serde_json::to_string(UNFINISHED_MARKER).unwrap_or_default();
    out.push_str(&format!("[{last_t:?}, \"m\", {note}]\n"));
    Some(out)
}

/// The marker that ends a recording finished at a restart.
pub const UNFINISHED_MARKER: &str =
    "sallyport: the gateway stopped before this channel ended; the recording ends here";

/// At start, before any session: finish the recordings a stopped gateway left open
/// (`.cast.part`) so that they are uploaded like any other. Returns audit events to spool.
pub fn recover_unfinished(dir: &Path) -> Vec<Event> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name.strip_suffix(".cast.part").map(str::to_string) else {
            continue;
        };
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(err) => {
                tracing::error!(error = %err, path = %path.display(), "cannot read an unfinished recording");
                continue;
            }
        };
        let finished = dir.join(format!("{id}.cast"));
        match repair_unfinished(&text) {
            Some(repaired) => {
                let written = crate::trust::write_atomic(&finished, repaired.as_bytes())
                    .and_then(|()| std::fs::remove_file(&path));
                match written {
                    Ok(()) => events.push((
                        GatewayKind::RecordingRecovered,
                        json!({"recording": id, "bytes_kept": repaired.len(), "bytes_found": text.len(),
                               "reason": "the gateway stopped before the channel ended; finished at restart"}),
                    )),
                    Err(err) => {
                        tracing::error!(error = %err, recording = id, "cannot finish an unfinished recording")
                    }
                }
            }
            None => {
                // Kept on disk for the operator, never uploaded as a recording.
                let _ = std::fs::rename(&path, dir.join(format!("{id}.cast.unreadable")));
                events.push((
                    GatewayKind::RecordingUnreadable,
                    json!({"recording": id, "bytes_found": text.len(),
                           "reason": "the gateway stopped before the recording's header was written whole"}),
                ));
            }
        }
    }
    events
}

/// Send finished recordings to the broker, retried until accepted; runs forever. A delivered
/// recording is kept as `<id>.cast.uploaded` for `retention` and then deleted (at once when
/// `retention` is zero): the broker holds the copy that counts.
pub async fn upload_forever(
    dir: PathBuf,
    broker: crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    loop {
        upload_pending(&dir, &broker, retention).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}

async fn upload_pending(
    dir: &Path,
    broker: &crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".cast.uploaded") {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age >= retention);
            if old && let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete a delivered recording");
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".cast").map(str::to_string) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match broker.put_recording(&id, bytes).await {
            Ok(()) => delivered(&path, retention),
            Err(e) => {
                tracing::warn!(error = %e, recording = id, "recording not uploaded yet; will retry")
            }
        }
    }
}

fn delivered(path: &Path, retention: std::time::Duration) {
    let done = if retention.is_zero() {
        std::fs::remove_file(path)
    } else {
        std::fs::rename(path, path.with_extension("cast.uploaded"))
    };
    if let Err(err) = done {
        tracing::warn!(error = %err, path = %path.display(), "cannot retire a delivered recording");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_audit::writers::ChainKind;

    const HEADER: &str = "{\"version\": 2, \"width\": 80, \"height\": 24}\n";

    #[test]
    fn an_unfinished_recording_keeps_every_whole_line_and_ends_with_a_marker() {
        let table: &[(&str, Option<&[&str]>)] = &[
            // cut in the middle of an event line
            (
                "[0.5, \"o\", \"$ \"]\n[1.25, \"i\", \"ls\"]\n[1.3, \"o\", \"l",
                Some(&["$ ", "ls"]),
            ),
            // cut right after a whole line
            ("[0.5, \"o\", \"$ \"]\n", Some(&["$ "])),
            // nothing after the header
            ("", Some(&[])),
            // a whole line of garbage stops the recovery there
            (
                "[0.5, \"o\", \"a\"]\n\u{0}\u{0}\n[2.0, \"o\", \"b\"]\n",
                Some(&["a"]),
            ),
        ];
        for (body, want) in table {
            let text = format!("{HEADER}{body}");
            let fixed = repair_unfinished(&text).expect("header is whole");
            let events = crate::record::asciicast::parse_events(&fixed).unwrap();
            let (last, rest) = events.split_last().unwrap();
            assert_eq!(
                last.kind,
                crate::record::asciicast::EventKind::Marker,
                "{body:?}"
            );
            assert_eq!(last.data, UNFINISHED_MARKER);
            let kept: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(Some(kept.as_slice()), want.map(|w| w), "{body:?}");
            // times never go backwards: the marker is at the last kept event's time
            assert!(rest.iter().all(|e| e.time <= last.time));
        }
        // A torn or missing header: nothing to replay.
        assert_eq!(repair_unfinished(""), None);
        assert_eq!(repair_unfinished("{\"version\": 2, \"wid"), None);
        assert_eq!(repair_unfinished("{\"version\": 1}\n"), None);
    }

    #[test]
    fn recovery_at_start_finishes_part_files_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("s-1-c0.cast.part"),
            format!("{HEADER}[0.1, \"o\", \"x\"]\n[0.2, \"o"),
        )
        .unwrap();
        std::fs::write(d.join("s-2-c0.cast.part"), "{\"vers").unwrap();
        std::fs::write(d.join("s-3-c0.cast"), HEADER).unwrap();
        let events = recover_unfinished(d);
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|(k, v)| (k.as_str(), v["recording"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(kinds.contains(&("recording_recovered", "s-1-c0")));
        assert!(kinds.contains(&("recording_unreadable", "s-2-c0")));
        assert!(!d.join("s-1-c0.cast.part").exists());
        let fixed = std::fs::read_to_string(d.join("s-1-c0.cast")).unwrap();
        assert!(fixed.ends_with(&format!(
            "{}]\n",
            serde_json::to_string(UNFINISHED_MARKER).unwrap()
        )));
        assert!(d.join("s-2-c0.cast.unreadable").exists());
        assert_eq!(
            std::fs::read_to_string(d.join("s-3-c0.cast")).unwrap(),
            HEADER
        );
        // A second start finds nothing more to do.
        assert!(recover_unfinished(d).is_empty());
    }

    /// A line whose Enter could not be written never reached the node: it is no command later,
    /// neither at the node's output nor when the channel ends; a line that went through is.
    #[test]
    fn a_refused_line_is_not_reported_as_a_command_later() {
        let commands = |evs: &[Event]| -> Vec<String> {
            evs.iter()
                .filter(|(k, _)| *k == GatewayKind::Command)
                .filter_map(|(_, v)| v["command"].as_str().map(str::to_string))
                .collect()
        };
        for refuse in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20);
            rec.start_pty(80, 24, "xterm", "bash").unwrap();
            rec.output(b"$ ").unwrap();
            let mut seen = commands(&rec.input(b"touch /tmp/x").unwrap());
            seen.extend(commands(&rec.output(b"touch /tmp/x").unwrap()));
            let entered = rec.input(b"\r").unwrap();
            assert!(
                entered.iter().any(|(k, _)| *k == GatewayKind::LineEntered),
                "{entered:?}"
            );
            if refuse {
                rec.refuse(&entered);
            } else {
                seen.extend(commands(&entered));
            }
            seen.extend(commands(&rec.output(b"\r\n$ ").unwrap()));
            seen.extend(commands(&rec.finish().unwrap().0));
            if refuse {
                assert!(seen.is_empty(), "{seen:?}");
            } else {
                assert_eq!(seen, ["touch /tmp/x"]);
            }
        }
    }

    #[test]
    fn a_quiet_pty_channel_rests_and_records_the_same_commands_after() {
        let commands = |evs: &[Event]| -> Vec<String> {
            evs.iter()
                .filter(|(k, _)| *k == GatewayKind::Command)
                .filter_map(|(_, v)| v["command"].as_str().map(str::to_string))
                .collect()
        };
        let mut got = Vec::new();
        let mut rests = Vec::new();
        for rest in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20);
            let mut seen = Vec::new();
            // Not quiet long enough yet; and a channel without a pty never rests.
            assert!(!rec.rest_if_quiet(Duration::from_secs(3600)));
            rec.start_pty(80, 24, "xterm", "bash").unwrap();
            rec.output(b"\x1b[?2004h\x1b[01;32malice@node1\x1b[00m:~$ ")
                .unwrap();
            seen.extend(commands(&rec.input(b"echo first").unwrap()));
            seen.extend(commands(&rec.output(b"echo first").unwrap()));
            seen.extend(commands(&rec.input(b"\r").unwrap()));
            seen.extend(commands(
                &rec.output(
                    b"\r\n\x1b[?2004l\rfirst\r\n\x1b[?2004h\x1b[01;32malice@node1\x1b[00m:~$ ",
                )
                .unwrap(),
            ));
            if rest {
                rests.push(rec.rest_if_quiet(Duration::ZERO));
            }
            // Recalled from history: only the screen shows what the line holds.
            seen.extend(commands(&rec.input(b"\x1b[A").unwrap()));
            seen.extend(commands(&rec.output(b"echo first").unwrap()));
            seen.extend(commands(&rec.input(b"\r").unwrap()));
            seen.extend(commands(
                &rec.output(b"\r\n\x1b[?2004l\rfirst\r\n$ ").unwrap(),
            ));
            seen.extend(commands(&rec.finish().unwrap().0));
            got.push(seen);
        }
        assert_eq!(rests, [true]);
        assert_eq!(got[0], ["echo first", "echo first"]);
        assert_eq!(got[1], got[0]);
        let stream = ChannelRecorder::new(tempfile::tempdir().unwrap().path(), "s-2", 0, 1024);
        stream.start_stream("bash", true).unwrap();
        assert!(!stream.rest_if_quiet(Duration::ZERO));
    }

    #[test]
    fn a_panic_or_a_failed_write_ends_recording_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1024);
        rec.start_stream("bash -s", true).unwrap();
        assert!(rec.input(b"echo one\n").is_ok());
        let panicked = rec.with(|_, _, _, _| panic!("the screen model broke"));
        assert!(panicked.is_err());
        // Every later call fails: nothing more may be forwarded.
        assert!(rec.input(b"echo two\n").is_err());
        assert!(rec.output(b"two\n").is_err());
        assert!(rec.input_eof().is_err());
        assert!(rec.finish().is_err());

        // A recording that cannot be written (its directory is a file).
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let rec = ChannelRecorder::new(&blocked, "s-2", 0, 1024);
        assert!(rec.start_stream("ls", false).is_err());
        assert!(rec.input(b"x").is_err());
    }

    #[test]
    fn an_interpreters_stdin_lines_are_commands_and_streams_are_capped_with_digests() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 16);
        rec.start_stream("bash -s", true).unwrap();
        let mut commands = Vec::new();
        for chunk in [&b"echo o"[..], b"ne\r\necho two\nech", b"o three"] {
            for (kind, v) in rec.input(chunk).unwrap() {
                assert_eq!(kind, GatewayKind::Command);
                assert_eq!(v["via"], "stdin");
                commands.push(v["command"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(commands, ["echo one", "echo two"]);
        // The last line, without its newline, is read at EOF.
        let last = rec.input_eof().unwrap();
        assert_eq!(last[0].1["command"], "echo three");
        rec.output(&[b'x'; 40]).unwrap();
        let (events, file) = rec.finish().unwrap();
        let (kind, v) = &events[0];
        assert_eq!(*kind, GatewayKind::OutputRecorded);
        assert_eq!(v["bytes"], 40);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["output_sha256"], hex::encode(Sha256::digest([b'x'; 40])));
        assert_eq!(
            v["input_sha256"],
            hex::encode(Sha256::digest(b"echo one\r\necho two\necho three"))
        );
        // The recording keeps both directions up to the cap.
        let text = std::fs::read_to_string(file.unwrap()).unwrap();
        let evs = crate::record::asciicast::parse_events(&text).unwrap();
        let input: String = evs
            .iter()
            .filter(|e| e.kind == crate::record::asciicast::EventKind::Input)
            .map(|e| e.data.as_str())
            .collect();
        assert_eq!(input, "echo one\r\necho t");
    }

    #[test]
    fn mode_switches_in_a_loop_are_bounded_and_counted() {
        let mut th = Throttle::default();
        let ev = || (GatewayKind::FullScreen, json!({"entered": true}));
        let mut written = 0;
        for i in 0..10_000 {
            written += th
                .bound(
                    i as f64 * 0.0001,
                    vec![ev(), (GatewayKind::Command, json!({}))],
                )
                .len();
        }
        // Every command, and at most PER_WINDOW mode switches in the first second.
        assert_eq!(written, 10_000 + Throttle::PER_WINDOW as usize);
        let later = th.bound(20.0, vec![ev()]);
        assert_eq!(
            later[0].1["suppressed_before"],
            10_000 - Throttle::PER_WINDOW as u64
        );
        assert!(th.summary().is_none());
        for _ in 0..30 {
            th.bound(21.0, vec![ev()]);
        }
        assert_eq!(th.summary().unwrap().1["count"], 11);
    }

    #[test]
    fn one_program_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1024);
        rec.start_stream("bash -s", true).unwrap();
        assert!(rec.start_stream("true", false).is_err());
        assert!(rec.input(b"echo\n").is_err());
        let rec = ChannelRecorder::new(dir.path(), "s-2", 0, 1024);
        rec.start_stream("bash -s", true).unwrap();
        assert!(rec.start_pty(80, 24, "xterm", "t").is_err());
        let rec = ChannelRecorder::new(dir.path(), "s-3", 0, 1024);
        rec.start_pty(80, 24, "xterm", "t").unwrap();
        rec.start_stream("bash", true).unwrap();
        assert!(rec.start_sftp().is_err());
    }
}
