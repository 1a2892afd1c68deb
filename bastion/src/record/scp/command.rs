//! The remote side of scp recognized in an exec command: which way, which path, which flags.

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
    parse_words(&shell_words(command)?)
}

/// Recognize the remote side of scp in the words of a simple command (the program first).
pub(crate) fn parse_words(words: &[String]) -> Option<ScpTransfer> {
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
