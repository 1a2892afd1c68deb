//! A program's options as it would read them, and the operands after them.

use super::lex::Word;

/// Words naming stdin as a file.
const STDIN_PATHS: [&str; 4] = ["-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"];

/// How a program's options are written.
pub(super) struct Opts {
    /// Short option letters that take an argument (the rest of the word, or the next word).
    pub(super) short_args: &'static str,
    /// Long options (without dashes) that take an argument (after `=`, or the next word).
    pub(super) long_args: &'static [&'static str],
    /// `+x` words are options too (shells).
    pub(super) plus: bool,
    /// Single-dash long options (`-batch`, `-cmd`): a word is one option, never a cluster.
    pub(super) whole: bool,
}

pub(super) const NO_OPTS: Opts = Opts {
    short_args: "",
    long_args: &[],
    plus: false,
    whole: false,
};

/// One option as written: `-x`, `--name` or `-name`, and its argument.
pub(super) struct Opt {
    pub(super) name: String,
    pub(super) value: Option<Word>,
}

/// The options before the first operand (or `--`), and the operands.
pub(super) fn options<'a>(args: &'a [Word], spec: &Opts) -> (Vec<Opt>, &'a [Word]) {
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

pub(super) fn has(opts: &[Opt], names: &[&str]) -> bool {
    opts.iter().any(|o| names.contains(&o.name.as_str()))
}

pub(super) fn value<'a>(opts: &'a [Opt], names: &[&str]) -> Option<&'a Word> {
    opts.iter()
        .find(|o| names.contains(&o.name.as_str()))
        .and_then(|o| o.value.as_ref())
}

pub(super) fn is_stdin(word: &Word) -> bool {
    STDIN_PATHS.contains(&word.text.as_str())
}
