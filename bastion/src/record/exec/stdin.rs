//! An interpreter's stdin cut into lines, across chunks, each kept up to a bound.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Longest line text kept, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A line read by an interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StdinLine {
    /// The line without its `\n` (nor a `\r` before it), lossy UTF-8, at most
    /// [`MAX_LINE_BYTES`] bytes of it.
    pub text: String,
    /// The line was longer than [`MAX_LINE_BYTES`]: `text` is its beginning.
    pub truncated: bool,
    /// The line's length in bytes (without `\n` and the `\r` before it).
    pub bytes: u64,
    /// For a truncated line, the SHA-256 (hex) of all its bytes.
    pub sha256: Option<String>,
}

/// A line completed by a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEnd {
    /// The offset in the chunk just after the line's `\n`.
    pub end: usize,
    pub line: StdinLine,
}

/// Cuts an interpreter's stdin into lines, across chunks; keeps at most one line's first
/// [`MAX_LINE_BYTES`] bytes.
#[derive(Debug, Default)]
pub struct StdinLines {
    pub(super) buf: Vec<u8>,
    /// Bytes of the line so far (kept or not).
    len: u64,
    /// The hash of the line so far, once it is longer than kept.
    sha: Option<Sha256>,
    /// A `\r` ended the last chunk: dropped if a `\n` follows.
    cr: bool,
    /// Something (even an empty segment before a `\r`) was fed since the last line.
    started: bool,
}

impl StdinLines {
    pub fn new() -> Self {
        StdinLines::default()
    }

    /// The lines `chunk` completes, each with where it ends in `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<LineEnd> {
        let mut ends = Vec::new();
        let mut start = 0;
        for (i, _) in chunk.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.segment(&chunk[start..i]);
            // A `\r` right before the `\n` is not part of the line.
            self.cr = false;
            ends.push(LineEnd {
                end: i + 1,
                line: self.take(),
            });
            start = i + 1;
        }
        if start < chunk.len() {
            self.segment(&chunk[start..]);
        }
        ends
    }

    /// The channel's input ended: the last line, if it had no `\n`.
    pub fn finish(&mut self) -> Option<StdinLine> {
        if !self.started {
            return None;
        }
        self.cr = false;
        Some(self.take())
    }

    /// Bytes of the current line, without `\n`.
    fn segment(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.started = true;
        if std::mem::take(&mut self.cr) {
            self.push(b"\r");
        }
        if let Some(stripped) = bytes.strip_suffix(b"\r") {
            self.cr = true;
            bytes = stripped;
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let room = MAX_LINE_BYTES - self.buf.len();
        if bytes.len() <= room && self.sha.is_none() {
            self.buf.extend_from_slice(bytes);
            return;
        }
        let sha = self.sha.get_or_insert_with(|| {
            let mut sha = Sha256::new();
            sha.update(&self.buf);
            sha
        });
        sha.update(bytes);
        let keep = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..keep]);
    }

    fn take(&mut self) -> StdinLine {
        let sha = self.sha.take();
        let line = StdinLine {
            text: String::from_utf8_lossy(&self.buf).into_owned(),
            truncated: sha.is_some(),
            bytes: self.len,
            sha256: sha.map(|s| hex::encode(s.finalize())),
        };
        self.buf.clear();
        self.len = 0;
        self.started = false;
        line
    }
}
