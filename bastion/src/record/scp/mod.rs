//! `scp` in its legacy (rcp) protocol runs as an exec command on the node: `scp -t PATH` receives
//! files into PATH (an upload by the engineer), `scp -f PATH...` sends them (a download). The
//! client adds `-r` (recursive), `-p` (preserve times and modes), `-d` (target must be a
//! directory) and `-v`; OpenSSH inserts `--` before a path starting with `-`. Modern `scp` uses
//! SFTP instead, which the sftp parser sees.
//!
//! The path is the remote shell's word(s), unquoted; it is recorded, never used as a file name.

/// Which way the files go, from the engineer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScpDirection {
    /// `scp -t`: the node receives files.
    Upload,
    /// `scp -f`: the node sends files.
    Download,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScpTransfer {
    pub direction: ScpDirection,
    /// The remote path (several paths of a download joined by a space).
    pub path: String,
    pub recursive: bool,
    pub preserve: bool,
    /// `-d`: the target must be a directory.
    pub target_is_dir: bool,
}

/// Recognize the remote side of scp in an exec command.
pub fn parse_exec(command: &str) -> Option<ScpTransfer> {
    let words = shell_words(command)?;
    let mut words = words.iter();
    let program = words.next()?;
    if program.rsplit('/').next() != Some("scp") {
        return None;
    }
    let mut direction = None;
    let (mut recursive, mut preserve, mut target_is_dir) = (false, false, false);
    let mut paths = Vec::new();
    let mut options_done = false;
    for word in words {
        if !options_done && word == "--" {
            options_done = true;
            continue;
        }
        match word.strip_prefix('-') {
            Some(flags) if !options_done && !flags.is_empty() => {
                for flag in flags.chars() {
                    match flag {
                        't' => direction = merge(direction, ScpDirection::Upload)?,
                        'f' => direction = merge(direction, ScpDirection::Download)?,
                        'r' => recursive = true,
                        'p' => preserve = true,
                        'd' => target_is_dir = true,
                        'v' | 'q' | 'T' => {}
                        _ => return None,
                    }
                }
            }
            Some(_) | None => {
                options_done = true;
                paths.push(word.as_str());
            }
        }
    }
    let direction = direction?;
    if paths.is_empty() {
        return None;
    }
    Some(ScpTransfer {
        direction,
        path: paths.join(" "),
        recursive,
        preserve,
        target_is_dir,
    })
}

fn merge(current: Option<ScpDirection>, new: ScpDirection) -> Option<Option<ScpDirection>> {
    match current {
        None => Some(Some(new)),
        Some(d) if d == new => Some(Some(new)),
        Some(_) => None,
    }
}

/// Split like a POSIX shell does words: blanks separate, `'...'` is literal, `"..."` keeps `\"`,
/// `\\`, `\$` and `` \` `` escapes, a backslash outside quotes escapes the next character. `None`
/// for an unterminated quote or anything a shell would treat as more than one simple command.
fn shell_words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            '\n' => {}
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next()? {
                    '\n' => {}
                    c => word.push(c),
                }
            }
            ';' | '&' | '|' | '\n' | '<' | '>' | '`' | '(' | ')' => return None,
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScpDirection::{Download, Upload};

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
}
