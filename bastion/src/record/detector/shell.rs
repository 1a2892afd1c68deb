//! When a command line is complete: the small part of the bash grammar that makes bash ask for
//! more lines (its `PS2` prompt) before it runs anything.
//!
//! Supported: single quotes, double quotes (with `\` escapes), `$'…'` (with `\` escapes), a
//! trailing unescaped `\` (backslash-newline), here-documents (`<<WORD`, `<<-WORD`, quoted
//! delimiters `<<'EOF'` / `<<"EOF"` / `<<\EOF`, several on one line), a line ending with `&&`,
//! `||`, `|` or `|&`, and `#` comments (which hide quotes and operators after them).
//!
//! Not supported (each line of these is its own command): compound commands spanning lines
//! (`if … fi`, `for … done`, `{ … }`, functions), an open `$(`, `` ` `` or `(`. `<<` inside
//! `$(( ))` is taken for a here-document, so the lines after it are joined until a line equal
//! to the "delimiter" (or the detector's bound) — over-reporting in one command, never a loss.

use std::collections::VecDeque;

/// Why a command line is not complete yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// Bash would run it.
    Complete,
    /// It ends with an unescaped `\`: bash drops the backslash and the newline.
    Backslash,
    /// Inside `'…'` or `$'…'`.
    SingleQuote,
    /// Inside `"…"`.
    DoubleQuote,
    /// A here-document's body has not ended.
    HereDoc,
    /// It ends with `&&`, `||`, `|` or `|&`.
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
    Ansi,
}

struct HereDoc {
    delimiter: String,
    strip_tabs: bool,
}

/// Whether `text` (the lines given so far, joined with `\n`) is a complete command for bash.
pub(super) fn scan(text: &str) -> Open {
    let mut quote = Quote::None;
    let mut queued: VecDeque<HereDoc> = VecDeque::new();
    let mut body: Option<HereDoc> = None;
    let mut after_operator = false;
    let mut trailing_backslash = false;
    for line in text.split('\n') {
        if let Some(doc) = &body {
            let candidate = if doc.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if candidate == doc.delimiter {
                body = queued.pop_front();
            }
            continue;
        }
        let end = scan_line(line, &mut quote, &mut queued);
        trailing_backslash = end.backslash;
        // A line without a token (blank, or only a comment) leaves the operator wanting more.
        after_operator = end.operator.unwrap_or(after_operator);
        if quote == Quote::None && !trailing_backslash {
            body = queued.pop_front();
        }
    }
    match (quote, trailing_backslash) {
        (Quote::Single | Quote::Ansi, _) => Open::SingleQuote,
        (Quote::Double, _) => Open::DoubleQuote,
        (Quote::None, true) => Open::Backslash,
        (Quote::None, false) if body.is_some() || !queued.is_empty() => Open::HereDoc,
        (Quote::None, false) if after_operator => Open::Operator,
        (Quote::None, false) => Open::Complete,
    }
}

/// How a physical line ended.
struct LineEnd {
    backslash: bool,
    /// Whether the last token was an operator that wants more (`Some(true)`), another token
    /// (`Some(false)`), or the line had no token outside a comment (`None`).
    operator: Option<bool>,
}

/// Scan one physical line, carrying the quote state across lines and queuing here-documents.
fn scan_line(line: &str, quote: &mut Quote, queued: &mut VecDeque<HereDoc>) -> LineEnd {
    let chars: Vec<char> = line.chars().collect();
    let mut end = LineEnd {
        backslash: false,
        operator: None,
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match *quote {
            Quote::Single => {
                if c == '\'' {
                    *quote = Quote::None;
                }
                i += 1;
            }
            Quote::Double | Quote::Ansi => {
                let close = if *quote == Quote::Double { '"' } else { '\'' };
                if c == '\\' {
                    // An escaped character (or newline): the quote stays open either way.
                    i += 2;
                    continue;
                }
                if c == close {
                    *quote = Quote::None;
                }
                i += 1;
            }
            Quote::None => {
                i = scan_unquoted(&chars, i, quote, queued, &mut end);
            }
        }
    }
    end
}

/// One step outside quotes, from `chars[i]`; the index of the next character to look at.
fn scan_unquoted(
    chars: &[char],
    i: usize,
    quote: &mut Quote,
    queued: &mut VecDeque<HereDoc>,
    end: &mut LineEnd,
) -> usize {
    let c = chars[i];
    let next = chars.get(i + 1).copied();
    let word_start = i == 0 || is_separator(chars[i - 1]);
    match c {
        '\\' => {
            if next.is_none() {
                end.backslash = true;
            }
            end.operator = Some(false);
            i + 2
        }
        '\'' => {
            *quote = Quote::Single;
            end.operator = Some(false);
            i + 1
        }
        '"' => {
            *quote = Quote::Double;
            end.operator = Some(false);
            i + 1
        }
        '$' if next == Some('\'') => {
            *quote = Quote::Ansi;
            end.operator = Some(false);
            i + 2
        }
        // A comment runs to the end of the line.
        '#' if word_start => chars.len(),
        // A here-string, not a here-document.
        '<' if next == Some('<') && chars.get(i + 2) == Some(&'<') => {
            end.operator = Some(false);
            i + 3
        }
        '<' if next == Some('<') => {
            end.operator = Some(false);
            here_doc(chars, i + 2, queued)
        }
        '&' if next == Some('&') => {
            end.operator = Some(true);
            i + 2
        }
        '|' if next == Some('|') || next == Some('&') => {
            end.operator = Some(true);
            i + 2
        }
        '|' => {
            end.operator = Some(true);
            i + 1
        }
        c if c.is_whitespace() => i + 1,
        _ => {
            end.operator = Some(false);
            i + 1
        }
    }
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '|' | '&' | '(' | ')' | '<' | '>')
}

/// Read a here-document operator's word from `chars[i]` (after `<<`) and queue it.
fn here_doc(chars: &[char], mut i: usize, queued: &mut VecDeque<HereDoc>) -> usize {
    let strip_tabs = chars.get(i) == Some(&'-');
    if strip_tabs {
        i += 1;
    }
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let mut delimiter = String::new();
    let mut quote = Quote::None;
    while let Some(&c) = chars.get(i) {
        match (quote, c) {
            (Quote::None, c) if is_separator(c) => break,
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::None, '\\') => {
                i += 1;
                if let Some(&escaped) = chars.get(i) {
                    delimiter.push(escaped);
                }
            }
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
            (Quote::None | Quote::Single | Quote::Double | Quote::Ansi, c) => delimiter.push(c),
        }
        i += 1;
    }
    if !delimiter.is_empty() {
        queued.push_back(HereDoc {
            delimiter,
            strip_tabs,
        });
    }
    i
}

/// `more` appended to the incomplete command `text`, as bash reads it: a backslash-newline is
/// removed, anything else is joined with a newline.
pub(super) fn join(text: &mut String, open: Open, more: &str) {
    match open {
        Open::Backslash => {
            text.pop();
        }
        Open::Complete | Open::SingleQuote | Open::DoubleQuote | Open::HereDoc | Open::Operator => {
            text.push('\n');
        }
    }
    text.push_str(more);
}

/// A command line that changes how the shell's prompt reads or whether the terminal echoes
/// (`PS1=...`, `PROMPT_COMMAND=...`, zsh's `PROMPT=...`, csh's `set prompt`, any `stty`): after
/// it, a prompt that reads like a password prompt may be the session's own shell, so no prompt
/// is trusted to ask for a secret. Read as words, so `ps1` in a path or `sttyfoo` do not count.
pub(super) fn forges_prompts(command: &str) -> bool {
    let words = || {
        command
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`'))
            .filter(|w| !w.is_empty())
    };
    // Words are split at white space, so `export PS1=...` has `PS1=...` as a word of its own.
    let assigns = |w: &str| {
        [
            "PS1",
            "PS2",
            "PS4",
            "PROMPT",
            "PROMPT_COMMAND",
            "RPROMPT",
            "prompt",
        ]
        .iter()
        .any(|v| {
            w.strip_prefix(v)
                .is_some_and(|rest| rest.starts_with('=') || rest.starts_with("+="))
        })
    };
    words().any(|w| {
        w == "stty"
            || w.ends_with("/stty")
            || assigns(w)
            || w == "prompt" && command.contains("set")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_commands() {
        let cases: &[(&str, Open)] = &[
            ("ls -l", Open::Complete),
            ("", Open::Complete),
            ("echo eps\\", Open::Backslash),
            ("echo a\\\\", Open::Complete),
            ("echo eps\\\nilon", Open::Complete),
            ("echo 'it", Open::SingleQuote),
            ("echo 'it\nis'", Open::Complete),
            ("echo \"a", Open::DoubleQuote),
            ("echo \"a\\\"", Open::DoubleQuote),
            ("echo \"a\\\"b\"", Open::Complete),
            ("echo $'a\\'b", Open::SingleQuote),
            ("echo $'a\\'b'", Open::Complete),
            ("echo 'a\\'", Open::Complete),
            ("echo \"it's\"", Open::Complete),
            ("echo it\\'s", Open::Complete),
            ("echo a # it's", Open::Complete),
            ("echo a#'b", Open::SingleQuote),
            ("cat <<EOF", Open::HereDoc),
            ("cat <<EOF\nhello", Open::HereDoc),
            ("cat <<EOF\nhello\nEOF", Open::Complete),
            ("cat <<EOF\nEOF \nx", Open::HereDoc),
            ("cat <<-EOF\n\thello\n\tEOF", Open::Complete),
            ("cat <<'EOF'\n$x\nEOF", Open::Complete),
            ("cat <<\"E O\"\nx\nE O", Open::Complete),
            ("cat <<\\EOF\nx\nEOF", Open::Complete),
            ("cat <<A <<B\nA\n", Open::HereDoc),
            ("cat <<A <<B\nA\nB", Open::Complete),
            ("cat <<<word", Open::Complete),
            ("cat << EOF > f\nx\nEOF", Open::Complete),
            ("true &&", Open::Operator),
            ("true &&\n", Open::Operator),
            ("true &&\nfalse", Open::Complete),
            ("false ||", Open::Operator),
            ("ls |", Open::Operator),
            ("ls |&", Open::Operator),
            ("ls | wc", Open::Complete),
            ("sleep 1 &", Open::Complete),
            ("ls | # comment", Open::Operator),
            ("echo '|'", Open::Complete),
            ("echo \\|", Open::Complete),
            ("echo 日本語 'x", Open::SingleQuote),
        ];
        for (text, want) in cases {
            assert_eq!(scan(text), *want, "{text:?}");
        }
    }

    #[test]
    fn joining() {
        let mut text = "echo eps\\".to_string();
        join(&mut text, Open::Backslash, "ilon-5");
        assert_eq!(text, "echo epsilon-5");
        let mut text = "echo 'a".to_string();
        join(&mut text, Open::SingleQuote, "b'");
        assert_eq!(text, "echo 'a\nb'");
    }
}
