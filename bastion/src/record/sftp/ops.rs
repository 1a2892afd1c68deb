//! What the parser reports: file operations with the server's answer, and their parts.

use serde::Serialize;

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
    ///
    /// [`MAX_REORDER_BYTES`]: super::MAX_REORDER_BYTES
    ReorderOverflow,
    /// The server refused some written bytes, or never answered their write.
    Unacknowledged,
}

/// A file operation, with the server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SftpOp {
    /// What was written, in this channel, to a file a shell, cron, systemd or sshd runs or reads
    /// as instructions later (`~/.bashrc`, `~/.ssh/authorized_keys`, anything under `/etc/`, a
    /// shell script...; see [`super::runs_later`]): its text up to [`super::KEPT_BYTES`]
    /// (`cut` when there was more), reported after the write's close or the rename that put it
    /// there. What it runs later runs with no command event; this is where it is seen.
    KeptContent {
        path: String,
        content: String,
        cut: bool,
    },
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
