//! The interactive command-line detector: recovers the lines an engineer enters in a pty session
//! from what the terminal *showed*, using a vt100 screen model fed with the node's output, and
//! tells which typed input was not echoed (passwords) so that it is kept out of the recording.
//!
//! It is pure: feed it the output stream ([`Detector::output`]) and the input stream
//! ([`Detector::input`]) in the order they passed the gateway, and it returns events. The
//! asciicast recording stays the ground truth; what is detected here is an index into it, for the
//! audit log, and it is only as good as the heuristics below.
//!
//! # Heuristics
//!
//! - **Where a line starts (the anchor).** When the first byte of a new line is typed and no
//!   earlier line is still waiting for the shell (see below), the cursor position is taken as the
//!   start of the input: the prompt has been drawn and the cursor sits after it. It is kept as a
//!   cell offset inside the *logical line* (screen rows joined by the terminal's autowrap), so it
//!   survives scrolling, wrapping and redraws of the same prompt (ctrl-L, a completion list).
//! - **When a line is entered.** Enter (CR or LF in the input) closes the line, but the screen
//!   still lags: the command is read from the screen when the shell answers with its newline —
//!   just before the first LF of output after the Enter. At that moment the shell has redrawn the
//!   line as it accepted it, so backspaces, ctrl-U, ctrl-W, tab completion, history recall,
//!   reverse search and colors are all already resolved on the screen. The command is the text of
//!   the cursor's logical line from the anchor to its end, trailing blanks trimmed.
//!   Enter itself is announced at once ([`DetectorEvent::Entered`], with the screen's line when its
//!   echo was already seen): the gateway writes that durably before the Enter reaches the shell,
//!   so a line that ran is in the audit log even if the gateway dies before the shell answers.
//! - **Typed ahead.** A line started while an earlier one is still waiting has no anchor (the
//!   prompt for it is not drawn yet). The detector simulates its editing (printable keys,
//!   backspace, ctrl-U, ctrl-W) and takes the first later output line that *ends with* that text
//!   ([`Located::TypedText`]); lines that waited before a matched one were never shown and count
//!   as not echoed. A typed-ahead line with keys it cannot simulate (arrows, tab...) is taken at
//!   the first later output line that has a prompt marker (`$ `, `# `, `% `, `> `...), as the text
//!   after it ([`Located::PromptGuess`]). This is how a pasted block of lines (without bracketed
//!   paste) comes out as one command per line.
//! - **Bracketed paste.** When the shell turned bracketed paste on, line breaks inside a paste are
//!   not Enter: the shell takes the whole block at the next Enter. The command is then the anchored
//!   logical line and as many logical lines below it as the paste had breaks, joined with `\n`.
//! - **Continuation.** Each entered line is its own [`Detected`]. A line that follows one ending
//!   with an unescaped `\` is flagged `continuation` (join it to the one before to get the
//!   command the shell ran). Lines are reported as they are entered rather than held until the
//!   command is complete: the audit log sees the first part at once, and open quotes or here
//!   documents (which also continue a command) could not be told apart anyway.
//! - **Echo off.** A line counts as echoed once the screen after its anchor shows the text typed
//!   since the last key the detector cannot simulate (or the run before that). A line entered
//!   with typed text and no such evidence — a `Password:` prompt, `sudo`, `read -s`, a masked
//!   `****` echo — is reported with `echo_off` and no text, and its input must not be recorded:
//!   [`DetectorEvent::LineEcho`] says, per line, whether its input may be kept, and
//!   [`Detector::input`] says which input bytes belong to which undecided line.
//! - **Full-screen programs.** While the alternate screen is in use (`vim`, `less`, `top`, `htop`:
//!   `ESC[?1049h`, `ESC[?1047h`, `ESC[?47h`) keystrokes are not lines; entering and leaving emit
//!   [`DetectorEvent::FullScreen`] and input is kept in the recording as it is.
//!
//! # Limits
//!
//! - Every line entered is reported, whatever reads it: the answer to a `[y/N]` question or a
//!   line typed into `cat` looks like a command. Programs that draw full-screen without the
//!   alternate screen (`less -X`, `watch` on some terminals) make Enter produce junk lines.
//! - Text on the same row after the command (a zsh right prompt, an autosuggestion) is part of the
//!   command; so is a prompt that is redrawn at a different length than when the line started.
//! - A shell that moves between the rows of a long line with explicit cursor motion instead of
//!   autowrap breaks the logical line; a line longer than the screen loses its top.
//! - Background output written over the line being typed can count as its echo; a password
//!   typed at a prompt that reprints the typed characters is treated as echoed.
//! - Text given to a program without Enter (`cat`, then ctrl-D) stays part of the next line,
//!   whose anchor is then where that text began: the command comes out with the prompt in front.
//! - A shell that never answers an Enter with a newline leaves the line waiting until the next
//!   newline of output; lines still waiting when the session ends are reported without text when
//!   they have no anchor.
//! - The screen model is bounded ([`super::MAX_COLS`]×[`super::MAX_ROWS`]); wider terminals wrap
//!   differently in the model than on the engineer's screen.

use std::collections::VecDeque;
use std::ops::Range;

use super::model_size;

mod keys;
mod screen;
#[cfg(test)]
mod tests;

use keys::{Key, KeyLexer, Typed};
use screen::{
    after_prompt, cursor_offset, ends_with_unescaped_backslash, ends_with_word, span_text,
};

/// Numbers the lines the engineer types, from 0, per detector.
pub type LineId = u64;

/// Lines entered but not yet answered by the shell; past this the oldest is decided at once.
const MAX_WAITING_LINES: usize = 256;

/// An entered line, as the screen showed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detected {
    pub line: LineId,
    /// The command line; empty when `echo_off`.
    pub command: String,
    /// This line continues the previous one, which ended with an unescaped `\`.
    pub continuation: bool,
    /// The line was typed without echo: not a command, its text is unknown, and its input is
    /// left out of the recording.
    pub echo_off: bool,
    pub located: Located,
}

/// How the text of a line was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Located {
    /// From the cursor position where typing began.
    Anchor,
    /// A typed-ahead line, found by the text typed.
    TypedText,
    /// A typed-ahead line with edits, found after a prompt marker: the least certain.
    PromptGuess,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorEvent {
    Command(Detected),
    /// A full-screen program started (`entered`) or ended.
    FullScreen {
        entered: bool,
    },
    /// Enter was pressed on `line` (before it reaches the shell): the gateway writes this durably
    /// before passing the Enter on, so a line that ran is never missing from the audit log even
    /// if the gateway dies before the shell answers. `shown` is the line as the screen showed it
    /// at that moment, only when its echo was already seen (never the text of a hidden line);
    /// the [`DetectorEvent::Command`] with the same `line` is the authoritative text.
    Entered {
        line: LineId,
        shown: Option<String>,
    },
    /// Whether the input bytes of `line` (see [`Disposition::Hold`]) may be recorded. Sent once
    /// per line that had held input, as soon as it is known.
    LineEcho {
        line: LineId,
        echoed: bool,
    },
}

/// What to do with a range of input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Record it now.
    Keep,
    /// Hold it until [`DetectorEvent::LineEcho`] for this line says whether it was echoed.
    Hold(LineId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSegment {
    pub range: Range<usize>,
    pub disposition: Disposition,
}

/// The result of feeding input: the bytes split by disposition (covering the whole chunk, in
/// order), and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStep {
    pub segments: Vec<InputSegment>,
    pub events: Vec<DetectorEvent>,
}

pub struct Detector {
    parser: vt100::Parser,
    keys: KeyLexer,
    full_screen: bool,
    lines: Lines,
}

impl Detector {
    /// A detector for a pty of `cols`×`rows` (as the pty request gave them).
    pub fn new(cols: u32, rows: u32) -> Self {
        let (rows, cols) = model_size(cols, rows);
        Detector {
            parser: vt100::Parser::new(rows, cols, 0),
            keys: KeyLexer::default(),
            full_screen: false,
            lines: Lines::default(),
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        let (rows, cols) = model_size(cols, rows);
        self.parser.screen_mut().set_size(rows, cols);
    }

    /// Whether a full-screen program is running.
    pub fn full_screen(&self) -> bool {
        self.full_screen
    }

    /// The screen model, as it is now.
    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// Bytes from the node.
    pub fn output(&mut self, bytes: &[u8]) -> Vec<DetectorEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, newline, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &[][..]),
            };
            if !piece.is_empty() {
                self.process(piece, &mut events);
            }
            if newline {
                if !self.full_screen {
                    self.lines.at_newline(self.parser.screen(), &mut events);
                }
                self.process(b"\n", &mut events);
            }
            rest = after;
        }
        events
    }

    /// Bytes typed by the engineer.
    pub fn input(&mut self, bytes: &[u8]) -> InputStep {
        let mut step = InputStep::default();
        for (i, &byte) in bytes.iter().enumerate() {
            let key = self.keys.feed(byte);
            let disposition = if self.full_screen {
                Disposition::Keep
            } else {
                let pasting = self.keys.pasting && self.parser.screen().bracketed_paste();
                self.lines
                    .key(key, byte, pasting, self.parser.screen(), &mut step.events)
            };
            match step.segments.last_mut() {
                Some(last) if last.disposition == disposition => last.range.end = i + 1,
                Some(_) | None => step.segments.push(InputSegment {
                    range: i..i + 1,
                    disposition,
                }),
            }
        }
        step
    }

    /// The session ended: decide every line still open or waiting.
    pub fn finish(&mut self) -> Vec<DetectorEvent> {
        let mut events = Vec::new();
        if let Some(front) = self.lines.waiting.pop_front() {
            if front.anchor.is_some() && !self.full_screen {
                let _shown = self
                    .lines
                    .resolve_anchored(front, self.parser.screen(), &mut events);
            } else {
                Lines::drop_unseen(front, &mut events);
            }
        }
        self.lines.abandon_all(&mut events);
        events
    }

    fn process(&mut self, piece: &[u8], events: &mut Vec<DetectorEvent>) {
        // A full-screen program may start before the shell's newline reached us: keep the screen
        // it replaces so the waiting line can still be read.
        let before = (!self.full_screen
            && self.lines.anchored_waiting()
            && piece.windows(3).any(|w| w == b"\x1b[?"))
        .then(|| self.parser.screen().clone());
        self.parser.process(piece);
        let alternate = self.parser.screen().alternate_screen();
        if alternate != self.full_screen {
            self.full_screen = alternate;
            if alternate {
                if let Some(screen) = before {
                    let _shown = self.lines.resolve_front_anchored(&screen, events);
                }
                self.lines.abandon_all(events);
            } else {
                self.lines.after_backslash = false;
            }
            events.push(DetectorEvent::FullScreen { entered: alternate });
        }
        if !self.full_screen {
            self.lines.check_echo(self.parser.screen());
            self.lines.announce_echo(events);
        }
    }
}

/// The lines being typed and waiting for the shell.
#[derive(Default)]
struct Lines {
    next_id: LineId,
    /// The line being typed (no Enter yet).
    open: Option<Line>,
    /// Entered, waiting for the shell's newline; oldest first. Only the oldest line of all (this
    /// front, or `open` when this is empty) can have an anchor.
    waiting: VecDeque<Line>,
    /// The last command reported ended with an unescaped backslash.
    after_backslash: bool,
}

struct Line {
    id: LineId,
    /// Cell offset in the logical line where typing began.
    anchor: Option<usize>,
    typed: Typed,
    /// Echo evidence seen.
    echoed: bool,
    /// `LineEcho` sent.
    decided: bool,
    /// Line breaks pasted inside a bracketed paste.
    pasted_newlines: usize,
}

impl Lines {
    fn anchored_waiting(&self) -> bool {
        self.waiting.front().is_some_and(|l| l.anchor.is_some())
    }

    /// One input byte (and the key it completed, if any) outside full-screen programs.
    fn key(
        &mut self,
        key: Option<Key>,
        byte: u8,
        pasting: bool,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> Disposition {
        if key == Some(Key::Interrupt) {
            self.after_backslash = false;
            if let Some(line) = self.open.take() {
                Lines::abandon(line, events);
            }
            return Disposition::Keep;
        }
        let waiting_empty = self.waiting.is_empty();
        let line = self.open.get_or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            Line {
                id,
                anchor: waiting_empty.then(|| cursor_offset(screen)),
                typed: Typed::default(),
                echoed: false,
                decided: false,
                pasted_newlines: 0,
            }
        });
        let disposition = if line.decided && line.echoed {
            Disposition::Keep
        } else {
            Disposition::Hold(line.id)
        };
        let mut entered = false;
        match key {
            None => {}
            Some(Key::Text) => line.typed.push(byte),
            Some(Key::Enter) => {
                if pasting {
                    line.typed.push(b'\n');
                    line.pasted_newlines += 1;
                } else {
                    entered = true;
                }
            }
            Some(Key::Backspace) => line.typed.backspace(),
            Some(Key::KillLine) => line.typed.kill_line(),
            Some(Key::KillWord) => line.typed.kill_word(),
            Some(Key::PasteStart | Key::PasteEnd) => {}
            Some(Key::Other) => line.typed.uncertain(),
            // Handled above.
            Some(Key::Interrupt) => {}
        }
        if entered && let Some(line) = self.open.take() {
            let shown = match line.anchor {
                Some(anchor) if line.echoed => Some(
                    span_text(screen, anchor, line.pasted_newlines)
                        .trim_end()
                        .to_string(),
                ),
                _ => None,
            };
            events.push(DetectorEvent::Entered {
                line: line.id,
                shown,
            });
            self.waiting.push_back(line);
            if self.waiting.len() > MAX_WAITING_LINES
                && let Some(oldest) = self.waiting.pop_front()
            {
                if oldest.anchor.is_some() {
                    let _shown = self.resolve_anchored(oldest, screen, events);
                } else {
                    Lines::drop_unseen(oldest, events);
                }
            }
        }
        disposition
    }

    /// The oldest line that can gather echo evidence: anchored and undecided.
    fn anchored_mut(&mut self) -> Option<&mut Line> {
        let line = match self.waiting.front_mut() {
            Some(front) => front,
            None => self.open.as_mut()?,
        };
        (line.anchor.is_some() && !line.decided).then_some(line)
    }

    fn check_echo(&mut self, screen: &vt100::Screen) {
        if let Some(line) = self.anchored_mut()
            && let Some(anchor) = line.anchor
            && !line.echoed
            && line.typed.any_printable
        {
            let shown = span_text(screen, anchor, line.pasted_newlines);
            if line.typed.evidenced_by(&shown) {
                line.echoed = true;
            }
        }
    }

    /// Tell the recorder as soon as the anchored line is known to echo.
    fn announce_echo(&mut self, events: &mut Vec<DetectorEvent>) {
        if let Some(line) = self.anchored_mut()
            && line.echoed
        {
            line.decided = true;
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: true,
            });
        }
    }

    /// The shell answered with a newline (the screen is as it was just before it).
    fn at_newline(&mut self, screen: &vt100::Screen, events: &mut Vec<DetectorEvent>) {
        // The output line is the anchored line's echo: it cannot also be a typed-ahead one's.
        // (A hidden anchored line showed nothing, so a typed-ahead line may follow on it.)
        if !self.resolve_front_anchored(screen, events) {
            self.match_typed_ahead(screen, events);
        }
    }

    /// Resolve the waiting anchored line, if any; whether it was shown.
    fn resolve_front_anchored(
        &mut self,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> bool {
        if self.anchored_waiting()
            && let Some(line) = self.waiting.pop_front()
        {
            self.resolve_anchored(line, screen, events)
        } else {
            false
        }
    }

    /// Report an anchored line from the screen; whether it was shown (not echo-off).
    fn resolve_anchored(
        &mut self,
        mut line: Line,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> bool {
        let anchor = line.anchor.unwrap_or(0);
        let text = span_text(screen, anchor, line.pasted_newlines);
        if !line.echoed && line.typed.any_printable && line.typed.evidenced_by(&text) {
            line.echoed = true;
        }
        if !line.echoed && line.typed.has_content() {
            self.hide(line, Located::Anchor, events);
            false
        } else {
            self.report(line, text, Located::Anchor, events);
            true
        }
    }

    /// Typed-ahead lines: find the first one whose text the current output line shows.
    fn match_typed_ahead(&mut self, screen: &vt100::Screen, events: &mut Vec<DetectorEvent>) {
        if self.anchored_waiting() || self.waiting.is_empty() {
            return;
        }
        let shown = span_text(screen, 0, 0);
        let mut found = None;
        for (i, line) in self.waiting.iter().enumerate() {
            if !line.typed.certain || line.pasted_newlines > 0 {
                if i == 0
                    && let Some(after) = after_prompt(&shown)
                {
                    found = Some((0, after.to_string(), Located::PromptGuess));
                }
                break;
            }
            let expected = line.typed.text();
            let expected = expected.trim();
            if expected.is_empty() {
                if i == 0 {
                    found = Some((0, String::new(), Located::TypedText));
                }
                break;
            }
            if ends_with_word(&shown, expected) {
                found = Some((i, expected.to_string(), Located::TypedText));
                break;
            }
        }
        let Some((index, text, located)) = found else {
            return;
        };
        for _ in 0..index {
            if let Some(unseen) = self.waiting.pop_front() {
                self.hide(unseen, Located::TypedText, events);
            }
        }
        if let Some(mut line) = self.waiting.pop_front() {
            match located {
                Located::PromptGuess => {
                    if line.typed.evidenced_by(&text) {
                        line.echoed = true;
                    }
                    if !line.echoed && line.typed.has_content() {
                        self.hide(line, located, events);
                    } else {
                        self.report(line, text, located, events);
                    }
                }
                Located::TypedText | Located::Anchor => self.report(line, text, located, events),
            }
        }
    }

    fn report(
        &mut self,
        line: Line,
        text: String,
        located: Located,
        events: &mut Vec<DetectorEvent>,
    ) {
        if !line.decided {
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: true,
            });
        }
        if text.is_empty() {
            self.after_backslash = false;
            return;
        }
        let continuation = self.after_backslash;
        self.after_backslash = ends_with_unescaped_backslash(&text);
        events.push(DetectorEvent::Command(Detected {
            line: line.id,
            command: text,
            continuation,
            echo_off: false,
            located,
        }));
    }

    fn hide(&mut self, line: Line, located: Located, events: &mut Vec<DetectorEvent>) {
        self.after_backslash = false;
        if !line.decided {
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: false,
            });
        }
        events.push(DetectorEvent::Command(Detected {
            line: line.id,
            command: String::new(),
            continuation: false,
            echo_off: true,
            located,
        }));
    }

    /// A waiting line that was never shown: its input is not recorded, and it is reported only
    /// as hidden when it had text.
    fn drop_unseen(line: Line, events: &mut Vec<DetectorEvent>) {
        if !line.decided {
            let echoed = line.echoed || !line.typed.has_content();
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed,
            });
        }
    }

    /// A line given up (ctrl-C, a full-screen program, the end): no command; its input is kept
    /// only if it was echoed or had nothing to hide.
    fn abandon(line: Line, events: &mut Vec<DetectorEvent>) {
        Lines::drop_unseen(line, events);
    }

    fn abandon_all(&mut self, events: &mut Vec<DetectorEvent>) {
        while let Some(line) = self.waiting.pop_front() {
            Lines::abandon(line, events);
        }
        if let Some(line) = self.open.take() {
            Lines::abandon(line, events);
        }
        self.after_backslash = false;
    }
}
