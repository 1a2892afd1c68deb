//! A simple command looked through its assignments, reserved words and wrappers (`sudo`, `env`,
//! `sh -c`, `ssh HOST CMD`...) to the program that really runs.

use super::interpreters::{LANGS, SHELLS, shell};
use super::lex::{Word, lex};
use super::options::{NO_OPTS, Opts, has, options, value};
use super::{ExecKind, UNKNOWN, UNPARSED, classify_at, interpreter};
use crate::record::scp;

/// Skipped before a command (`time` is a wrapper with options).
const RESERVED: [&str; 12] = [
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until",
];

/// Programs whose stdin is data and that run nothing they read, nor anything their words could
/// name without this classification seeing it: only these are [`ExecKind::Command`]; any other
/// program (a wrapper not listed above, `setarch`, `strace`, `kubectl exec -i`, a function or
/// alias defined on the node, a file written there) is taken to run what it reads.
const DATA_PROGRAMS: &[&str] = &[
    // Reading and writing bytes.
    "cat",
    "tac",
    "tee",
    "dd",
    "head",
    "tail",
    "wc",
    "uniq",
    "cut",
    "tr",
    "paste",
    "fold",
    "nl",
    "rev",
    "expand",
    "unexpand",
    "comm",
    "join",
    "pv",
    "base64",
    "base32",
    "basenc",
    "xxd",
    "od",
    "hexdump",
    "md5sum",
    "sha1sum",
    "sha224sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "b2sum",
    "cksum",
    "sum",
    "shasum",
    "gzip",
    "gunzip",
    "zcat",
    "bzip2",
    "bunzip2",
    "bzcat",
    "xz",
    "unxz",
    "xzcat",
    "lzma",
    "zstd",
    "unzstd",
    "zstdcat",
    "lz4",
    "pigz",
    "grep",
    "egrep",
    "fgrep",
    "jq",
    "curl",
    "tar",
    // Builtins and programs that read no stdin and start nothing.
    "true",
    "false",
    ":",
    "echo",
    "printf",
    "test",
    "[",
    "exit",
    "cd",
    "pwd",
    "sleep",
    "wait",
    "read",
    "shift",
    "umask",
    "ls",
    "stat",
    "id",
    "whoami",
    "groups",
    "hostname",
    "uname",
    "date",
    "uptime",
    "df",
    "du",
    "free",
    "ps",
    "pgrep",
    "kill",
    "mkdir",
    "rmdir",
    "rm",
    "mv",
    "cp",
    "touch",
    "chmod",
    "chown",
    "chgrp",
    "ln",
    "readlink",
    "realpath",
    "basename",
    "dirname",
    "sync",
    "diff",
    "cmp",
    "nproc",
    "lscpu",
    "lsblk",
    "findmnt",
    "dmesg",
    "ss",
    "netstat",
    "mktemp",
    "seq",
    "yes",
    "file",
    "which",
    "type",
    // Reserved words whose words are not run (the loop's and the case's commands are their own).
    "for",
    "case",
];

/// `tar`'s long options that run a program (on the archive, on each member, at checkpoints...).
/// GNU tar takes any unambiguous prefix of a long option (`--to-c` is `--to-command`).
const TAR_RUNS: &[&str] = &[
    "to-command",
    "checkpoint-action",
    "info-script",
    "new-volume-script",
    "use-compress-program",
    "rsh-command",
    "rmt-command",
];

/// `word` is the long option `--NAME` (or `--NAME=...`) for one of `names`, or a prefix of one
/// of at least two letters (as getopt_long takes it), or names one of them anywhere.
fn long_option_of(word: &str, names: &[&str]) -> bool {
    let Some(option) = word.strip_prefix("--") else {
        return false;
    };
    let option = option.split_once('=').map_or(option, |(o, _)| o);
    names
        .iter()
        .any(|n| (option.len() >= 2 && n.starts_with(option)) || option.contains(n))
}

/// Variables an assignment may set without changing what a shell or a program runs (`BASH_ENV`,
/// `ENV`, `LD_PRELOAD`, `PROMPT_COMMAND`, `PYTHONSTARTUP`... all do).
fn harmless_variable(name: &str) -> bool {
    matches!(
        name,
        "LANG" | "LANGUAGE" | "TZ" | "TERM" | "COLUMNS" | "LINES" | "NO_COLOR" | "TMPDIR"
    ) || name.starts_with("LC_")
}

/// A data program whose words here do not make it run anything.
fn runs_only_data(program: &str, args: &[Word]) -> bool {
    if !DATA_PROGRAMS.contains(&program) {
        return false;
    }
    match program {
        "tar" => !args.iter().any(|w| {
            w.dynamic
                || long_option_of(&w.text, TAR_RUNS)
                // `-I PROG`, `-F SCRIPT`: an old-style or clustered option word naming either.
                || (!w.text.starts_with("--") && w.text.len() <= 8 && w.text.contains(['I', 'F']))
        }),
        // Written to a file the node may run later is the file's business; what is run now is
        // what counts: `curl -K -` reads options, never commands.
        _ => true,
    }
}

/// The variable a `NAME=value` word assigns, if it is one.
fn assigned_name(word: &Word) -> Option<&str> {
    let (name, _) = word.text.split_once('=')?;
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// What a program does with the rest of its words.
enum Step {
    /// It runs these words as a command.
    Run(Vec<Word>),
    Done(ExecKind),
}

pub(super) fn classify_words(words: &[Word], depth: usize) -> ExecKind {
    let mut rest = words.to_vec();
    loop {
        let skip = rest
            .iter()
            .take_while(|w| assigned_name(w).is_some() || RESERVED.contains(&w.text.as_str()))
            .count();
        // `BASH_ENV=/dev/stdin bash -c true`, `set -a; ENV=...`: what runs is not what the
        // words say.
        if let Some(name) = rest[..skip]
            .iter()
            .filter_map(assigned_name)
            .find(|name| !harmless_variable(name))
        {
            return interpreter(&format!("{name}="));
        }
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
        // `rsync --server`, the remote end of rsync: its stdin is rsync's protocol.
        "rsync"
            if args.first().is_some_and(|w| w.text == "--server")
                && !args
                    .iter()
                    .any(|w| w.dynamic || long_option_of(&w.text, &["daemon", "config"])) =>
        {
            ExecKind::Command
        }
        _ => match LANGS.iter().find(|l| (l.names)(program)) {
            Some(lang) => lang.classify(program, args),
            None if runs_only_data(program, args) => ExecKind::Command,
            None => interpreter(program),
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
            // A script from the node's disk may read the channel's stdin and run it, as `sh x`.
            Some(_) => interpreter(program),
            None => ExecKind::Command,
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
