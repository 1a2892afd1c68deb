//! Interpreters: shells, general-purpose languages and database shells, and when each reads
//! the code it runs from stdin.

use super::lex::Word;
use super::options::{NO_OPTS, Opts, has, is_stdin, options, value};
use super::{ExecKind, classify_at, interpreter};

pub(super) const SHELLS: [&str; 16] = [
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

pub(super) fn shell(program: &str, args: &[Word], depth: usize) -> ExecKind {
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
pub(super) struct Lang {
    pub(super) names: fn(&str) -> bool,
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
    pub(super) fn classify(&self, program: &str, args: &[Word]) -> ExecKind {
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

pub(super) const LANGS: [Lang; 19] = [
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
