//! Exec commands, and scp streams fed whole, byte by byte and in random splits.
use super::*;
use ScpDirection::{Download, Upload};
use sha2::{Digest, Sha256};

fn t(direction: ScpDirection, path: &str, r: bool, p: bool, d: bool) -> Option<ScpTransfer> {
    Some(ScpTransfer {
        direction,
        path: path.to_string(),
        recursive: r,
        preserve: p,
        target_is_dir: d,
    })
}

#[test]
fn exec_commands() {
    let cases = [
        ("scp -t /tmp/x", t(Upload, "/tmp/x", false, false, false)),
        (
            "scp -f /etc/hosts",
            t(Download, "/etc/hosts", false, false, false),
        ),
        (
            "scp -r -t /srv/www",
            t(Upload, "/srv/www", true, false, false),
        ),
        (
            "scp -v -r -p -d -t -- dir",
            t(Upload, "dir", true, true, true),
        ),
        ("scp -rpf logs", t(Download, "logs", true, true, false)),
        (
            "scp -t -- -odd-name",
            t(Upload, "-odd-name", false, false, false),
        ),
        ("/usr/bin/scp -f a", t(Download, "a", false, false, false)),
        ("scp -f a b", t(Download, "a b", false, false, false)),
        (
            "scp -t 'my file'",
            t(Upload, "my file", false, false, false),
        ),
        (
            "scp -t \"a \\\"q\\\"\"",
            t(Upload, "a \"q\"", false, false, false),
        ),
        ("scp -t a\\ b", t(Upload, "a b", false, false, false)),
        ("scp  -t   x  ", t(Upload, "x", false, false, false)),
        ("scp -t", None),
        ("scp /tmp/x", None),
        ("scp -t -f x", None),
        ("scp -x -t x", None),
        ("scp -t 'unterminated", None),
        ("scp -t x; rm -rf /", None),
        ("scp -t x && id", None),
        ("scp -t $(id)", None),
        ("sftp -t x", None),
        ("myscp -t x", None),
        ("ls -t", None),
        ("", None),
    ];
    for (command, want) in cases {
        assert_eq!(parse_exec(command), want, "{command}");
    }
}

/// One step of an scp stream: bytes from the source or from the sink.
#[derive(Clone)]
enum St {
    Src(Vec<u8>),
    Snk(Vec<u8>),
}
use St::{Snk, Src};

fn src(b: &[u8]) -> St {
    Src(b.to_vec())
}
fn ack() -> St {
    Snk(vec![0])
}
fn refuse(msg: &str) -> St {
    Snk(format!("\x01{msg}\n").into_bytes())
}
/// A file's data and the source's `\0`.
fn body(data: &[u8]) -> St {
    let mut v = data.to_vec();
    v.push(0);
    Src(v)
}

fn sha(data: &[u8]) -> Option<String> {
    Some(hex::encode(Sha256::digest(data)))
}

/// The two ends as the parser names them, for one direction: (source, sink).
fn ends(direction: ScpDirection) -> (ScpSide, ScpSide) {
    match direction {
        Upload => (ScpSide::Client, ScpSide::Server),
        Download => (ScpSide::Server, ScpSide::Client),
    }
}

fn name(side: ScpSide) -> &'static str {
    match side {
        ScpSide::Client => "client",
        ScpSide::Server => "server",
    }
}

fn file(
    path: &str,
    mode: &str,
    size: u64,
    data: &[u8],
    mtime: Option<u64>,
    status: ScpStatus,
) -> ScpOp {
    ScpOp::File {
        path: path.to_string(),
        mode: mode.to_string(),
        size,
        bytes: data.len() as u64,
        sha256: if data.len() as u64 == size {
            sha(data)
        } else {
            None
        },
        mtime,
        status,
    }
}

fn dir(path: &str, mode: &str, mtime: Option<u64>, status: ScpStatus) -> ScpOp {
    ScpOp::Dir {
        path: path.to_string(),
        mode: mode.to_string(),
        mtime,
        status,
    }
}

fn failed(by: ScpSide, message: &str) -> ScpStatus {
    ScpStatus::Failed {
        by,
        message: message.to_string(),
        fatal: false,
    }
}

fn unparseable(side: ScpSide, reason: &str) -> ScpOp {
    ScpOp::Unparseable {
        reason: format!("{}: {reason}", name(side)),
    }
}

/// Every byte value, newlines, NULs and record letters included.
fn binary() -> Vec<u8> {
    (0..=255u8)
        .chain(b"\nC0644 1 x\n\0\x01E\n".iter().copied())
        .collect()
}

/// Name, steps, and the operations expected given (source, sink).
type ScpCase = (
    &'static str,
    Vec<St>,
    Box<dyn Fn(ScpSide, ScpSide) -> Vec<ScpOp>>,
);

fn stream_cases() -> Vec<ScpCase> {
    let bin = binary();
    let bin2 = bin.clone();
    let mut long = b"C0644 1 ".to_vec();
    long.resize(MAX_LINE + 10, b'a');
    vec![
        (
            "one file",
            vec![
                ack(),
                src(b"C0644 11 hello.txt\n"),
                ack(),
                body(b"hello world"),
                ack(),
            ],
            Box::new(|_, _| {
                // echo -n 'hello world' | sha256sum
                let op = file("hello.txt", "0644", 11, b"hello world", None, ScpStatus::Ok);
                let ScpOp::File { sha256, .. } = &op else {
                    unreachable!()
                };
                assert_eq!(
                    sha256.as_deref(),
                    Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
                );
                vec![op]
            }),
        ),
        (
            "a binary file and an empty one",
            vec![
                ack(),
                src(format!("C0755 {} tool\n", bin.len()).as_bytes()),
                ack(),
                body(&bin),
                ack(),
                src(b"C0600 0 empty\n"),
                ack(),
                body(b""),
                ack(),
            ],
            Box::new(move |_, _| {
                vec![
                    file(
                        "tool",
                        "0755",
                        bin2.len() as u64,
                        &bin2,
                        None,
                        ScpStatus::Ok,
                    ),
                    file("empty", "0600", 0, b"", None, ScpStatus::Ok),
                ]
            }),
        ),
        (
            "-r -p tree",
            vec![
                ack(),
                src(b"T1700000000 0 1700000001 0\n"),
                ack(),
                src(b"D0755 0 dir\n"),
                ack(),
                src(b"T1700000002 0 1700000003 0\n"),
                ack(),
                src(b"C0644 3 a\n"),
                ack(),
                body(b"abc"),
                ack(),
                src(b"D0700 0 sub\n"),
                ack(),
                src(b"C0644 0 b\n"),
                ack(),
                body(b""),
                ack(),
                src(b"E\n"),
                ack(),
                src(b"E\n"),
                ack(),
                src(b"C0640 2 top\n"),
                ack(),
                body(b"xy"),
                ack(),
            ],
            Box::new(|_, _| {
                vec![
                    dir("dir", "0755", Some(1_700_000_000), ScpStatus::Ok),
                    file(
                        "dir/a",
                        "0644",
                        3,
                        b"abc",
                        Some(1_700_000_002),
                        ScpStatus::Ok,
                    ),
                    dir("dir/sub", "0700", None, ScpStatus::Ok),
                    file("dir/sub/b", "0644", 0, b"", None, ScpStatus::Ok),
                    file("top", "0640", 2, b"xy", None, ScpStatus::Ok),
                ]
            }),
        ),
        (
            "the sink refuses a file, then takes the next one",
            vec![
                ack(),
                src(b"C0644 5 secret\n"),
                refuse("scp: secret: Permission denied"),
                src(b"C0644 2 ok\n"),
                ack(),
                body(b"ok"),
                ack(),
            ],
            Box::new(|_, sink| {
                vec![
                    file(
                        "secret",
                        "0644",
                        5,
                        b"",
                        None,
                        failed(sink, "scp: secret: Permission denied"),
                    ),
                    file("ok", "0644", 2, b"ok", None, ScpStatus::Ok),
                ]
            }),
        ),
        (
            "the sink fails to write (error reply after the data)",
            vec![
                ack(),
                src(b"C0644 4 f\n"),
                ack(),
                body(b"1234"),
                refuse("scp: f: No space left on device"),
            ],
            Box::new(|_, sink| {
                vec![file(
                    "f",
                    "0644",
                    4,
                    b"1234",
                    None,
                    failed(sink, "scp: f: No space left on device"),
                )]
            }),
        ),
        (
            "the source fails to read midway (error instead of the final NUL)",
            vec![
                ack(),
                src(b"C0644 6 g\n"),
                ack(),
                src(b"abc\0\0\0"),
                src(b"\x01scp: g: Input/output error\n"),
                ack(),
            ],
            Box::new(|source, _| {
                vec![file(
                    "g",
                    "0644",
                    6,
                    b"abc\0\0\0",
                    None,
                    failed(source, "scp: g: Input/output error"),
                )]
            }),
        ),
        (
            "the source cannot send a path, a fatal error from the sink at the end",
            vec![
                ack(),
                src(b"\x01scp: /nope: No such file or directory\n"),
                src(b"C0644 1 x\n"),
                Snk(b"\x02scp: protocol error: lost\n".to_vec()),
            ],
            Box::new(|source, sink| {
                vec![
                    ScpOp::Error {
                        from: source,
                        message: "scp: /nope: No such file or directory".to_string(),
                        fatal: false,
                    },
                    file(
                        "x",
                        "0644",
                        1,
                        b"",
                        None,
                        ScpStatus::Failed {
                            by: sink,
                            message: "scp: protocol error: lost".to_string(),
                            fatal: true,
                        },
                    ),
                ]
            }),
        ),
        (
            "the sink refuses to start",
            vec![refuse("scp: /x: Not a directory")],
            Box::new(|_, sink| {
                vec![ScpOp::Error {
                    from: sink,
                    message: "scp: /x: Not a directory".to_string(),
                    fatal: false,
                }]
            }),
        ),
        (
            "the stream ends midway through a file",
            vec![ack(), src(b"C0644 100 big\n"), ack(), src(&[9u8; 40])],
            Box::new(|_, _| {
                vec![file(
                    "big",
                    "0644",
                    100,
                    &[9u8; 40],
                    None,
                    ScpStatus::Incomplete,
                )]
            }),
        ),
        (
            "the stream ends before the sink's last answer",
            vec![
                ack(),
                src(b"D0755 0 d\n"),
                ack(),
                src(b"C0644 3 f\n"),
                ack(),
                body(b"end"),
            ],
            Box::new(|_, _| {
                vec![
                    dir("d", "0755", None, ScpStatus::Ok),
                    file("d/f", "0644", 3, b"end", None, ScpStatus::Unacknowledged),
                ]
            }),
        ),
        (
            "a refused directory is not entered",
            vec![
                ack(),
                src(b"D0755 0 d\n"),
                refuse("scp: d: Permission denied"),
                src(b"C0644 1 x\n"),
                ack(),
                body(b"z"),
                ack(),
            ],
            Box::new(|_, sink| {
                vec![
                    dir("d", "0755", None, failed(sink, "scp: d: Permission denied")),
                    file("x", "0644", 1, b"z", None, ScpStatus::Ok),
                ]
            }),
        ),
        (
            "an unknown record stops parsing",
            vec![ack(), src(b"X garbage\n"), src(b"C0644 1 x\n"), ack()],
            Box::new(|source, _| vec![unparseable(source, "malformed record line \"X garbage\"")]),
        ),
        (
            "a bad mode stops parsing",
            vec![ack(), src(b"C06a4 1 x\n")],
            Box::new(|source, _| vec![unparseable(source, "malformed file line \"C06a4 1 x\"")]),
        ),
        (
            "a size that is not a number stops parsing",
            vec![ack(), src(b"C0644 -1 x\n")],
            Box::new(|source, _| vec![unparseable(source, "malformed file line \"C0644 -1 x\"")]),
        ),
        (
            "an overlong line stops parsing",
            vec![ack(), Src(long)],
            Box::new(|source, _| {
                vec![unparseable(
                    source,
                    &format!("a line longer than {MAX_LINE} bytes"),
                )]
            }),
        ),
        (
            "a wrong byte after the data stops parsing, the file is incomplete",
            vec![ack(), src(b"C0644 3 f\n"), ack(), src(b"abcZ")],
            Box::new(|source, _| {
                vec![
                    unparseable(source, "byte 0x5a after a file's data"),
                    ScpOp::File {
                        path: "f".to_string(),
                        mode: "0644".to_string(),
                        size: 3,
                        bytes: 3,
                        sha256: sha(b"abc"),
                        mtime: None,
                        status: ScpStatus::Incomplete,
                    },
                ]
            }),
        ),
        (
            "an answer to nothing stops parsing",
            vec![ack(), ack()],
            Box::new(|_, sink| vec![unparseable(sink, "an answer to nothing")]),
        ),
        (
            "a wrong answer byte stops parsing",
            vec![Snk(b"ok\n".to_vec())],
            Box::new(|_, sink| vec![unparseable(sink, "byte 0x6f instead of an answer")]),
        ),
        (
            "leaving a directory never entered stops parsing",
            vec![ack(), src(b"E\n")],
            Box::new(|source, _| vec![unparseable(source, "end of directory outside any")]),
        ),
        (
            "a malformed T record stops parsing",
            vec![ack(), src(b"T1 0 2\n")],
            Box::new(|source, _| vec![unparseable(source, "malformed times line \"T1 0 2\"")]),
        ),
    ]
}

/// Feed `steps`, each cut where `cut` says (chunk lengths, cycled over the whole stream).
fn run_scp(direction: ScpDirection, steps: &[St], cut: &mut dyn FnMut() -> usize) -> Vec<ScpOp> {
    let (source, _) = ends(direction);
    let mut parser = ScpParser::new(direction);
    let mut ops = Vec::new();
    for step in steps {
        let (from_source, bytes) = match step {
            Src(b) => (true, b),
            Snk(b) => (false, b),
        };
        let client = from_source == (source == ScpSide::Client);
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(cut().clamp(1, rest.len()));
            rest = more;
            ops.extend(if client {
                parser.client_data(chunk)
            } else {
                parser.server_data(chunk)
            });
        }
    }
    ops.extend(parser.finish());
    ops
}

fn check_all(label: &str, cut: &mut dyn FnMut() -> usize) {
    for direction in [Upload, Download] {
        let (source, sink) = ends(direction);
        for (name, steps, want) in stream_cases() {
            assert_eq!(
                run_scp(direction, &steps, cut),
                want(source, sink),
                "{name}, {direction:?}, {label}"
            );
        }
    }
}

#[test]
fn streams_whole() {
    check_all("whole", &mut || usize::MAX);
}

#[test]
fn streams_byte_by_byte() {
    check_all("byte by byte", &mut || 1);
}

#[test]
fn streams_in_random_splits() {
    let mut x: u32 = 0x9e37_79b9;
    for round in 0..20 {
        check_all(&format!("random round {round}"), &mut || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 23) as usize + 1
        });
    }
}

/// Consecutive steps of one side in one chunk.
#[test]
fn streams_coalesced() {
    for direction in [Upload, Download] {
        let (source, sink) = ends(direction);
        for (name, steps, want) in stream_cases() {
            let mut merged: Vec<St> = Vec::new();
            for step in steps {
                match (merged.last_mut(), step) {
                    (Some(Src(a)), Src(b)) | (Some(Snk(a)), Snk(b)) => a.extend(b),
                    (_, step) => merged.push(step),
                }
            }
            assert_eq!(
                run_scp(direction, &merged, &mut || usize::MAX),
                want(source, sink),
                "{name}, {direction:?}"
            );
        }
    }
}

#[test]
fn file_contents_are_not_buffered() {
    let mut parser = ScpParser::new(Upload);
    assert!(parser.server_data(&[0]).is_empty());
    assert!(parser.client_data(b"C0644 10000000 big\n").is_empty());
    assert!(parser.server_data(&[0]).is_empty());
    let chunk = vec![0x55u8; 65536];
    let mut hasher = Sha256::new();
    let mut left = 10_000_000usize;
    while left > 0 {
        let n = left.min(chunk.len());
        hasher.update(&chunk[..n]);
        assert!(parser.client_data(&chunk[..n]).is_empty());
        assert!(parser.source_line.is_empty());
        left -= n;
    }
    assert!(parser.client_data(&[0]).is_empty());
    let ops = parser.server_data(&[0]);
    assert_eq!(
        ops,
        vec![ScpOp::File {
            path: "big".to_string(),
            mode: "0644".to_string(),
            size: 10_000_000,
            bytes: 10_000_000,
            sha256: Some(hex::encode(hasher.finalize())),
            mtime: None,
            status: ScpStatus::Ok,
        }]
    );
}

#[test]
fn records_without_answers_are_bounded() {
    let mut parser = ScpParser::new(Download);
    let mut ops = parser.client_data(&[0]);
    for _ in 0..=MAX_PENDING {
        ops.extend(parser.server_data(b"T1 0 1 0\n"));
    }
    assert_eq!(
        ops,
        vec![unparseable(
            ScpSide::Server,
            &format!("more than {MAX_PENDING} records without an answer")
        )]
    );
    assert!(parser.pending.len() <= MAX_PENDING);
    // Nothing more once broken.
    assert!(parser.client_data(&[0]).is_empty());
}

#[test]
fn nesting_is_bounded() {
    let mut parser = ScpParser::new(Upload);
    let mut ops = Vec::new();
    for _ in 0..=MAX_DEPTH {
        ops.extend(parser.server_data(&[0]));
        ops.extend(parser.client_data(b"D0755 0 d\n"));
    }
    assert_eq!(ops.len(), MAX_DEPTH + 1);
    assert!(matches!(ops.last(), Some(ScpOp::Unparseable { .. })));
    assert!(parser.dirs.len() <= MAX_DEPTH);
}

#[test]
fn scp_garbage_never_panics() {
    let mut x: u32 = 0x2545_f491;
    for round in 0..300 {
        let direction = if round % 2 == 0 { Upload } else { Download };
        let mut parser = ScpParser::new(direction);
        for _ in 0..40 {
            let mut chunk = Vec::new();
            for _ in 0..(x % 32) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let pick = b"CDET0123456789 \n\x00\x01\x02ab";
                chunk.push(if round % 3 == 0 {
                    x as u8
                } else {
                    pick[(x as usize) % pick.len()]
                });
            }
            let _ = parser.client_data(&chunk);
            let _ = parser.server_data(&chunk);
            assert!(parser.source_line.len() <= MAX_LINE);
            assert!(parser.sink_line.len() <= MAX_LINE);
        }
        let _ = parser.finish();
    }
}

#[test]
fn scp_ops_serialize_for_the_audit_log() {
    let op = file(
        "d/f",
        "0644",
        3,
        b"abc",
        Some(5),
        failed(ScpSide::Server, "no"),
    );
    let v = serde_json::to_value(&op).unwrap();
    assert_eq!(v["op"], "file");
    assert_eq!(v["path"], "d/f");
    assert_eq!(v["mode"], "0644");
    assert_eq!(v["status"]["status"], "failed");
    assert_eq!(v["status"]["by"], "server");
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(b"abc")));
    let v = serde_json::to_value(dir("d", "0755", None, ScpStatus::Unacknowledged)).unwrap();
    assert_eq!(v["op"], "dir");
    assert_eq!(v["status"]["status"], "unacknowledged");
}

mod properties;

#[test]
fn a_file_uploaded_where_it_runs_later_is_kept() {
    let upload = |target: &str, name: &str, body: &[u8]| -> Vec<ScpOp> {
        let mut parser = ScpParser::new(Upload).with_target(target);
        let mut ops = parser.server_data(&[0]);
        ops.extend(parser.client_data(format!("C0644 {} {name}\n", body.len()).as_bytes()));
        ops.extend(parser.server_data(&[0]));
        ops.extend(parser.client_data(body));
        ops.extend(parser.client_data(&[0]));
        ops.extend(parser.server_data(&[0]));
        ops
    };
    let kept = |ops: &[ScpOp]| -> Vec<(String, String, bool)> {
        ops.iter()
            .filter_map(|o| match o {
                ScpOp::KeptContent { path, content, cut } => {
                    Some((path.clone(), content.clone(), *cut))
                }
                _ => None,
            })
            .collect()
    };
    // By the file's name, or by the target it is written to.
    let ops = upload(".", ".bashrc", b"touch /tmp/planted\n");
    assert_eq!(
        kept(&ops),
        [(
            ".bashrc".to_string(),
            "touch /tmp/planted\n".to_string(),
            false
        )],
        "{ops:?}"
    );
    let ops = upload("/etc/cron.d/job", "job.txt", b"* * * * * root id\n");
    assert_eq!(kept(&ops).len(), 1, "{ops:?}");
    // A data file keeps nothing.
    assert!(kept(&upload("/tmp", "data.bin", b"abc")).is_empty());
}
