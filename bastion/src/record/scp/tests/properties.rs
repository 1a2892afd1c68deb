//! Property tests: generated transfers (trees of files and directories, each accepted,
//! refused or failed by either end, with or without times) give exactly the operations a
//! model of them predicts, both directions, however the streams are cut; any bytes never
//! panic, keep every bound, and give the same operations whole or cut; exec commands quoted
//! the way a shell reads them give back their paths.
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    /// The sink refuses the `C` line: no data follows.
    Refused(String),
    /// The sink fails after the data.
    SinkFails(String),
    /// The source reports an error instead of the final `\0`.
    SourceFails(String),
}

#[derive(Debug, Clone)]
enum Entry {
    File {
        name: String,
        mode: String,
        content: Vec<u8>,
        times: Option<(u64, u64)>,
        outcome: Outcome,
    },
    Dir {
        name: String,
        mode: String,
        times: Option<(u64, u64)>,
        /// The sink refuses to enter it: its entries are not sent.
        refused: Option<String>,
        entries: Vec<Entry>,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._-]{1,12}", "[^\n]{1,16}"]
}

fn mode() -> impl Strategy<Value = String> {
    "[0-7]{4}"
}

fn message() -> impl Strategy<Value = String> {
    "[^\n]{0,24}"
}

fn times() -> impl Strategy<Value = Option<(u64, u64)>> {
    proptest::option::of((any::<u64>(), any::<u64>()))
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Ok),
        1 => message().prop_map(Outcome::Refused),
        1 => message().prop_map(Outcome::SinkFails),
        1 => message().prop_map(Outcome::SourceFails),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let file = (
        name(),
        mode(),
        proptest::collection::vec(any::<u8>(), 0..3000),
        times(),
        outcome(),
    )
        .prop_map(|(name, mode, content, times, outcome)| Entry::File {
            name,
            mode,
            content,
            times,
            outcome,
        });
    file.prop_recursive(3, 24, 5, |inner| {
        (
            name(),
            mode(),
            times(),
            proptest::option::weighted(0.2, message()),
            proptest::collection::vec(inner, 0..5),
        )
            .prop_map(|(name, mode, times, refused, entries)| Entry::Dir {
                name,
                mode,
                times,
                refused,
                entries,
            })
    })
}

/// The steps of a transfer of `entries` into (or out of) a directory at `prefix`, and the
/// operations the parser must report, given which end is the source and which the sink.
fn transfer(
    entries: &[Entry],
    prefix: &str,
    (source, sink): (ScpSide, ScpSide),
    steps: &mut Vec<St>,
    want: &mut Vec<ScpOp>,
) {
    let line = |text: String| {
        let mut v = text.into_bytes();
        v.push(b'\n');
        Src(v)
    };
    let fail = |by: ScpSide, message: &str| ScpStatus::Failed {
        by,
        message: message.to_string(),
        fatal: false,
    };
    for entry in entries {
        let (Entry::File { times, .. } | Entry::Dir { times, .. }) = entry;
        if let Some((mtime, atime)) = times {
            steps.push(line(format!("T{mtime} 0 {atime} 0")));
            steps.push(ack());
        }
        let mtime = times.map(|(m, _)| m);
        match entry {
            Entry::File {
                name,
                mode,
                content,
                outcome,
                ..
            } => {
                steps.push(line(format!("C{mode} {} {name}", content.len())));
                let path = format!("{prefix}{name}");
                let size = content.len() as u64;
                let status = match outcome {
                    Outcome::Refused(m) => {
                        steps.push(refuse(m));
                        want.push(file(&path, mode, size, b"", mtime, fail(sink, m)));
                        continue;
                    }
                    Outcome::Ok => {
                        steps.push(ack());
                        steps.push(body(content));
                        steps.push(ack());
                        ScpStatus::Ok
                    }
                    Outcome::SinkFails(m) => {
                        steps.push(ack());
                        steps.push(body(content));
                        steps.push(refuse(m));
                        fail(sink, m)
                    }
                    Outcome::SourceFails(m) => {
                        steps.push(ack());
                        steps.push(src(content));
                        steps.push(src(format!("\x01{m}\n").as_bytes()));
                        steps.push(ack());
                        fail(source, m)
                    }
                };
                want.push(file(&path, mode, size, content, mtime, status));
            }
            Entry::Dir {
                name,
                mode,
                refused,
                entries,
                ..
            } => {
                steps.push(line(format!("D{mode} 0 {name}")));
                let path = format!("{prefix}{name}");
                if let Some(m) = refused {
                    steps.push(refuse(m));
                    want.push(dir(&path, mode, mtime, fail(sink, m)));
                    continue;
                }
                steps.push(ack());
                want.push(dir(&path, mode, mtime, ScpStatus::Ok));
                transfer(entries, &format!("{path}/"), (source, sink), steps, want);
                steps.push(src(b"E\n"));
                steps.push(ack());
            }
        }
    }
}

/// Feed `steps`, each cut at the lengths `cuts` gives in turn (0: the rest), then end the
/// channel; the parser's bounds are checked after every chunk.
fn feed(direction: ScpDirection, steps: &[St], cuts: &[usize]) -> Vec<ScpOp> {
    let mut cuts = cuts.iter().cycle();
    run_scp(direction, steps, &mut || match cuts.next() {
        Some(&c) if c > 0 => c,
        Some(_) | None => usize::MAX,
    })
}

fn bounded(parser: &ScpParser) -> bool {
    parser.source_line.len() <= MAX_LINE
        && parser.sink_line.len() <= MAX_LINE
        && parser.pending.len() <= MAX_PENDING
        && parser.dirs.len() <= MAX_DEPTH
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![4 => 1usize..8, 2 => 8usize..2000, 1 => Just(0)],
        1..16,
    )
}

fn direction() -> impl Strategy<Value = ScpDirection> {
    prop::sample::select(vec![Upload, Download])
}

/// A raw chunk from the source or the sink: record letters, digits and separators, or any bytes.
fn raw_step() -> impl Strategy<Value = St> {
    let pick = b"CDET0123456789 \n\x00\x01\x02ab".to_vec();
    let bytes = prop_oneof![
        proptest::collection::vec(prop::sample::select(pick), 0..64),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (any::<bool>(), bytes).prop_map(|(from_source, b)| if from_source { Src(b) } else { Snk(b) })
}

/// Quoted for a POSIX shell: single quotes, or double quotes with the four escapes.
fn quote(word: &str, double: bool) -> String {
    if double {
        let mut q = String::from("\"");
        for c in word.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl std::fmt::Debug for St {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Src(b) => write!(f, "Src({:?})", String::from_utf8_lossy(b)),
            Snk(b) => write!(f, "Snk({:?})", String::from_utf8_lossy(b)),
        }
    }
}

proptest! {
    #![proptest_config(sallyport_audit::proptest_config(64))]

    /// A generated transfer gives what the model says, whole and in any chunks.
    #[test]
    fn transfers_give_the_modelled_operations_in_any_chunks(
        direction in direction(),
        entries in proptest::collection::vec(entry(), 0..6),
        cuts in cuts(),
    ) {
        let mut steps = vec![ack()];
        let mut want = Vec::new();
        transfer(&entries, "", ends(direction), &mut steps, &mut want);
        prop_assert_eq!(&feed(direction, &steps, &[0]), &want);
        prop_assert_eq!(&feed(direction, &steps, &cuts), &want);
    }

    /// Any bytes from either end: no panic, bounds kept, the same operations in any chunks.
    #[test]
    fn any_bytes_in_any_chunks(
        direction in direction(),
        steps in proptest::collection::vec(raw_step(), 0..40),
        cuts in cuts(),
    ) {
        let mut parser = ScpParser::new(direction);
        let (source, _) = ends(direction);
        for step in &steps {
            let (from_source, bytes) = match step {
                Src(b) => (true, b),
                Snk(b) => (false, b),
            };
            if from_source == (source == ScpSide::Client) {
                parser.client_data(bytes);
            } else {
                parser.server_data(bytes);
            }
            prop_assert!(bounded(&parser));
        }
        parser.finish();
        prop_assert_eq!(feed(direction, &steps, &cuts), feed(direction, &steps, &[0]));
    }

    /// `scp [-r] [-p] [-d] -t|-f -- PATH...` with each path quoted as a shell reads it gives
    /// back the paths, whatever they hold; any command at all is read without a panic.
    #[test]
    fn quoted_exec_commands_give_back_their_paths(
        direction in direction(),
        (recursive, preserve, target_is_dir) in (any::<bool>(), any::<bool>(), any::<bool>()),
        paths in proptest::collection::vec(("\\PC{0,16}", any::<bool>()), 1..4),
        junk in "\\PC{0,64}",
    ) {
        let mut command = String::from("/usr/bin/scp");
        for (on, flag) in [(recursive, " -r"), (preserve, " -p"), (target_is_dir, " -d")] {
            if on {
                command.push_str(flag);
            }
        }
        command.push_str(match direction {
            Upload => " -t --",
            Download => " -f --",
        });
        for (path, double) in &paths {
            command.push(' ');
            command.push_str(&quote(path, *double));
        }
        let words: Vec<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
        prop_assert_eq!(
            parse_exec(&command),
            Some(ScpTransfer {
                direction,
                path: words.join(" "),
                recursive,
                preserve,
                target_is_dir,
            })
        );
        let _ = parse_exec(&junk);
        let _ = parse_exec(&format!("scp -t {junk}"));
    }
}
