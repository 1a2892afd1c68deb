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
//!
//! Here, [`SftpParser`]; in `wire`, packets and their fields; in `ops`, what is reported; in
//! `state`, requests paired with responses and open handles; in `digest`, the SHA-256 of a
//! handle's bytes.

mod digest;
mod ops;
mod state;
mod wire;

pub use ops::{DigestUnavailable, OpenFlags, SftpOp, SftpStatus, status_name};
use state::{Response, State};
use wire::{Framer, Malformed};

/// Largest packet accepted: OpenSSH's 256 KiB message limit plus room for the fields around a
/// 256 KiB data payload.
pub const MAX_PACKET_LEN: usize = 256 * 1024 + 1024;
/// Most requests waiting for their response.
pub const MAX_PENDING: usize = 4096;
/// Most handles open at once.
pub const MAX_HANDLES: usize = 4096;

/// Bytes of a file written to a path that runs later kept in its `kept_content` op.
pub const KEPT_BYTES: usize = 16 * 1024;

/// A path a shell, cron, systemd, sshd or the dynamic loader reads as instructions later, so
/// that what is written there runs with no command event naming it: shell start-up files
/// (wherever they are: a relative path counts by its name), `~/.ssh/rc`, `environment`,
/// `authorized_keys` (its `command=` options), anything under `/etc/`, cron spools, systemd
/// and autostart units, and shell scripts.
pub fn runs_later(path: &str) -> bool {
    const NAMES: [&str; 27] = [
        ".bashrc",
        ".bash_profile",
        ".bash_login",
        ".bash_logout",
        ".profile",
        ".zshrc",
        ".zshenv",
        ".zprofile",
        ".zlogin",
        ".zlogout",
        ".kshrc",
        ".mkshrc",
        ".cshrc",
        ".tcshrc",
        ".login",
        ".logout",
        ".inputrc",
        ".xprofile",
        ".xinitrc",
        ".xsession",
        ".pam_environment",
        "rc",
        "environment",
        "authorized_keys",
        "authorized_keys2",
        ".vimrc",
        ".exrc",
    ];
    const PLACES: [&str; 7] = [
        "/etc/",
        "/var/spool/cron",
        ".config/systemd/",
        ".config/autostart/",
        "/lib/systemd/",
        ".config/fish/",
        ".local/share/systemd/",
    ];
    const SUFFIXES: [&str; 8] = [
        ".sh", ".bash", ".zsh", ".service", ".timer", ".path", ".socket", ".desktop",
    ];
    let name = path.rsplit('/').next().unwrap_or(path);
    let in_ssh = path.contains(".ssh/");
    // `rc` and `environment` count only in `.ssh/`.
    let by_name = NAMES.contains(&name) && (in_ssh || !matches!(name, "rc" | "environment"));
    by_name
        || path.starts_with("etc/")
        || PLACES.iter().any(|p| path.contains(p))
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}
/// Most read data kept, over all handles of a channel, while waiting for an earlier reply to
/// come (out-of-order `SSH_FXP_DATA` replies). OpenSSH's client has at most 64 × 32 KiB in
/// flight by default.
pub const MAX_REORDER_BYTES: usize = 4 * 1024 * 1024;

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

#[cfg(test)]
mod tests;
