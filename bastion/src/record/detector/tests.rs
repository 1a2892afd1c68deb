//! Tables of sessions as bash echoes them, and what must be detected.
use super::*;

/// One step of a session, in the order the gateway saw it.
#[derive(Clone, Copy)]
enum Io<'a> {
    In(&'a str),
    Out(&'a str),
}
use Io::{In, Out};

/// What a test expects to be detected, in order (`LineEcho` left out).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Cmd(&'static str),
    /// A continuation line.
    Cont(&'static str),
    /// Found by the typed text (a typed-ahead line).
    Ahead(&'static str),
    /// Found after a prompt marker.
    Guess(&'static str),
    EchoOff,
    Full(bool),
}
use Want::{Ahead, Cmd, Cont, EchoOff, Full, Guess};

const P: &str = "user@host:~$ ";
/// A colored prompt, as bash prints it with `\[\e[...m\]`.
const COLOR_P: &str = "\x1b[01;32muser@host\x1b[00m:\x1b[01;34m~/src\x1b[00m$ ";

fn want_of(event: &DetectorEvent) -> Option<Want> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    match event {
        DetectorEvent::Command(d) if d.echo_off => {
            assert!(d.command.is_empty(), "echo-off lines carry no text");
            Some(EchoOff)
        }
        DetectorEvent::Command(d) => Some(match (d.continuation, d.located) {
            (true, _) => Cont(leak(&d.command)),
            (false, Located::Anchor) => Cmd(leak(&d.command)),
            (false, Located::TypedText) => Ahead(leak(&d.command)),
            (false, Located::PromptGuess) => Guess(leak(&d.command)),
        }),
        DetectorEvent::FullScreen { entered } => Some(Full(*entered)),
        DetectorEvent::LineEcho { .. } | DetectorEvent::Entered { .. } => None,
    }
}

struct Run {
    events: Vec<DetectorEvent>,
    /// The input bytes that may be recorded, in the order they were decided.
    kept_input: Vec<u8>,
}

/// Feed a session, resolving held input the way the recorder does.
fn run(cols: u32, rows: u32, steps: &[Io]) -> Run {
    let mut d = Detector::new(cols, rows);
    let mut events = Vec::new();
    let mut held: Vec<(LineId, Vec<u8>)> = Vec::new();
    let mut kept = Vec::new();
    let settle = |events_now: Vec<DetectorEvent>,
                  held: &mut Vec<(LineId, Vec<u8>)>,
                  kept: &mut Vec<u8>,
                  all: &mut Vec<DetectorEvent>| {
        for e in &events_now {
            if let DetectorEvent::LineEcho { line, echoed } = e {
                let pos = held.iter().position(|(id, _)| id == line);
                if let Some(pos) = pos {
                    let (_, bytes) = held.remove(pos);
                    if *echoed {
                        kept.extend(bytes);
                    }
                }
            }
        }
        all.extend(events_now);
    };
    for step in steps {
        match step {
            In(s) => {
                let step = d.input(s.as_bytes());
                let mut covered = 0;
                for seg in &step.segments {
                    assert_eq!(seg.range.start, covered, "segments cover the input");
                    covered = seg.range.end;
                    let bytes = &s.as_bytes()[seg.range.clone()];
                    match seg.disposition {
                        Disposition::Keep => kept.extend_from_slice(bytes),
                        Disposition::Hold(id) => match held.iter_mut().find(|(l, _)| *l == id) {
                            Some((_, b)) => b.extend_from_slice(bytes),
                            None => held.push((id, bytes.to_vec())),
                        },
                    }
                }
                assert_eq!(covered, s.len());
                settle(step.events, &mut held, &mut kept, &mut events);
            }
            Out(s) => {
                let out = d.output(s.as_bytes());
                settle(out, &mut held, &mut kept, &mut events);
            }
        }
    }
    let end = d.finish();
    settle(end, &mut held, &mut kept, &mut events);
    assert!(held.is_empty(), "every held line is decided at the end");
    Run {
        events,
        kept_input: kept,
    }
}

fn wants(events: &[DetectorEvent]) -> Vec<Want> {
    events.iter().filter_map(want_of).collect()
}

#[test]
fn command_lines_as_bash_echoes_them() {
    let backspaces8 = "\x08".repeat(8);
    let erase_ctrl_u = format!("{backspaces8}\x1b[K");
    let history_redraw = format!("{}ls -l\x1b[K", "\x08".repeat(17));
    let long_cmd = format!("echo {}", "x".repeat(70));
    let wrapped_prompt = format!("{}$ ", "p".repeat(38));
    let search_accept = format!("\r\x1b[K{P}ssh db-1\r\n");
    let clear_redraw = format!("\x1b[H\x1b[2J{P}df");
    let cases: Vec<(&str, Vec<Io>, Vec<Want>)> = vec![
        (
            "plain command typed key by key",
            vec![
                Out(P),
                In("l"),
                Out("l"),
                In("s"),
                Out("s"),
                In("\r"),
                Out("\r\n"),
                Out("a.txt  b.txt\r\n"),
                Out(P),
            ],
            vec![Cmd("ls")],
        ),
        (
            "typed faster than the echo",
            vec![
                Out(P),
                In("uname -a\r"),
                Out("uname -a\r\nLinux host\r\n"),
                Out(P),
            ],
            vec![Cmd("uname -a")],
        ),
        (
            "empty Enter is no command",
            vec![Out(P), In("\r"), Out("\r\n"), Out(P)],
            vec![],
        ),
        (
            "backspace edits",
            vec![
                Out(P),
                In("lx"),
                Out("lx"),
                In("\x7f"),
                Out("\x08\x1b[K"),
                In("s -a\r"),
                Out("s -a\r\n"),
                Out(P),
            ],
            vec![Cmd("ls -a")],
        ),
        (
            "ctrl-u then retyping",
            vec![
                Out(P),
                In("rm -rf /"),
                Out("rm -rf /"),
                In("\x15"),
                Out(&erase_ctrl_u),
                In("ls\r"),
                Out("ls\r\n"),
                Out(P),
            ],
            vec![Cmd("ls")],
        ),
        (
            "tab completion is what the screen shows",
            vec![
                Out(P),
                In("cat /et"),
                Out("cat /et"),
                In("\t"),
                Out("c/"),
                In("hos\t"),
                Out("hosts "),
                In("\r"),
                Out("\r\n127.0.0.1 localhost\r\n"),
                Out(P),
            ],
            vec![Cmd("cat /etc/hosts")],
        ),
        (
            "tab completion list redraws the prompt",
            vec![
                Out(P),
                In("ls /b"),
                Out("ls /b"),
                In("\t\t"),
                Out("\x07"),
                Out("\r\nbin/  boot/\r\n"),
                Out(P),
                Out("ls /b"),
                In("in\r"),
                Out("in\r\n"),
                Out(P),
            ],
            vec![Cmd("ls /bin")],
        ),
        (
            "tab completion typed ahead of the echo",
            vec![Out(P), In("cat /et\t\r"), Out("cat /etc/\r\n"), Out(P)],
            vec![Cmd("cat /etc/")],
        ),
        (
            "history recall with up-arrow",
            vec![
                Out(P),
                In("\x1b[A"),
                Out("ls -la /var/log"),
                In("\r"),
                Out("\r\n"),
                Out(P),
            ],
            vec![Cmd("ls -la /var/log")],
        ),
        (
            "history recall replacing a longer line",
            vec![
                Out(P),
                In("echo hello world!"),
                Out("echo hello world!"),
                In("\x1bOA"),
                Out(&history_redraw),
                In("\r"),
                Out("\r\n"),
                Out(P),
            ],
            vec![Cmd("ls -l")],
        ),
        (
            "history recall then edit",
            vec![
                Out(P),
                In("\x1b[A"),
                Out("ls"),
                In(" -l\r"),
                Out(" -l\r\n"),
                Out(P),
            ],
            vec![Cmd("ls -l")],
        ),
        (
            "reverse search redraws the prompt before accepting",
            vec![
                Out(P),
                In("\x12"),
                Out("\r\x1b[K(reverse-i-search)`': "),
                In("ssh"),
                Out("\r\x1b[K(reverse-i-search)`ssh': ssh db-1"),
                In("\r"),
                Out(&search_accept),
            ],
            vec![Cmd("ssh db-1")],
        ),
        (
            "ctrl-l clears the screen and redraws",
            vec![
                Out("old output\r\n"),
                Out(P),
                In("df"),
                Out("df"),
                In("\x0c"),
                Out(&clear_redraw),
                In(" -h\r"),
                Out(" -h\r\n"),
            ],
            vec![Cmd("df -h")],
        ),
        (
            "line continuation: two parts, the second flagged",
            vec![
                Out(P),
                In("echo one \\\r"),
                Out("echo one \\\r\n> "),
                In("two\r"),
                Out("two\r\none two\r\n"),
                Out(P),
                In("echo c:\\\\\r"),
                Out("echo c:\\\\\r\nc:\\\r\n"),
                Out(P),
                In("id\r"),
                Out("id\r\n"),
            ],
            vec![
                Cmd("echo one \\"),
                Cont("two"),
                Cmd("echo c:\\\\"),
                Cmd("id"),
            ],
        ),
        (
            "pasted block of several lines",
            vec![
                Out(P),
                In("ls\rpwd\rwhoami\r"),
                Out("ls\r\n"),
                Out("a.txt\r\n"),
                Out(P),
                Out("pwd\r\n/home/user\r\n"),
                Out(P),
                Out("whoami\r\nuser\r\n"),
                Out(P),
            ],
            vec![Cmd("ls"), Ahead("pwd"), Ahead("whoami")],
        ),
        (
            "typed ahead while a command runs (kernel echo), then shell echo",
            vec![
                Out(P),
                In("sleep 5\r"),
                Out("sleep 5\r\n"),
                In("ls\r"),
                Out("ls\r\n"),
                Out(P),
                Out("ls\r\n"),
                Out("a.txt\r\n"),
                Out(P),
            ],
            vec![Cmd("sleep 5"), Cmd("ls")],
        ),
        (
            "typed-ahead line with edits, found after the prompt",
            vec![
                Out(P),
                In("sleep 1\r\x1b[Als\r"),
                Out("sleep 1\r\n"),
                Out("zzz\r\n"),
                Out(P),
                Out("ls\r\n"),
            ],
            vec![Cmd("sleep 1"), Guess("ls")],
        ),
        (
            "bracketed paste: one command of several lines at Enter",
            vec![
                Out("\x1b[?2004h"),
                Out(P),
                In("\x1b[200~cd /tmp\rls\x1b[201~"),
                Out("\x1b[7mcd /tmp\r\nls\x1b[27m"),
                In("\r"),
                Out("\x1b[?2004l\r\n"),
                Out("a.txt\r\n"),
            ],
            vec![Cmd("cd /tmp\nls")],
        ),
        (
            "full-screen program: keystrokes are not commands",
            vec![
                Out(P),
                In("vim notes.txt\r"),
                Out("vim notes.txt\r\n"),
                Out("\x1b[?1049h\x1b[22;0;0t\x1b[H\x1b[2J~\r\n~\r\n\"notes.txt\" 0L"),
                In("ihello\r"),
                Out("hello\r\n"),
                In("\x1b:wq\r"),
                Out("\r\n:wq\r\n"),
                Out("\x1b[?1049l\x1b[23;0;0t"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
            ],
            vec![Cmd("vim notes.txt"), Full(true), Full(false), Cmd("ls")],
        ),
        (
            "full-screen program starting in the same chunk as the newline",
            vec![
                Out(P),
                In("less /etc/passwd\r"),
                Out("less /etc/passwd\r\n\x1b[?1049h\x1b[?1h\x1b=root:x:0:0\r\n"),
                In("/bash\r"),
                Out("bash:x\r\n"),
                In("q"),
                Out("\r\x1b[K\x1b[?1l\x1b>\x1b[?1049l"),
                Out(P),
            ],
            vec![Cmd("less /etc/passwd"), Full(true), Full(false)],
        ),
        (
            "full-screen program started before the shell's newline",
            vec![
                Out(P),
                In("top\r"),
                Out("top"),
                Out("\x1b[?1049h\x1b[H\x1b[2Jtop - 10:00:00\r\n"),
                In("q"),
                Out("\x1b[?1049l"),
            ],
            vec![Cmd("top"), Full(true), Full(false)],
        ),
        (
            "sudo password: echo off",
            vec![
                Out(P),
                In("sudo id\r"),
                Out("sudo id\r\n"),
                Out("[sudo] password for user: "),
                In("hunter2"),
                In("\r"),
                Out("\r\n"),
                Out("uid=0(root) gid=0(root)\r\n"),
                Out(P),
                In("exit\r"),
                Out("exit\r\n"),
            ],
            vec![Cmd("sudo id"), EchoOff, Cmd("exit")],
        ),
        (
            "read -s: no newline after the hidden line",
            vec![
                Out(P),
                In("read -s x\r"),
                Out("read -s x\r\n"),
                In("secret\r"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
                Out(P),
            ],
            vec![Cmd("read -s x"), EchoOff, Ahead("ls")],
        ),
        (
            "password typed ahead of its prompt",
            vec![
                Out(P),
                In("sudo -v\r"),
                In("hunter2\r"),
                Out("sudo -v\r\n"),
                Out("[sudo] password for user: \r\n"),
                Out(P),
                In("id\r"),
                Out("id\r\n"),
            ],
            vec![Cmd("sudo -v"), EchoOff, Ahead("id")],
        ),
        (
            "masked echo counts as echo off",
            vec![
                Out("Enter passphrase: "),
                In("abc"),
                Out("***"),
                In("\r"),
                Out("\r\n"),
            ],
            vec![EchoOff],
        ),
        (
            "ctrl-c abandons a line",
            vec![
                Out(P),
                In("rm -rf /tmp/x"),
                Out("rm -rf /tmp/x"),
                In("\x03"),
                Out("^C\r\n"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
            ],
            vec![Cmd("ls")],
        ),
        (
            "long line wrapping past the terminal width",
            vec![Out(P), In(&long_cmd), Out(&long_cmd), In("\r"), Out("\r\n")],
            vec![Cmd(Box::leak(long_cmd.clone().into_boxed_str()))],
        ),
        (
            "long prompt that wraps itself",
            vec![Out(&wrapped_prompt), In("ls\r"), Out("ls\r\n")],
            vec![Cmd("ls")],
        ),
        (
            "prompt with ANSI colors",
            vec![
                Out(COLOR_P),
                In("git status\r"),
                Out("git status\r\n"),
                Out("On branch main\r\n"),
                Out(COLOR_P),
            ],
            vec![Cmd("git status")],
        ),
        (
            "command redrawn in colors by a highlighter",
            vec![
                Out(P),
                In("ls"),
                Out("\x1b[31ml\x1b[0m"),
                Out("\x08\x1b[32mls\x1b[0m"),
                In("\r"),
                Out("\r\n"),
            ],
            vec![Cmd("ls")],
        ),
        (
            "wide characters",
            vec![Out(P), In("echo 日本語\r"), Out("echo 日本語\r\n")],
            vec![Cmd("echo 日本語")],
        ),
    ];
    for (name, steps, want) in cases {
        // 40 columns: the long cases wrap.
        let got = run(40, 10, &steps);
        assert_eq!(wants(&got.events), want, "{name}");
    }
}

/// The same sessions give the same lines however the output is chunked.
#[test]
fn output_chunking_does_not_matter_for_echoed_lines() {
    let session: Vec<Io> = vec![
        Out(P),
        In("ls -l"),
        Out("ls -l"),
        In("\r"),
        Out("\r\ntotal 0\r\n"),
        Out(COLOR_P),
        In("echo 日本語\r"),
        Out("echo 日本語\r\n日本語\r\n"),
        Out(P),
    ];
    let want = vec![Cmd("ls -l"), Cmd("echo 日本語")];
    for size in [1, 2, 3, 7, 100] {
        let mut steps = Vec::new();
        for step in &session {
            match step {
                In(s) => steps.push(In(s)),
                Out(s) => {
                    let mut start = 0;
                    while start < s.len() {
                        let mut end = (start + size).min(s.len());
                        while !s.is_char_boundary(end) {
                            end += 1;
                        }
                        steps.push(Out(&s[start..end]));
                        start = end;
                    }
                }
            }
        }
        let got = run(80, 24, &steps);
        assert_eq!(wants(&got.events), want, "chunks of {size}");
    }
}

/// What input may be recorded: passwords never, echoed lines and full-screen keys always.
#[test]
fn kept_input() {
    let cases: Vec<(&str, Vec<Io>, &str)> = vec![
        (
            "echoed line",
            vec![Out(P), In("l"), Out("l"), In("s\r"), Out("s\r\n")],
            "ls\r",
        ),
        (
            "password dropped",
            vec![
                Out(P),
                In("sudo id\r"),
                Out("sudo id\r\n[sudo] password for user: "),
                In("hun"),
                In("ter2\r"),
                Out("\r\n"),
                Out(P),
                In("id\r"),
                Out("id\r\n"),
            ],
            "sudo id\rid\r",
        ),
        (
            "password typed ahead dropped",
            vec![
                Out(P),
                In("sudo -v\r"),
                In("hunter2\r"),
                Out("sudo -v\r\n"),
                Out("[sudo] password for user: \r\n"),
                Out(P),
                In("id\r"),
                Out("id\r\n"),
            ],
            "sudo -v\rid\r",
        ),
        (
            "read -s dropped",
            vec![
                Out(P),
                In("read -s x\r"),
                Out("read -s x\r\n"),
                In("secret\r"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
            ],
            "read -s x\rls\r",
        ),
        (
            "half-typed password then ctrl-c dropped, ctrl-c kept",
            vec![Out("Password: "), In("hunt"), In("\x03"), Out("^C\r\n")],
            "\x03",
        ),
        (
            "full-screen keys kept",
            vec![
                Out(P),
                In("vi\r"),
                Out("vi\r\n\x1b[?1049h"),
                In("ihi\x1b:q!\r"),
                Out("\x1b[?1049l"),
            ],
            "vi\rihi\x1b:q!\r",
        ),
        (
            "arrow keys alone kept",
            vec![Out(P), In("\x1b[A\r"), Out("ls\r\n")],
            "\x1b[A\r",
        ),
        (
            "unfinished password at the end dropped",
            vec![Out("Password: "), In("hunter")],
            "",
        ),
    ];
    for (name, steps, want) in cases {
        let got = run(80, 24, &steps);
        assert_eq!(String::from_utf8_lossy(&got.kept_input), want, "{name}");
    }
}

#[test]
fn echoed_input_is_released_before_enter() {
    let mut d = Detector::new(80, 24);
    d.output(P.as_bytes());
    let step = d.input(b"l");
    assert_eq!(step.segments[0].disposition, Disposition::Hold(0));
    let events = d.output(b"l");
    assert_eq!(
        events,
        vec![DetectorEvent::LineEcho {
            line: 0,
            echoed: true
        }]
    );
    // Once the line echoes, its further input is kept at once.
    let step = d.input(b"s");
    assert_eq!(step.segments[0].disposition, Disposition::Keep);
}

#[test]
fn waiting_lines_are_bounded() {
    let mut d = Detector::new(80, 24);
    d.output(P.as_bytes());
    let typed = "x\r".repeat(MAX_WAITING_LINES + 10);
    let step = d.input(typed.as_bytes());
    assert!(d.lines.waiting.len() <= MAX_WAITING_LINES);
    let decided = step
        .events
        .iter()
        .filter(|e| matches!(e, DetectorEvent::LineEcho { .. }))
        .count();
    assert!(decided >= 10);
}

#[test]
fn huge_terminal_is_modelled_bounded() {
    let d = Detector::new(u32::MAX, u32::MAX);
    assert_eq!(
        d.screen().size(),
        (super::super::MAX_ROWS, super::super::MAX_COLS)
    );
    let d = Detector::new(0, 0);
    assert_eq!(d.screen().size(), (1, 1));
}

#[test]
fn resize_keeps_detecting() {
    let mut d = Detector::new(80, 24);
    d.output(P.as_bytes());
    d.input(b"ls");
    d.output(b"ls");
    d.resize(100, 30);
    d.input(b"\r");
    let events = d.output(b"\r\n");
    assert_eq!(wants(&events), vec![Cmd("ls")]);
}

#[test]
fn key_lexer_cases() {
    let cases: &[(&str, &[u8], &[Key])] = &[
        ("letters", b"ab", &[Key::Text, Key::Text]),
        ("utf-8", "é".as_bytes(), &[Key::Text, Key::Text]),
        ("enter", b"\r\n", &[Key::Enter, Key::Enter]),
        ("backspaces", b"\x7f\x08", &[Key::Backspace, Key::Backspace]),
        (
            "ctrl keys",
            b"\x15\x17\x03\x01",
            &[Key::KillLine, Key::KillWord, Key::Interrupt, Key::Other],
        ),
        ("tab", b"\t", &[Key::Other]),
        ("csi arrow", b"\x1b[A", &[Key::Other]),
        ("ss3 arrow", b"\x1bOB", &[Key::Other]),
        ("csi with params", b"\x1b[1;5C", &[Key::Other]),
        ("alt-b", b"\x1bb", &[Key::Other]),
        (
            "paste markers",
            b"\x1b[200~a\x1b[201~",
            &[Key::PasteStart, Key::Text, Key::PasteEnd],
        ),
        (
            "private csi is not a paste marker",
            b"\x1b[?200~",
            &[Key::Other],
        ),
    ];
    for (name, bytes, want) in cases {
        let mut lexer = KeyLexer::default();
        let got: Vec<Key> = bytes.iter().filter_map(|&b| lexer.feed(b)).collect();
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn typed_text_simulation() {
    let cases: &[(&str, &[u8], &str, bool)] = &[
        ("plain", b"ls -l", "ls -l", true),
        ("backspace", b"lx\x7fs", "ls", true),
        ("backspace utf-8", "é\x7fe".as_bytes(), "e", true),
        ("kill line", b"rm -rf /\x15ls", "ls", true),
        ("kill word", b"git push --force\x17", "git push ", true),
        ("kill word with trailing blanks", b"a bc  \x17", "a ", true),
        ("arrow makes it uncertain", b"ls\x1b[D", "ls", false),
    ];
    for (name, bytes, text, certain) in cases {
        let mut lexer = KeyLexer::default();
        let mut typed = Typed::default();
        for &b in *bytes {
            match lexer.feed(b) {
                Some(Key::Text) => typed.push(b),
                Some(Key::Backspace) => typed.backspace(),
                Some(Key::KillLine) => typed.kill_line(),
                Some(Key::KillWord) => typed.kill_word(),
                Some(Key::Other) => typed.uncertain(),
                Some(Key::Enter | Key::Interrupt | Key::PasteStart | Key::PasteEnd) | None => {}
            }
        }
        assert_eq!(
            (typed.text().as_str(), typed.certain),
            (*text, *certain),
            "{name}"
        );
    }
}

#[test]
fn small_helpers() {
    let prompts = [
        ("user@host:~$ ls -l", Some("ls -l")),
        ("[root@db ~]# systemctl status", Some("systemctl status")),
        ("> echo a > b", Some("echo a > b")),
        ("no prompt here", None),
        ("$ ", None),
    ];
    for (line, want) in prompts {
        assert_eq!(after_prompt(line), want, "{line}");
    }
    let suffixes = [
        ("$ pwd", "pwd", true),
        ("pwd", "pwd", true),
        ("$ cwd", "wd", false),
        ("$ pwd  ", "pwd", true),
    ];
    for (line, word, want) in suffixes {
        assert_eq!(ends_with_word(line, word), want, "{line}");
    }
    let backslashes = [
        ("a \\", true),
        ("a \\\\", false),
        ("a", false),
        ("\\\\\\", true),
    ];
    for (text, want) in backslashes {
        assert_eq!(ends_with_unescaped_backslash(text), want, "{text}");
    }
}

/// Each Enter is announced in the input step that carries it, before the shell can answer:
/// with the text on screen when the echo was already seen, without any text otherwise.
#[test]
fn enter_is_announced_before_it_reaches_the_shell() {
    let entered = |events: &[DetectorEvent]| -> Vec<(LineId, Option<String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::Entered { line, shown } => Some((*line, shown.clone())),
                _ => None,
            })
            .collect()
    };
    let mut d = Detector::new(80, 24);
    d.output(P.as_bytes());
    // Typed and echoed, then Enter: the line as shown.
    d.input(b"ls -l");
    d.output(b"ls -l");
    let step = d.input(b"\r");
    assert_eq!(entered(&step.events), [(0, Some("ls -l".to_string()))]);
    d.output(b"\r\ntotal 0\r\n");
    d.output(P.as_bytes());
    // A password at a prompt that does not echo: announced, never with its text.
    d.output(b"Password: ");
    let step = d.input(b"hunter2\r");
    assert_eq!(entered(&step.events), [(1, None)]);
    d.output(b"\r\n");
    d.output(P.as_bytes());
    // Typed ahead faster than the echo: announced without text; the Command comes later.
    let step = d.input(b"uptime\rdate\r");
    assert_eq!(entered(&step.events), [(2, None), (3, None)]);
    // Ctrl-C abandons a line: nothing is announced for it.
    d.output(b"uptime\r\n 10:00 up\r\n");
    d.output(P.as_bytes());
    let step = d.input(b"rm -rf /tmp/x\x03");
    assert!(entered(&step.events).is_empty());
    // In a full-screen program keys are not lines.
    d.output(b"\x1b[?1049h");
    let step = d.input(b":wq\r");
    assert!(entered(&step.events).is_empty());
}
