//! The scp stream followed from both ends: the source's records and data, the sink's answers,
//! and the [`ScpOp`]s they make.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};

use super::wire::{bad, message, parse_entry, parse_times, take_line};
use super::{MAX_DEPTH, MAX_PENDING, ScpDirection, ScpOp, ScpSide, ScpStatus};
use crate::record::sftp::{KEPT_BYTES, runs_later};

/// Follows one classic scp channel.
#[derive(Debug)]
pub struct ScpParser {
    direction: ScpDirection,
    source: Source,
    /// The source's line being read.
    pub(super) source_line: Vec<u8>,
    sink: Sink,
    /// The sink's message being read.
    pub(super) sink_line: Vec<u8>,
    /// What awaits the sink's answer, oldest first.
    pub(super) pending: VecDeque<Awaiting>,
    /// The directories entered.
    pub(super) dirs: Vec<String>,
    /// The mtime of a `T` record, for the next `C` or `D`.
    mtime: Option<u64>,
    broken: bool,
    /// The remote path the transfer named (`scp -t PATH`): a file uploaded there is kept when
    /// it runs later.
    target: Option<String>,
}

/// Where the source's stream is.
#[derive(Debug)]
enum Source {
    /// Reading a record line.
    Line,
    /// Inside a file's data.
    Data(Box<Incoming>),
    /// After the data: `\0` or an error line.
    Status(Box<Incoming>),
    /// Reading the error line that ends a file.
    DataError { file: Box<Incoming>, fatal: bool },
}

/// Where the sink's stream is.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// Expecting an answer.
    Answer,
    /// Reading an error message.
    Message { fatal: bool },
}

/// A file whose data is passing.
#[derive(Debug)]
pub(super) struct Incoming {
    path: String,
    mode: String,
    size: u64,
    seen: u64,
    sha: Sha256,
    mtime: Option<u64>,
    /// Uploaded to a path that runs later: its bytes kept (up to [`KEPT_BYTES`]).
    kept: Option<Vec<u8>>,
}

impl Incoming {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.seen)
    }

    /// The file's op, and what it held when it runs later.
    fn into_ops(self, status: ScpStatus) -> Vec<ScpOp> {
        let sha256 = (self.seen == self.size).then(|| hex::encode(self.sha.finalize()));
        let kept = self.kept.map(|bytes| ScpOp::KeptContent {
            path: self.path.clone(),
            content: String::from_utf8_lossy(&bytes).into_owned(),
            cut: self.seen > bytes.len() as u64,
        });
        let file = ScpOp::File {
            path: self.path,
            mode: self.mode,
            size: self.size,
            bytes: self.seen,
            sha256,
            mtime: self.mtime,
            status,
        };
        std::iter::once(file).chain(kept).collect()
    }
}

/// What the sink's next answer is about.
#[derive(Debug)]
pub(super) enum Awaiting {
    /// The sink's first `\0`: ready.
    Start,
    Times,
    Dir {
        path: String,
        mode: String,
        mtime: Option<u64>,
    },
    Exit,
    /// A `C` line: the data follows only if accepted.
    FileHeader,
    /// A file's end; `failed` when the source reported an error instead of `\0`.
    FileEnd {
        file: Box<Incoming>,
        failed: Option<ScpStatus>,
    },
}

/// A sink's answer.
type Answer = Result<(), (String, bool)>;

impl ScpParser {
    /// The remote path the transfer named.
    pub fn with_target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// `direction` as [`parse_exec`](super::parse_exec) found it: who is the source.
    pub fn new(direction: ScpDirection) -> Self {
        ScpParser {
            direction,
            source: Source::Line,
            source_line: Vec::new(),
            sink: Sink::Answer,
            sink_line: Vec::new(),
            pending: VecDeque::from([Awaiting::Start]),
            dirs: Vec::new(),
            mtime: None,
            broken: false,
            target: None,
        }
    }

    /// Bytes the engineer's client sent.
    pub fn client_data(&mut self, bytes: &[u8]) -> Vec<ScpOp> {
        self.feed(ScpSide::Client, bytes)
    }

    /// Bytes the node sent.
    pub fn server_data(&mut self, bytes: &[u8]) -> Vec<ScpOp> {
        self.feed(ScpSide::Server, bytes)
    }

    /// The channel ended: files cut short are incomplete, answers never given are missing.
    pub fn finish(&mut self) -> Vec<ScpOp> {
        let mut ops = Vec::new();
        for awaiting in std::mem::take(&mut self.pending) {
            match awaiting {
                Awaiting::Dir { path, mode, mtime } => ops.push(ScpOp::Dir {
                    path,
                    mode,
                    mtime,
                    status: ScpStatus::Unacknowledged,
                }),
                Awaiting::FileEnd { file, failed } => {
                    ops.extend(file.into_ops(failed.unwrap_or(ScpStatus::Unacknowledged)))
                }
                Awaiting::Start | Awaiting::Times | Awaiting::Exit | Awaiting::FileHeader => {}
            }
        }
        match std::mem::replace(&mut self.source, Source::Line) {
            Source::Line => {}
            Source::Data(file) | Source::Status(file) | Source::DataError { file, .. } => {
                ops.extend(file.into_ops(ScpStatus::Incomplete))
            }
        }
        self.broken = true;
        ops
    }

    fn source_side(&self) -> ScpSide {
        match self.direction {
            ScpDirection::Upload => ScpSide::Client,
            ScpDirection::Download => ScpSide::Server,
        }
    }

    fn sink_side(&self) -> ScpSide {
        match self.source_side() {
            ScpSide::Client => ScpSide::Server,
            ScpSide::Server => ScpSide::Client,
        }
    }

    fn feed(&mut self, side: ScpSide, bytes: &[u8]) -> Vec<ScpOp> {
        let mut ops = Vec::new();
        if self.broken {
            return ops;
        }
        let result = if side == self.source_side() {
            self.source_bytes(bytes, &mut ops)
        } else {
            self.sink_bytes(bytes, &mut ops)
        };
        if let Err(reason) = result {
            self.broken = true;
            let who = match side {
                ScpSide::Client => "client",
                ScpSide::Server => "server",
            };
            ops.push(ScpOp::Unparseable {
                reason: format!("{who}: {reason}"),
            });
        }
        ops
    }

    fn source_bytes(&mut self, mut bytes: &[u8], ops: &mut Vec<ScpOp>) -> Result<(), String> {
        while !bytes.is_empty() {
            match std::mem::replace(&mut self.source, Source::Line) {
                Source::Line => {
                    if let Some(line) = take_line(&mut self.source_line, &mut bytes)? {
                        self.record(&line, ops)?;
                    }
                }
                Source::Data(mut file) => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(file.left()).unwrap_or(usize::MAX));
                    file.sha.update(&bytes[..n]);
                    if let Some(kept) = file.kept.as_mut() {
                        let room = KEPT_BYTES.saturating_sub(kept.len());
                        kept.extend_from_slice(&bytes[..n.min(room)]);
                    }
                    file.seen += n as u64;
                    bytes = &bytes[n..];
                    self.source = if file.left() == 0 {
                        Source::Status(file)
                    } else {
                        Source::Data(file)
                    };
                }
                Source::Status(file) => {
                    let (byte, rest) = (bytes[0], &bytes[1..]);
                    bytes = rest;
                    match byte {
                        0 => self.await_answer(Awaiting::FileEnd { file, failed: None })?,
                        1 | 2 => {
                            self.source = Source::DataError {
                                file,
                                fatal: byte == 2,
                            }
                        }
                        other => {
                            self.source = Source::Status(file);
                            return Err(format!("byte {other:#04x} after a file's data"));
                        }
                    }
                }
                Source::DataError { file, fatal } => {
                    match take_line(&mut self.source_line, &mut bytes)? {
                        Some(line) => {
                            let failed = ScpStatus::Failed {
                                by: self.source_side(),
                                message: message(&line),
                                fatal,
                            };
                            self.await_answer(Awaiting::FileEnd {
                                file,
                                failed: Some(failed),
                            })?;
                        }
                        None => self.source = Source::DataError { file, fatal },
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole record line from the source, without its `\n`.
    fn record(&mut self, line: &[u8], ops: &mut Vec<ScpOp>) -> Result<(), String> {
        let Some((&kind, rest)) = line.split_first() else {
            return Err("empty record line".to_string());
        };
        match kind {
            b'C' => {
                let (mode, size, name) = parse_entry(rest).ok_or_else(|| bad("file", line))?;
                let path = self.path_of(&name);
                let later = self.direction == ScpDirection::Upload
                    && (runs_later(&path) || self.target.as_deref().is_some_and(runs_later));
                let file = Incoming {
                    path,
                    mode,
                    size,
                    seen: 0,
                    sha: Sha256::new(),
                    mtime: self.mtime.take(),
                    kept: later.then(Vec::new),
                };
                self.await_answer(Awaiting::FileHeader)?;
                self.source = if size == 0 {
                    Source::Status(Box::new(file))
                } else {
                    Source::Data(Box::new(file))
                };
            }
            b'D' => {
                let (mode, _, name) = parse_entry(rest).ok_or_else(|| bad("directory", line))?;
                let path = self.path_of(&name);
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(format!("directories nested deeper than {MAX_DEPTH}"));
                }
                self.dirs.push(name);
                let mtime = self.mtime.take();
                self.await_answer(Awaiting::Dir { path, mode, mtime })?;
            }
            b'E' if rest.is_empty() => {
                if self.dirs.pop().is_none() {
                    return Err("end of directory outside any".to_string());
                }
                self.await_answer(Awaiting::Exit)?;
            }
            b'T' => {
                let mtime = parse_times(rest).ok_or_else(|| bad("times", line))?;
                self.mtime = Some(mtime);
                self.await_answer(Awaiting::Times)?;
            }
            1 | 2 => ops.push(ScpOp::Error {
                from: self.source_side(),
                message: message(rest),
                fatal: kind == 2,
            }),
            _ => return Err(bad("record", line)),
        }
        Ok(())
    }

    fn path_of(&self, name: &str) -> String {
        let mut path = String::new();
        for dir in &self.dirs {
            path.push_str(dir);
            path.push('/');
        }
        path.push_str(name);
        path
    }

    fn await_answer(&mut self, awaiting: Awaiting) -> Result<(), String> {
        if self.pending.len() >= MAX_PENDING {
            return Err(format!("more than {MAX_PENDING} records without an answer"));
        }
        self.pending.push_back(awaiting);
        Ok(())
    }

    fn sink_bytes(&mut self, mut bytes: &[u8], ops: &mut Vec<ScpOp>) -> Result<(), String> {
        while !bytes.is_empty() {
            match self.sink {
                Sink::Answer => {
                    let (byte, rest) = (bytes[0], &bytes[1..]);
                    bytes = rest;
                    match byte {
                        0 => self.answer(Ok(()), ops)?,
                        1 | 2 => self.sink = Sink::Message { fatal: byte == 2 },
                        other => return Err(format!("byte {other:#04x} instead of an answer")),
                    }
                }
                Sink::Message { fatal } => {
                    if let Some(line) = take_line(&mut self.sink_line, &mut bytes)? {
                        self.sink = Sink::Answer;
                        self.answer(Err((message(&line), fatal)), ops)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The sink answered the oldest record awaiting it.
    fn answer(&mut self, answer: Answer, ops: &mut Vec<ScpOp>) -> Result<(), String> {
        let Some(awaiting) = self.pending.pop_front() else {
            return Err("an answer to nothing".to_string());
        };
        let sink = self.sink_side();
        let failed = |(message, fatal): (String, bool)| ScpStatus::Failed {
            by: sink,
            message,
            fatal,
        };
        match awaiting {
            Awaiting::Start | Awaiting::Times | Awaiting::Exit => {
                if let Err((message, fatal)) = answer {
                    ops.push(ScpOp::Error {
                        from: sink,
                        message,
                        fatal,
                    });
                }
            }
            Awaiting::Dir { path, mode, mtime } => {
                let status = match answer {
                    Ok(()) => ScpStatus::Ok,
                    Err(e) => {
                        // The source does not enter a refused directory: no `E` will come.
                        self.dirs.pop();
                        failed(e)
                    }
                };
                ops.push(ScpOp::Dir {
                    path,
                    mode,
                    mtime,
                    status,
                });
            }
            Awaiting::FileHeader => {
                if let Err(e) = answer {
                    self.refused_file(e, ops);
                }
            }
            Awaiting::FileEnd {
                file,
                failed: by_source,
            } => {
                let status = match (by_source, answer) {
                    (Some(status), _) => status,
                    (None, Ok(())) => ScpStatus::Ok,
                    (None, Err(e)) => failed(e),
                };
                ops.extend(file.into_ops(status));
            }
        }
        Ok(())
    }

    /// The sink refused a `C` line: no data follows it.
    fn refused_file(&mut self, (message, fatal): (String, bool), ops: &mut Vec<ScpOp>) {
        let status = ScpStatus::Failed {
            by: self.sink_side(),
            message,
            fatal,
        };
        match std::mem::replace(&mut self.source, Source::Line) {
            Source::Data(file) | Source::Status(file) if file.seen == 0 => {
                ops.extend(file.into_ops(status))
            }
            other => {
                // Data already passed (the order of the directions was not kept): keep going.
                self.source = other;
                if let ScpStatus::Failed { by, message, fatal } = status {
                    ops.push(ScpOp::Error {
                        from: by,
                        message,
                        fatal,
                    });
                }
            }
        }
    }
}
