//! Property tests: generated sessions (uploads, downloads with replies in any order, path
//! operations with any answer) give exactly the operations a model of them predicts, however
//! the streams are cut into chunks; any bytes at all, or a valid session with bytes flipped,
//! never panic, keep every bound, and give the same operations whole or cut.
use proptest::prelude::*;

use super::*;

/// One thing the engineer's client does.
#[derive(Debug, Clone)]
enum Action {
    /// Open for writing, writes of `chunk` bytes sent [`WINDOW`] at a time before their
    /// answers, close.
    Upload {
        path: String,
        content: Vec<u8>,
        chunk: usize,
    },
    /// Open for reading, reads of `chunk` bytes requested [`WINDOW`] at a time, the replies
    /// of each window in the order of `order` (sorted indices), one read at the end answered
    /// with EOF, close.
    Download {
        path: String,
        content: Vec<u8>,
        chunk: usize,
        order: Vec<u16>,
    },
    /// remove, mkdir or rmdir, answered with `code` (0: ok).
    PathOp {
        kind: u8,
        path: String,
        code: u32,
        message: String,
    },
    Rename {
        from: String,
        to: String,
        code: u32,
        message: String,
    },
}

/// Most requests a generated client keeps waiting for their answers (OpenSSH's sftp keeps 64).
const WINDOW: usize = 64;

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,3}",
        // Any text: paths are recorded as sent.
        any::<String>(),
    ]
}

fn status_code() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => 1u32..=8, 1 => any::<u32>()]
}

fn action() -> impl Strategy<Value = Action> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..20_000);
    let chunk = 1usize..9000;
    prop_oneof![
        (path(), bytes.clone(), chunk.clone()).prop_map(|(path, content, chunk)| {
            Action::Upload {
                path,
                content,
                chunk,
            }
        }),
        (
            path(),
            bytes,
            chunk,
            proptest::collection::vec(any::<u16>(), 0..64)
        )
            .prop_map(|(path, content, chunk, order)| Action::Download {
                path,
                content,
                chunk,
                order,
            }),
        (
            prop::sample::select(vec![fxp::REMOVE, fxp::MKDIR, fxp::RMDIR]),
            path(),
            status_code(),
            "[ -~]{0,40}"
        )
            .prop_map(|(kind, path, code, message)| Action::PathOp {
                kind,
                path,
                code,
                message,
            }),
        (path(), path(), status_code(), "[ -~]{0,40}").prop_map(|(from, to, code, message)| {
            Action::Rename {
                from,
                to,
                code,
                message,
            }
        }),
    ]
}

fn answer(id: u32, code: u32, message: &str) -> (Vec<u8>, SftpStatus) {
    if code == 0 {
        (ok(id), okst())
    } else {
        (status(id, code, message), failed(code, message))
    }
}

/// The packets of a session, and the operations the parser must report for it.
fn session(actions: &[Action]) -> (Vec<(Side, Vec<u8>)>, Vec<SftpOp>) {
    let mut steps = vec![(C, init()), (S, version())];
    let mut want = Vec::new();
    let mut id = 0u32;
    let mut next_id = || {
        id += 1;
        id
    };
    for (n, action) in actions.iter().enumerate() {
        // A distinct handle per file, as a server gives them.
        let h = format!("h{n}").into_bytes();
        match action {
            Action::Upload {
                path,
                content,
                chunk,
            } => {
                let open_id = next_id();
                steps.push((C, open(open_id, path.as_bytes(), RW_CREATE_TRUNC)));
                steps.push((S, handle(open_id, &h)));
                // At most WINDOW writes wait for their answers, as a real client keeps.
                let parts: Vec<&[u8]> = content.chunks(*chunk).collect();
                for (w, window) in parts.chunks(WINDOW).enumerate() {
                    let mut acks = Vec::new();
                    for (j, part) in window.iter().enumerate() {
                        let wid = next_id();
                        let offset = ((w * WINDOW + j) * chunk) as u64;
                        steps.push((C, write(wid, &h, offset, part)));
                        acks.push(wid);
                    }
                    steps.extend(acks.into_iter().map(|wid| (S, ok(wid))));
                }
                let close_id = next_id();
                steps.push((C, close(close_id, &h)));
                steps.push((S, ok(close_id)));
                want.push(opened(path, RW_CREATE_TRUNC, &hex::encode(&h)));
                let w = if content.is_empty() {
                    Dg::No
                } else {
                    Dg::Of(content.clone())
                };
                want.push(closed(path, 0, content.len() as u64, Dg::No, w, okst()));
            }
            Action::Download {
                path,
                content,
                chunk,
                order,
            } => {
                let open_id = next_id();
                steps.push((C, open(open_id, path.as_bytes(), 0x01)));
                steps.push((S, handle(open_id, &h)));
                // At most WINDOW reads wait for their replies, which come in any order.
                let parts: Vec<&[u8]> = content.chunks(*chunk).collect();
                for (w, window) in parts.chunks(WINDOW).enumerate() {
                    let mut asked = Vec::new();
                    for (j, part) in window.iter().enumerate() {
                        let rid = next_id();
                        let offset = ((w * WINDOW + j) * chunk) as u64;
                        steps.push((C, read(rid, &h, offset, *chunk as u32)));
                        asked.push((rid, *part));
                    }
                    let mut replies: Vec<usize> = (0..asked.len()).collect();
                    replies.sort_by_key(|&i| (order.get(i).copied().unwrap_or(0), i));
                    for i in replies {
                        let (rid, part) = asked[i];
                        steps.push((S, data(rid, part)));
                    }
                }
                let eof_id = next_id();
                steps.push((C, read(eof_id, &h, content.len() as u64, *chunk as u32)));
                steps.push((S, status(eof_id, 1, "End of file")));
                let close_id = next_id();
                steps.push((C, close(close_id, &h)));
                steps.push((S, ok(close_id)));
                want.push(opened(path, 0x01, &hex::encode(&h)));
                let r = if content.is_empty() {
                    Dg::No
                } else {
                    Dg::Of(content.clone())
                };
                want.push(closed(path, content.len() as u64, 0, r, Dg::No, okst()));
            }
            Action::PathOp {
                kind,
                path,
                code,
                message,
            } => {
                let rid = next_id();
                let request = if *kind == fxp::MKDIR {
                    mkdir(rid, path.as_bytes())
                } else {
                    path_req(*kind, rid, path.as_bytes())
                };
                steps.push((C, request));
                let (reply, status) = answer(rid, *code, message);
                steps.push((S, reply));
                let path = path.clone();
                want.push(match *kind {
                    fxp::REMOVE => SftpOp::Remove { path, status },
                    fxp::MKDIR => SftpOp::Mkdir { path, status },
                    _ => SftpOp::Rmdir { path, status },
                });
            }
            Action::Rename {
                from,
                to,
                code,
                message,
            } => {
                let rid = next_id();
                steps.push((
                    C,
                    two_paths(fxp::RENAME, rid, from.as_bytes(), to.as_bytes()),
                ));
                let (reply, status) = answer(rid, *code, message);
                steps.push((S, reply));
                want.push(SftpOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    status,
                });
            }
        }
    }
    (steps, want)
}

/// Feed `steps` (each side's bytes in the order they passed), each step cut at the positions
/// `cuts` picks from, then end the channel; the parser's bounds are checked after every chunk.
fn feed(steps: &[(Side, Vec<u8>)], cuts: &[usize]) -> Vec<SftpOp> {
    let mut parser = SftpParser::new();
    let mut ops = Vec::new();
    let mut cuts = cuts.iter().cycle();
    for (side, bytes) in steps {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = match cuts.next() {
                Some(&c) if c > 0 => c.min(rest.len()),
                Some(_) | None => rest.len(),
            };
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            ops.extend(match side {
                C => parser.client_data(chunk),
                S => parser.server_data(chunk),
            });
            check_bounds(&parser);
        }
    }
    ops.extend(parser.finish());
    check_bounds(&parser);
    ops
}

/// What the parser holds stays within its documented bounds, and the channel's reorder budget
/// is exactly the bytes its handles keep.
fn check_bounds(parser: &SftpParser) {
    assert!(parser.client.buf.len() <= 4 + MAX_PACKET_LEN);
    assert!(parser.server.buf.len() <= 4 + MAX_PACKET_LEN);
    assert!(parser.state.pending.len() <= MAX_PENDING);
    assert!(parser.state.handles.len() <= MAX_HANDLES);
    assert!(parser.state.reorder_bytes <= MAX_REORDER_BYTES);
    let kept: usize = parser
        .state
        .handles
        .values()
        .map(|f| f.reads.ahead_bytes)
        .sum();
    assert_eq!(
        parser.state.reorder_bytes, kept,
        "reorder budget accounting"
    );
    for f in parser.state.handles.values() {
        let held: usize = f.reads.ahead.values().map(Vec::len).sum();
        assert_eq!(f.reads.ahead_bytes, held);
    }
}

/// Cut positions: mostly small, some large, some "the rest".
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![4 => 1usize..16, 2 => 16usize..5000, 1 => Just(0)],
        1..16,
    )
}

/// Raw chunks for either side: few distinct byte values (so lengths and types are often
/// plausible) or any bytes.
fn raw_chunk() -> impl Strategy<Value = (Side, Vec<u8>)> {
    let bytes = prop_oneof![
        proptest::collection::vec(0u8..4, 0..200),
        proptest::collection::vec(any::<u8>(), 0..200),
    ];
    (prop::sample::select(vec![C, S]), bytes)
}

/// A well-formed packet of either side with ids, handles and offsets from small sets, so that
/// requests and replies meet in every order: reads answered twice, out of order, overlapping
/// or never, handles reused, closed twice or unknown.
fn packet() -> impl Strategy<Value = (Side, Vec<u8>)> {
    let id = 0u32..6;
    let h = prop::sample::select(vec![H1, H2, b"h3".as_slice()]);
    let offset = prop_oneof![
        Just(0u64),
        Just(10),
        Just(20),
        Just(32768),
        0u64..64,
        any::<u64>()
    ];
    let bytes = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (id.clone(), path(), any::<u32>()).prop_map(|(i, p, f)| (C, open(i, p.as_bytes(), f))),
        (id.clone(), path()).prop_map(|(i, p)| (C, path_req(fxp::OPENDIR, i, p.as_bytes()))),
        (
            id.clone(),
            h.clone(),
            offset.clone(),
            prop_oneof![Just(10u32), 0u32..100, any::<u32>()]
        )
            .prop_map(|(i, h, o, l)| (C, read(i, h, o, l))),
        (id.clone(), h.clone(), offset, bytes.clone())
            .prop_map(|(i, h, o, d)| (C, write(i, h, o, &d))),
        (id.clone(), h.clone()).prop_map(|(i, h)| (C, close(i, h))),
        (id.clone(), h.clone()).prop_map(|(i, h)| (S, handle(i, h))),
        (id.clone(), bytes).prop_map(|(i, d)| (S, data(i, &d))),
        (id, prop_oneof![Just(0u32), Just(1), any::<u32>()])
            .prop_map(|(i, code)| (S, status(i, code, "m"))),
    ]
}

proptest! {
    #![proptest_config(sallyport_audit::proptest_config(64))]

    /// Well-formed packets in any order: bounds and the reorder accounting kept, the same
    /// operations in any chunks, and every handle's byte counts within what passed.
    #[test]
    fn packets_in_any_order(
        packets in proptest::collection::vec(packet(), 0..60),
        cuts in cuts(),
    ) {
        let whole = feed(&packets, &[0]);
        prop_assert_eq!(feed(&packets, &cuts), whole.clone());
        let data_bytes: u64 = packets
            .iter()
            .filter(|(side, p)| *side == S && p.get(4) == Some(&fxp::DATA))
            .map(|(_, p)| p.len() as u64 - 13)
            .sum();
        let write_bytes: u64 = packets
            .iter()
            .filter(|(side, p)| *side == C && p.get(4) == Some(&fxp::WRITE))
            .map(|(_, p)| {
                // length, type, id, handle (a string), offset, data (a string)
                let handle = u32::from_be_bytes([p[9], p[10], p[11], p[12]]) as u64;
                p.len() as u64 - (4 + 1 + 4 + 4 + handle + 8 + 4)
            })
            .sum();
        for op in &whole {
            if let SftpOp::Close { bytes_read, bytes_written, .. }
            | SftpOp::Unclosed { bytes_read, bytes_written, .. } = op
            {
                prop_assert!(*bytes_read <= data_bytes && *bytes_written <= write_bytes, "{op:?}");
            }
        }
    }

    /// A generated session gives what the model says, whole and in any chunks.
    #[test]
    fn sessions_give_the_modelled_operations_in_any_chunks(
        actions in proptest::collection::vec(action(), 0..8),
        cuts in cuts(),
    ) {
        let (steps, want) = session(&actions);
        prop_assert_eq!(&feed(&steps, &[0]), &want);
        prop_assert_eq!(&feed(&steps, &cuts), &want);
    }

    /// Any bytes: no panic, bounds kept, and cutting them differently changes nothing.
    #[test]
    fn any_bytes_in_any_chunks(
        chunks in proptest::collection::vec(raw_chunk(), 0..40),
        cuts in cuts(),
    ) {
        let whole = feed(&chunks, &[0]);
        prop_assert_eq!(feed(&chunks, &cuts), whole);
    }

    /// A valid session with bytes overwritten, inserted or removed: no panic, bounds kept, the
    /// same operations in any chunks, and at most one `Unparseable` for a broken stream.
    #[test]
    fn mutated_sessions_in_any_chunks(
        actions in proptest::collection::vec(action(), 1..5),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
        cuts in cuts(),
    ) {
        let (mut steps, _) = session(&actions);
        for (step, at, how, byte) in edits {
            let which = step.index(steps.len());
            let (_, bytes) = &mut steps[which];
            if bytes.is_empty() {
                continue;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        let whole = feed(&steps, &[0]);
        let broken = whole
            .iter()
            .filter(|op| matches!(op, SftpOp::Unparseable { reason } if reason.starts_with("client: ") || reason.starts_with("server: ")))
            .count();
        prop_assert!(broken <= 1, "{whole:?}");
        prop_assert_eq!(feed(&steps, &cuts), whole);
    }
}
