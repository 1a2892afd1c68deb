//! SFTP v3 (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it) seen from the middle: the
//! client's requests and the server's responses, each a stream of `uint32 length, byte type,
//! payload` packets that may arrive split or coalesced in any way across channel data chunks.
//!
//! Requests are paired with their responses by request id, open handles are mapped to the path
//! they were opened with, and read and written bytes are summed per handle and reported when the
//! handle is closed (not per packet). Each [`SftpOp`] carries the server's answer.
//!
//! Each file handle also carries the SHA-256 of the bytes read through it (`SSH_FXP_DATA` replies)
//! and of the bytes written through it (`SSH_FXP_WRITE` requests), reported with its close:
//!
//! - a digest is computed only while the data flows as one run from offset 0: writes must come at
//!   the offset where the previous one ended (OpenSSH pipelines many writes, but sends them in
//!   order); reads may be requested ahead (pipelined) and their replies may come back in any
//!   order: a reply ahead of the next expected offset is kept until the gap is filled, within
//!   [`MAX_REORDER_BYTES`] for the whole channel;
//! - a read request that skips past everything requested so far, a write at another offset than
//!   the expected one, or a reply overlapping bytes already hashed make the digest
//!   [`DigestUnavailable::NonSequential`] (a resumed transfer, random access); more out-of-order
//!   data than the bound makes it [`DigestUnavailable::ReorderOverflow`]; written bytes the server
//!   did not acknowledge make it [`DigestUnavailable::Unacknowledged`];
//! - when no data flowed one way, both the digest and the reason are `None` for that way (a
//!   zero-length file has no digest: its size, 0, says it all).
//!
//! So a file uploaded or downloaded whole, in order, is reported with exactly the `sha256sum` of
//! its content; a partial transfer from offset 0 with the digest of the bytes that passed.
//!
//! Memory is bounded: at most one packet per direction is buffered, a packet may be at most
//! [`MAX_PACKET_LEN`] bytes, and outstanding requests and open handles are capped. Anything out of
//! bounds or not decodable stops the parsing of the channel with one [`SftpOp::Unparseable`] (the
//! bytes still flow; only the record of them stops). Paths are recorded as sent, lossy UTF-8,
//! never used as file names.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest packet accepted: OpenSSH's 256 KiB message limit plus room for the fields around a
/// 256 KiB data payload.
pub const MAX_PACKET_LEN: usize = 256 * 1024 + 1024;
/// Most requests waiting for their response.
pub const MAX_PENDING: usize = 4096;
/// Most handles open at once.
pub const MAX_HANDLES: usize = 4096;
/// Most read data kept, over all handles of a channel, while waiting for an earlier reply to
/// come (out-of-order `SSH_FXP_DATA` replies). OpenSSH's client has at most 64 × 32 KiB in
/// flight by default.
pub const MAX_REORDER_BYTES: usize = 4 * 1024 * 1024;
/// Longest handle (the protocol says 256 bytes).
const MAX_HANDLE_LEN: usize = 256;
/// Longest status message kept.
const MAX_MESSAGE_CHARS: usize = 512;

mod fxp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const RENAME: u8 = 18;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const EXTENDED: u8 = 200;
}

/// The server's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SftpStatus {
    Ok,
    /// `SSH_FXP_STATUS` with a code other than `SSH_FX_OK` (see [`status_name`]).
    Failed {
        code: u32,
        message: String,
    },
    /// The channel ended before the answer.
    NoResponse,
}

/// The name of an SFTP v3 status code.
pub fn status_name(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1 => "eof",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        6 => "no connection",
        7 => "connection lost",
        8 => "operation unsupported",
        _ => "unknown",
    }
}

/// `SSH_FXP_OPEN` pflags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub create: bool,
    pub truncate: bool,
    pub exclusive: bool,
}

impl OpenFlags {
    pub fn from_bits(bits: u32) -> Self {
        OpenFlags {
            read: bits & 0x01 != 0,
            write: bits & 0x02 != 0,
            append: bits & 0x04 != 0,
            create: bits & 0x08 != 0,
            truncate: bits & 0x10 != 0,
            exclusive: bits & 0x20 != 0,
        }
    }
}

/// Why a handle's digest is missing although data flowed that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestUnavailable {
    /// The data did not flow as one run from offset 0: a resumed transfer, random access, a gap
    /// that was never filled, or bytes transferred twice.
    NonSequential,
    /// Read replies came further out of order than [`MAX_REORDER_BYTES`] allows to follow.
    ReorderOverflow,
    /// The server refused some written bytes, or never answered their write.
    Unacknowledged,
}

/// A file operation, with the server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SftpOp {
    /// `handle` is the server's handle in hex, when it gave one.
    Open {
        path: String,
        flags: OpenFlags,
        handle: Option<String>,
        status: SftpStatus,
    },
    /// A file handle closed, with the bytes the server returned to reads and the bytes of writes
    /// it acknowledged through it, and their SHA-256 in hex (see the module doc: `None` with
    /// no reason when no data flowed that way).
    Close {
        path: String,
        bytes_read: u64,
        bytes_written: u64,
        sha256_read: Option<String>,
        sha256_read_unavailable: Option<DigestUnavailable>,
        sha256_written: Option<String>,
        sha256_written_unavailable: Option<DigestUnavailable>,
        status: SftpStatus,
    },
    /// A file handle still open when the channel ended (or whose handle the server reused), with
    /// what passed through it as for [`SftpOp::Close`].
    Unclosed {
        path: String,
        bytes_read: u64,
        bytes_written: u64,
        sha256_read: Option<String>,
        sha256_read_unavailable: Option<DigestUnavailable>,
        sha256_written: Option<String>,
        sha256_written_unavailable: Option<DigestUnavailable>,
    },
    Opendir {
        path: String,
        status: SftpStatus,
    },
    Remove {
        path: String,
        status: SftpStatus,
    },
    /// `SSH_FXP_RENAME` or `posix-rename@openssh.com`.
    Rename {
        from: String,
        to: String,
        status: SftpStatus,
    },
    Mkdir {
        path: String,
        status: SftpStatus,
    },
    Rmdir {
        path: String,
        status: SftpStatus,
    },
    /// `SSH_FXP_SETSTAT`, `SSH_FXP_FSETSTAT` (the handle's path) or `lsetstat@openssh.com`.
    Setstat {
        path: String,
        status: SftpStatus,
    },
    /// `SSH_FXP_SYMLINK`, in OpenSSH's order: the target first, then the link to create.
    Symlink {
        target: String,
        link: String,
        status: SftpStatus,
    },
    /// `hardlink@openssh.com`.
    Hardlink {
        target: String,
        link: String,
        status: SftpStatus,
    },
    /// Another extended request that may change something (read-only ones are not reported).
    Extended {
        name: String,
        status: SftpStatus,
    },
    /// The stream could not be followed from here on.
    Unparseable {
        reason: String,
    },
}

/// Extended requests that only read: not reported.
const READ_ONLY_EXTENSIONS: [&str; 7] = [
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "home-directory",
    "users-groups-by-id@openssh.com",
    "fsync@openssh.com",
];

/// Follows one SFTP subsystem channel.
#[derive(Debug, Default)]
pub struct SftpParser {
    client: Framer,
    server: Framer,
    state: State,
    broken: bool,
}

impl SftpParser {
    pub fn new() -> Self {
        SftpParser::default()
    }

    /// Bytes the client sent (requests).
    pub fn client_data(&mut self, bytes: &[u8]) -> Vec<SftpOp> {
        self.feed(Direction::Client, bytes)
    }

    /// Bytes the server sent (responses).
    pub fn server_data(&mut self, bytes: &[u8]) -> Vec<SftpOp> {
        self.feed(Direction::Server, bytes)
    }

    /// The channel ended: requests without an answer, and handles never closed.
    pub fn finish(&mut self) -> Vec<SftpOp> {
        let mut ops = Vec::new();
        for (_, request) in std::mem::take(&mut self.state.pending) {
            self.state
                .answer(request, Response::None, SftpStatus::NoResponse, &mut ops);
        }
        for (_, file) in std::mem::take(&mut self.state.handles) {
            self.state.reorder_bytes = self
                .state
                .reorder_bytes
                .saturating_sub(file.reads.ahead_bytes);
            if !file.dir {
                ops.push(file.unclosed());
            }
        }
        ops
    }

    fn feed(&mut self, direction: Direction, bytes: &[u8]) -> Vec<SftpOp> {
        let mut ops = Vec::new();
        if self.broken {
            return ops;
        }
        let framer = match direction {
            Direction::Client => &mut self.client,
            Direction::Server => &mut self.server,
        };
        let state = &mut self.state;
        let result = framer.feed(bytes, |packet| match direction {
            Direction::Client => state.request(packet, &mut ops),
            Direction::Server => state.response(packet, &mut ops),
        });
        if let Err(Malformed(reason)) = result {
            self.broken = true;
            self.client = Framer::default();
            self.server = Framer::default();
            let side = match direction {
                Direction::Client => "client",
                Direction::Server => "server",
            };
            ops.push(SftpOp::Unparseable {
                reason: format!("{side}: {reason}"),
            });
        }
        ops
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Client,
    Server,
}

#[derive(Debug)]
struct Malformed(String);

/// Cuts a byte stream into packets, buffering at most one.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut packet: impl FnMut(&[u8]) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        while !bytes.is_empty() {
            if self.buf.is_empty()
                && let Some(len) = packet_len(bytes)?
                && bytes.len() >= 4 + len
            {
                // A whole packet in the chunk: no copy.
                packet(&bytes[4..4 + len])?;
                bytes = &bytes[4 + len..];
                continue;
            }
            if self.buf.len() < 4 {
                let take = (4 - self.buf.len()).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.buf.len() < 4 {
                    break;
                }
            }
            let len = packet_len(&self.buf)?.unwrap_or(0);
            let take = (4 + len - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == 4 + len {
                let result = packet(&self.buf[4..]);
                self.buf.clear();
                result?;
            }
        }
        Ok(())
    }
}

/// The length of the packet starting `bytes`, once its length field is there.
fn packet_len(bytes: &[u8]) -> Result<Option<usize>, Malformed> {
    let Some(field) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([field[0], field[1], field[2], field[3]]) as usize;
    if len == 0 {
        return Err(Malformed("empty packet".to_string()));
    }
    if len > MAX_PACKET_LEN {
        return Err(Malformed(format!(
            "packet of {len} bytes (at most {MAX_PACKET_LEN})"
        )));
    }
    Ok(Some(len))
}

/// Reads the fields of one packet.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if self.data.len() < n {
            return Err(Malformed(format!("truncated {what}")));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn text(&mut self, what: &str) -> Result<String, Malformed> {
        Ok(String::from_utf8_lossy(self.string(what)?).into_owned())
    }

    fn handle(&mut self) -> Result<Vec<u8>, Malformed> {
        let handle = self.string("handle")?;
        if handle.len() > MAX_HANDLE_LEN {
            return Err(Malformed(format!("handle of {} bytes", handle.len())));
        }
        Ok(handle.to_vec())
    }
}

/// A request waiting for its response.
#[derive(Debug)]
enum Request {
    Open { path: String, flags: OpenFlags },
    Opendir { path: String },
    Close { handle: Vec<u8> },
    Read { handle: Vec<u8>, offset: u64 },
    Write { handle: Vec<u8>, len: u64 },
    Remove { path: String },
    Rename { from: String, to: String },
    Mkdir { path: String },
    Rmdir { path: String },
    Setstat { path: String },
    Fsetstat { handle: Vec<u8> },
    Symlink { target: String, link: String },
    Hardlink { target: String, link: String },
    Extended { name: String },
}

/// What a response carried besides its status.
#[derive(Debug)]
enum Response<'a> {
    Handle(Vec<u8>),
    Data(&'a [u8]),
    None,
}

#[derive(Debug, Default)]
struct OpenFile {
    path: String,
    dir: bool,
    read: u64,
    written: u64,
    reads: ReadRun,
    writes: Run,
}

impl OpenFile {
    fn new(path: &str, dir: bool) -> Self {
        OpenFile {
            path: path.to_string(),
            dir,
            ..OpenFile::default()
        }
    }

    fn written_digest(&self) -> (Option<String>, Option<DigestUnavailable>) {
        match self.writes.result() {
            (Some(_), _) if self.writes.seen != self.written => {
                (None, Some(DigestUnavailable::Unacknowledged))
            }
            other => other,
        }
    }

    fn closed(self, status: SftpStatus) -> SftpOp {
        let (sha256_read, sha256_read_unavailable) = self.reads.result();
        let (sha256_written, sha256_written_unavailable) = self.written_digest();
        SftpOp::Close {
            path: self.path,
            bytes_read: self.read,
            bytes_written: self.written,
            sha256_read,
            sha256_read_unavailable,
            sha256_written,
            sha256_written_unavailable,
            status,
        }
    }

    fn unclosed(self) -> SftpOp {
        let (sha256_read, sha256_read_unavailable) = self.reads.result();
        let (sha256_written, sha256_written_unavailable) = self.written_digest();
        SftpOp::Unclosed {
            path: self.path,
            bytes_read: self.read,
            bytes_written: self.written,
            sha256_read,
            sha256_read_unavailable,
            sha256_written,
            sha256_written_unavailable,
        }
    }
}

/// The SHA-256 of the bytes of one way of a handle, while they come as one run from offset 0.
#[derive(Debug, Default)]
struct Run {
    sha: Sha256,
    /// The offset just after the bytes hashed.
    next: u64,
    /// Bytes that flowed this way, hashed or not.
    seen: u64,
    unavailable: Option<DigestUnavailable>,
}

impl Run {
    /// Hash `data` if it continues the run; `seen` is counted by the caller.
    fn add(&mut self, offset: u64, data: &[u8]) {
        if self.unavailable.is_some() {
            return;
        }
        if offset != self.next {
            self.fail(DigestUnavailable::NonSequential);
            return;
        }
        self.sha.update(data);
        self.next = self.next.saturating_add(data.len() as u64);
    }

    fn fail(&mut self, why: DigestUnavailable) {
        if self.unavailable.is_none() {
            self.unavailable = Some(why);
        }
    }

    fn result(&self) -> (Option<String>, Option<DigestUnavailable>) {
        if self.seen == 0 {
            return (None, None);
        }
        match self.unavailable {
            Some(why) => (None, Some(why)),
            None => (Some(hex::encode(self.sha.clone().finalize())), None),
        }
    }
}

/// The read side of a handle: replies may come out of order, those ahead wait for the gap.
#[derive(Debug, Default)]
struct ReadRun {
    run: Run,
    /// The end of the furthest read requested.
    requested_end: u64,
    /// Replies ahead of `run.next`, by offset.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// Their bytes (counted in the channel's reorder budget too).
    ahead_bytes: usize,
}

impl ReadRun {
    /// A read request: one past everything requested so far leaves a gap.
    fn requested(&mut self, offset: u64, len: u32, budget: &mut usize) {
        if offset > self.requested_end {
            self.fail(DigestUnavailable::NonSequential, budget);
        }
        self.requested_end = self
            .requested_end
            .max(offset.saturating_add(u64::from(len)));
    }

    /// The data a read at `offset` returned.
    fn reply(&mut self, offset: u64, data: &[u8], budget: &mut usize) {
        self.run.seen = self.run.seen.saturating_add(data.len() as u64);
        if self.run.unavailable.is_some() {
            return;
        }
        if offset == self.run.next {
            self.run.add(offset, data);
            self.drain(budget);
        } else if offset < self.run.next || self.ahead.contains_key(&offset) {
            self.fail(DigestUnavailable::NonSequential, budget);
        } else if budget.saturating_add(data.len()) > MAX_REORDER_BYTES {
            self.fail(DigestUnavailable::ReorderOverflow, budget);
        } else {
            self.ahead.insert(offset, data.to_vec());
            self.ahead_bytes += data.len();
            *budget += data.len();
        }
    }

    /// Hash the replies kept that now continue the run.
    fn drain(&mut self, budget: &mut usize) {
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.run.next {
                return;
            }
            if *entry.key() < self.run.next {
                // Overlaps bytes already hashed.
                self.fail(DigestUnavailable::NonSequential, budget);
                return;
            }
            let data = entry.remove();
            self.ahead_bytes = self.ahead_bytes.saturating_sub(data.len());
            *budget = budget.saturating_sub(data.len());
            self.run.add(self.run.next, &data);
        }
    }

    fn fail(&mut self, why: DigestUnavailable, budget: &mut usize) {
        self.run.fail(why);
        *budget = budget.saturating_sub(self.ahead_bytes);
        self.ahead_bytes = 0;
        self.ahead.clear();
    }

    fn result(&self) -> (Option<String>, Option<DigestUnavailable>) {
        match self.run.result() {
            // A gap before replies kept was never filled.
            (Some(_), None) if !self.ahead.is_empty() => {
                (None, Some(DigestUnavailable::NonSequential))
            }
            other => other,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pending: BTreeMap<u32, Request>,
    handles: BTreeMap<Vec<u8>, OpenFile>,
    /// Bytes of read replies kept for reordering, over all handles.
    reorder_bytes: usize,
}

impl State {
    fn request(&mut self, packet: &[u8], ops: &mut Vec<SftpOp>) -> Result<(), Malformed> {
        let mut r = Reader { data: packet };
        let kind = r.u8("type")?;
        if kind == fxp::INIT {
            return Ok(());
        }
        let id = r.u32("request id")?;
        let request = match kind {
            fxp::OPEN => {
                let path = r.text("path")?;
                let flags = OpenFlags::from_bits(r.u32("pflags")?);
                Request::Open { path, flags }
            }
            fxp::OPENDIR => Request::Opendir {
                path: r.text("path")?,
            },
            fxp::CLOSE => Request::Close {
                handle: r.handle()?,
            },
            fxp::READ => {
                let handle = r.handle()?;
                let offset = r.u64("offset")?;
                let len = r.u32("length")?;
                if let Some(file) = self.handles.get_mut(&handle) {
                    file.reads.requested(offset, len, &mut self.reorder_bytes);
                }
                Request::Read { handle, offset }
            }
            fxp::WRITE => {
                let handle = r.handle()?;
                let offset = r.u64("offset")?;
                let data = r.string("data")?;
                if let Some(file) = self.handles.get_mut(&handle) {
                    file.writes.seen = file.writes.seen.saturating_add(data.len() as u64);
                    file.writes.add(offset, data);
                }
                Request::Write {
                    handle,
                    len: data.len() as u64,
                }
            }
            fxp::REMOVE => Request::Remove {
                path: r.text("path")?,
            },
            fxp::RENAME => Request::Rename {
                from: r.text("old path")?,
                to: r.text("new path")?,
            },
            fxp::MKDIR => Request::Mkdir {
                path: r.text("path")?,
            },
            fxp::RMDIR => Request::Rmdir {
                path: r.text("path")?,
            },
            fxp::SETSTAT => Request::Setstat {
                path: r.text("path")?,
            },
            fxp::FSETSTAT => Request::Fsetstat {
                handle: r.handle()?,
            },
            fxp::SYMLINK => Request::Symlink {
                target: r.text("target path")?,
                link: r.text("link path")?,
            },
            fxp::EXTENDED => {
                let name = r.text("extension name")?;
                match name.as_str() {
                    "posix-rename@openssh.com" => Request::Rename {
                        from: r.text("old path")?,
                        to: r.text("new path")?,
                    },
                    "hardlink@openssh.com" => Request::Hardlink {
                        target: r.text("target path")?,
                        link: r.text("link path")?,
                    },
                    "lsetstat@openssh.com" => Request::Setstat {
                        path: r.text("path")?,
                    },
                    other if READ_ONLY_EXTENSIONS.contains(&other) => return Ok(()),
                    _ => Request::Extended { name },
                }
            }
            // Reads of metadata (stat, readdir, realpath, readlink...) and unknown types.
            _ => return Ok(()),
        };
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&id) {
            return Err(Malformed(format!(
                "more than {MAX_PENDING} requests without an answer"
            )));
        }
        if let Some(earlier) = self.pending.insert(id, request) {
            // The id was reused before its answer: the earlier request will not get one.
            self.answer(earlier, Response::None, SftpStatus::NoResponse, ops);
        }
        Ok(())
    }

    fn response(&mut self, packet: &[u8], ops: &mut Vec<SftpOp>) -> Result<(), Malformed> {
        let mut r = Reader { data: packet };
        let kind = r.u8("type")?;
        if kind == fxp::VERSION {
            return Ok(());
        }
        let id = r.u32("request id")?;
        let (response, status) = match kind {
            fxp::STATUS => {
                let code = r.u32("status code")?;
                // Some servers omit the message and language tag.
                let message = if r.data.is_empty() {
                    String::new()
                } else {
                    r.text("status message")?
                };
                let status = if code == 0 {
                    SftpStatus::Ok
                } else {
                    SftpStatus::Failed {
                        code,
                        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
                    }
                };
                (Response::None, status)
            }
            fxp::HANDLE => (Response::Handle(r.handle()?), SftpStatus::Ok),
            fxp::DATA => (Response::Data(r.string("data")?), SftpStatus::Ok),
            _ => (Response::None, SftpStatus::Ok),
        };
        if let Some(request) = self.pending.remove(&id) {
            self.answer(request, response, status, ops);
        }
        Ok(())
    }

    fn answer(
        &mut self,
        request: Request,
        response: Response<'_>,
        status: SftpStatus,
        ops: &mut Vec<SftpOp>,
    ) {
        let path_of = |handles: &BTreeMap<Vec<u8>, OpenFile>, handle: &[u8]| {
            handles
                .get(handle)
                .map(|f| f.path.clone())
                .unwrap_or_else(|| format!("(handle {})", hex::encode(handle)))
        };
        match request {
            Request::Open { path, flags } => {
                let handle = self.open_handle(&response, &path, false, ops);
                ops.push(SftpOp::Open {
                    path,
                    flags,
                    handle,
                    status,
                });
            }
            Request::Opendir { path } => {
                self.open_handle(&response, &path, true, ops);
                ops.push(SftpOp::Opendir { path, status });
            }
            Request::Close { handle } => {
                if let Some(file) = self.handles.remove(&handle) {
                    self.reorder_bytes = self.reorder_bytes.saturating_sub(file.reads.ahead_bytes);
                    if !file.dir {
                        ops.push(file.closed(status));
                    }
                }
            }
            Request::Read { handle, offset } => {
                if let (Response::Data(data), Some(file)) =
                    (&response, self.handles.get_mut(&handle))
                {
                    file.read = file.read.saturating_add(data.len() as u64);
                    file.reads.reply(offset, data, &mut self.reorder_bytes);
                }
            }
            Request::Write { handle, len } => {
                if status == SftpStatus::Ok
                    && let Some(file) = self.handles.get_mut(&handle)
                {
                    file.written = file.written.saturating_add(len);
                }
            }
            Request::Remove { path } => ops.push(SftpOp::Remove { path, status }),
            Request::Rename { from, to } => ops.push(SftpOp::Rename { from, to, status }),
            Request::Mkdir { path } => ops.push(SftpOp::Mkdir { path, status }),
            Request::Rmdir { path } => ops.push(SftpOp::Rmdir { path, status }),
            Request::Setstat { path } => ops.push(SftpOp::Setstat { path, status }),
            Request::Fsetstat { handle } => ops.push(SftpOp::Setstat {
                path: path_of(&self.handles, &handle),
                status,
            }),
            Request::Symlink { target, link } => ops.push(SftpOp::Symlink {
                target,
                link,
                status,
            }),
            Request::Hardlink { target, link } => ops.push(SftpOp::Hardlink {
                target,
                link,
                status,
            }),
            Request::Extended { name } => ops.push(SftpOp::Extended { name, status }),
        }
    }

    /// Remember the handle an open returned; its hex form.
    fn open_handle(
        &mut self,
        response: &Response<'_>,
        path: &str,
        dir: bool,
        ops: &mut Vec<SftpOp>,
    ) -> Option<String> {
        let Response::Handle(handle) = response else {
            return None;
        };
        if self.handles.len() >= MAX_HANDLES && !self.handles.contains_key(handle) {
            // Not followed: its reads and writes are not counted.
            ops.push(SftpOp::Unparseable {
                reason: format!("more than {MAX_HANDLES} open handles; {path} not followed"),
            });
        } else if let Some(replaced) = self
            .handles
            .insert(handle.clone(), OpenFile::new(path, dir))
        {
            self.reorder_bytes = self
                .reorder_bytes
                .saturating_sub(replaced.reads.ahead_bytes);
            if !replaced.dir {
                // The server reused a handle we thought open.
                ops.push(replaced.unclosed());
            }
        }
        Some(hex::encode(handle))
    }
}

#[cfg(test)]
mod tests;
