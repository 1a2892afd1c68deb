//! Splitting a command line into simple commands, like a POSIX shell does: quotes, escapes,
//! separators, subshells, substitutions, comments and here-documents.

use super::MAX_NESTING;

/// A word of a simple command, unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Word {
    pub(super) text: String,
    /// Has an expansion (`$x`, `$(...)`, backquotes): its value is not known here.
    pub(super) dynamic: bool,
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
pub(super) fn lex(command: &str, depth: usize) -> Option<Vec<Vec<Word>>> {
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
