//! What an exec request runs, as far as the recording is concerned, and the lines an
//! interpreter reads from its stdin.
//!
//! # Classification ([`classify`])
//!
//! The command is the string the node's sshd hands to the user's shell (`$SHELL -c COMMAND`).
//! It is split like a POSIX shell does (quotes, escapes, `;` `&&` `||` `|` `&` newlines,
//! subshells, `$(...)` and backquotes, whose commands count as commands of the line, comments,
//! here-documents), then each simple command is looked through its wrappers to the program that
//! really runs:
//!
//! - leading `NAME=value` assignments and the reserved words `!`, `{`, `}`, `if`, `then`, `else`,
//!   `elif`, `fi`, `do`, `done`, `while`, `until`;
//! - `sudo`, `doas`, `pkexec`, `env` (with `-S` split), `nice`, `nohup`, `timeout`, `stdbuf`,
//!   `exec`, `command`, `builtin`, `ionice`, `setsid`, `chrt`, `taskset`, `time`, `busybox`,
//!   `ssh-agent` (it runs its command with the same stdin), `unbuffer`, `chroot`, `nsenter`,
//!   `unshare`, `flock`, with their options, by basename (so `/usr/bin/sudo` too);
//! - `sh -c CMD` (any shell), `su -c CMD`, `runuser`, `script -c CMD`, `flock -c CMD`, `eval`
//!   and `ssh HOST CMD...` (a remote shell parses it) classify CMD itself.
//!
//! A wrapper that starts a shell when given no command (`sudo -i`, `sudo -s`, `doas -s`, `su`,
//! `chroot DIR`, `pkexec`, `nsenter`, `unshare`, `script`, `ssh HOST`) is an interpreter.
//!
//! Then the program decides:
//!
//! - [`ExecKind::SftpServer`]: `sftp-server` (any directory) or `internal-sftp`: an SFTP
//!   subsystem in disguise, to be parsed and policed as one;
//! - [`ExecKind::Scp`]: `scp -t` or `scp -f` (see [`scp::parse_exec`]);
//! - [`ExecKind::Interpreter`]: a program that, in this invocation, runs text read from its
//!   stdin, i.e. from the channel: the engineer's input lines are commands and are recorded as
//!   such ([`StdinLines`]). That is:
//!   - shells (`sh bash dash zsh ksh ksh93 mksh pdksh oksh ash yash posh rbash fish csh tcsh`)
//!     unless given `-c CMD`, in which case what CMD is: with no operand, `-s`, `-i` or
//!     `/dev/stdin` they read commands from stdin, and a script from the node's disk may read
//!     the channel's stdin and run it (`cat > x; sh x`), which the command line does not show;
//!   - general-purpose languages, whatever code they were given (inline `-c`/`-e`/`-r`, or a
//!     script on disk: it can read stdin and run it, e.g. `perl -ne 'system $_'`,
//!     `python3 -c 'exec(input())'`): `python*`/`pypy*`, `perl*`, `ruby*`, `node`/`nodejs`,
//!     `php*`, `lua*`/`luajit`, `Rscript`, `R`, `tclsh*`/`wish*`/`jimsh`, `expect`, `pwsh`, and
//!     the text tools that run code: `awk` (its `system()`), `sed` (GNU sed's `e`); `dc`
//!     without code in the command line;
//!   - database shells that execute the SQL (or commands) they read: `psql` (unless `-c`, `-l`
//!     or `-f FILE`), `mysql`/`mariadb` (unless `-e`), `sqlite3`/`sqlite` (unless SQL follows
//!     the database), `redis-cli` (unless a command is given), `mongo`/`mongosh` (unless
//!     `--eval`);
//!   - always: `xargs` (runs command lines built from its stdin), `irb`, `jshell`, `bc`, `ed`,
//!     `red`, `ex`, `vi`, `vim`, `nvim`, `view` (their stdin is keystrokes or commands, `!cmd`
//!     included), `gdb` and `lldb` unless in batch mode;
//! - [`ExecKind::Command`]: anything else: programs whose stdin is data (`cat`, `tar`, `dd`,
//!   `gzip`...). Over-reporting is the safe side: the cost of counting a program as an
//!   interpreter is that the data lines it is sent are logged as commands.
//!
//! A command line is an interpreter if any of its commands is (`cat | bash`, `true; sh`,
//! `tee log | python3 -`): which part reads the channel's stdin is not known. Otherwise it is
//! an SFTP server if any part is one, otherwise scp if any part is (the stdin protocol then flows
//! to it; anything else around it makes the stream unparseable, which the parsers report), and a
//! command otherwise. Redirections are ignored (`bash < file` is still an interpreter: wrong the
//! safe way). A command word that is not known before it runs (`$SHELL`, `$(which bash)`,
//! `` `x` ``) is an interpreter, and so is a command line that does not parse (an unbalanced
//! quote or parenthesis): fail safe, its input is recorded as commands.
//!
//! Not followed: aliases and functions defined on the node, `PATH` tricks, programs that read
//! code from a file they were told is stdin in ways not listed above.
//!
//! # Stdin lines ([`StdinLines`])
//!
//! The client→node bytes of an interpreter channel, cut into lines at `\n` (a `\r` before it is
//! dropped), each kept up to [`MAX_LINE_BYTES`] bytes (lossy UTF-8); a longer line is reported
//! once, truncated, with its full length and the SHA-256 of all its bytes.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::record::scp::{self, ScpTransfer};

/// What an exec request runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecKind {
    /// An SFTP server: the channel carries SFTP.
    SftpServer,
    /// The remote side of classic scp: the channel carries the scp protocol.
    Scp(ScpTransfer),
    /// A program that runs what it reads from stdin: stdin lines are commands.
    Interpreter {
        /// Its name as run (the basename), or what could not be known.
        program: String,
    },
    /// Anything else.
    Command,
}

/// The `program` of a command line that could not be parsed.
pub const UNPARSED: &str = "(unparsed)";
/// The `program` of a command whose name is only known when it runs (`$(which bash)`).
pub const UNKNOWN: &str = "(unknown)";
/// How deep `sh -c`, `$(...)` and the like are followed; deeper is an interpreter.
const MAX_NESTING: usize = 16;
/// Words naming stdin as a file.
const STDIN_PATHS: [&str; 4] = ["-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"];

/// Classify an exec request's command (see the module doc).
pub fn classify(command: &str) -> ExecKind {
    classify_at(command, 0)
}

fn classify_at(command: &str, depth: usize) -> ExecKind {
    if depth > MAX_NESTING {
        return interpreter(UNPARSED);
    }
    match lex(command, depth) {
        Some(commands) => commands
            .iter()
            .map(|words| classify_words(words, depth))
            .fold(ExecKind::Command, strongest),
        None => interpreter(UNPARSED),
    }
}

/// Of two parts of a command line, the one that decides: interpreter, then SFTP, then scp.
fn strongest(a: ExecKind, b: ExecKind) -> ExecKind {
    fn rank(k: &ExecKind) -> u8 {
        match k {
            ExecKind::Command => 0,
            ExecKind::Scp(_) => 1,
            ExecKind::SftpServer => 2,
            ExecKind::Interpreter { .. } => 3,
        }
    }
    if rank(&b) > rank(&a) { b } else { a }
}

fn interpreter(program: &str) -> ExecKind {
    ExecKind::Interpreter {
        program: program.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting a command line into simple commands.

/// A word of a simple command, unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Word {
    text: String,
    /// Has an expansion (`$x`, `$(...)`, backquotes): its value is not known here.
    dynamic: bool,
}

/// What the next word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Word,
    /// The target of a redirection: not part of the command.
    RedirectTarget,
    /// A here-document's delimiter (`<<-` strips leading tabs).
    HeredocDelimiter {
        strip_tabs: bool,
    },
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    commands: Vec<Vec<Word>>,
    /// Here-documents whose body starts at the next newline.
    heredocs: Vec<(String, bool)>,
    depth: usize,
}

/// The simple commands of a command line, those inside substitutions and subshells included;
/// `None` when it does not parse.
fn lex(command: &str, depth: usize) -> Option<Vec<Vec<Word>>> {
    let chars: Vec<char> = command.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        pos: 0,
        commands: Vec::new(),
        heredocs: Vec::new(),
        depth,
    };
    lexer.list(false)?;
    Some(lexer.commands)
}

/// The state of the command being read.
#[derive(Default)]
struct Current {
    words: Vec<Word>,
    word: Option<Word>,
    next: Option<Next>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Commands up to the end, or up to the `)` closing a `$(` when `nested`.
    fn list(&mut self, nested: bool) -> Option<()> {
        let mut cur = Current::default();
        let mut parens = 0usize;
        loop {
            let Some(c) = self.bump() else {
                self.end_command(&mut cur);
                return (!nested && parens == 0).then_some(());
            };
            match c {
                ' ' | '\t' => self.end_word(&mut cur),
                '\n' => {
                    self.end_command(&mut cur);
                    self.skip_heredocs();
                }
                ';' | '&' | '|' => self.end_command(&mut cur),
                '(' => {
                    self.end_command(&mut cur);
                    parens += 1;
                }
                ')' => {
                    self.end_command(&mut cur);
                    if parens == 0 {
                        return nested.then_some(());
                    }
                    parens -= 1;
                }
                '<' | '>' => self.redirection(c, &mut cur),
                '#' if cur.word.is_none() => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '\'' => {
                    let word = cur.word.get_or_insert_default();
                    loop {
                        match self.bump()? {
                            '\'' => break,
                            c => word.text.push(c),
                        }
                    }
                }
                '"' => self.double_quoted(cur.word.get_or_insert_default())?,
                '\\' => match self.bump() {
                    Some('\n') => {}
                    Some(c) => cur.word.get_or_insert_default().text.push(c),
                    None => cur.word.get_or_insert_default().text.push('\\'),
                },
                '`' => {
                    let inner = self.backquoted()?;
                    self.substitution(&inner)?;
                    cur.word.get_or_insert_default().dynamic = true;
                }
                '$' => self.dollar(cur.word.get_or_insert_default())?,
                c => cur.word.get_or_insert_default().text.push(c),
            }
        }
    }

    fn end_word(&mut self, cur: &mut Current) {
        let Some(word) = cur.word.take() else {
            return;
        };
        match cur.next.take().unwrap_or(Next::Word) {
            Next::Word => cur.words.push(word),
            Next::RedirectTarget => {}
            Next::HeredocDelimiter { strip_tabs } => self.heredocs.push((word.text, strip_tabs)),
        }
    }

    fn end_command(&mut self, cur: &mut Current) {
        self.end_word(cur);
        cur.next = None;
        let words = std::mem::take(&mut cur.words);
        if !words.is_empty() {
            self.commands.push(words);
        }
    }

    /// `<`, `>`, `>>`, `<<`, `<<-`, `<<<`, `<&`, `>&`, `>|`, `<>`, with a file descriptor
    /// number before.
    fn redirection(&mut self, first: char, cur: &mut Current) {
        match &cur.word {
            Some(w) if !w.dynamic && w.text.chars().all(|c| c.is_ascii_digit()) => {
                cur.word = None;
            }
            Some(_) | None => self.end_word(cur),
        }
        let mut next = Next::RedirectTarget;
        if first == '<' && self.peek() == Some('<') {
            self.pos += 1;
            match self.peek() {
                Some('<') => self.pos += 1,
                Some('-') => {
                    self.pos += 1;
                    next = Next::HeredocDelimiter { strip_tabs: true };
                }
                _ => next = Next::HeredocDelimiter { strip_tabs: false },
            }
        } else if matches!(self.peek(), Some('>' | '&' | '|')) {
            self.pos += 1;
        }
        cur.next = Some(next);
    }

    /// After a newline: the bodies of the here-documents opened on the line.
    fn skip_heredocs(&mut self) {
        for (delimiter, strip_tabs) in std::mem::take(&mut self.heredocs) {
            while self.pos < self.chars.len() {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                let line: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                let line = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if line == delimiter {
                    break;
                }
            }
        }
    }

    fn double_quoted(&mut self, word: &mut Word) -> Option<()> {
        loop {
            match self.bump()? {
                '"' => return Some(()),
                '\\' => match self.bump()? {
                    c @ ('"' | '\\' | '$' | '`') => word.text.push(c),
                    '\n' => {}
                    c => {
                        word.text.push('\\');
                        word.text.push(c);
                    }
                },
                '$' => self.dollar(word)?,
                '`' => {
                    let inner = self.backquoted()?;
                    self.substitution(&inner)?;
                    word.dynamic = true;
                }
                c => word.text.push(c),
            }
        }
    }

    /// After `$`: a substitution, an ANSI-C string, a parameter, or a plain `$`.
    fn dollar(&mut self, word: &mut Word) -> Option<()> {
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                if self.depth >= MAX_NESTING {
                    return None;
                }
                self.depth += 1;
                self.list(true)?;
                self.depth -= 1;
                word.dynamic = true;
            }
            Some('\'') => {
                self.pos += 1;
                loop {
                    match self.bump()? {
                        '\'' => break,
                        '\\' => word.text.push(match self.bump()? {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            c => c,
                        }),
                        c => word.text.push(c),
                    }
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || "_{@*#?$!-".contains(c) => {
                word.text.push('$');
                word.dynamic = true;
            }
            Some(_) | None => word.text.push('$'),
        }
        Some(())
    }

    /// The text between backquotes, unescaped.
    fn backquoted(&mut self) -> Option<String> {
        let mut inner = String::new();
        loop {
            match self.bump()? {
                '`' => return Some(inner),
                '\\' => match self.bump()? {
                    c @ ('`' | '\\' | '$') => inner.push(c),
                    c => {
                        inner.push('\\');
                        inner.push(c);
                    }
                },
                c => inner.push(c),
            }
        }
    }

    fn substitution(&mut self, inner: &str) -> Option<()> {
        if self.depth >= MAX_NESTING {
            return None;
        }
        let commands = lex(inner, self.depth + 1)?;
        self.commands.extend(commands);
        Some(())
    }
}

// ---------------------------------------------------------------------------------------------
// Options.

/// How a program's options are written.
struct Opts {
    /// Short option letters that take an argument (the rest of the word, or the next word).
    short_args: &'static str,
    /// Long options (without dashes) that take an argument (after `=`, or the next word).
    long_args: &'static [&'static str],
    /// `+x` words are options too (shells).
    plus: bool,
    /// Single-dash long options (`-batch`, `-cmd`): a word is one option, never a cluster.
    whole: bool,
}

const NO_OPTS: Opts = Opts {
    short_args: "",
    long_args: &[],
    plus: false,
    whole: false,
};

/// One option as written: `-x`, `--name` or `-name`, and its argument.
struct Opt {
    name: String,
    value: Option<Word>,
}

/// The options before the first operand (or `--`), and the operands.
fn options<'a>(args: &'a [Word], spec: &Opts) -> (Vec<Opt>, &'a [Word]) {
    let mut opts = Vec::new();
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text.as_str();
        if text == "--" {
            return (opts, &args[i + 1..]);
        }
        let dashed = text.len() > 1 && text.starts_with('-');
        let plussed = spec.plus && text.len() > 1 && text.starts_with('+');
        if !(dashed || plussed) {
            break;
        }
        i += 1;
        if text.starts_with("--") || spec.whole {
            let (name, value) = match text.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (text, None),
            };
            let takes = spec.long_args.contains(&name.trim_start_matches('-'));
            let value = match value {
                Some(v) => Some(Word {
                    text: v,
                    dynamic: word.dynamic,
                }),
                None if takes => {
                    i += 1;
                    args.get(i - 1).cloned()
                }
                None => None,
            };
            opts.push(Opt {
                name: name.to_string(),
                value,
            });
            continue;
        }
        let prefix = &text[..1];
        for (at, letter) in text.char_indices().skip(1) {
            let name = format!("{prefix}{letter}");
            if spec.short_args.contains(letter) {
                let rest = &text[at + letter.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    args.get(i - 1).cloned()
                } else {
                    Some(Word {
                        text: rest.to_string(),
                        dynamic: word.dynamic,
                    })
                };
                opts.push(Opt { name, value });
                break;
            }
            opts.push(Opt { name, value: None });
        }
    }
    (opts, args.get(i..).unwrap_or(&[]))
}

fn has(opts: &[Opt], names: &[&str]) -> bool {
    opts.iter().any(|o| names.contains(&o.name.as_str()))
}

fn value<'a>(opts: &'a [Opt], names: &[&str]) -> Option<&'a Word> {
    opts.iter()
        .find(|o| names.contains(&o.name.as_str()))
        .and_then(|o| o.value.as_ref())
}

fn is_stdin(word: &Word) -> bool {
    STDIN_PATHS.contains(&word.text.as_str())
}

// ---------------------------------------------------------------------------------------------
// Simple commands.

/// Skipped before a command (`time` is a wrapper with options).
const RESERVED: [&str; 12] = [
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until",
];

fn is_assignment(word: &Word) -> bool {
    match word.text.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// What a program does with the rest of its words.
enum Step {
    /// It runs these words as a command.
    Run(Vec<Word>),
    Done(ExecKind),
}

fn classify_words(words: &[Word], depth: usize) -> ExecKind {
    let mut rest = words.to_vec();
    loop {
        let skip = rest
            .iter()
            .take_while(|w| is_assignment(w) || RESERVED.contains(&w.text.as_str()))
            .count();
        let Some(first) = rest.get(skip) else {
            return ExecKind::Command;
        };
        if first.dynamic {
            return interpreter(if first.text.is_empty() {
                UNKNOWN
            } else {
                &first.text
            });
        }
        let program = first.text.rsplit('/').next().unwrap_or_default();
        match program_step(program, &rest[skip + 1..], depth) {
            Step::Run(next) => rest = next,
            Step::Done(kind) => return kind,
        }
    }
}

fn program_step(program: &str, args: &[Word], depth: usize) -> Step {
    if let Some(step) = wrapper(program, args, depth) {
        return step;
    }
    Step::Done(match program {
        "sftp-server" | "internal-sftp" => ExecKind::SftpServer,
        "scp" => {
            let mut words = vec!["scp".to_string()];
            words.extend(args.iter().map(|w| w.text.clone()));
            scp::parse_words(&words).map_or(ExecKind::Command, ExecKind::Scp)
        }
        _ if SHELLS.contains(&program) => shell(program, args, depth),
        // They read commands from stdin unless in batch mode.
        "gdb" | "lldb" => {
            let batch = ["-batch", "--batch", "-batch-silent", "--batch-silent", "-b"];
            let info = ["-v", "-version", "--version", "-h", "-help", "--help"];
            if args
                .iter()
                .any(|w| batch.contains(&w.text.as_str()) || info.contains(&w.text.as_str()))
            {
                ExecKind::Command
            } else {
                interpreter(program)
            }
        }
        _ => match LANGS.iter().find(|l| (l.names)(program)) {
            Some(lang) => lang.classify(program, args),
            None => ExecKind::Command,
        },
    })
}

/// Run the operands, or, without any, `none`.
fn run_or(operands: &[Word], none: ExecKind) -> Step {
    if operands.is_empty() {
        Step::Done(none)
    } else {
        Step::Run(operands.to_vec())
    }
}

/// Classify a command given as a string (`-c CMD`).
fn nested(code: Option<&Word>, program: &str, depth: usize) -> Step {
    Step::Done(match code {
        None => ExecKind::Command,
        Some(w) if w.dynamic => interpreter(program),
        Some(w) => classify_at(&w.text, depth + 1),
    })
}

/// Programs that run another program given in their words.
fn wrapper(program: &str, args: &[Word], depth: usize) -> Option<Step> {
    let opts = |short_args, long_args| Opts {
        short_args,
        long_args,
        plus: false,
        whole: false,
    };
    Some(match program {
        "sudo" => {
            let (o, rest) = options(
                args,
                &opts(
                    "ugpCDrtTUR",
                    &[
                        "user",
                        "group",
                        "prompt",
                        "close-from",
                        "chdir",
                        "role",
                        "type",
                        "command-timeout",
                        "other-user",
                        "chroot",
                        "host",
                    ],
                ),
            );
            if has(&o, &["-e", "--edit", "-l", "--list"]) {
                return Some(Step::Done(ExecKind::Command));
            }
            let shell = has(&o, &["-i", "--login", "-s", "--shell"]);
            run_or(rest, shell_or_command(shell, program))
        }
        "doas" => {
            let (o, rest) = options(args, &opts("uC", &[]));
            run_or(rest, shell_or_command(has(&o, &["-s"]), program))
        }
        "pkexec" => run_or(options(args, &opts("", &["user"])).1, interpreter(program)),
        "su" | "runuser" => su(program, args, depth),
        "env" => {
            let (o, rest) = options(args, &opts("uCS", &["unset", "chdir", "split-string"]));
            match value(&o, &["-S", "--split-string"]) {
                Some(split) if split.dynamic => Step::Done(interpreter(program)),
                Some(split) => match lex(&split.text, depth + 1) {
                    Some(commands) => {
                        let mut words: Vec<Word> = commands.into_iter().flatten().collect();
                        words.extend(rest.iter().cloned());
                        run_or(&words, ExecKind::Command)
                    }
                    None => Step::Done(interpreter(UNPARSED)),
                },
                None => run_or(rest, ExecKind::Command),
            }
        }
        "nice" => run_or(
            options(args, &opts("n", &["adjustment"])).1,
            ExecKind::Command,
        ),
        "nohup" | "builtin" => run_or(options(args, &NO_OPTS).1, ExecKind::Command),
        "timeout" => {
            let (_, rest) = options(args, &opts("sk", &["signal", "kill-after"]));
            run_or(rest.get(1..).unwrap_or(&[]), ExecKind::Command)
        }
        "stdbuf" => run_or(
            options(args, &opts("ioe", &["input", "output", "error"])).1,
            ExecKind::Command,
        ),
        "exec" => run_or(options(args, &opts("a", &[])).1, ExecKind::Command),
        "command" => {
            let (o, rest) = options(args, &NO_OPTS);
            if has(&o, &["-v", "-V"]) {
                Step::Done(ExecKind::Command)
            } else {
                run_or(rest, ExecKind::Command)
            }
        }
        "ionice" => {
            let (o, rest) = options(
                args,
                &opts("cnpPu", &["class", "classdata", "pid", "pgid", "uid"]),
            );
            if has(&o, &["-p", "-P", "-u", "--pid", "--pgid", "--uid"]) {
                Step::Done(ExecKind::Command)
            } else {
                run_or(rest, ExecKind::Command)
            }
        }
        "setsid" | "unbuffer" => run_or(options(args, &NO_OPTS).1, ExecKind::Command),
        "chrt" | "taskset" => {
            let (o, rest) = options(
                args,
                &opts("TPD", &["sched-runtime", "sched-period", "sched-deadline"]),
            );
            if has(&o, &["-p", "--pid", "-m", "--max"]) {
                return Some(Step::Done(ExecKind::Command));
            }
            // The priority or the CPU mask, then the command.
            run_or(rest.get(1..).unwrap_or(&[]), ExecKind::Command)
        }
        "time" => run_or(
            options(args, &opts("fo", &["format", "output"])).1,
            ExecKind::Command,
        ),
        "busybox" => run_or(args, ExecKind::Command),
        "ssh-agent" => run_or(options(args, &opts("aEtOP", &[])).1, ExecKind::Command),
        "chroot" => {
            let (_, rest) = options(args, &opts("", &["userspec", "groups"]));
            match rest.split_first() {
                Some((_, command)) => run_or(command, interpreter(program)),
                None => Step::Done(ExecKind::Command),
            }
        }
        "nsenter" | "unshare" => run_or(
            options(
                args,
                &opts("tSGRw", &["target", "setuid", "setgid", "root", "wd"]),
            )
            .1,
            interpreter(program),
        ),
        "flock" => {
            let spec = opts("wEc", &["timeout", "conflict-exit-code", "command"]);
            let (mut o, rest) = options(args, &spec);
            let (more, command) = options(rest.get(1..).unwrap_or(&[]), &spec);
            o.extend(more);
            match value(&o, &["-c", "--command"]) {
                Some(code) => nested(Some(code), program, depth),
                None => run_or(command, ExecKind::Command),
            }
        }
        "script" => {
            let (o, _) = options(
                args,
                &opts(
                    "cEIOTBm",
                    &[
                        "command",
                        "echo",
                        "log-in",
                        "log-out",
                        "log-timing",
                        "log-io",
                        "logging-format",
                    ],
                ),
            );
            match value(&o, &["-c", "--command"]) {
                Some(code) => nested(Some(code), program, depth),
                None => Step::Done(interpreter(program)),
            }
        }
        "ssh" => {
            let (o, rest) = options(args, &opts("BbcDEeFIiJLlmOoPpQRSWw", &[]));
            match rest.split_first() {
                None => Step::Done(ExecKind::Command),
                // A remote login shell reads the commands.
                Some((_, [])) if !has(&o, &["-N", "-s", "-V"]) => Step::Done(interpreter(program)),
                Some((_, [])) => Step::Done(ExecKind::Command),
                // The remote shell runs the words joined.
                Some((_, command)) => join_and_classify(command, program, depth),
            }
        }
        "eval" => join_and_classify(args, program, depth),
        "." | "source" => Step::Done(match args.first() {
            Some(w) if is_stdin(w) || w.dynamic => interpreter(program),
            Some(_) | None => ExecKind::Command,
        }),
        _ => return None,
    })
}

/// Words a shell will parse again, joined with spaces (`eval`, ssh's remote command).
fn join_and_classify(words: &[Word], program: &str, depth: usize) -> Step {
    if words.iter().any(|w| w.dynamic) {
        return Step::Done(interpreter(program));
    }
    let joined: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    Step::Done(classify_at(&joined.join(" "), depth + 1))
}

fn shell_or_command(shell: bool, program: &str) -> ExecKind {
    if shell {
        interpreter(program)
    } else {
        ExecKind::Command
    }
}

/// `su [options] [-] [user [options]]`: a shell reading stdin unless `-c CMD`; `runuser -u
/// user command...` runs the command.
fn su(program: &str, args: &[Word], depth: usize) -> Step {
    let spec = Opts {
        short_args: "cgGswu",
        long_args: &[
            "command",
            "session-command",
            "group",
            "supp-group",
            "shell",
            "whitelist-environment",
            "user",
        ],
        plus: false,
        whole: false,
    };
    let (mut o, mut rest) = options(args, &spec);
    if has(&o, &["-u", "--user"]) {
        return run_or(rest, interpreter(program));
    }
    if rest.first().is_some_and(|w| w.text == "-") {
        rest = &rest[1..];
    }
    if !rest.is_empty() {
        // The user; options may follow it.
        let (more, _) = options(&rest[1..], &spec);
        o.extend(more);
    }
    match value(&o, &["-c", "--command", "--session-command"]) {
        Some(code) => nested(Some(code), program, depth),
        None => Step::Done(interpreter(program)),
    }
}

// ---------------------------------------------------------------------------------------------
// Interpreters.

const SHELLS: [&str; 16] = [
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "oksh", "ash", "yash", "posh",
    "rbash", "fish", "csh", "tcsh",
];

const SHELL_OPTS: Opts = Opts {
    short_args: "oOCdf",
    long_args: &[
        "rcfile",
        "init-file",
        "init-command",
        "debug",
        "debug-output",
        "features",
        "profile",
    ],
    plus: true,
    whole: false,
};

fn shell(program: &str, args: &[Word], depth: usize) -> ExecKind {
    let short_args = if program == "fish" { "Cdfo" } else { "oO" };
    let (o, operands) = options(
        args,
        &Opts {
            short_args,
            ..SHELL_OPTS
        },
    );
    if let Some(code) = value(&o, &["--command"]) {
        return classify_code(code, program, depth);
    }
    if has(&o, &["-c"]) {
        return match operands.first() {
            Some(code) => classify_code(code, program, depth),
            None => ExecKind::Command,
        };
    }
    // With `-s`, `-i`, no operand or `-`, it reads commands from stdin; a script from the
    // node's disk may read the channel's stdin and run it (`cat > x; sh x`), which the command
    // line does not show: either way its stdin lines count as commands.
    interpreter(program)
}

fn classify_code(code: &Word, program: &str, depth: usize) -> ExecKind {
    if code.dynamic {
        interpreter(program)
    } else {
        classify_at(&code.text, depth + 1)
    }
}

/// A language (or database) interpreter: how it is told where its code is.
struct Lang {
    names: fn(&str) -> bool,
    opts: Opts,
    /// Options saying it does not read code from stdin: code in the command line, a version.
    no_stdin: &'static [&'static str],
    /// Options that make it read code from stdin (interactive modes).
    stdin: &'static [&'static str],
    /// Options whose value is a file of code: stdin when `-` or `/dev/stdin`.
    code_file: &'static [&'static str],
    /// Which operand, counting from 1, is code (a script; sqlite3's SQL after the database);
    /// 0 when none is.
    code_operand: usize,
    /// Without code anywhere in the command line: whether it reads its code from stdin.
    reads_stdin_by_default: bool,
}

/// General-purpose languages (and the text tools that run code: awk's `system`, GNU sed's `e`):
/// whatever code they were given, inline or in a script on disk, can read the channel's stdin
/// and run it, and the command line does not show it. They are always interpreters.
fn general_purpose(program: &str) -> bool {
    let n = program.rsplit('/').next().unwrap_or(program);
    versioned(n, "python")
        || versioned(n, "pypy")
        || versioned(n, "perl")
        || versioned(n, "ruby")
        || versioned(n, "php")
        || versioned(n, "lua")
        || versioned(n, "tclsh")
        || versioned(n, "wish")
        || matches!(
            n,
            "node"
                | "nodejs"
                | "luajit"
                | "Rscript"
                | "R"
                | "jimsh"
                | "expect"
                | "pwsh"
                | "awk"
                | "gawk"
                | "mawk"
                | "nawk"
                | "sed"
                | "gsed"
        )
}

impl Lang {
    fn classify(&self, program: &str, args: &[Word]) -> ExecKind {
        if general_purpose(program) {
            return interpreter(program);
        }
        let (o, operands) = options(args, &self.opts);
        let mut code = false;
        for opt in &o {
            let name = opt.name.as_str();
            if self.stdin.contains(&name) {
                return interpreter(program);
            }
            if self.code_file.contains(&name) {
                match &opt.value {
                    Some(file) if !is_stdin(file) && !file.dynamic => code = true,
                    Some(_) | None => return interpreter(program),
                }
            }
            if self.no_stdin.contains(&name) {
                code = true;
            }
        }
        if code {
            return ExecKind::Command;
        }
        let script = self
            .code_operand
            .checked_sub(1)
            .and_then(|i| operands.get(i));
        match script {
            Some(w) if is_stdin(w) || w.dynamic => interpreter(program),
            Some(_) => ExecKind::Command,
            None if self.reads_stdin_by_default => interpreter(program),
            None => ExecKind::Command,
        }
    }
}

/// `base` followed by nothing, or by a version (`python3.11`).
fn versioned(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

const LANGS: [Lang; 19] = [
    Lang {
        names: |n| versioned(n, "python") || versioned(n, "pypy"),
        opts: Opts {
            short_args: "cmWXQ",
            ..NO_OPTS
        },
        no_stdin: &["-c", "-m", "-V", "--version", "-h", "--help"],
        stdin: &["-i"],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| versioned(n, "perl"),
        opts: Opts {
            short_args: "eEIMm",
            ..NO_OPTS
        },
        no_stdin: &["-e", "-E", "-v", "--version", "-h", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| versioned(n, "ruby"),
        opts: Opts {
            short_args: "eIrCE",
            ..NO_OPTS
        },
        no_stdin: &["-e", "-v", "--version", "-h", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "node" || n == "nodejs",
        opts: Opts {
            short_args: "eprC",
            long_args: &[
                "eval",
                "print",
                "require",
                "import",
                "loader",
                "experimental-loader",
                "input-type",
                "conditions",
                "title",
            ],
            ..NO_OPTS
        },
        no_stdin: &[
            "-e",
            "--eval",
            "-p",
            "--print",
            "-v",
            "--version",
            "-h",
            "--help",
        ],
        stdin: &["-i", "--interactive"],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| versioned(n, "php"),
        opts: Opts {
            short_args: "rfcdzBREFSt",
            ..NO_OPTS
        },
        no_stdin: &["-r", "-B", "-R", "-E", "-S", "-v", "-i", "-m", "-h"],
        stdin: &["-a"],
        code_file: &["-f", "-F"],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| versioned(n, "lua") || n == "luajit",
        opts: Opts {
            short_args: "el",
            ..NO_OPTS
        },
        no_stdin: &["-e", "-v"],
        stdin: &["-i"],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "Rscript",
        opts: Opts {
            short_args: "e",
            ..NO_OPTS
        },
        no_stdin: &["-e", "--version", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "R",
        opts: Opts {
            short_args: "fed",
            long_args: &["file", "debugger"],
            ..NO_OPTS
        },
        no_stdin: &["-e", "--version", "-h", "--help"],
        stdin: &[],
        code_file: &["-f", "--file"],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| versioned(n, "tclsh") || versioned(n, "wish") || n == "jimsh",
        opts: NO_OPTS,
        no_stdin: &[],
        stdin: &[],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "expect",
        opts: Opts {
            short_args: "cfbD",
            ..NO_OPTS
        },
        no_stdin: &["-v"],
        stdin: &["-i"],
        code_file: &["-f", "-b"],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "dc",
        opts: Opts {
            short_args: "ef",
            long_args: &["expression", "file"],
            ..NO_OPTS
        },
        no_stdin: &["-e", "--expression", "-V", "--version", "-h", "--help"],
        stdin: &[],
        code_file: &["-f", "--file"],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "pwsh" || n == "powershell",
        opts: Opts {
            long_args: &["command", "Command", "c", "file", "File", "f"],
            whole: true,
            ..NO_OPTS
        },
        no_stdin: &["-v", "-version", "-Version", "-h", "-help"],
        stdin: &[],
        code_file: &["-c", "-command", "-Command", "-f", "-file", "-File"],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "psql",
        opts: Opts {
            short_args: "cdfFhLopPRTUv",
            long_args: &[
                "command",
                "dbname",
                "file",
                "field-separator",
                "host",
                "log-file",
                "output",
                "port",
                "pset",
                "record-separator",
                "table-attr",
                "username",
                "variable",
                "set",
            ],
            ..NO_OPTS
        },
        no_stdin: &[
            "-c",
            "--command",
            "-l",
            "--list",
            "-V",
            "--version",
            "--help",
        ],
        stdin: &[],
        code_file: &["-f", "--file"],
        code_operand: 0,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "mysql" || n == "mariadb",
        opts: Opts {
            // `-p` takes an optional attached password: taking the next word is wrong the
            // safe way (an operand is never code).
            short_args: "uhPDSeOp",
            long_args: &["user", "host", "port", "database", "socket", "execute"],
            ..NO_OPTS
        },
        no_stdin: &["-e", "--execute", "-V", "--version", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 0,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "sqlite3" || n == "sqlite",
        opts: Opts {
            long_args: &[
                "cmd",
                "init",
                "separator",
                "newline",
                "nullvalue",
                "mmap",
                "vfs",
                "heap",
                "maxsize",
                "pagecache",
                "lookaside",
            ],
            whole: true,
            ..NO_OPTS
        },
        no_stdin: &["-version", "--version", "-help", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 2,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "redis-cli",
        opts: Opts {
            short_args: "hpsaunridD",
            long_args: &["user", "pass", "tls", "cacert", "cert", "key"],
            ..NO_OPTS
        },
        no_stdin: &["-v", "--version", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 1,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| n == "mongo" || n == "mongosh",
        opts: Opts {
            long_args: &[
                "eval",
                "host",
                "port",
                "username",
                "password",
                "authenticationDatabase",
            ],
            ..NO_OPTS
        },
        no_stdin: &["--eval", "--version", "--help"],
        stdin: &[],
        code_file: &[],
        code_operand: 0,
        reads_stdin_by_default: true,
    },
    Lang {
        names: |n| matches!(n, "awk" | "gawk" | "mawk" | "nawk" | "sed" | "gsed"),
        opts: Opts {
            short_args: "fvFeil",
            long_args: &[
                "file",
                "assign",
                "field-separator",
                "include",
                "source",
                "expression",
                "line-length",
            ],
            ..NO_OPTS
        },
        no_stdin: &[],
        stdin: &[],
        code_file: &["-f", "--file"],
        code_operand: 0,
        reads_stdin_by_default: false,
    },
    Lang {
        names: |n| {
            matches!(
                n,
                "xargs"
                    | "irb"
                    | "jshell"
                    | "bc"
                    | "ed"
                    | "red"
                    | "ex"
                    | "vi"
                    | "vim"
                    | "nvim"
                    | "view"
            )
        },
        opts: NO_OPTS,
        no_stdin: &[],
        stdin: &[],
        code_file: &[],
        code_operand: 0,
        reads_stdin_by_default: true,
    },
];

// ---------------------------------------------------------------------------------------------
// Stdin lines.

/// Longest line text kept, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A line read by an interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StdinLine {
    /// The line without its `\n` (nor a `\r` before it), lossy UTF-8, at most
    /// [`MAX_LINE_BYTES`] bytes of it.
    pub text: String,
    /// The line was longer than [`MAX_LINE_BYTES`]: `text` is its beginning.
    pub truncated: bool,
    /// The line's length in bytes (without `\n` and the `\r` before it).
    pub bytes: u64,
    /// For a truncated line, the SHA-256 (hex) of all its bytes.
    pub sha256: Option<String>,
}

/// A line completed by a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEnd {
    /// The offset in the chunk just after the line's `\n`.
    pub end: usize,
    pub line: StdinLine,
}

/// Cuts an interpreter's stdin into lines, across chunks; keeps at most one line's first
/// [`MAX_LINE_BYTES`] bytes.
#[derive(Debug, Default)]
pub struct StdinLines {
    buf: Vec<u8>,
    /// Bytes of the line so far (kept or not).
    len: u64,
    /// The hash of the line so far, once it is longer than kept.
    sha: Option<Sha256>,
    /// A `\r` ended the last chunk: dropped if a `\n` follows.
    cr: bool,
    /// Something (even an empty segment before a `\r`) was fed since the last line.
    started: bool,
}

impl StdinLines {
    pub fn new() -> Self {
        StdinLines::default()
    }

    /// The lines `chunk` completes, each with where it ends in `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<LineEnd> {
        let mut ends = Vec::new();
        let mut start = 0;
        for (i, _) in chunk.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.segment(&chunk[start..i]);
            // A `\r` right before the `\n` is not part of the line.
            self.cr = false;
            ends.push(LineEnd {
                end: i + 1,
                line: self.take(),
            });
            start = i + 1;
        }
        if start < chunk.len() {
            self.segment(&chunk[start..]);
        }
        ends
    }

    /// The channel's input ended: the last line, if it had no `\n`.
    pub fn finish(&mut self) -> Option<StdinLine> {
        if !self.started {
            return None;
        }
        self.cr = false;
        Some(self.take())
    }

    /// Bytes of the current line, without `\n`.
    fn segment(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.started = true;
        if std::mem::take(&mut self.cr) {
            self.push(b"\r");
        }
        if let Some(stripped) = bytes.strip_suffix(b"\r") {
            self.cr = true;
            bytes = stripped;
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let room = MAX_LINE_BYTES - self.buf.len();
        if bytes.len() <= room && self.sha.is_none() {
            self.buf.extend_from_slice(bytes);
            return;
        }
        let sha = self.sha.get_or_insert_with(|| {
            let mut sha = Sha256::new();
            sha.update(&self.buf);
            sha
        });
        sha.update(bytes);
        let keep = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..keep]);
    }

    fn take(&mut self) -> StdinLine {
        let sha = self.sha.take();
        let line = StdinLine {
            text: String::from_utf8_lossy(&self.buf).into_owned(),
            truncated: sha.is_some(),
            bytes: self.len,
            sha256: sha.map(|s| hex::encode(s.finalize())),
        };
        self.buf.clear();
        self.len = 0;
        self.started = false;
        line
    }
}

#[cfg(test)]
mod tests;
