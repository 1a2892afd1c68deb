//! The pure pieces of recording: what the gateway calls with the bytes of a channel, and that
//! return lines to append or records to audit. No I/O here: the gateway owns the files, the clock
//! (times are passed in) and the audit spool.
//!
//! - [`asciicast`]: an asciicast v2 writer (UTF-8 safe across chunk splits) and a small reader
//!   with a screen replay, for tests and playback.
//! - [`detector`]: the interactive command-line detector over a vt100 screen model; it also tells
//!   which typed input answered a secret prompt without echo (passwords) and must not be recorded.
//! - [`pty`]: the two above put together — what a pty channel's recording needs, step by step.
//! - [`sftp`]: an SFTP v3 stream parser yielding file operations with their status, sizes and
//!   SHA-256 digests.
//! - [`scp`]: recognizes the remote side of `scp` in an exec command, and parses the classic scp
//!   stream into files with their sizes and SHA-256 digests.
//! - [`exec`]: classifies an exec command (SFTP server, scp, an interpreter reading commands from
//!   stdin, or a plain command) and cuts an interpreter's stdin into lines.

pub mod asciicast;
pub mod detector;
pub mod exec;
pub mod pty;
pub mod scp;
pub mod sftp;

/// Widest terminal the screen model follows; a wider pty is modelled at this width (the
/// recording keeps the real size). Each cell costs 64 bytes (normal and alternate screens).
pub const MAX_COLS: u16 = 500;
/// Tallest terminal the screen model follows.
pub const MAX_ROWS: u16 = 200;

/// A pty dimension as the client sent it (SSH uses `u32`), as a terminal size: at least 1.
pub fn clamp_dimension(v: u32) -> u16 {
    u16::try_from(v.max(1)).unwrap_or(u16::MAX)
}

/// Smallest terminal the screen model follows, both ways. vt100 0.16 panics on a terminal one
/// row high when a line wraps (its autowrap scrolls the only row, then steps back one row above
/// it), and on one column wide when a wide character is printed (its width is subtracted from the
/// column count); two rows and two columns avoid both. A smaller pty is modelled at this size.
pub const MIN_MODEL: u16 = 2;

/// The size of the screen model for a pty of `cols`×`rows`: (rows, cols), bounded both ways.
pub(crate) fn model_size(cols: u32, rows: u32) -> (u16, u16) {
    (
        clamp_dimension(rows).clamp(MIN_MODEL, MAX_ROWS),
        clamp_dimension(cols).clamp(MIN_MODEL, MAX_COLS),
    )
}
