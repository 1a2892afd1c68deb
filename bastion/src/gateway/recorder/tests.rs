//! The recorder's files, events and failures, channel by channel.
use super::recovery::{UNFINISHED_MARKER, repair_unfinished};
use super::*;
use sallyport_audit::writers::ChainKind;

const HEADER: &str = "{\"version\": 2, \"width\": 80, \"height\": 24}\n";

fn test_key() -> sallyport_ca::seal::OpenKey {
    sallyport_ca::seal::OpenKey::from_bytes(&[42; 32]).unwrap()
}

#[test]
fn a_pty_channel_does_not_start_without_a_key_to_seal_hidden_input() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20);
    let err = rec.start_pty(80, 24, "xterm", "bash").unwrap_err();
    assert!(err.0.contains("no key yet to seal"), "{err}");
    assert!(
        rec.input(b"ls\r").is_err(),
        "nothing passes after the refusal"
    );
    // A channel without a pty has no secret prompts to seal: it starts.
    let rec = ChannelRecorder::new(dir.path(), "s-2", 0, 1 << 20);
    rec.start_stream("bash -s", true).unwrap();
}

#[test]
fn a_line_typed_without_echo_at_a_password_prompt_is_sealed_and_opens_only_where_it_was_typed() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-9", 3, 1 << 20)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_pty(80, 24, "xterm", "bash").unwrap();
    // A shell whose own prompt was made to read like a password prompt, echo off.
    let mut evs = rec.output(b"Password: ").unwrap();
    evs.extend(rec.input(b"touch /tmp/pwned").unwrap());
    evs.extend(rec.input(b"\r").unwrap());
    evs.extend(rec.output(b"\r\nPassword: ").unwrap());
    let (evs2, file) = rec.finish().unwrap();
    evs.extend(evs2);
    let hidden: Vec<&Value> = evs
        .iter()
        .filter(|(k, _)| *k == GatewayKind::InputHidden)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(hidden.len(), 1, "{evs:?}");
    let h = hidden[0];
    let sealed = h["sealed"].as_str().unwrap();
    assert_eq!(h["seal_key"], test_key().seal_key().id());
    assert_eq!(h["chars"], 16);
    // The text is nowhere in clear: not in the events, not in the recording.
    assert!(!format!("{evs:?}").contains("pwned"), "{evs:?}");
    let cast = std::fs::read_to_string(file.unwrap()).unwrap();
    assert!(!cast.contains("pwned"), "{cast}");
    // It opens with the broker's key at its place, and nowhere else.
    let line = h["line"].as_u64().unwrap();
    let place = sallyport_ca::seal::hidden_line_place("s-9", 3, line);
    assert_eq!(
        test_key().open(sealed, &place).unwrap(),
        b"touch /tmp/pwned"
    );
    let elsewhere = sallyport_ca::seal::hidden_line_place("s-9", 4, line);
    assert!(test_key().open(sealed, &elsewhere).is_err());
}

#[test]
fn an_unfinished_recording_keeps_every_whole_line_and_ends_with_a_marker() {
    let table: &[(&str, Option<&[&str]>)] = &[
        // cut in the middle of an event line
        (
            "[0.5, \"o\", \"$ \"]\n[1.25, \"i\", \"ls\"]\n[1.3, \"o\", \"l",
            Some(&["$ ", "ls"]),
        ),
        // cut right after a whole line
        ("[0.5, \"o\", \"$ \"]\n", Some(&["$ "])),
        // nothing after the header
        ("", Some(&[])),
        // a whole line of garbage stops the recovery there
        (
            "[0.5, \"o\", \"a\"]\n\u{0}\u{0}\n[2.0, \"o\", \"b\"]\n",
            Some(&["a"]),
        ),
    ];
    for (body, want) in table {
        let text = format!("{HEADER}{body}");
        let fixed = repair_unfinished(&text).expect("header is whole");
        let events = crate::record::asciicast::parse_events(&fixed).unwrap();
        let (last, rest) = events.split_last().unwrap();
        assert_eq!(
            last.kind,
            crate::record::asciicast::EventKind::Marker,
            "{body:?}"
        );
        assert_eq!(last.data, UNFINISHED_MARKER);
        let kept: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(Some(kept.as_slice()), want.map(|w| w), "{body:?}");
        // times never go backwards: the marker is at the last kept event's time
        assert!(rest.iter().all(|e| e.time <= last.time));
    }
    // A torn or missing header: nothing to replay.
    assert_eq!(repair_unfinished(""), None);
    assert_eq!(repair_unfinished("{\"version\": 2, \"wid"), None);
    assert_eq!(repair_unfinished("{\"version\": 1}\n"), None);
}

#[test]
fn recovery_at_start_finishes_part_files_and_leaves_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("s-1-c0.cast.part"),
        format!("{HEADER}[0.1, \"o\", \"x\"]\n[0.2, \"o"),
    )
    .unwrap();
    std::fs::write(d.join("s-2-c0.cast.part"), "{\"vers").unwrap();
    std::fs::write(d.join("s-3-c0.cast"), HEADER).unwrap();
    let events = recover_unfinished(d);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|(k, v)| (k.as_str(), v["recording"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&("recording_recovered", "s-1-c0")));
    assert!(kinds.contains(&("recording_unreadable", "s-2-c0")));
    assert!(!d.join("s-1-c0.cast.part").exists());
    let fixed = std::fs::read_to_string(d.join("s-1-c0.cast")).unwrap();
    assert!(fixed.ends_with(&format!(
        "{}]\n",
        serde_json::to_string(UNFINISHED_MARKER).unwrap()
    )));
    assert!(d.join("s-2-c0.cast.unreadable").exists());
    assert_eq!(
        std::fs::read_to_string(d.join("s-3-c0.cast")).unwrap(),
        HEADER
    );
    // A second start finds nothing more to do.
    assert!(recover_unfinished(d).is_empty());
}

/// A line whose Enter could not be written never reached the node: it is no command later,
/// neither at the node's output nor when the channel ends; a line that went through is.
#[test]
fn a_refused_line_is_not_reported_as_a_command_later() {
    let commands = |evs: &[Event]| -> Vec<String> {
        evs.iter()
            .filter(|(k, _)| *k == GatewayKind::Command)
            .filter_map(|(_, v)| v["command"].as_str().map(str::to_string))
            .collect()
    };
    for refuse in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
            .sealing_to(Some(test_key().seal_key().clone()));
        rec.start_pty(80, 24, "xterm", "bash").unwrap();
        rec.output(b"$ ").unwrap();
        let mut seen = commands(&rec.input(b"touch /tmp/x").unwrap());
        seen.extend(commands(&rec.output(b"touch /tmp/x").unwrap()));
        let entered = rec.input(b"\r").unwrap();
        assert!(
            entered.iter().any(|(k, _)| *k == GatewayKind::LineEntered),
            "{entered:?}"
        );
        if refuse {
            rec.refuse(&entered);
        } else {
            seen.extend(commands(&entered));
        }
        seen.extend(commands(&rec.output(b"\r\n$ ").unwrap()));
        seen.extend(commands(&rec.finish().unwrap().0));
        if refuse {
            assert!(seen.is_empty(), "{seen:?}");
        } else {
            assert_eq!(seen, ["touch /tmp/x"]);
        }
    }
}

#[test]
fn a_quiet_pty_channel_rests_and_records_the_same_commands_after() {
    let commands = |evs: &[Event]| -> Vec<String> {
        evs.iter()
            .filter(|(k, _)| *k == GatewayKind::Command)
            .filter_map(|(_, v)| v["command"].as_str().map(str::to_string))
            .collect()
    };
    let mut got = Vec::new();
    let mut rests = Vec::new();
    for rest in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
            .sealing_to(Some(test_key().seal_key().clone()));
        let mut seen = Vec::new();
        // Not quiet long enough yet; and a channel without a pty never rests.
        assert!(!rec.rest_if_quiet(Duration::from_secs(3600)));
        rec.start_pty(80, 24, "xterm", "bash").unwrap();
        rec.output(b"\x1b[?2004h\x1b[01;32malice@node1\x1b[00m:~$ ")
            .unwrap();
        seen.extend(commands(&rec.input(b"echo first").unwrap()));
        seen.extend(commands(&rec.output(b"echo first").unwrap()));
        seen.extend(commands(&rec.input(b"\r").unwrap()));
        seen.extend(commands(
            &rec.output(b"\r\n\x1b[?2004l\rfirst\r\n\x1b[?2004h\x1b[01;32malice@node1\x1b[00m:~$ ")
                .unwrap(),
        ));
        if rest {
            rests.push(rec.rest_if_quiet(Duration::ZERO));
        }
        // Recalled from history: only the screen shows what the line holds.
        seen.extend(commands(&rec.input(b"\x1b[A").unwrap()));
        seen.extend(commands(&rec.output(b"echo first").unwrap()));
        seen.extend(commands(&rec.input(b"\r").unwrap()));
        seen.extend(commands(
            &rec.output(b"\r\n\x1b[?2004l\rfirst\r\n$ ").unwrap(),
        ));
        seen.extend(commands(&rec.finish().unwrap().0));
        got.push(seen);
    }
    assert_eq!(rests, [true]);
    assert_eq!(got[0], ["echo first", "echo first"]);
    assert_eq!(got[1], got[0]);
    let stream = ChannelRecorder::new(tempfile::tempdir().unwrap().path(), "s-2", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    stream.start_stream("bash", true).unwrap();
    assert!(!stream.rest_if_quiet(Duration::ZERO));
}

#[test]
fn a_panic_or_a_failed_write_ends_recording_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("bash -s", true).unwrap();
    assert!(rec.input(b"echo one\n").is_ok());
    let panicked = rec.with(|_, _, _, _| panic!("the screen model broke"));
    assert!(panicked.is_err());
    // Every later call fails: nothing more may be forwarded.
    assert!(rec.input(b"echo two\n").is_err());
    assert!(rec.output(b"two\n").is_err());
    assert!(rec.input_eof().is_err());
    assert!(rec.finish().is_err());

    // A recording that cannot be written (its directory is a file).
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let rec = ChannelRecorder::new(&blocked, "s-2", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    assert!(rec.start_stream("ls", false).is_err());
    assert!(rec.input(b"x").is_err());
}

#[test]
fn an_interpreters_stdin_lines_are_commands_and_streams_are_capped_with_digests() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 16)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("bash -s", true).unwrap();
    let (mut commands, mut ahead) = (Vec::new(), Vec::new());
    for chunk in [&b"echo o"[..], b"ne\r\necho two\nech", b"o three"] {
        for (kind, v) in rec.input(chunk).unwrap() {
            assert_eq!(kind, GatewayKind::Command);
            assert_eq!(v["via"], "stdin");
            let text = v["command"].as_str().unwrap().to_string();
            // A chunk's unterminated rest is reported ahead, as a partial line.
            if v["partial"] == true {
                ahead.push(text);
            } else {
                commands.push((text, v["continues_partial"] == true));
            }
        }
    }
    assert_eq!(
        commands,
        [
            ("echo one".to_string(), true),
            ("echo two".to_string(), false)
        ]
    );
    assert_eq!(ahead, ["echo o", "ech", "o three"]);
    // The last line, without its newline, is read at EOF.
    let last = rec.input_eof().unwrap();
    assert_eq!(last[0].1["command"], "echo three");
    assert_eq!(last[0].1["continues_partial"], true);
    rec.output(&[b'x'; 40]).unwrap();
    let (events, file) = rec.finish().unwrap();
    let (kind, v) = &events[0];
    assert_eq!(*kind, GatewayKind::OutputRecorded);
    assert_eq!(v["bytes"], 40);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["output_sha256"], hex::encode(Sha256::digest([b'x'; 40])));
    assert_eq!(
        v["input_sha256"],
        hex::encode(Sha256::digest(b"echo one\r\necho two\necho three"))
    );
    // The recording keeps both directions up to the cap.
    let text = std::fs::read_to_string(file.unwrap()).unwrap();
    let evs = crate::record::asciicast::parse_events(&text).unwrap();
    let input: String = evs
        .iter()
        .filter(|e| e.kind == crate::record::asciicast::EventKind::Input)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(input, "echo one\r\necho t");
}

#[test]
fn mode_switches_in_a_loop_are_bounded_and_counted() {
    let mut th = Throttle::default();
    let ev = || (GatewayKind::FullScreen, json!({"entered": true}));
    let mut written = 0;
    for i in 0..10_000 {
        written += th
            .bound(
                i as f64 * 0.0001,
                vec![ev(), (GatewayKind::Command, json!({}))],
            )
            .len();
    }
    // Every command, and at most PER_WINDOW mode switches in the first second.
    assert_eq!(written, 10_000 + Throttle::PER_WINDOW as usize);
    let later = th.bound(20.0, vec![ev()]);
    assert_eq!(
        later[0].1["suppressed_before"],
        10_000 - Throttle::PER_WINDOW as u64
    );
    assert!(th.summary().is_none());
    for _ in 0..30 {
        th.bound(21.0, vec![ev()]);
    }
    assert_eq!(th.summary().unwrap().1["count"], 11);
}

#[test]
fn one_program_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("bash -s", true).unwrap();
    assert!(rec.start_stream("true", false).is_err());
    assert!(rec.input(b"echo\n").is_err());
    let rec = ChannelRecorder::new(dir.path(), "s-2", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("bash -s", true).unwrap();
    assert!(rec.start_pty(80, 24, "xterm", "t").is_err());
    let rec = ChannelRecorder::new(dir.path(), "s-3", 0, 1024)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_pty(80, 24, "xterm", "t").unwrap();
    rec.start_stream("bash", true).unwrap();
    assert!(rec.start_sftp().is_err());
}

#[test]
fn a_recording_file_closed_while_quiet_holds_the_same_bytes_as_one_always_open() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<Vec<String>> = (0..40)
        .map(|i| {
            (0..i % 4)
                .map(|j| format!("[{i}.{j}, \"o\", \"line {i} part {j} \\u00e9\"]\n"))
                .collect()
        })
        .collect();
    let path = dir.path().join("rec").join("s-1-c0.cast.part");
    let mut file = RecordingFile::default();
    let always = dir.path().join("always");
    let mut open = std::fs::File::create(&always).unwrap();
    for (i, lines) in chunks.iter().enumerate() {
        file.append(&path, lines).unwrap();
        for l in lines {
            open.write_all(l.as_bytes()).unwrap();
        }
        assert!(file.is_open());
        // Quiet now and then: closed, and opened again at the next write.
        if i % 3 == 0 {
            file.close();
            assert!(!file.is_open());
        }
    }
    file.close();
    let finished = file.finish(&path).expect("the file, opened again");
    drop(finished);
    let (got, want) = (
        std::fs::read(&path).unwrap(),
        std::fs::read(&always).unwrap(),
    );
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert_eq!(Sha256::digest(&got), Sha256::digest(&want));
    // A recording that vanished while closed is an error, not a new file without its start.
    let mut file = RecordingFile::default();
    file.append(&path, &["x\n".into()]).unwrap();
    file.close();
    std::fs::remove_file(&path).unwrap();
    assert!(file.append(&path, &["y\n".into()]).is_err());
    assert!(!path.exists());
}

#[test]
fn a_quiet_pty_channel_closes_its_file_and_records_every_event_in_order_after() {
    let mut recorded = Vec::new();
    for rest in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
            .sealing_to(Some(test_key().seal_key().clone()));
        rec.start_pty(80, 24, "xterm", "bash").unwrap();
        let steps: [(bool, &[u8]); 6] = [
            (false, b"\x1b[01;32malice@node1\x1b[00m:~$ "),
            (true, b"ls"),
            (false, b"ls"),
            (true, b"\r"),
            (false, b"\r\na  b\r\n$ "),
            (true, b"exit\r"),
        ];
        for (input, bytes) in steps {
            if rest {
                rec.rest_if_quiet(Duration::ZERO);
                assert!(!rec.inner.lock().unwrap().file.is_open());
            }
            if input {
                rec.input(bytes).unwrap();
            } else {
                rec.output(bytes).unwrap();
            }
        }
        if rest {
            rec.rest_if_quiet(Duration::ZERO);
        }
        let (_, done) = rec.finish().unwrap();
        let text = std::fs::read_to_string(done.expect("a finished recording")).unwrap();
        let events = crate::record::asciicast::parse_events(&text).unwrap();
        assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
        recorded.push(
            events
                .iter()
                .map(|e| format!("{:?} {}", e.kind, e.data))
                .collect::<Vec<_>>(),
        );
    }
    assert!(recorded[0].len() >= 6, "{:?}", recorded[0]);
    assert_eq!(recorded[1], recorded[0]);
}

#[test]
fn a_last_line_without_newline_is_a_command_when_the_channel_ends_without_eof() {
    let commands = |evs: &[Event], partial: bool| -> Vec<String> {
        evs.iter()
            .filter(|(k, v)| *k == GatewayKind::Command && (v["partial"] == true) == partial)
            .filter_map(|(_, v)| v["command"].as_str().map(str::to_string))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("bash", true).unwrap();
    let evs = rec.input(b"echo hi\ntouch /tmp/M").unwrap();
    // The rest is reported ahead, before it reaches the node.
    assert_eq!(commands(&evs, true), ["touch /tmp/M"]);
    let mut seen = commands(&evs, false);
    assert_eq!(seen, ["echo hi"]);
    // No EOF: the connection dropped.
    let (evs, _) = rec.finish().unwrap();
    seen.extend(commands(&evs, false));
    assert_eq!(seen, ["echo hi", "touch /tmp/M"]);
    // And the channel's totals still close it.
    assert!(
        evs.last()
            .is_some_and(|(k, _)| *k == GatewayKind::OutputRecorded),
        "{evs:?}"
    );
}

#[test]
fn an_sftp_session_in_a_channel_not_classified_as_sftp_ends_it() {
    // OpenSSH's first SFTP packet (INIT, version 3), after a preamble a wrapper could consume.
    let init = b"\0\0\0\x05\x01\0\0\0\x03";
    for preamble in [&b""[..], b"x\n"] {
        let dir = tempfile::tempdir().unwrap();
        let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
            .sealing_to(Some(test_key().seal_key().clone()));
        rec.start_stream("setarch x86_64 /usr/lib/openssh/sftp-server", true)
            .unwrap();
        rec.input(preamble).unwrap();
        let err = rec.input(init).unwrap_err();
        assert!(err.0.contains("SFTP"), "{}", err.0);
        // Nothing more passes.
        assert!(rec.input(b"more").is_err());
    }
    // An interpreter's input may skip a preamble of any length first: looked at throughout.
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream(
        "head -c 5000 >/dev/null; exec setarch x86_64 sftp-server",
        true,
    )
    .unwrap();
    rec.input(&[0u8; 4999]).unwrap();
    // Cut across two chunks.
    rec.input(b"\0\0\0\0\x05\x01").unwrap();
    assert!(rec.input(b"\0\0\0\x03").is_err());
    // Text and a tar header are not SFTP.
    let dir = tempfile::tempdir().unwrap();
    let rec = ChannelRecorder::new(dir.path(), "s-1", 0, 1 << 20)
        .sealing_to(Some(test_key().seal_key().clone()));
    rec.start_stream("tar xf -", false).unwrap();
    let mut header = vec![0u8; 512];
    header[..5].copy_from_slice(b"f.txt");
    header[100..107].copy_from_slice(b"0000644");
    rec.input(&header).unwrap();
    rec.input(b"echo hi\n\0\0\0\x05").unwrap();
    assert!(rec.finish().is_ok());
}
