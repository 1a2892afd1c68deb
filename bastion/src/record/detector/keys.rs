//! Keys from the input byte stream, and the line editing the detector can follow.

/// Longest typed text simulated per line; past this the line's text is uncertain, and what the
/// keys tell says how much more was typed.
const MAX_TYPED: usize = 64 * 1024;
/// How many trailing characters of a typed run must appear on screen to count as its echo.
const ECHO_EVIDENCE_CHARS: usize = 32;

/// Keys, from the bytes a terminal sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    /// A printable byte (ASCII, or part of a UTF-8 character).
    Text,
    /// A printable character sent as a sequence (kitty keyboard protocol `CSI 97 u`).
    Char(char),
    /// CR, LF, or another key that accepts a line (see [`KeyLexer::feed`]).
    Enter,
    /// A key on which the shell runs part of the line and keeps it for more editing: readline's
    /// shell-expand-line (ESC ctrl-E, which runs the line's `$(...)`) and
    /// edit-and-execute-command (ctrl-X ctrl-E, which runs the edited buffer).
    RunsLine,
    /// DEL or BS.
    Backspace,
    /// ctrl-U.
    KillLine,
    /// ctrl-W.
    KillWord,
    /// ctrl-C.
    Interrupt,
    /// `ESC[200~`. Line breaks inside a paste are Enter like any other: whether the program
    /// honours bracketed paste is not known (the mode is set by the node's output).
    PasteStart,
    /// `ESC[201~`.
    PasteEnd,
    /// ESC then a printable byte: alt-<key> to readline, but ESC and then the key to vi-style
    /// programs (`ESC :q` in vim). Not simulated, but its byte is part of the raw keys.
    Meta(u8),
    /// Any other control key or escape sequence (arrows, tab, function keys...).
    Other,
}

#[derive(Debug, Clone, Copy, Default)]
enum LexState {
    #[default]
    Ground,
    Escape,
    Csi(Csi),
    Ss3,
}

/// Most CSI parameters kept; later ones are ignored.
const CSI_PARAMS: usize = 3;

/// A CSI sequence being read.
#[derive(Debug, Clone, Copy, Default)]
struct Csi {
    params: [u32; CSI_PARAMS],
    /// Index of the parameter being read.
    index: usize,
    /// In a `:` sub-parameter, which is skipped.
    sub: bool,
    /// Has an intermediate or private marker (`?`, `<`, `>`, `=`, ` `...): not a key we name.
    private: bool,
}

impl Csi {
    fn digit(&mut self, digit: u8) {
        if self.sub {
            return;
        }
        if let Some(param) = self.params.get_mut(self.index) {
            *param = param.saturating_mul(10).saturating_add(u32::from(digit));
        }
    }

    /// The key a final byte completes. Besides bracketed paste, Enter sent as a sequence: the
    /// kitty keyboard protocol (`CSI 13 u`, keypad `CSI 57414 u`) and xterm's
    /// modifyOtherKeys (`CSI 27 ; mods ; 13 ~`), which a node can turn on from its output.
    fn key(self, last: u8) -> Key {
        if self.private {
            return Key::Other;
        }
        match (last, self.index, self.params) {
            (b'~', 0, [200, _, _]) => Key::PasteStart,
            (b'~', 0, [201, _, _]) => Key::PasteEnd,
            (b'u', _, [13 | 57414, _, _]) | (b'~', 2, [27, _, 13]) => Key::Enter,
            (b'u', _, [code, mods, _]) => kitty_key(code, mods),
            _ => Key::Other,
        }
    }
}

/// A key of the kitty keyboard protocol with "report all keys as escape codes", which a node can
/// turn on (`CSI > 8 u`) so that letters, Backspace and ctrl-C come as `CSI code ; mods u`.
fn kitty_key(code: u32, mods: u32) -> Key {
    // The modifier parameter is 1 + a bit mask (shift 1, alt 2, ctrl 4, super 8, ...).
    let bits = mods.saturating_sub(1);
    let shift = bits & 1 != 0;
    let others = bits & !1 != 0;
    let ctrl_only = bits == 4;
    let Some(c) = char::from_u32(code) else {
        return Key::Other;
    };
    match c {
        '\x7f' | '\x08' if !others => Key::Backspace,
        'c' if ctrl_only => Key::Interrupt,
        'u' if ctrl_only => Key::KillLine,
        'w' if ctrl_only => Key::KillWord,
        'j' | 'm' | 'o' if ctrl_only => Key::Enter,
        c if !others && !c.is_control() && u32::from(c) < 57344 => {
            Key::Char(if shift { c.to_ascii_uppercase() } else { c })
        }
        _ => Key::Other,
    }
}

#[derive(Debug, Default)]
pub(super) struct KeyLexer {
    state: LexState,
    /// The last key was ctrl-X (readline's prefix: ctrl-X ctrl-E runs the edited line).
    after_ctrl_x: bool,
}

impl KeyLexer {
    /// The key this byte completes, if any.
    pub(super) fn feed(&mut self, byte: u8) -> Option<Key> {
        let after_ctrl_x = std::mem::replace(&mut self.after_ctrl_x, byte == 0x18);
        if byte == 0x05 && (after_ctrl_x || matches!(self.state, LexState::Escape)) {
            self.state = LexState::Ground;
            return Some(Key::RunsLine);
        }
        // A control byte ends any sequence and counts on its own: ESC then CR is Enter to a
        // program in vi mode, and it must never hide inside an escape sequence.
        if byte < 0x20 && byte != 0x1b && !matches!(self.state, LexState::Ground) {
            self.state = LexState::Ground;
        }
        match self.state {
            LexState::Ground => match byte {
                0x1b => {
                    self.state = LexState::Escape;
                    None
                }
                // ctrl-O is bash's operate-and-get-next: it runs the line like Enter; ctrl-D
                // hands a cooked terminal's pending text to the program without a newline (`sh`
                // runs it at the next ctrl-D).
                b'\r' | b'\n' | 0x0f | 0x04 => Some(Key::Enter),
                0x7f | 0x08 => Some(Key::Backspace),
                0x15 => Some(Key::KillLine),
                0x17 => Some(Key::KillWord),
                0x03 => Some(Key::Interrupt),
                0x00..=0x1f => Some(Key::Other),
                _ => Some(Key::Text),
            },
            LexState::Escape => match byte {
                b'[' => {
                    self.state = LexState::Csi(Csi::default());
                    None
                }
                b'O' => {
                    self.state = LexState::Ss3;
                    None
                }
                0x1b => Some(Key::Other),
                0x20..=0x7e => {
                    self.state = LexState::Ground;
                    Some(Key::Meta(byte))
                }
                _ => {
                    self.state = LexState::Ground;
                    Some(Key::Other)
                }
            },
            LexState::Csi(mut csi) => match byte {
                b'0'..=b'9' => {
                    csi.digit(byte - b'0');
                    self.state = LexState::Csi(csi);
                    None
                }
                b';' => {
                    csi.index += 1;
                    csi.sub = false;
                    self.state = LexState::Csi(csi);
                    None
                }
                b':' => {
                    csi.sub = true;
                    self.state = LexState::Csi(csi);
                    None
                }
                0x20..=0x2f | 0x3c..=0x3f => {
                    csi.private = true;
                    self.state = LexState::Csi(csi);
                    None
                }
                0x40..=0x7e => {
                    self.state = LexState::Ground;
                    Some(csi.key(byte))
                }
                _ => {
                    self.state = LexState::Ground;
                    Some(Key::Other)
                }
            },
            // Keypad Enter in application keypad mode (`ESC =`, set by the node) is `ESC O M`.
            LexState::Ss3 => {
                self.state = LexState::Ground;
                Some(if byte == b'M' { Key::Enter } else { Key::Other })
            }
        }
    }
}

/// The editing the detector can follow, applied to the printable keys of one line.
pub(super) struct Typed {
    /// The line as typed, when `certain`.
    pub(super) text: Vec<u8>,
    /// Only keys the detector can simulate were used.
    pub(super) certain: bool,
    pub(super) any_printable: bool,
    /// Every printable byte typed, edits not applied: the text reported when the editing could
    /// not be followed.
    raw: Vec<u8>,
    /// Printable bytes typed past [`MAX_TYPED`] (in the recording, not in `raw`).
    dropped: usize,
    /// What was typed since the last key that could not be simulated, and the run before it.
    run: Vec<u8>,
    previous_run: Vec<u8>,
}

impl Default for Typed {
    fn default() -> Self {
        Typed {
            text: Vec::new(),
            certain: true,
            any_printable: false,
            raw: Vec::new(),
            dropped: 0,
            run: Vec::new(),
            previous_run: Vec::new(),
        }
    }
}

impl Typed {
    pub(super) fn push_char(&mut self, c: char) {
        let mut buffer = [0; 4];
        for &byte in c.encode_utf8(&mut buffer).as_bytes() {
            self.push(byte);
        }
    }

    pub(super) fn push(&mut self, byte: u8) {
        self.any_printable = true;
        if self.raw.len() < MAX_TYPED {
            self.raw.push(byte);
        } else {
            self.dropped += 1;
        }
        if self.text.len() < MAX_TYPED {
            self.text.push(byte);
        } else {
            self.certain = false;
        }
        if self.run.len() < MAX_TYPED {
            self.run.push(byte);
        }
    }

    pub(super) fn backspace(&mut self) {
        pop_char(&mut self.text);
        pop_char(&mut self.run);
    }

    pub(super) fn kill_line(&mut self) {
        self.text.clear();
        self.run.clear();
    }

    /// readline's `unix-word-rubout`: blanks, then non-blanks, backwards.
    pub(super) fn kill_word(&mut self) {
        for buffer in [&mut self.text, &mut self.run] {
            while buffer.last() == Some(&b' ') {
                buffer.pop();
            }
            while buffer.last().is_some_and(|&b| b != b' ') {
                buffer.pop();
            }
        }
    }

    /// A key not simulated that still typed `byte` for the raw keys. It is no printable text of
    /// its own (alt-. in bash yanks an argument: the screen has the line, not the keys).
    pub(super) fn meta(&mut self, byte: u8) {
        self.uncertain();
        if self.raw.len() < MAX_TYPED {
            self.raw.push(byte);
        }
    }

    pub(super) fn uncertain(&mut self) {
        self.certain = false;
        if !self.run.is_empty() {
            self.previous_run = std::mem::take(&mut self.run);
        }
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    /// The line as the keys tell it, and whether the editing was followed (`true`) or this is
    /// every printable key typed (`false`).
    pub(super) fn keys_text(&self) -> (String, bool) {
        let bytes = if self.certain { &self.text } else { &self.raw };
        let mut text = String::from_utf8_lossy(bytes).trim().to_string();
        if self.dropped > 0 {
            text.push_str(&format!(
                " [sallyport: {} more bytes typed on this line: see the recording]",
                self.dropped
            ));
        }
        (text, self.certain)
    }

    /// How many characters the keys put on the line (at least).
    pub(super) fn chars(&self) -> usize {
        let bytes = if self.certain { &self.text } else { &self.raw };
        bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
    }

    /// Something was typed that would show if the terminal echoed.
    pub(super) fn has_content(&self) -> bool {
        if self.certain {
            !self.text.iter().all(|b| b.is_ascii_whitespace())
        } else {
            self.any_printable
        }
    }

    /// `shown` (the screen after the anchor) is the echo of what was typed. When every key was
    /// followed, the screen must start with the typed text (output that merely contains it — `id`
    /// in `uid=0` — is not an echo). Otherwise the latest typed run (or the one before it, when
    /// the line ends with a key that could not be followed) must be on the screen, starting a
    /// word.
    pub(super) fn evidenced_by(&self, shown: &str) -> bool {
        if self.certain {
            let typed = String::from_utf8_lossy(&self.text);
            let typed = typed.trim();
            return !typed.is_empty() && shown.trim_start().starts_with(typed);
        }
        let run = if self.run.iter().all(|b| b.is_ascii_whitespace()) {
            &self.previous_run
        } else {
            &self.run
        };
        let run = String::from_utf8_lossy(run);
        let run = run.trim();
        if run.is_empty() {
            return false;
        }
        let skip = run.chars().count().saturating_sub(ECHO_EVIDENCE_CHARS);
        let tail: String = run.chars().skip(skip).collect();
        // A cut tail starts inside a word.
        if skip > 0 {
            shown.contains(&tail)
        } else {
            contains_at_word_start(shown, &tail)
        }
    }
}

/// `text` holds `part` where it is not preceded by a letter or digit.
fn contains_at_word_start(text: &str, part: &str) -> bool {
    text.match_indices(part).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
    })
}

fn pop_char(buffer: &mut Vec<u8>) {
    while let Some(b) = buffer.pop() {
        if b & 0xC0 != 0x80 {
            break;
        }
    }
}
