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
//! - [`ExecKind::Command`]: only the programs known to run nothing they read nor anything their
//!   words could start unseen (`DATA_PROGRAMS` in `wrappers.rs`: `cat`, `tee`, `dd`, `tar`
//!   without its options that run programs, `gzip`, `sha256sum`, `grep`, `ls`, `echo`...),
//!   `rsync --server`, and the wrappers' own forms that run nothing (`sudo -l`, `env` alone).
//!   **Any other program is an interpreter**: a wrapper this module does not know (`setarch`,
//!   `strace`, `prlimit`, `kubectl exec -i`, `docker exec -i`, `socat`, `find -exec`), a
//!   function, alias or file defined on the node (`f() { bash; }; f`, `ln -s /bin/bash s; ./s`),
//!   a word the shell expands into another (`/bin/bas?`, `{bash,-s}`, `$'\x62ash'`), a builtin
//!   that runs its words (`trap`, `export`, `set`). Likewise a command with an assignment to a
//!   variable other than the locale, `TZ`, `TERM`, `COLUMNS`, `LINES`, `NO_COLOR` and `TMPDIR`
//!   (`BASH_ENV=/dev/stdin bash -c true`, `LD_PRELOAD=...`, `PATH=...`). Over-reporting is the
//!   safe side: the cost of counting a program as an interpreter is that the data lines it is
//!   sent are logged as commands.
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
//! Aliases, functions, `PATH` and files on the node cannot change a data program into another
//! one here: what is not on the list is an interpreter whatever it is called. What stays out of
//! reach: a data program's own binary replaced on the node (`/bin/cat` overwritten by root), and
//! a file written now (by `cat > x`, scp or sftp: their content is in the recording or hashed)
//! that something runs later, whose running is then recorded as what ran it.
//!
//! # Stdin lines ([`StdinLines`])
//!
//! The client→node bytes of an interpreter channel, cut into lines at `\n` or NUL (`xargs -0`;
//! a `\r` before a `\n` is dropped), lossy UTF-8; a line longer than [`MAX_LINE_BYTES`] comes in
//! pieces of that size, each as soon as it is complete (before its bytes reach the node), the
//! last with the line's length and the SHA-256 of all its bytes: no byte an interpreter reads is
//! left out of the audit log, however long its line. A chunk that ends inside a line has the
//! bytes of it that the chunk brought reported ahead, as a partial line
//! ([`StdinLines::partial`]), before the chunk reaches the node: an interpreter may run them
//! before the newline comes (`head -c N | bash`), and so may a program that runs text at another
//! separator (`awk -v RS=';'`), which has it in the line or the partial line that holds it.
//!
//! Here, [`classify`]; in `lex`, the command line split into simple commands; in `options`, a
//! program's options; in `wrappers`, a simple command looked through to its program; in
//! `interpreters`, the shells and languages; in `stdin`, [`StdinLines`].
//!
//! [`scp::parse_exec`]: crate::record::scp::parse_exec

mod interpreters;
mod lex;
mod options;
mod stdin;
mod wrappers;

use serde::Serialize;

use crate::record::scp::ScpTransfer;
use lex::lex;
pub use stdin::{LineEnd, MAX_LINE_BYTES, StdinLine, StdinLines};
use wrappers::classify_words;

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

#[cfg(test)]
mod tests;
