//! The channel's state: requests paired with their responses, open handles and what passed
//! through them, turned into [`SftpOp`]s.

use std::collections::BTreeMap;

use super::digest::{ReadRun, Run};
use super::wire::{Malformed, Reader, fxp};
use super::{
    DigestUnavailable, KEPT_BYTES, MAX_HANDLES, MAX_PENDING, OpenFlags, SftpOp, SftpStatus,
    runs_later,
};

/// Files written and closed whose kept bytes are remembered for a rename.
const RECENT_FILES: usize = 4;
/// Bytes kept over all open handles of a channel: past it, a file's content is `cut`.
const MAX_KEPT_OPEN: usize = 4 * KEPT_BYTES;

fn kept_content(path: &str, bytes: &[u8], cut: bool) -> SftpOp {
    SftpOp::KeptContent {
        path: path.to_string(),
        content: String::from_utf8_lossy(bytes).into_owned(),
        cut,
    }
}

/// Longest status message kept.
const MAX_MESSAGE_CHARS: usize = 512;

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

/// A request waiting for its response.
#[derive(Debug)]
pub(super) enum Request {
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
pub(super) enum Response<'a> {
    Handle(Vec<u8>),
    Data(&'a [u8]),
    None,
}

#[derive(Debug, Default)]
pub(super) struct OpenFile {
    path: String,
    pub(super) dir: bool,
    read: u64,
    written: u64,
    pub(super) reads: ReadRun,
    writes: Run,
    /// The bytes written, while they come in order and fit in [`KEPT_BYTES`].
    kept: Vec<u8>,
    /// More was written than kept, or out of order.
    kept_cut: bool,
}

impl OpenFile {
    fn new(path: &str, dir: bool) -> Self {
        OpenFile {
            path: path.to_string(),
            dir,
            ..OpenFile::default()
        }
    }

    /// Keep written bytes while they come in order and fit (in [`KEPT_BYTES`] and in `room`,
    /// what the channel may still keep); how many were kept.
    fn keep(&mut self, offset: u64, data: &[u8], room: usize) -> usize {
        if self.kept_cut {
            return 0;
        }
        if offset != self.kept.len() as u64 {
            self.kept_cut = true;
            return 0;
        }
        let room = room.min(KEPT_BYTES.saturating_sub(self.kept.len()));
        let n = data.len().min(room);
        self.kept_cut = n < data.len();
        self.kept.extend_from_slice(&data[..n]);
        n
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

    pub(super) fn unclosed(self) -> SftpOp {
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

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) pending: BTreeMap<u32, Request>,
    pub(super) handles: BTreeMap<Vec<u8>, OpenFile>,
    /// What the last files written and closed held (path, kept bytes, cut), newest last: a file
    /// written elsewhere and then renamed to a path that runs later.
    recent: std::collections::VecDeque<(String, Vec<u8>, bool)>,
    /// Bytes kept over the open handles (at most [`MAX_KEPT_OPEN`]).
    kept_open: usize,
    /// Bytes of read replies kept for reordering, over all handles.
    pub(super) reorder_bytes: usize,
}

impl State {
    pub(super) fn request(
        &mut self,
        packet: &[u8],
        ops: &mut Vec<SftpOp>,
    ) -> Result<(), Malformed> {
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
                    let room = MAX_KEPT_OPEN.saturating_sub(self.kept_open);
                    self.kept_open += file.keep(offset, data, room);
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

    pub(super) fn response(
        &mut self,
        packet: &[u8],
        ops: &mut Vec<SftpOp>,
    ) -> Result<(), Malformed> {
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

    pub(super) fn answer(
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
                if let Some(mut file) = self.handles.remove(&handle) {
                    self.reorder_bytes = self.reorder_bytes.saturating_sub(file.reads.ahead_bytes);
                    if !file.dir {
                        self.kept_open = self.kept_open.saturating_sub(file.kept.len());
                        let kept = (file.written > 0).then(|| {
                            (
                                file.path.clone(),
                                std::mem::take(&mut file.kept),
                                file.kept_cut,
                            )
                        });
                        ops.push(file.closed(status));
                        if let Some((path, bytes, cut)) = kept {
                            if runs_later(&path) {
                                ops.push(kept_content(&path, &bytes, cut));
                            }
                            self.recent.push_back((path, bytes, cut));
                            if self.recent.len() > RECENT_FILES {
                                self.recent.pop_front();
                            }
                        }
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
            Request::Rename { from, to } => {
                let kept = (status == SftpStatus::Ok && runs_later(&to))
                    .then(|| self.recent.iter().rev().find(|(p, _, _)| *p == from))
                    .flatten()
                    .map(|(_, bytes, cut)| kept_content(&to, bytes, *cut));
                ops.push(SftpOp::Rename { from, to, status });
                ops.extend(kept);
            }
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
