//! Tables of sessions as bash echoes them, and what must be detected.
use super::keys::Key;
use super::screen::{after_prompt, asks_for_secret, ends_with_word};
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
    /// Found by the typed text (a typed-ahead line).
    Ahead(&'static str),
    /// Found after a prompt marker.
    Guess(&'static str),
    /// From the keys, editing followed.
    Keys(&'static str),
    /// From the keys, every printable key.
    Raw(&'static str),
    EchoOff,
    Full(bool),
}
use Want::{Ahead, Cmd, EchoOff, Full, Guess, Keys, Raw};

const P: &str = "user@host:~$ ";
/// A colored prompt, as bash prints it with `\[\e[...m\]`.
const COLOR_P: &str = "\x1b[01;32muser@host\x1b[00m:\x1b[01;34m~/src\x1b[00m$ ";

fn want_of(event: &DetectorEvent) -> Option<Want> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    match event {
        DetectorEvent::Command(d) if d.echo_off => {
            assert!(d.command.is_empty(), "echo-off lines carry no text");
            assert!(d.hidden_chars.is_some(), "echo-off lines tell their length");
            Some(EchoOff)
        }
        DetectorEvent::Command(d) => Some(match d.located {
            Located::Anchor => Cmd(leak(&d.command)),
            Located::TypedText => Ahead(leak(&d.command)),
            Located::PromptGuess => Guess(leak(&d.command)),
            Located::Keys => Keys(leak(&d.command)),
            Located::RawKeys => Raw(leak(&d.command)),
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
    let typed: Vec<u8> = steps
        .iter()
        .flat_map(|step| match step {
            In(s) => s.as_bytes().to_vec(),
            Out(_) => Vec::new(),
        })
        .collect();
    let newlines = typed.iter().filter(|&&b| b == b'\r' || b == b'\n').count();
    let mut lexer = KeyLexer::default();
    let enters = typed
        .iter()
        .filter(|&&b| lexer.feed(b) == Some(Key::Enter))
        .count();
    let entered = events
        .iter()
        .filter(|e| matches!(e, DetectorEvent::Entered { .. }))
        .count();
    assert!(enters >= newlines, "every CR or LF typed is Enter");
    assert_eq!(entered, enters, "every Enter typed is announced");
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
            "alt-. yanks the last argument: the screen has the line",
            vec![
                Out(P),
                In("cat \x1b.\r"),
                Out("cat /etc/hosts\r\n"),
                Out(P),
                In("\x1b.\r"),
                Out("/etc/hosts\r\n"),
            ],
            vec![Cmd("cat /etc/hosts"), Cmd("/etc/hosts")],
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
            "line continuation: one command, as bash reads it",
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
            vec![Cmd("echo one two"), Cmd("echo c:\\\\"), Cmd("id")],
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
            "bracketed paste: each pasted line is its own line",
            vec![
                Out("\x1b[?2004h"),
                Out(P),
                In("\x1b[200~cd /tmp\rls\x1b[201~"),
                Out("\x1b[7mcd /tmp\r\nls\x1b[27m"),
                In("\r"),
                Out("\x1b[?2004l\r\n"),
                Out("a.txt\r\n"),
            ],
            vec![Cmd("cd /tmp"), Ahead("ls")],
        ),
        (
            "full-screen program: lines entered in it come out from the keys",
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
            vec![
                Cmd("vim notes.txt"),
                Full(true),
                Keys("ihello"),
                Raw(":wq"),
                Full(false),
                Cmd("ls"),
            ],
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
            vec![
                Cmd("less /etc/passwd"),
                Full(true),
                Keys("/bash"),
                Full(false),
            ],
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
            "read -s -p Token: no newline after the hidden line",
            vec![
                Out(P),
                In("read -s -p 'Token: ' x\r"),
                Out("read -s -p 'Token: ' x\r\nToken: "),
                In("secret\r"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
                Out(P),
            ],
            // The shell's prompt after the hidden line anchors `ls`.
            vec![Cmd("read -s -p 'Token: ' x"), EchoOff, Cmd("ls")],
        ),
        (
            "read -s without a prompt: not a secret prompt, so a command",
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
            vec![Cmd("read -s x"), Keys("secret"), Cmd("ls")],
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
        let got = run(40, 10, &single_characters(&steps));
        assert_eq!(
            command_texts(&got.events),
            command_texts(&want_events(&want)),
            "{name}, output in single characters"
        );
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
            "read -s at a Token: prompt dropped",
            vec![
                Out(P),
                In("read -s -p 'Token: ' x\r"),
                Out("read -s -p 'Token: ' x\r\nToken: "),
                In("secret\r"),
                Out(P),
                In("ls\r"),
                Out("ls\r\n"),
            ],
            "read -s -p 'Token: ' x\rls\r",
        ),
        (
            "line typed with echo off at a shell prompt kept",
            vec![
                Out(P),
                In("stty -echo\r"),
                Out("stty -echo\r\n"),
                Out(P),
                In("id\r"),
                Out("uid=0(root)\r\n"),
                Out(P),
            ],
            "stty -echo\rid\r",
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
    // At a shell prompt input is recorded at once.
    d.output(P.as_bytes());
    let step = d.input(b"l");
    assert_eq!(step.segments[0].disposition, Disposition::Keep);
    d.input(b"s\r");
    d.output(b"ls\r\n");
    // On an empty row (a password prompt may still come) it is held until it echoes.
    let step = d.input(b"l");
    assert_eq!(step.segments[0].disposition, Disposition::Hold(1));
    let events = d.output(b"l");
    assert_eq!(
        events,
        vec![DetectorEvent::LineEcho {
            line: 1,
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
    let mut d = Detector::new(u32::MAX, u32::MAX);
    assert_eq!(
        d.screen().size(),
        (super::super::MAX_ROWS, super::super::MAX_COLS)
    );
    let mut d = Detector::new(0, 0);
    assert_eq!(
        d.screen().size(),
        (super::super::MIN_MODEL, super::super::MIN_MODEL)
    );
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
        ("alt-b", b"\x1bb", &[Key::Meta(b'b')]),
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
        ("escape then enter is enter", b"\x1b\r", &[Key::Enter]),
        ("ctrl-o runs the line in bash", b"\x0f", &[Key::Enter]),
        ("ctrl-d hands the line to sh", b"\x04", &[Key::Enter]),
        (
            "esc ctrl-e expands (runs $(...))",
            b"\x1b\x05",
            &[Key::RunsLine],
        ),
        (
            "ctrl-x ctrl-e runs the edited line",
            b"\x18\x05",
            &[Key::Other, Key::RunsLine],
        ),
        ("ctrl-e alone moves the cursor", b"\x05", &[Key::Other]),
        ("keypad enter in application mode", b"\x1bOM", &[Key::Enter]),
        ("kitty enter", b"\x1b[13u", &[Key::Enter]),
        ("kitty shift-enter", b"\x1b[13;2u", &[Key::Enter]),
        (
            "kitty enter with sub-parameters",
            b"\x1b[13:13;1:1u",
            &[Key::Enter],
        ),
        ("kitty keypad enter", b"\x1b[57414u", &[Key::Enter]),
        ("modifyOtherKeys enter", b"\x1b[27;5;13~", &[Key::Enter]),
        ("kitty letter", b"\x1b[97u", &[Key::Char('a')]),
        ("kitty shifted letter", b"\x1b[97;2u", &[Key::Char('A')]),
        ("kitty ctrl-c", b"\x1b[99;5u", &[Key::Interrupt]),
        ("kitty backspace", b"\x1b[127u", &[Key::Backspace]),
        ("kitty alt-b", b"\x1b[98;3u", &[Key::Other]),
        ("kitty escape", b"\x1b[27u", &[Key::Other]),
        ("kitty function key", b"\x1b[57364u", &[Key::Other]),
        ("private csi u", b"\x1b[>13u", &[Key::Other]),
        (
            "paste marker with a parameter more",
            b"\x1b[200;1~",
            &[Key::Other],
        ),
        ("enter inside a csi is enter", b"\x1b[1\n", &[Key::Enter]),
        ("ctrl-c inside ss3", b"\x1bO\x03", &[Key::Interrupt]),
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
                Some(Key::Char(c)) => typed.push_char(c),
                Some(Key::Backspace) => typed.backspace(),
                Some(Key::KillLine) => typed.kill_line(),
                Some(Key::KillWord) => typed.kill_word(),
                Some(Key::Other | Key::RunsLine) => typed.uncertain(),
                Some(Key::Meta(b)) => typed.meta(b),
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
    let secret_prompts = [
        ("[sudo] password for alice: ", true),
        ("Password:", true),
        ("alice@db-1's password: ", true),
        ("Enter passphrase for key '/home/a/.ssh/id_ed25519': ", true),
        ("Enter pass phrase for server.key:", true),
        ("Enter PIN for 'PIV Card Holder pin (PIV_II)': ", true),
        ("Token: ", true),
        ("Verification code: ", true),
        ("OTP: ", true),
        ("Enter your secret? ", true),
        ("(current) UNIX password: ", true),
        ("New password: ", true),
        ("[sudo] Passwort für alice: ", true),
        ("Mot de passe : ", true),
        ("密码：", true),
        ("user@host:~$ ", false),
        ("user@host:~/password$ ", false),
        ("[root@db ~]# ", false),
        ("", false),
        ("Passwords: ", false),
        ("ping: ", false),
        ("Continue? [y/N] ", false),
        ("Username: ", false),
        ("> ", false),
    ];
    for (prompt, want) in secret_prompts {
        assert_eq!(asks_for_secret(prompt), want, "{prompt:?}");
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
    // Typed faster than the echo: the first line from its keys (its prompt is known and asks
    // for no secret); the one typed ahead of its prompt without text. The Command comes later.
    let step = d.input(b"uptime\rdate\r");
    assert_eq!(
        entered(&step.events),
        [(2, Some("uptime".to_string())), (3, None)]
    );
    // Ctrl-C abandons a line: nothing is announced for it.
    d.output(b"uptime\r\n 10:00 up\r\n");
    d.output(P.as_bytes());
    let step = d.input(b"rm -rf /tmp/x\x03");
    assert!(entered(&step.events).is_empty());
    // In a full-screen program Enter is announced too, with the keys.
    d.output(b"\x1b[?1049h~\r\n:");
    let step = d.input(b":wq\r");
    assert_eq!(entered(&step.events), [(5, Some(":wq".to_string()))]);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A named session at a terminal size (cols, rows), and what must be detected.
type SizedCase<'a> = (&'a str, (u32, u32), Vec<Io<'a>>, Vec<Want>);

/// Ways to run a command without a `command` event, as bash (or sh) shows them: each must come
/// out as a command.
#[test]
fn evasions_come_out_as_commands() {
    let long_line = leak(format!("echo {}", "a".repeat(295)));
    let long_paste = leak(format!("echo {}", "b".repeat(4995)));
    let long_typed = leak(format!("{long_line}\r"));
    let long_echo = leak(format!("{long_line}\r\n"));
    let paste_typed = leak(format!("\x1b[200~{long_paste}\x1b[201~\r"));
    let paste_echo = leak(format!("\x1b[7m{long_paste}\x1b[27m\r\n"));
    let cases: Vec<SizedCase> = vec![
        (
            "stty -echo at the shell prompt: every later line is a command from its keys",
            (80, 24),
            vec![
                Out(P),
                In("stty -echo\r"),
                Out("stty -echo\r\n"),
                Out(P),
                In("id\r"),
                Out("uid=1000(user) gid=1000(user)\r\n"),
                Out(P),
                In("lx\x7fs -a\r"),
                Out(".  ..\r\n"),
                Out(P),
                In("\x1b[Auname\r"),
                Out("Linux\r\n"),
                Out(P),
                In("echo hi\r"),
                Out("hi\r\n"),
                Out(P),
            ],
            vec![
                Cmd("stty -echo"),
                Keys("id"),
                Keys("ls -a"),
                Raw("uname"),
                Keys("echo hi"),
            ],
        ),
        (
            "stty -echo: a command without output is read when the next line begins",
            (80, 24),
            vec![
                Out(P),
                In("touch x\r"),
                Out(P),
                In("rm -rf /tmp/y\r"),
                Out(P),
                In("id\r"),
                Out("uid=0(root)\r\n"),
                Out(P),
            ],
            vec![Keys("touch x"), Keys("rm -rf /tmp/y"), Keys("id")],
        ),
        (
            "stty -echo: a pasted block, never shown, still comes out line by line",
            (80, 24),
            vec![
                Out(P),
                In("ls\rpwd\r"),
                Out("a.txt\r\n"),
                Out(P),
                Out("/home/user\r\n"),
                Out(P),
            ],
            vec![Keys("ls"), Keys("pwd")],
        ),
        (
            "stty -echo: sudo's password is still hidden, sudo is not",
            (80, 24),
            vec![
                Out(P),
                In("sudo id\r"),
                Out("[sudo] password for user: "),
                In("hunter2\r"),
                Out("\r\nuid=0(root)\r\n"),
                Out(P),
            ],
            vec![Keys("sudo id"), EchoOff],
        ),
        (
            "ssh key passphrase is hidden",
            (80, 24),
            vec![
                Out(P),
                In("ssh db-1\r"),
                Out("ssh db-1\r\n"),
                Out("Enter passphrase for key '/home/user/.ssh/id_ed25519': "),
                In("correct horse\r"),
                Out("\r\n"),
            ],
            vec![Cmd("ssh db-1"), EchoOff],
        ),
        (
            "password typed on an empty row before sudo's prompt is hidden",
            (80, 24),
            vec![
                Out(P),
                In("sudo id\r"),
                Out("sudo id\r\n"),
                In("hunter2\r"),
                Out("[sudo] password for user: "),
                Out("\r\nuid=0(root)\r\n"),
            ],
            vec![Cmd("sudo id"), EchoOff],
        ),
        (
            "a shell in the alternate screen, with an empty prompt",
            (80, 24),
            vec![
                Out(P),
                In("printf '\\e[?1049h'; PS1=\r"),
                Out("printf '\\e[?1049h'; PS1=\r\n"),
                Out("\x1b[?1049h"),
                In("id\r"),
                Out("id\r\nuid=0(root)\r\n"),
                In("l"),
                Out("l"),
                In("s"),
                Out("s"),
                In("\r"),
                Out("\r\na.txt\r\n"),
            ],
            vec![
                Cmd("printf '\\e[?1049h'; PS1="),
                Full(true),
                Keys("id"),
                Cmd("ls"),
            ],
        ),
        (
            "the mode switched between typing and Enter",
            (80, 24),
            vec![
                Out(P),
                In("rm -rf /tmp/x"),
                Out("rm -rf /tmp/x"),
                Out("\x1b[?1049h"),
                In("\r"),
            ],
            vec![Full(true), Keys("rm -rf /tmp/x")],
        ),
        (
            "keys typed under a forged full-screen mode, Enter after it ends",
            (80, 24),
            vec![
                Out(P),
                Out("\x1b[?1049h"),
                In("rm -rf /tmp/x"),
                Out("\x1b[?1049l"),
                In("\r"),
                Out("\r\n"),
            ],
            vec![Full(true), Full(false), Raw("rm -rf /tmp/x")],
        ),
        (
            "shell escapes in vim and less",
            (80, 24),
            vec![
                Out(P),
                In("vim\r"),
                Out("vim\r\n\x1b[?1049h~\r\n~"),
                In(":!id\r"),
                Out("\x1b[?1049l\r\nuid=0(root)\r\nPress ENTER"),
                In("\r"),
                Out("\x1b[?1049h~"),
                In(":q\r"),
                Out("\x1b[?1049l"),
                Out(P),
                In("less f\r"),
                Out("less f\r\n\x1b[?1049hline\r\n:"),
                In("!"),
                Out("!"),
                In("id"),
                Out("id"),
                In("\r"),
                Out("\r\nuid=0(root)\r\n"),
                In("q"),
                Out("\x1b[?1049l"),
            ],
            vec![
                Cmd("vim"),
                Full(true),
                Keys(":!id"),
                Full(false),
                Full(true),
                Keys(":q"),
                Full(false),
                Cmd("less f"),
                Full(true),
                Cmd("!id"),
                Full(false),
            ],
        ),
        (
            "bracketed paste forged for sh: every pasted line is a line",
            (80, 24),
            vec![
                Out("\x1b[?2004h$ "),
                In("\x1b[200~id\nuname -a\n"),
                Out("^[[200~id\r\nuname -a\r\n"),
                Out("sh: 1: \x1b[200~id: not found\r\n$ Linux host\r\n$ "),
            ],
            vec![Keys("id"), Ahead("uname -a")],
        ),
        (
            "bracketed paste without its end marker",
            (80, 24),
            vec![
                Out("\x1b[?2004h"),
                Out(P),
                In("\x1b[200~whoami\rid\r"),
                Out("whoami\r\nuser\r\n"),
                Out(P),
                Out("id\r\nuid=0(root)\r\n"),
            ],
            vec![Cmd("whoami"), Ahead("id")],
        ),
        (
            "Enter sent as a sequence the node turned on, or as ctrl-O",
            (80, 24),
            vec![
                Out("\x1b=\x1b[>8u\x1b[>4;2m"),
                Out(P),
                In("id\x1bOM"),
                Out("id\r\nuid=0(root)\r\n"),
                Out(P),
                In("\x1b[105u\x1b[100u\x1b[13u"),
                Out("id\r\nuid=0(root)\r\n"),
                Out(P),
                In("pwd\x1b[27;5;13~"),
                Out("pwd\r\n/root\r\n"),
                Out(P),
                In("whoami\x0f"),
                Out("whoami\r\nroot\r\n"),
                Out(P),
            ],
            vec![Cmd("id"), Cmd("id"), Cmd("pwd"), Cmd("whoami")],
        ),
        (
            "ctrl-D hands sh the line without Enter",
            (80, 24),
            vec![
                Out(P),
                In("touch /tmp/n"),
                Out("touch /tmp/n"),
                In("\x04"),
                Out("\r\n"),
                Out(P),
            ],
            vec![Cmd("touch /tmp/n")],
        ),
        (
            "shell-expand-line, the line then killed and the shell left with ctrl-D",
            (80, 24),
            vec![
                Out(P),
                In("echo $(touch /tmp/m)"),
                Out("echo $(touch /tmp/m)"),
                In("\x1b\x05"),
                Out("\r$ echo \x1b[K"),
                In("\x15"),
                Out("\r$ \x1b[K"),
                In("\x04"),
                Out("exit\r\n"),
            ],
            vec![Cmd("echo $(touch /tmp/m)")],
        ),
        (
            "kitty keys under stty -echo come from the keys",
            (80, 24),
            vec![
                Out(P),
                In("\x1b[105u\x1b[120u\x1b[127u\x1b[100u\x1b[13u"),
                Out("uid=0(root)\r\n"),
                Out(P),
            ],
            vec![Keys("id")],
        ),
        (
            "a line longer than a 20x5 screen",
            (20, 5),
            vec![Out(P), In(long_line), Out(long_line), In("\r"), Out("\r\n")],
            vec![Keys(long_line)],
        ),
        (
            "a line longer than a 20x5 screen, typed in one go",
            (20, 5),
            vec![Out(P), In(long_typed), Out(long_echo)],
            vec![Keys(long_line)],
        ),
        (
            "a 5000-character paste at 80x24",
            (80, 24),
            vec![Out("\x1b[?2004h"), Out(P), In(paste_typed), Out(paste_echo)],
            vec![Keys(long_paste)],
        ),
        (
            "backslash-newline: one command as bash reads it",
            (80, 24),
            vec![
                Out(P),
                In("echo eps\\\r"),
                Out("echo eps\\\r\n> "),
                In("ilon-5\r"),
                Out("ilon-5\r\nepsilon-5\r\n"),
                Out(P),
            ],
            vec![Cmd("echo epsilon-5")],
        ),
        (
            "open quotes",
            (80, 24),
            vec![
                Out(P),
                In("echo 'a\r"),
                Out("echo 'a\r\n> "),
                In("b' \"c\r"),
                Out("b' \"c\r\n> "),
                In("d\"\r"),
                Out("d\"\r\na\r\nb c\r\nd\r\n"),
                Out(P),
            ],
            vec![Cmd("echo 'a\nb' \"c\nd\"")],
        ),
        (
            "here-document",
            (80, 24),
            vec![
                Out(P),
                In("cat <<'EOF' >/tmp/x\r"),
                Out("cat <<'EOF' >/tmp/x\r\n> "),
                In("rm -rf /\r"),
                Out("rm -rf /\r\n> "),
                In("\r"),
                Out("\r\n> "),
                In("EOF\r"),
                Out("EOF\r\n"),
                Out(P),
            ],
            vec![Cmd("cat <<'EOF' >/tmp/x\nrm -rf /\n\nEOF")],
        ),
        (
            "trailing operators",
            (80, 24),
            vec![
                Out(P),
                In("true &&\r"),
                Out("true &&\r\n> "),
                In("id |\r"),
                Out("id |\r\n> "),
                In("wc -c\r"),
                Out("wc -c\r\n42\r\n"),
                Out(P),
            ],
            vec![Cmd("true &&\nid |\nwc -c")],
        ),
        (
            "a pasted continued command",
            (80, 24),
            vec![
                Out(P),
                In("echo 'a\rb'\r"),
                Out("echo 'a\r\n> b'\r\na\r\nb\r\n"),
                Out(P),
            ],
            vec![Ahead("echo 'a\nb'")],
        ),
        (
            "ctrl-c ends a continued command with what it had",
            (80, 24),
            vec![
                Out(P),
                In("echo 'a\r"),
                Out("echo 'a\r\n> "),
                In("\x03"),
                Out("^C\r\n"),
                Out(P),
                In("id\r"),
                Out("id\r\n"),
            ],
            vec![Cmd("echo 'a"), Cmd("id")],
        ),
        (
            "the end reports a command still continued",
            (80, 24),
            vec![Out(P), In("cat <<EOF\r"), Out("cat <<EOF\r\n> ")],
            vec![Cmd("cat <<EOF")],
        ),
    ];
    for (name, (cols, rows), steps, want) in cases {
        let got = run(cols, rows, &steps);
        assert_eq!(wants(&got.events), want, "{name}");
        // Output in single characters: the same commands (found perhaps another way).
        let got = run(cols, rows, &single_characters(&steps));
        assert_eq!(
            command_texts(&got.events),
            command_texts(&want_events(&want)),
            "{name}, output in single characters"
        );
    }
}

/// The session with its output split into single characters.
fn single_characters<'a>(steps: &[Io<'a>]) -> Vec<Io<'a>> {
    steps
        .iter()
        .flat_map(|step| match *step {
            In(s) => vec![In(s)],
            Out(s) => s
                .char_indices()
                .map(|(i, c)| Out(&s[i..i + c.len_utf8()]))
                .collect(),
        })
        .collect()
}

/// The commands' texts (`None` for hidden input).
fn command_texts(events: &[DetectorEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(d) => Some((!d.echo_off).then(|| d.command.clone())),
            DetectorEvent::FullScreen { .. }
            | DetectorEvent::Entered { .. }
            | DetectorEvent::LineEcho { .. } => None,
        })
        .collect()
}

/// Command events with the texts of `want`, for [`command_texts`].
fn want_events(want: &[Want]) -> Vec<DetectorEvent> {
    want.iter()
        .filter_map(|w| {
            let (command, echo_off) = match w {
                Cmd(t) | Ahead(t) | Guess(t) | Keys(t) | Raw(t) => (t.to_string(), false),
                EchoOff => (String::new(), true),
                Full(_) => return None,
            };
            Some(DetectorEvent::Command(Detected {
                line: 0,
                last_line: 0,
                command,
                echo_off,
                located: Located::Anchor,
                carried: None,
                hidden_chars: None,
                hidden_text: None,
            }))
        })
        .collect()
}

/// Each of the three alternate-screen modes leaves detection on (vt100 does not model
/// `?1047h`: the line is then read from the main screen).
#[test]
fn every_alternate_screen_mode_keeps_detecting() {
    for mode in ["\x1b[?1049h", "\x1b[?1047h", "\x1b[?47h"] {
        let steps = [Out(P), Out(mode), Out(P), In("id\r"), Out("id\r\n")];
        let got = run(80, 24, &steps);
        let commands: Vec<&str> = got
            .events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::Command(d) => Some(d.command.as_str()),
                DetectorEvent::FullScreen { .. }
                | DetectorEvent::Entered { .. }
                | DetectorEvent::LineEcho { .. } => None,
            })
            .collect();
        assert_eq!(commands, ["id"], "{mode:?}");
    }
}

/// A node toggling the alternate screen in a loop costs one event per output chunk at most.
#[test]
fn full_screen_toggles_are_coalesced_per_chunk() {
    let mut d = Detector::new(80, 24);
    let flood = "\x1b[?1049h\x1b[?1049l\n".repeat(10_000);
    assert!(d.output(flood.as_bytes()).is_empty());
    let flood = "\x1b[?1049l\n\x1b[?1049h".repeat(10_000);
    assert_eq!(
        d.output(flood.as_bytes()),
        vec![DetectorEvent::FullScreen { entered: true }]
    );
}

/// With echo off, Enter carries the keys (so `line_entered` has the text before the node sees
/// Enter), except at a prompt asking for a secret; the input is recorded except the secret's.
#[test]
fn echo_off_lines_are_announced_with_their_keys() {
    let mut d = Detector::new(80, 24);
    d.output(P.as_bytes());
    let step = d.input(b"id\r");
    assert!(step.events.contains(&DetectorEvent::Entered {
        line: 0,
        shown: Some("id".to_string())
    }));
    d.output(b"uid=0(root)\r\n");
    d.output(b"Password: ");
    let step = d.input(b"hunter2\r");
    assert!(step.events.contains(&DetectorEvent::Entered {
        line: 1,
        shown: None
    }));
    // A line begun after a command that printed nothing (no newline at all) is anchored at the
    // prompt drawn again, so it is announced with its keys too.
    d.output(b"\r\n");
    d.output(P.as_bytes());
    d.input(b"touch x\r");
    d.output(P.as_bytes());
    let step = d.input(b"rm -rf /tmp/y\r");
    assert!(step.events.contains(&DetectorEvent::Entered {
        line: 3,
        shown: Some("rm -rf /tmp/y".to_string())
    }));
    let kept = run(
        80,
        24,
        &[
            Out(P),
            In("id\r"),
            Out("uid=0(root)\r\nPassword: "),
            In("hunter2\r"),
            Out("\r\n"),
        ],
    )
    .kept_input;
    assert_eq!(String::from_utf8_lossy(&kept), "id\r");
}

/// The cause of [`super::super::MIN_MODEL`]: vt100 0.16 itself panics below two rows (and, with
/// overflow checks, below two columns).
#[test]
fn vt100_panics_below_two_rows() {
    let one_row = std::panic::catch_unwind(|| {
        let mut parser = vt100::Parser::new(1, 80, 0);
        parser.process(&[b'x'; 200]);
    });
    assert!(one_row.is_err());
    if cfg!(debug_assertions) {
        let one_col = std::panic::catch_unwind(|| {
            let mut parser = vt100::Parser::new(24, 1, 0);
            parser.process("日本".as_bytes());
        });
        assert!(one_col.is_err());
    }
}

#[test]
fn tiny_terminals_do_not_panic() {
    let long = [b'x'; 500];
    for (cols, rows) in [(80, 1), (0, 0), (1, 24), (1, 1), (2, 2)] {
        let mut d = Detector::new(cols, rows);
        d.output(P.as_bytes());
        d.input(b"ls\r");
        d.output(&long);
        d.output("日本語\u{301}".as_bytes());
        d.resize(80, 24);
        d.output(b"\x1b[5;10r\x1b[20H");
        d.resize(80, 1);
        d.output(&long);
        d.resize(0, 0);
        d.output(&long);
        d.finish();
    }
}

/// Random sizes, resizes, output (mostly escape sequences) and input never panic the recorder.
mod never_panics {
    use proptest::prelude::*;

    use crate::record::detector::DetectorEvent;
    use crate::record::pty::PtyRecorder;

    #[derive(Debug, Clone)]
    enum Op {
        Out(Vec<u8>),
        In(Vec<u8>),
        Resize(u32, u32),
    }

    const SEQUENCES: &[&str] = &[
        "\x1b[?1049h",
        "\x1b[?1049l",
        "\x1b[?47h",
        "\x1b[?47l",
        "\x1b[?1047h",
        "\x1b[?1047l",
        "\x1b[?2004h",
        "\x1b[?2004l",
        "\x1b[r",
        "\x1b[5;1r",
        "\x1b[1;1r",
        "\x1b[2;3r",
        "\x1b[1;999r",
        "\x1b[?6h",
        "\x1b[?6l",
        "\x1b[L",
        "\x1b[M",
        "\x1b[999L",
        "\x1b[999M",
        "\x1b[999S",
        "\x1b[999T",
        "\x1b[999;999H",
        "\x1b[999@",
        "\x1b[999P",
        "\x1bD",
        "\x1bM",
        "\x1bE",
        "\x1b7",
        "\x1b8",
        "\x1bc",
        "\r\n",
        "\n",
        "\r",
        "\t",
        "\x08",
        "user@host:~$ ",
        "Password: ",
        "\u{301}",
        "日本語",
        "e\u{301}",
        "🎉",
    ];

    const KEYS: &[&str] = &[
        "\r",
        "\n",
        "\x03",
        "\x7f",
        "\x15",
        "\x17",
        "\x1b[A",
        "\x1b[200~",
        "\x1b[201~",
        "\x1b",
        "ls",
        "echo 'a",
        "cat <<EOF",
        "EOF",
        "\\",
        "&&",
        "日本",
    ];

    fn size() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), Just(1), Just(2), 0u32..=1000]
    }

    fn csi() -> impl Strategy<Value = Vec<u8>> {
        let finals = b"@ABCDEFGHIJKLMPSTXZ`abcdefghlmnqrsu".to_vec();
        (
            proptest::collection::vec(0u32..=70_000, 0..4),
            any::<bool>(),
            prop::sample::select(finals),
        )
            .prop_map(|(params, private, last)| {
                let params: Vec<String> = params.iter().map(u32::to_string).collect();
                let mut s = b"\x1b[".to_vec();
                if private {
                    s.push(b'?');
                }
                s.extend(params.join(";").bytes());
                s.push(last);
                s
            })
    }

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => csi(),
            3 => prop::sample::select(SEQUENCES).prop_map(|s| s.as_bytes().to_vec()),
            1 => (1usize..1500, prop::sample::select(&["x", "日", "e\u{301}", "\u{301}", " "][..]))
                .prop_map(|(n, s)| s.repeat(n).into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..32),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let output = proptest::collection::vec(fragment(), 1..12).prop_map(|f| Op::Out(f.concat()));
        let key = prop_oneof![
            prop::sample::select(KEYS).prop_map(|s| s.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        let input = proptest::collection::vec(key, 1..8).prop_map(|k| Op::In(k.concat()));
        prop_oneof![
            4 => output,
            3 => input,
            1 => (size(), size()).prop_map(|(c, r)| Op::Resize(c, r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn on_any_size_resize_output_or_input(
            cols in size(),
            rows in size(),
            ops in proptest::collection::vec(op(), 1..24),
        ) {
            let mut recorder = PtyRecorder::new(cols, rows, "xterm", 0);
            let mut newlines = 0;
            let mut entered = 0;
            for (i, op) in ops.iter().enumerate() {
                let t = i as f64;
                let step = match op {
                    Op::Out(bytes) => recorder.output(t, bytes),
                    Op::In(bytes) => {
                        newlines += bytes.iter().filter(|&&b| b == b'\r' || b == b'\n').count();
                        recorder.input(t, bytes)
                    }
                    Op::Resize(cols, rows) => recorder.resize(t, *cols, *rows),
                };
                entered += step
                    .events
                    .iter()
                    .filter(|e| matches!(e, DetectorEvent::Entered { .. }))
                    .count();
            }
            let _end = recorder.finish(ops.len() as f64);
            prop_assert!(entered >= newlines, "{entered} Entered for {newlines} newlines");
        }
    }
}

/// A panic found by the property test below: vt100 0.16 cuts a wide character at the last
/// column on a resize, then writing over that cell looks for its second half. The detector
/// survives it (see `model.rs`).
#[test]
fn resize_cutting_a_wide_character_does_not_panic() {
    enum Step {
        Out(&'static str),
        Size(u16, u16),
    }
    let steps = [
        Step::Out("日本語\x1b[r日本語\x1b[?47h"),
        Step::Size(6, 2),
        Step::Size(4, 6),
        Step::Out("\u{301}\x1b[?6lx\x1b[5;1r\x1b[?1049l\x1b[6;1H日本語\x1b[11;5@"),
        Step::Size(4, 3),
        Step::Out("\x1b[8;6hx"),
    ];
    let direct = std::panic::catch_unwind(|| {
        let mut parser = vt100::Parser::new(4, 3, 0);
        for step in &steps {
            match step {
                Step::Out(s) => parser.process(s.as_bytes()),
                Step::Size(rows, cols) => parser.screen_mut().set_size(*rows, *cols),
            }
        }
    });
    assert!(direct.is_err(), "vt100 itself panics here");
    let mut d = Detector::new(3, 4);
    d.output(P.as_bytes());
    d.input(b"ls");
    let mut full_screen = Vec::new();
    for step in &steps {
        match step {
            Step::Out(s) => full_screen.extend(d.output(s.as_bytes())),
            Step::Size(rows, cols) => d.resize(u32::from(*cols), u32::from(*rows)),
        }
    }
    let mut events = d.input(b"\r").events;
    full_screen.extend(events.iter().cloned());
    // The FullScreen events (a lost model is not full-screen) end where the detector is.
    let last = full_screen.iter().rev().find_map(|e| match e {
        DetectorEvent::FullScreen { entered } => Some(*entered),
        DetectorEvent::Command(_)
        | DetectorEvent::Entered { .. }
        | DetectorEvent::LineEcho { .. } => None,
    });
    assert_eq!(last.unwrap_or(false), d.full_screen());
    events.extend(d.output(b"\r\n"));
    events.extend(d.finish());
    let commands: Vec<Want> = wants(&events)
        .into_iter()
        .filter(|w| !matches!(w, Full(_)))
        .collect();
    assert_eq!(commands, vec![Keys("ls")]);
}

/// Hidden input tells its length, never its text.
#[test]
fn hidden_input_tells_its_length() {
    let got = run(
        80,
        24,
        &[
            Out("Password: "),
            In("hunt"),
            In("er2\x7f2é\r"),
            Out("\r\n"),
        ],
    );
    let hidden: Vec<Option<usize>> = got
        .events
        .iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(d) => Some(d.hidden_chars),
            DetectorEvent::FullScreen { .. }
            | DetectorEvent::Entered { .. }
            | DetectorEvent::LineEcho { .. } => None,
        })
        .collect();
    assert_eq!(hidden, [Some(8)]);
}

#[test]
fn keys_past_the_bound_say_how_many_more_were_typed() {
    let mut typed = Typed::default();
    for _ in 0..70_000 {
        typed.push(b'x');
    }
    typed.uncertain();
    let (text, certain) = typed.keys_text();
    assert!(!certain);
    assert!(
        text.ends_with(" [sallyport: 4464 more bytes typed on this line: see the recording]"),
        "{}",
        &text[text.len() - 80..]
    );
    assert!(text.starts_with(&"x".repeat(65_536)));
}

#[test]
fn commands_that_change_the_prompt_or_the_echo_are_told_apart() {
    use super::shell::forges_prompts;
    for yes in [
        "PS1='Password: '",
        "export PS1='[sudo] password for root: '",
        "PROMPT_COMMAND='printf Password:'",
        "PROMPT='Password: '",
        "stty -echo",
        "cd /tmp; stty -echo",
        "/bin/stty -echo",
        "set prompt='Password: '",
        "true && PS1=x",
    ] {
        assert!(forges_prompts(yes), "{yes}");
    }
    for no in [
        "ls",
        "sudo -i",
        "echo ps1",
        "cat stty.txt",
        "grep PS1 ~/.bashrc",
        "read -s pw",
    ] {
        assert!(!forges_prompts(no), "{no}");
    }
}

#[test]
fn after_a_forged_prompt_and_echo_off_a_line_typed_without_echo_is_a_command() {
    // A shell whose own prompt was made to read like a password prompt, echo then turned off:
    // what is typed there runs, so it is a command (in clear), not hidden input.
    let mut d = Detector::new(80, 24);
    let mut evs = Vec::new();
    evs.extend(d.output(b"$ "));
    evs.extend(d.input(b"PS1='Password: '\r").events);
    evs.extend(d.output(b"PS1='Password: '\r\nPassword: "));
    evs.extend(d.input(b"stty -echo\r").events);
    evs.extend(d.output(b"stty -echo\r\nPassword: "));
    evs.extend(d.input(b"touch /tmp/pwned\r").events);
    evs.extend(d.output(b"\r\nPassword: "));
    evs.extend(d.finish());
    let commands: Vec<(String, bool)> = evs
        .iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(c) => Some((c.command.clone(), c.echo_off)),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [
            ("PS1='Password: '".to_string(), false),
            ("stty -echo".to_string(), false),
            ("touch /tmp/pwned".to_string(), false),
        ],
        "{evs:?}"
    );
    // Without the visible change a real password prompt still hides what is typed.
    let mut d = Detector::new(80, 24);
    let mut evs = d.output(b"[sudo] password for alice: ");
    evs.extend(d.input(b"hunter2\r").events);
    evs.extend(d.output(b"\r\n$ "));
    evs.extend(d.finish());
    assert!(
        evs.iter()
            .any(|e| matches!(e, DetectorEvent::Command(c) if c.echo_off && c.command.is_empty())),
        "{evs:?}"
    );
}
