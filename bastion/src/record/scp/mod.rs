//! `scp` in its legacy (rcp) protocol runs as an exec command on the node: `scp -t PATH` receives
//! files into PATH (an upload by the engineer), `scp -f PATH...` sends them (a download). The
//! client adds `-r` (recursive), `-p` (preserve times and modes), `-d` (target must be a
//! directory) and `-v`; OpenSSH inserts `--` before a path starting with `-`. Modern `scp` uses
//! SFTP instead, which the sftp parser sees.
//!
//! The path is the remote shell's word(s), unquoted; it is recorded, never used as a file name.
//!
//! # The stream ([`ScpParser`])
//!
//! One side is the *source* (the engineer's client for `-t`, the node for `-f`), the other the
//! *sink*. The sink starts with a `\0` byte; then the source sends records, one line each:
//!
//! - `C<mode> <size> <name>\n` (mode: 4 octal digits), then, once the sink has acknowledged the
//!   line, exactly `size` bytes, then `\0` (or `\x01message\n` when reading failed midway);
//! - `D<mode> 0 <name>\n` enters a directory (recursive copies), `E\n` leaves it;
//! - `T<mtime> 0 <atime> 0\n` gives the times of the next `C` or `D` (`-p`);
//! - `\x01message\n` (a warning: a path could not be sent) or `\x02message\n` (fatal).
//!
//! The sink answers each record line and each file's end with `\0`, or `\x01message\n` /
//! `\x02message\n` (fatal) when it refused or failed; a refused `C` line gets no data. Answers
//! come in the order of what they answer, so the parser keeps a short queue of what awaits one.
//!
//! [`ScpParser`] yields one [`ScpOp::File`] per file (its path inside the transfer — the names of
//! the directories entered and its own, joined with `/`, as the protocol gave them —, mode, size,
//! the bytes seen, their SHA-256 and the outcome) when the sink answered its end, and one
//! [`ScpOp::Dir`] per directory entered when the sink answered its `D` line.
//!
//! It never buffers file contents (they are hashed as they pass), a line is at most
//! [`MAX_LINE`] bytes, directories nest at most [`MAX_DEPTH`] deep, and at most [`MAX_PENDING`]
//! records may await their answer (a real source waits for each). Anything else stops the
//! parsing with one [`ScpOp::Unparseable`]; the bytes still flow.
//!
//! The parser must see the two directions in the order they happened (feed a chunk before
//! forwarding it): whether data follows a `C` line depends on the sink's answer to it.

use std::collections::VecDeque;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Which way the files go, from the engineer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScpDirection {
    /// `scp -t`: the node receives files.
    Upload,
    /// `scp -f`: the node sends files.
    Download,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScpTransfer {
    pub direction: ScpDirection,
    /// The remote path (several paths of a download joined by a space).
    pub path: String,
    pub recursive: bool,
    pub preserve: bool,
    /// `-d`: the target must be a directory.
    pub target_is_dir: bool,
}

/// Recognize the remote side of scp in an exec command.
pub fn parse_exec(command: &str) -> Option<ScpTransfer> {
    parse_words(&shell_words(command)?)
}

/// Recognize the remote side of scp in the words of a simple command (the program first).
pub(crate) fn parse_words(words: &[String]) -> Option<ScpTransfer> {
    let mut words = words.iter();
    let program = words.next()?;
    if program.rsplit('/').next() != Some("scp") {
        return None;
    }
    let mut direction = None;
    let (mut recursive, mut preserve, mut target_is_dir) = (false, false, false);
    let mut paths = Vec::new();
    let mut options_done = false;
    for word in words {
        if !options_done && word == "--" {
            options_done = true;
            continue;
        }
        match word.strip_prefix('-') {
            Some(flags) if !options_done && !flags.is_empty() => {
                for flag in flags.chars() {
                    match flag {
                        't' => direction = merge(direction, ScpDirection::Upload)?,
                        'f' => direction = merge(direction, ScpDirection::Download)?,
                        'r' => recursive = true,
                        'p' => preserve = true,
                        'd' => target_is_dir = true,
                        'v' | 'q' | 'T' => {}
                        _ => return None,
                    }
                }
            }
            Some(_) | None => {
                options_done = true;
                paths.push(word.as_str());
            }
        }
    }
    let direction = direction?;
    if paths.is_empty() {
        return None;
    }
    Some(ScpTransfer {
        direction,
        path: paths.join(" "),
        recursive,
        preserve,
        target_is_dir,
    })
}

fn merge(current: Option<ScpDirection>, new: ScpDirection) -> Option<Option<ScpDirection>> {
    match current {
        None => Some(Some(new)),
        Some(d) if d == new => Some(Some(new)),
        Some(_) => None,
    }
}

/// Split like a POSIX shell does words: blanks separate, `'...'` is literal, `"..."` keeps `\"`,
/// `\\`, `\$` and `` \` `` escapes, a backslash outside quotes escapes the next character. `None`
/// for an unterminated quote or anything a shell would treat as more than one simple command.
fn shell_words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            '\n' => {}
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next()? {
                    '\n' => {}
                    c => word.push(c),
                }
            }
            ';' | '&' | '|' | '\n' | '<' | '>' | '`' | '(' | ')' => return None,
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Longest record or message line, in bytes.
pub const MAX_LINE: usize = 4096;
/// Deepest directory nesting followed.
pub const MAX_DEPTH: usize = 256;
/// Most record lines awaiting the sink's answer.
pub const MAX_PENDING: usize = 16;
/// Longest message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// One end of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScpSide {
    /// The engineer's side.
    Client,
    /// The node's side.
    Server,
}

/// How a file or a directory went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ScpStatus {
    /// All bytes passed and the sink acknowledged them.
    Ok,
    /// `by` sent an error: the source after (part of) the data, or the sink refusing the record
    /// or failing to write. `fatal` for a `\x02` message.
    Failed {
        by: ScpSide,
        message: String,
        fatal: bool,
    },
    /// The stream ended (or became unparseable) before the data was all there.
    Incomplete,
    /// All the data passed, but the stream ended before the sink answered.
    Unacknowledged,
}

/// What happened in an scp stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ScpOp {
    /// A file sent from source to sink.
    File {
        /// Inside the transfer: directories entered and the file's name, joined with `/`.
        path: String,
        /// The 4 octal digits the source gave.
        mode: String,
        /// The size announced.
        size: u64,
        /// The bytes that passed.
        bytes: u64,
        /// SHA-256 (hex) of the bytes, when all `size` of them passed.
        sha256: Option<String>,
        /// From a preceding `T` record (`-p`), in seconds since the epoch.
        mtime: Option<u64>,
        status: ScpStatus,
    },
    /// A directory entered (`D` record), with the sink's answer.
    Dir {
        path: String,
        mode: String,
        mtime: Option<u64>,
        status: ScpStatus,
    },
    /// An error not about one file: the source could not send a path, or the sink refused to
    /// start, or refused a `T` or `E` record.
    Error {
        from: ScpSide,
        message: String,
        fatal: bool,
    },
    /// The stream could not be followed from here on.
    Unparseable { reason: String },
}

/// Follows one classic scp channel.
#[derive(Debug)]
pub struct ScpParser {
    direction: ScpDirection,
    source: Source,
    /// The source's line being read.
    source_line: Vec<u8>,
    sink: Sink,
    /// The sink's message being read.
    sink_line: Vec<u8>,
    /// What awaits the sink's answer, oldest first.
    pending: VecDeque<Awaiting>,
    /// The directories entered.
    dirs: Vec<String>,
    /// The mtime of a `T` record, for the next `C` or `D`.
    mtime: Option<u64>,
    broken: bool,
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
struct Incoming {
    path: String,
    mode: String,
    size: u64,
    seen: u64,
    sha: Sha256,
    mtime: Option<u64>,
}

impl Incoming {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.seen)
    }

    fn into_op(self, status: ScpStatus) -> ScpOp {
        let sha256 = (self.seen == self.size).then(|| hex::encode(self.sha.finalize()));
        ScpOp::File {
            path: self.path,
            mode: self.mode,
            size: self.size,
            bytes: self.seen,
            sha256,
            mtime: self.mtime,
            status,
        }
    }
}

/// What the sink's next answer is about.
#[derive(Debug)]
enum Awaiting {
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
    /// `direction` as [`parse_exec`] found it: who is the source.
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
                    ops.push(file.into_op(failed.unwrap_or(ScpStatus::Unacknowledged)))
                }
                Awaiting::Start | Awaiting::Times | Awaiting::Exit | Awaiting::FileHeader => {}
            }
        }
        match std::mem::replace(&mut self.source, Source::Line) {
            Source::Line => {}
            Source::Data(file) | Source::Status(file) | Source::DataError { file, .. } => {
                ops.push(file.into_op(ScpStatus::Incomplete))
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
                let file = Incoming {
                    path: self.path_of(&name),
                    mode,
                    size,
                    seen: 0,
                    sha: Sha256::new(),
                    mtime: self.mtime.take(),
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
                ops.push(file.into_op(status));
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
                ops.push(file.into_op(status))
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

/// Append `bytes` up to a `\n` to `buf`; the whole line (without `\n`) once it is there.
fn take_line(buf: &mut Vec<u8>, bytes: &mut &[u8]) -> Result<Option<Vec<u8>>, String> {
    let newline = bytes.iter().position(|&b| b == b'\n');
    let part = &bytes[..newline.unwrap_or(bytes.len())];
    if buf.len() + part.len() > MAX_LINE {
        return Err(format!("a line longer than {MAX_LINE} bytes"));
    }
    buf.extend_from_slice(part);
    match newline {
        Some(end) => {
            *bytes = &bytes[end + 1..];
            Ok(Some(std::mem::take(buf)))
        }
        None => {
            *bytes = &[];
            Ok(None)
        }
    }
}

/// `<4 octal digits> <size> <name>` of a `C` or `D` line.
fn parse_entry(rest: &[u8]) -> Option<(String, u64, String)> {
    let text = std::str::from_utf8(rest.get(..5)?).ok()?;
    let (mode, space) = text.split_at(4);
    if space != " " || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let rest = &rest[5..];
    let digits = rest.iter().position(|&b| b == b' ')?;
    let size = parse_u64(&rest[..digits])?;
    let name = &rest[digits + 1..];
    if name.is_empty() {
        return None;
    }
    Some((
        mode.to_string(),
        size,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

/// `<mtime> <usec> <atime> <usec>` of a `T` line: the mtime.
fn parse_times(rest: &[u8]) -> Option<u64> {
    let mut fields = rest.split(|&b| b == b' ');
    let mtime = parse_u64(fields.next()?)?;
    for _ in 0..3 {
        parse_u64(fields.next()?)?;
    }
    fields.next().is_none().then_some(mtime)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn message(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

fn bad(what: &str, line: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
    format!("malformed {what} line {shown:?}")
}

#[cfg(test)]
mod tests;
