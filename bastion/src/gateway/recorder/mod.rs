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
//! to `.cast` when it ends (closed while the channel is quiet for [`REST_AFTER`] and opened
//! again, appending, at its next line: an idle session holds no descriptor for it); the uploader sends finished files to the broker and deletes them once
//! it has them (after `recording_retention_secs`, as `.cast.uploaded`). Names come from the
//! session id and channel number only, never from user input.
//!
//! Here, [`ChannelRecorder`] and its state; in `events`, what it finds as audit events (and the
//! throttle on full-screen switches); in `recovery`, the recordings a stop left unfinished; in
//! `upload`, their hand-off to the broker.

mod events;
mod recovery;
mod upload;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::record::asciicast::AsciicastWriter;
use crate::record::exec::{StdinLine, StdinLines};
use crate::record::pty::PtyRecorder;
use crate::record::scp::{ScpDirection, ScpParser};
use crate::record::sftp::SftpParser;
pub use events::Sealing;
use events::{Throttle, at, drop_refused, events, scp_events, sftp_events, stdin_events};
pub use recovery::recover_unfinished;
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::clock::now_secs;
use sallyport_ca::seal::SealKey;
pub use upload::upload_forever;

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
    /// The last bytes of stdin looked at for an SFTP client's first packet (one across chunks).
    tail: Vec<u8>,
}

/// How far into an exec channel's stdin an SFTP client's `SSH_FXP_INIT` is looked for; in an
/// interpreter's (whose input could skip any preamble first), all of it.
const SFTP_LOOKOUT: u64 = 4096;

/// `SSH_FXP_INIT` (a packet of 5 to 255 bytes: type 1, then a version of 1 to 6) anywhere in
/// `bytes`: an SFTP session in a channel the gateway did not classify as one (an SFTP server
/// under a wrapper it does not know, a copy of one under another name): it could not be parsed
/// nor policed as SFTP.
fn sftp_init_in(bytes: &[u8]) -> bool {
    bytes.windows(9).any(|w| {
        w[..3] == [0, 0, 0]
            && w[3] >= 5
            && w[4] == 1
            && w[5..8] == [0, 0, 0]
            && (1..=6).contains(&w[8])
    })
}

enum State {
    Idle,
    /// A pty channel, and where the lines typed at its secret prompts are sealed to.
    Pty(Box<PtyRecorder>, Box<Sealing>),
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
    file: RecordingFile,
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
    session: String,
    channel: u32,
    /// The broker's hidden-input key: a pty channel does not start without it.
    seal_key: Option<SealKey>,
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
            session: session.to_string(),
            channel,
            seal_key: None,
            start: Instant::now(),
            cap,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Idle,
                program: false,
                throttle: Throttle::default(),
                file: RecordingFile::default(),
                failed: None,
                refused_lines: Vec::new(),
                active_at: 0.0,
            })),
        }
    }

    /// Seal the lines typed at a pty's secret prompts to `key` (the broker's hidden-input key).
    pub fn sealing_to(mut self, key: Option<SealKey>) -> ChannelRecorder {
        self.seal_key = key;
        self
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
        if let Err(e) = inner.file.append(path, lines) {
            tracing::error!(error = %e, path = %path.display(), "cannot write a recording");
            inner.failed = Some(format!("its recording cannot be written ({e})"));
        }
    }

    pub fn start_pty(
        &self,
        cols: u32,
        rows: u32,
        term: &str,
        title: &str,
    ) -> Result<(), RecordError> {
        let sealing = self.seal_key.clone().map(|key| Sealing {
            key,
            session: self.session.clone(),
            channel: u64::from(self.channel),
        });
        self.with(|inner, path, _, _| {
            if inner.program || matches!(inner.state, State::Pty(..)) {
                // What runs would no longer be recorded the way it started.
                inner.failed = Some("a second pty request on one channel".into());
                return;
            }
            let Some(sealing) = sealing else {
                // A line typed at a secret prompt could be neither kept in clear nor sealed.
                inner.failed = Some(
                    "the gateway has no key yet to seal what is typed at password prompts (it \
                     has not heard from the broker since it started): try again in a minute"
                        .into(),
                );
                return;
            };
            let rec = PtyRecorder::new(cols, rows, term, now_secs()).with_title(title);
            let header = rec.header();
            inner.state = State::Pty(Box::new(rec), Box::new(sealing));
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
            if !Self::program_starts(inner) || matches!(inner.state, State::Pty(..)) {
                return;
            }
            let writer = AsciicastWriter::new(80, 24, "dumb", now_secs())
                .with_title(title.chars().take(200).collect::<String>());
            let header = writer.header();
            inner.state = State::Stream(Box::new(Stream {
                writer,
                input: Direction::new(),
                output: Direction::new(),
                lines: interpreter.then(StdinLines::new),
                tail: Vec::new(),
            }));
            Self::write(inner, path, &[header]);
        })
    }

    /// The sftp subsystem (or an sftp server run by exec) without a pty.
    pub fn start_sftp(&self) -> Result<(), RecordError> {
        self.with(|inner, _, _, _| {
            if Self::program_starts(inner) && !matches!(inner.state, State::Pty(..)) {
                inner.state = State::Sftp(Box::new(SftpParser::new()));
            }
        })
    }

    /// The remote side of classic scp without a pty.
    pub fn start_scp(&self, direction: ScpDirection, target: &str) -> Result<(), RecordError> {
        self.with(|inner, _, _, _| {
            if Self::program_starts(inner) && !matches!(inner.state, State::Pty(..)) {
                let parser = ScpParser::new(direction).with_target(target);
                inner.state = State::Scp(Box::new(parser));
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
            if let State::Pty(rec, _) = &mut inner.state {
                let step = rec.resize(t, cols, rows);
                Self::write(inner, path, &step.lines);
            }
        })
    }

    /// Bytes from the node to the engineer.
    pub fn output(&self, bytes: &[u8]) -> Result<Vec<Event>, RecordError> {
        self.with(|inner, path, t, cap| {
            let evs = match &mut inner.state {
                State::Pty(rec, sealing) => {
                    let step = rec.output(t, bytes);
                    let evs = events(&step.events, sealing);
                    Self::write(inner, path, &step.lines);
                    inner.throttle.bound(t, evs)
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
                State::Pty(rec, sealing) => {
                    let step = rec.input(t, bytes);
                    let evs = events(&step.events, sealing);
                    Self::write(inner, path, &step.lines);
                    evs
                }
                State::Stream(st) => {
                    let Stream {
                        writer,
                        input,
                        lines,
                        tail,
                        ..
                    } = st.as_mut();
                    if input.bytes < SFTP_LOOKOUT || lines.is_some() {
                        // The last 8 bytes before this chunk and its first 8: a packet across
                        // the cut; then the chunk.
                        tail.extend_from_slice(&bytes[..bytes.len().min(8)]);
                        let found = sftp_init_in(tail) || sftp_init_in(bytes);
                        // Then the last 8 bytes seen (a short chunk is all in `tail` already).
                        if bytes.len() >= 8 {
                            tail.clear();
                            tail.extend_from_slice(&bytes[bytes.len() - 8..]);
                        }
                        let extra = tail.len().saturating_sub(8);
                        tail.drain(..extra);
                        if found {
                            inner.failed = Some(
                                "an SFTP session inside a command the gateway does not know as an \
                                 SFTP server: use sftp itself (the subsystem)"
                                    .into(),
                            );
                            return vec![];
                        }
                    }
                    let kept = input.pass(bytes, cap);
                    let line = (!kept.is_empty())
                        .then(|| writer.input(t, kept, true))
                        .flatten();
                    // The lines the chunk completes, then what it leaves of the next one.
                    let commands: Vec<StdinLine> = lines
                        .as_mut()
                        .map(|l| {
                            let ends = l.feed(bytes).into_iter().map(|e| e.line);
                            ends.chain(l.partial()).collect()
                        })
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
            State::Pty(..) | State::Sftp(_) | State::Scp(_) | State::Idle => vec![],
        })
    }

    /// The channel ended: last events, and the finished file (if anything was recorded).
    pub fn finish(&self) -> Result<(Vec<Event>, Option<PathBuf>), RecordError> {
        self.with(|inner, path, t, cap| {
            let state = std::mem::replace(&mut inner.state, State::Idle);
            let evs = match state {
                State::Pty(mut rec, sealing) => {
                    let step = rec.finish(t);
                    let evs = events(&step.events, &sealing);
                    Self::write(inner, path, &step.lines);
                    let mut evs = inner.throttle.bound(t, evs);
                    evs.extend(inner.throttle.summary());
                    evs
                }
                State::Stream(st) => {
                    let Stream {
                        mut writer,
                        input,
                        output,
                        lines: stdin,
                        tail: _,
                    } = *st;
                    let lines = writer.finish(t);
                    Self::write(inner, path, &lines);
                    // A last line the engineer sent without its newline and never ended with EOF
                    // (the connection dropped): the node's end of the channel closes, and the
                    // interpreter reads it then.
                    let mut evs = match stdin {
                        Some(mut stdin) => stdin_events(stdin.finish().into_iter().collect()),
                        None => vec![],
                    };
                    evs.push((
                        GatewayKind::OutputRecorded,
                        json!({"bytes": output.bytes, "truncated": output.bytes > cap || input.bytes > cap,
                               "output_sha256": output.digest(), "input_bytes": input.bytes,
                               "input_sha256": input.digest(), "cap_bytes": cap}),
                    ));
                    evs
                }
                State::Sftp(mut p) => sftp_events(p.finish()),
                State::Scp(mut p) => scp_events(p.finish()),
                State::Idle => vec![],
            };
            let evs = drop_refused(&inner.refused_lines, evs);
            let done = match inner.file.finish(path) {
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

/// The recording's file, open only while its channel passes something: a channel quiet for
/// [`REST_AFTER`] has it closed (an idle session holds no descriptor for it), and its next write
/// opens it again, appending, so that the file holds every line in order as if it had stayed
/// open.
#[derive(Default)]
struct RecordingFile {
    file: Option<std::fs::File>,
    /// The file was created (its first line written): later opens append to it.
    created: bool,
}

impl RecordingFile {
    fn append(&mut self, path: &Path, lines: &[String]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(self.open(path)?);
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        for l in lines {
            f.write_all(l.as_bytes())?;
        }
        Ok(())
    }

    fn open(&mut self, path: &Path) -> std::io::Result<std::fs::File> {
        if self.created {
            // Never created anew: a recording that vanished is an error, not a fresh file.
            return std::fs::OpenOptions::new().append(true).open(path);
        }
        if let Some(dir) = path.parent() {
            let _ = crate::private::create_dir(dir);
        }
        let f = crate::private::create_file(path)?;
        self.created = true;
        Ok(f)
    }

    /// Close the file while the channel is quiet.
    fn close(&mut self) {
        self.file = None;
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The channel ended: the file, open, if anything was written to it.
    fn finish(&mut self, path: &Path) -> Option<std::fs::File> {
        let f = match self.file.take() {
            Some(f) => Some(f),
            None if self.created => self.open(path).ok(),
            None => None,
        };
        self.created = false;
        f
    }
}

/// While the channel's recorder lives, look every half [`REST_AFTER`] whether it has been quiet
/// for that long, and let its screen model rest and close its file.
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
    inner.file.close();
    match &mut inner.state {
        // The model's own calls into vt100 are made under catch_unwind.
        State::Pty(rec, _) => rec.rest(),
        State::Idle | State::Stream(_) | State::Sftp(_) | State::Scp(_) => false,
    }
}

#[cfg(test)]
mod tests;
