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
//!
//! Here, what is reported; in `command`, the exec command; in `parser`, [`ScpParser`]; in
//! `wire`, the record and message lines.

mod command;
mod parser;
mod wire;

use serde::Serialize;

pub(crate) use command::parse_words;
pub use command::{ScpDirection, ScpTransfer, parse_exec};
pub use parser::ScpParser;

/// Longest record or message line, in bytes.
pub const MAX_LINE: usize = 4096;
/// Deepest directory nesting followed.
pub const MAX_DEPTH: usize = 256;
/// Most record lines awaiting the sink's answer.
pub const MAX_PENDING: usize = 16;

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
    /// What was uploaded to a file that runs later (see [`crate::record::sftp::runs_later`]):
    /// its text up to [`crate::record::sftp::KEPT_BYTES`] (`cut` when there was more).
    KeptContent {
        path: String,
        content: String,
        cut: bool,
    },
}

#[cfg(test)]
mod tests;
