//! An interpreter's stdin cut into lines, across chunks, each kept up to a bound; and the
//! unterminated rest a chunk leaves, reported before the chunk goes on.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Longest line reported whole, and the size of the pieces of a longer one, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A line read by an interpreter, or a piece of a long one.
///
/// A line of at most [`MAX_LINE_BYTES`] bytes comes whole (`part` 0). A longer one comes in
/// pieces of at most [`MAX_LINE_BYTES`] bytes (`part` 1, 2...), each as soon as it is complete,
/// so that every byte the interpreter will run is in a command before it reaches the node, and
/// memory stays bounded however long the line; the last piece (`more` false) has the whole
/// line's length and SHA-256.
///
/// A chunk that ends inside a line has that line's bytes so far reported as a partial line
/// ([`StdinLines::partial`]): an interpreter may run them before the line completes (`head -c N
/// | bash` ends its input there). The line, once complete, still comes whole (or in pieces),
/// saying that it continues partial ones: each byte is in a partial line before it reaches the
/// node, and the line is one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StdinLine {
    /// The text, without the line's `\n` (nor a `\r` before it), lossy UTF-8 (a piece ends on
    /// a character boundary where the bytes allow).
    pub text: String,
    /// 0 for a whole line; else which piece of a long line this is, from 1.
    pub part: u32,
    /// More pieces of this line follow.
    pub more: bool,
    /// The line's length in bytes up to the end of this text (without `\n` and the `\r` before
    /// it): for a whole line or a last piece, the line's length.
    pub bytes: u64,
    /// For the last piece of a line in pieces, the SHA-256 (hex) of all its bytes.
    pub sha256: Option<String>,
    /// Bytes of a line not complete yet, reported ahead (not a line of its own): the ones a
    /// chunk brought since the line's last report.
    pub partial: bool,
    /// Some of this text was reported ahead in partial lines.
    pub after_partial: bool,
}

/// A line (or a piece of one) completed by a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEnd {
    /// The offset in the chunk just after the line's `\n` (for a piece: just after the bytes
    /// that completed it, or later).
    pub end: usize,
    pub line: StdinLine,
}

/// Cuts an interpreter's stdin into lines, across chunks; keeps at most [`MAX_LINE_BYTES`]
/// bytes (and one character) of the current line.
#[derive(Debug, Default)]
pub struct StdinLines {
    pub(super) buf: Vec<u8>,
    /// Bytes of the line so far.
    len: u64,
    /// Bytes of the line already reported in pieces.
    reported: u64,
    /// Pieces of the line reported so far.
    part: u32,
    /// The hash of the line's pieces so far.
    sha: Option<Sha256>,
    /// Pieces completed by the segment being fed.
    pieces: Vec<StdinLine>,
    /// A `\r` ended the last chunk: dropped if a `\n` follows.
    cr: bool,
    /// Something (even an empty segment before a `\r`) was fed since the last line.
    started: bool,
    /// Bytes at the start of `buf` already reported in partial lines.
    ahead: usize,
}

impl StdinLines {
    pub fn new() -> Self {
        StdinLines::default()
    }

    /// The lines (and pieces of long lines) `chunk` completes, each with where it ends in
    /// `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<LineEnd> {
        let mut ends = Vec::new();
        let mut start = 0;
        // A NUL ends a line too: `xargs -0` (and any `-print0` reader) runs at each.
        for (i, &b) in chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(**b, b'\n' | 0))
        {
            self.segment(&chunk[start..i]);
            ends.extend(self.pieces.drain(..).map(|line| LineEnd { end: i, line }));
            // A `\r` right before the `\n` is not part of the line (before a NUL it is).
            if b == 0 && std::mem::take(&mut self.cr) {
                self.push(b"\r");
            }
            self.cr = false;
            ends.push(LineEnd {
                end: i + 1,
                line: self.take(),
            });
            start = i + 1;
        }
        if start < chunk.len() {
            self.segment(&chunk[start..]);
            let end = chunk.len();
            ends.extend(self.pieces.drain(..).map(|line| LineEnd { end, line }));
        }
        ends
    }

    /// The bytes of the current line the last chunk brought and no report holds yet, as a
    /// partial line: to be written before that chunk goes on. `None` when the chunk ended at
    /// the end of a line (or brought nothing of the next).
    pub fn partial(&mut self) -> Option<StdinLine> {
        if self.buf.len() <= self.ahead {
            return None;
        }
        let text = String::from_utf8_lossy(&self.buf[self.ahead..]).into_owned();
        self.ahead = self.buf.len();
        Some(StdinLine {
            text,
            part: 0,
            more: true,
            bytes: self.len,
            sha256: None,
            partial: true,
            after_partial: false,
        })
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

    fn push(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            // A full buffer and more of the line: the line is long, its piece is complete (and
            // the buffer then holds at most a character's first bytes).
            if self.buf.len() == MAX_LINE_BYTES {
                self.piece();
            }
            let take = (MAX_LINE_BYTES - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Report the buffer as a piece, up to its last whole character (the rest starts the next).
    fn piece(&mut self) {
        let cut = match std::str::from_utf8(&self.buf) {
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
            Ok(_) | Err(_) => self.buf.len(),
        };
        let rest = self.buf.split_off(cut);
        let piece = std::mem::replace(&mut self.buf, rest);
        self.sha.get_or_insert_with(Sha256::new).update(&piece);
        self.part += 1;
        self.reported += piece.len() as u64;
        // Bytes reported ahead: this piece continues partial lines; those the rest still holds,
        // the next report does.
        let after_partial = self.ahead > 0;
        self.ahead = self.ahead.saturating_sub(cut);
        self.pieces.push(StdinLine {
            text: String::from_utf8_lossy(&piece).into_owned(),
            part: self.part,
            more: true,
            bytes: self.reported,
            sha256: None,
            partial: false,
            after_partial,
        });
    }

    fn take(&mut self) -> StdinLine {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let after_partial = self.ahead > 0;
        let line = match self.sha.take() {
            None => StdinLine {
                text,
                part: 0,
                more: false,
                bytes: self.len,
                sha256: None,
                partial: false,
                after_partial,
            },
            Some(mut sha) => {
                sha.update(&self.buf);
                StdinLine {
                    text,
                    part: self.part + 1,
                    more: false,
                    bytes: self.len,
                    sha256: Some(hex::encode(sha.finalize())),
                    partial: false,
                    after_partial,
                }
            }
        };
        self.buf.clear();
        self.len = 0;
        self.reported = 0;
        self.part = 0;
        self.started = false;
        self.ahead = 0;
        line
    }
}
