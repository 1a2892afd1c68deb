//! The interactive command-line detector: recovers the lines an engineer enters in a pty session
//! from what the terminal *showed* (a vt100 screen model fed with the node's output) and from the
//! keys typed, and tells which typed input answered a secret prompt (passwords) so that it is
//! kept out of the recording.
//!
//! It is pure: feed it the output stream ([`Detector::output`]) and the input stream
//! ([`Detector::input`]) in the order they passed the gateway, and it returns events. The
//! asciicast recording stays the ground truth; what is detected here is an index into it, for the
//! audit log. The rule it keeps: a line that runs on the node comes out as a
//! [`DetectorEvent::Command`]. Reporting too much (a line typed into `cat`, text typed in `vim`)
//! is safe; reporting too little is the bug. Nothing the node prints (modes, screens, prompts)
//! turns detection off.
//!
//! # Heuristics
//!
//! - **Lines.** Every CR or LF the engineer types ends a line (so do ctrl-O, bash's
//!   operate-and-get-next, and Enter sent as a sequence in a mode the node can turn on: keypad
//!   `ESC O M`, kitty's `CSI 13 u`, xterm's `CSI 27;m;13~`; kitty's `CSI code u` letters are
//!   typed text) — in a bracketed paste too, since
//!   whether the program honours bracketed paste is not known (the mode is set by the node's
//!   output; `sh` ignores it and runs each pasted line). Each is announced at once
//!   ([`DetectorEvent::Entered`]); the gateway writes that durably before the Enter reaches the
//!   node, so a line that ran is in the audit log even if the gateway dies before the node
//!   answers. A bracketed paste that bash takes as one block comes out as one command per line.
//! - **Where a line starts (the anchor).** When the first byte of a new line is typed and no
//!   earlier line is still waiting for the shell (see below), the cursor position is taken as the
//!   start of the input, and the text before it on the screen as its prompt. The position is kept
//!   as a cell offset inside the *logical line* (screen rows joined by the terminal's autowrap), so
//!   it survives scrolling, wrapping and redraws of the same prompt (ctrl-L, a completion list).
//! - **When a line is read.** The screen lags the keys: the line is read when the shell answers
//!   with its newline — just before the first LF of output after the Enter. At that moment the
//!   shell has redrawn the line as it accepted it, so backspaces, ctrl-U, ctrl-W, tab completion,
//!   history recall, reverse search and colors are resolved on the screen. The text is the
//!   cursor's logical line from the anchor to its end, trailing blanks trimmed.
//!   A line that did not echo gets no newline either (`stty -echo`): it is also read when the
//!   next line begins after output that ends like a prompt (`$`, `#`, `%`, `>`...) or asks for a
//!   secret, which then anchors the new line.
//! - **Echo evidence.** A line counts as shown when the screen after its anchor starts with the
//!   text typed (when every key could be followed), or shows the latest run of typed text at the
//!   start of a word (after keys that cannot be followed: arrows, tab...). Output that merely
//!   contains the keys (`uid=0` after typing `id`) is not an echo.
//! - **Not shown: keys.** A line with typed text but no echo evidence, or too long for the screen
//!   (its anchor plus its length reach the screen's cell count, so its start scrolled away), is
//!   reported from the keys ([`Located::Keys`]: printable keys with backspace, ctrl-U and ctrl-W
//!   applied; [`Located::RawKeys`]: every printable key in order, when other keys were used).
//!   `stty -echo` at a shell prompt therefore changes nothing but the source of the text.
//! - **Secret prompts.** Hidden input (`echo_off`, no text but its length in `hidden_chars`,
//!   input kept out of the recording) is
//!   only a line typed without echo right after a prompt asking for a secret: its prompt ends with
//!   `:` or `?` (or their full-width forms) and its last 64 characters hold, in any case, one of
//!   `password`, `passwd`, `passphrase`, `pass phrase`, `passcode`, `pin`, `token`, `secret`,
//!   `otp`, `one-time code`, `verification code`, `authentication code`, `security code`, `2fa`,
//!   `mfa`, `totp`, `api key` (as whole words), or `passwort`, `kennwort`, `mot de passe`,
//!   `contraseña`, `senha`, `wachtwoord`, `пароль`, `パスワード`, `密码`, `비밀번호`
//!   (`[sudo] password for x:`, `Password:`, `Enter passphrase for key '/k':`,
//!   `Enter PIN for 'card':`, `Token:` from `read -s -p`, `Verification code:`). The
//!   prompt is the text before the anchor; or, for a line begun on an empty row, a secret prompt
//!   drawn after its anchor (a password typed before sudo asked); or, for a line typed ahead, a
//!   secret prompt printed while it waited (each such prompt answers one typed-ahead line). A
//!   masked `****` echo is no echo. The input of a line begun after a drawn prompt that asks for
//!   no secret (a shell prompt) is recorded at once; any other line's input is held until it is
//!   decided ([`Disposition::Hold`], [`DetectorEvent::LineEcho`]): when it echoes, or when it is
//!   read.
//! - **Typed ahead.** A line started while an earlier one is still waiting has no anchor (its
//!   prompt is not drawn yet). It is found at the first later output line that *ends with* its
//!   simulated text ([`Located::TypedText`]), or, with keys that cannot be simulated, at the first
//!   output line with a prompt marker (`$ `, `# `, `% `, `> `...), as the text after it
//!   ([`Located::PromptGuess`]); lines that waited before a matched one were never shown and come
//!   out from their keys. This is how a pasted block of lines comes out as one command per line.
//! - **Continued commands.** Lines are joined into one command the way bash asks for more
//!   (`PS2`): backslash-newline (joined as bash reads it: `echo eps\` then `ilon` is
//!   `echo epsilon`), open `'…'`, `"…"` or `$'…'` quotes, here-documents until their delimiter
//!   line, and a trailing `&&`, `||`, `|`, `|&` (the `shell` module has the grammar and its limits).
//!   The command comes when it is complete, or with what it has at ctrl-C, at the end of the
//!   session, or past 1000 lines or 64 KiB. Every physical line is still announced at its Enter.
//! - **Full-screen programs.** While the alternate screen is in use (`ESC[?1049h`, `ESC[?47h`;
//!   vt100 does not model `ESC[?1047h`, which then just stays on the main screen) keys are
//!   recorded as they are (except at a secret prompt), and every Enter is decided at once, since
//!   such programs do not answer with a newline: from the screen when the echo was seen (a shell
//!   running in the alternate screen), else from the keys. So a shell escape (`:!cmd` in vim,
//!   `!cmd` in less) is a command, and so is each line typed in vim's insert mode (noise, but
//!   safe). A switch of screens does not drop lines: lines waiting for the shell are read just
//!   before the switch (or from their keys), the line being typed is then reported from its
//!   keys, and keys typed in the full-screen program without Enter (`q` to quit less) are
//!   carried to the next line's [`Detected::carried`] (a shell under a forged mode had them in its
//!   buffer). [`DetectorEvent::FullScreen`] reports the net change per output chunk.
//!
//! # Limits
//!
//! - Every line entered is reported, whatever reads it: the answer to a `[y/N]` question or a
//!   line typed into `cat` looks like a command. Programs that draw full-screen without the
//!   alternate screen (`less -X`, `watch` on some terminals) make Enter produce junk lines.
//! - A prompt is trusted by its text: a shell whose own prompt reads like a secret prompt
//!   (`PS1='Password: '`) with echo off, or an empty prompt with echo off followed on the same
//!   row by output that reads like one, has its lines reported as hidden input (`input_hidden`),
//!   not as commands — the recording still shows their output.
//! - A secret prompt in a language or wording not listed above is not recognised: what is typed
//!   at it without echo is reported as a command and recorded.
//! - Lines typed in a full-screen program are joined like shell lines: an odd quote typed in
//!   vim's insert mode joins the lines after it into one command, reported when the quote closes,
//!   at ctrl-C, at the end, or at the bound. A line entered there without printable keys
//!   (history recall in a shell running in the alternate screen) is read from the screen at
//!   Enter, which may not show it yet.
//! - Keys are known by their usual meaning: a shell rebound to accept a line on another key
//!   (`bind`, inputrc), or running an edited buffer (`fc`, ctrl-X ctrl-E), runs lines with no
//!   Enter seen; only the typed `fc`, the editor's lines and the recording show them.
//! - A line typed on an empty row or typed ahead is announced ([`DetectorEvent::Entered`])
//!   without text, since a password prompt may still come for it; its command follows.
//! - Text on the same row after the command (a zsh right prompt, an autosuggestion) is part of the
//!   command; so is a prompt that is redrawn at a different length than when the line started.
//! - A shell that moves between the rows of a long line with explicit cursor motion instead of
//!   autowrap breaks the logical line. Lines too long for the screen come from the keys; past
//!   8 KiB of keys the text is cut.
//! - Background output written over the line being typed can count as its echo; a password
//!   typed at a prompt that reprints the typed characters is treated as echoed.
//! - Text given to a program without Enter (`cat`, then ctrl-D) stays part of the next line,
//!   whose anchor is then where that text began: the command comes out with the prompt in front.
//! - A shell that never answers an Enter with a newline leaves the line waiting until the next
//!   newline of output or the end of the session, where it is reported from its keys.
//! - The screen model is bounded ([`super::MIN_MODEL`] to [`super::MAX_COLS`]×[`super::MAX_ROWS`]);
//!   other sizes wrap differently in the model than on the engineer's screen.

use std::collections::VecDeque;
use std::ops::Range;

use super::model_size;

mod keys;
mod model;
mod screen;
mod shell;
#[cfg(test)]
mod tests;

use keys::{Key, KeyLexer, Typed};
use model::Model;
use screen::{
    after_prompt, asks_for_secret, cells, cursor_offset, ends_like_prompt, ends_with_word,
    prompt_text, span_text,
};
use shell::Open;

/// Numbers the lines the engineer types, from 0, per detector.
pub type LineId = u64;

/// Lines entered but not yet answered by the shell; past this the oldest is decided at once.
const MAX_WAITING_LINES: usize = 256;
/// Most physical lines joined into one command (an open quote that never closes).
const MAX_JOINED_LINES: usize = 1000;
/// Most bytes of one joined command.
const MAX_JOINED_BYTES: usize = 64 * 1024;

/// A command the shell ran (or a line typed at a secret prompt), as detected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detected {
    /// The first physical line of the command.
    pub line: LineId,
    /// The last physical line: later than `line` when the command continued over several lines
    /// (backslash-newline, an open quote, a here-document, a trailing `&&`, `||` or `|`).
    pub last_line: LineId,
    /// The command, its physical lines joined with `\n` (a backslash-newline removed, as bash
    /// does); empty when `echo_off`.
    pub command: String,
    /// Typed without echo right after a prompt asking for a secret: not a command, its text is
    /// not reported and its input is left out of the recording.
    pub echo_off: bool,
    /// How the text was found (the least certain of its lines).
    pub located: Located,
    /// Printable keys typed in a full-screen program, without Enter, just before this line: a
    /// program that only looked full-screen (a shell under a forged mode) had them in front of
    /// this line.
    pub carried: Option<String>,
    /// For `echo_off`: how many characters the keys typed (the secret's length, not its text).
    pub hidden_chars: Option<usize>,
}

/// How the text of a line was found, most certain first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Located {
    /// From the screen, at the cursor position where typing began.
    Anchor,
    /// A typed-ahead line, found on the screen by the text typed.
    TypedText,
    /// A typed-ahead line with edits, found on the screen after a prompt marker.
    PromptGuess,
    /// Not shown on the screen (echo off, a full-screen mode, a line longer than the screen):
    /// the typed keys with their editing followed (backspace, ctrl-U, ctrl-W).
    Keys,
    /// As `Keys`, but keys the detector cannot follow were used (arrows, tab, history): every
    /// printable key typed, in order. Uncertain.
    RawKeys,
}

impl Located {
    fn rank(self) -> u8 {
        match self {
            Located::Anchor => 0,
            Located::TypedText => 1,
            Located::PromptGuess => 2,
            Located::Keys => 3,
            Located::RawKeys => 4,
        }
    }

    fn from_keys(certain: bool) -> Located {
        if certain {
            Located::Keys
        } else {
            Located::RawKeys
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorEvent {
    Command(Detected),
    /// The screen switched to the alternate screen (`entered`, a full-screen program) or back.
    /// Reported once per [`Detector::output`] call, for the net change over the whole chunk, so a
    /// node toggling the mode in a loop yields at most one event per chunk.
    FullScreen {
        entered: bool,
    },
    /// Enter (CR or LF, in a paste or not) was pressed on `line`, before it reaches the node:
    /// the gateway writes this durably before passing the Enter on, so a line that ran is never
    /// missing from the audit log even if the gateway dies before the node answers. `shown` is
    /// the line's text at that moment — from the screen when its echo was already seen, else from
    /// the keys — and `None` when the line was typed at a secret prompt or typed ahead of its
    /// prompt (which could be a password prompt not drawn yet). The [`DetectorEvent::Command`]
    /// naming this line is the authoritative text.
    Entered {
        line: LineId,
        shown: Option<String>,
    },
    /// Whether the input bytes of `line` (see [`Disposition::Hold`]) may be recorded: `false`
    /// only for a line typed without echo at a secret prompt. Sent once per line that had held
    /// input, as soon as it is known.
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
    /// Hold it until [`DetectorEvent::LineEcho`] for this line says whether it may be recorded.
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
    model: Model,
    keys: KeyLexer,
    full_screen: bool,
    lines: Lines,
    /// Events from a call that cannot return them ([`Detector::resize`]), for the next one.
    deferred: Vec<DetectorEvent>,
}

impl Detector {
    /// A detector for a pty of `cols`×`rows` (as the pty request gave them).
    pub fn new(cols: u32, rows: u32) -> Self {
        let (rows, cols) = model_size(cols, rows);
        Detector {
            model: Model::new(rows, cols),
            keys: KeyLexer::default(),
            full_screen: false,
            lines: Lines::default(),
            deferred: Vec::new(),
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.wake();
        let (rows, cols) = model_size(cols, rows);
        if !self.model.set_size(rows, cols) {
            self.screen_lost();
        }
    }

    /// The screen model was lost (see [`model`]): nothing anchored on it can be read, and the
    /// new one is not in the alternate screen.
    fn screen_lost(&mut self) {
        self.lines.forget_anchors();
        let was_full_screen = self.full_screen;
        let mut events = Vec::new();
        self.switch_screens(&mut events);
        if self.full_screen != was_full_screen {
            events.push(DetectorEvent::FullScreen {
                entered: self.full_screen,
            });
        }
        self.deferred.extend(events);
    }

    /// Whether the alternate screen (a full-screen program) is in use.
    pub fn full_screen(&self) -> bool {
        self.full_screen
    }

    /// The screen model, as it is now.
    pub fn screen(&mut self) -> &vt100::Screen {
        self.wake();
        self.model.screen()
    }

    /// Idle: let the screen model rest (kept as the sequences that redraw it, a few hundred
    /// bytes instead of 60 KiB) if nothing is lost by it; the next call wakes it. Whether it
    /// rests.
    pub fn rest(&mut self) -> bool {
        self.model.rest()
    }

    /// Wake the screen model if it rests; a model that could not be rebuilt is a lost screen.
    fn wake(&mut self) {
        if !self.model.wake() {
            self.screen_lost();
        }
    }

    /// Bytes from the node.
    pub fn output(&mut self, bytes: &[u8]) -> Vec<DetectorEvent> {
        self.wake();
        let mut events = std::mem::take(&mut self.deferred);
        let was_full_screen = self.full_screen;
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
                self.lines.at_newline(self.model.screen(), &mut events);
                self.process(b"\n", &mut events);
            }
            rest = after;
        }
        if self.full_screen != was_full_screen {
            events.push(DetectorEvent::FullScreen {
                entered: self.full_screen,
            });
        }
        events
    }

    /// Bytes typed by the engineer.
    pub fn input(&mut self, bytes: &[u8]) -> InputStep {
        self.wake();
        let mut step = InputStep {
            segments: Vec::new(),
            events: std::mem::take(&mut self.deferred),
        };
        for (i, &byte) in bytes.iter().enumerate() {
            let key = self.keys.feed(byte);
            let disposition = self.lines.key(
                key,
                byte,
                self.full_screen,
                self.model.screen(),
                &mut step.events,
            );
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

    /// The session ended: decide every line still open or waiting, and report a command still
    /// being continued with what it has.
    pub fn finish(&mut self) -> Vec<DetectorEvent> {
        self.wake();
        let mut events = std::mem::take(&mut self.deferred);
        let screen = self.model.screen();
        self.lines.mark_secret_prompt(&span_text(screen, 0));
        let _shown = self.lines.resolve_front_anchored(screen, &mut events);
        // Nothing more will be shown: what still waits was never on the screen.
        while let Some(line) = self.lines.waiting.pop_front() {
            self.lines.resolve_unseen(line, &mut events);
        }
        if let Some(line) = self.lines.open.take() {
            Lines::abandon(line, &mut events);
        }
        self.lines.flush(&mut events);
        events
    }

    fn process(&mut self, piece: &[u8], events: &mut Vec<DetectorEvent>) {
        // A full-screen program may start before the shell's newline reached us: read the
        // waiting line from the screen just before the alternate screen replaces it.
        if !self.full_screen
            && self.lines.anchored_waiting()
            && let Some(at) = screen::alternate_screen_at(piece)
        {
            let (before, after) = piece.split_at(at);
            self.feed(before, events);
            if !self.full_screen {
                let _shown = self
                    .lines
                    .resolve_front_anchored(self.model.screen(), events);
            }
            self.feed(after, events);
        } else {
            self.feed(piece, events);
        }
    }

    fn feed(&mut self, bytes: &[u8], events: &mut Vec<DetectorEvent>) {
        if !bytes.is_empty() {
            self.lines.output_came();
        }
        if !self.model.process(bytes) {
            self.lines.forget_anchors();
        }
        self.switch_screens(events);
        self.lines.check_echo(self.model.screen());
        self.lines.announce_echo(events);
    }

    /// Follow the model into or out of the alternate screen.
    fn switch_screens(&mut self, events: &mut Vec<DetectorEvent>) {
        let alternate = self.model.screen().alternate_screen();
        if alternate != self.full_screen {
            self.full_screen = alternate;
            if alternate {
                self.lines.entering_full_screen(events);
            } else {
                self.lines.leaving_full_screen(events);
            }
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
    /// A command whose lines so far do not complete it (see [`shell::scan`]).
    pending: Option<Pending>,
    /// Keys of a line typed in a full-screen program and left without Enter, for the next line.
    carried: Option<String>,
}

struct Line {
    id: LineId,
    /// Cell offset in the logical line where typing began; `None` for a line typed ahead of
    /// its prompt, or one whose screen was switched under it.
    anchor: Option<usize>,
    /// The text before the anchor when typing began.
    prompt: String,
    typed: Typed,
    /// Echo evidence seen.
    echoed: bool,
    /// `LineEcho` sent.
    decided: bool,
    /// A prompt asking for a secret was seen for this line besides its own prompt: drawn at its
    /// anchor before its Enter, or printed while it waited typed ahead.
    secret_prompt: bool,
    /// Begun while an earlier line waited: its prompt was not drawn yet.
    typed_ahead: bool,
    /// Output came after this line's Enter (set on the front waiting line only).
    output_after_enter: bool,
    /// Begun in a full-screen program.
    in_full_screen: bool,
    carried: Option<String>,
}

struct Pending {
    first: LineId,
    last: LineId,
    text: String,
    open: Open,
    lines: usize,
    located: Located,
    carried: Option<String>,
}

impl Line {
    /// Typed without echo at a prompt asking for a secret.
    fn at_secret_prompt(&self) -> bool {
        self.secret_prompt || asks_for_secret(&self.prompt)
    }

    /// Nothing but blanks before the anchor: the line did not start at a shell prompt.
    fn blank_prompt(&self) -> bool {
        self.prompt.trim().is_empty()
    }

    /// The text from the screen if it shows the whole line, else from the keys.
    fn text(&self, screen: &vt100::Screen) -> (String, Located) {
        match self.anchor {
            // Past the screen's size its start has scrolled away.
            Some(anchor) if anchor + self.typed.chars() < cells(screen) => {
                (span_text(screen, anchor), Located::Anchor)
            }
            Some(_) | None => self.keys_text(),
        }
    }

    fn keys_text(&self) -> (String, Located) {
        let (text, certain) = self.typed.keys_text();
        (text, Located::from_keys(certain))
    }

    /// What `Entered` tells of this line.
    fn shown_at_enter(&self, screen: &vt100::Screen) -> Option<String> {
        if self.typed_ahead || self.blank_prompt() {
            // Typed ahead of its prompt, or on an empty row: a password prompt may still come
            // (sudo's, after a password typed in anticipation).
            return None;
        }
        let text = match self.anchor {
            Some(_) if self.echoed => self.text(screen).0,
            Some(_) | None if self.at_secret_prompt() => return None,
            Some(_) | None => self.keys_text().0,
        };
        Some(text).filter(|t| !t.is_empty())
    }
}

impl Lines {
    fn anchored_waiting(&self) -> bool {
        self.waiting.front().is_some_and(|l| l.anchor.is_some())
    }

    /// One input byte (and the key it completed, if any).
    fn key(
        &mut self,
        key: Option<Key>,
        byte: u8,
        full_screen: bool,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> Disposition {
        if key == Some(Key::Interrupt) {
            // The shell drops the line, and a command still being continued.
            if let Some(line) = self.open.take() {
                Lines::abandon(line, events);
            }
            self.flush(events);
            return Disposition::Keep;
        }
        if self.open.is_none() {
            self.answered_without_newline(screen, events);
        }
        let line = self.open_line(full_screen, screen, events);
        // `decided` while the line is still open means its input may be recorded.
        let disposition = if line.decided {
            Disposition::Keep
        } else if full_screen && !line.at_secret_prompt() {
            // Keys of full-screen programs are recorded as they are.
            Disposition::Keep
        } else {
            Disposition::Hold(line.id)
        };
        let mut entered = false;
        match key {
            None => {}
            Some(Key::Text) => line.typed.push(byte),
            Some(Key::Char(c)) => line.typed.push_char(c),
            Some(Key::Enter) => entered = true,
            Some(Key::Backspace) => line.typed.backspace(),
            Some(Key::KillLine) => line.typed.kill_line(),
            Some(Key::KillWord) => line.typed.kill_word(),
            Some(Key::PasteStart | Key::PasteEnd) => {}
            Some(Key::Other) => line.typed.uncertain(),
            Some(Key::Meta(byte)) => line.typed.meta(byte),
            // Handled above.
            Some(Key::Interrupt) => {}
        }
        if entered && let Some(line) = self.open.take() {
            self.enter(line, full_screen, screen, events);
        }
        disposition
    }

    fn open_line(
        &mut self,
        full_screen: bool,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> &mut Line {
        let waiting_empty = self.waiting.is_empty();
        let carried = &mut self.carried;
        let next_id = &mut self.next_id;
        self.open.get_or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            let anchor = waiting_empty.then(|| cursor_offset(screen));
            let mut line = Line {
                id,
                anchor,
                prompt: anchor.map(|a| prompt_text(screen, a)).unwrap_or_default(),
                typed: Typed::default(),
                echoed: false,
                decided: false,
                secret_prompt: false,
                typed_ahead: !waiting_empty,
                output_after_enter: false,
                in_full_screen: full_screen,
                carried: carried.take(),
            };
            // Typed after a prompt that is drawn and asks for no secret (a shell prompt): its
            // input is recorded at once, echoed or not, however long it gets.
            if line.anchor.is_some() && !line.blank_prompt() && !line.at_secret_prompt() {
                line.decided = true;
                events.push(DetectorEvent::LineEcho {
                    line: id,
                    echoed: true,
                });
            }
            line
        })
    }

    /// A new line begins while the anchored line waits for the shell's newline. When that line
    /// was not echoed (`stty -echo`: the shell does not echo the newline either) and the shell
    /// has since drawn a prompt (the text before the cursor ends like a shell prompt or asks for
    /// a secret), the shell has answered: read the waiting line now, so the new line gets its
    /// own anchor and prompt instead of waiting as typed ahead.
    fn answered_without_newline(
        &mut self,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) {
        let answered = self.waiting.front().is_some_and(|front| {
            front.anchor.is_some()
                && front.output_after_enter
                && !front.echoed
                && front.typed.any_printable
        });
        if !answered {
            return;
        }
        let before_cursor = prompt_text(screen, cursor_offset(screen));
        if (ends_like_prompt(&before_cursor) || asks_for_secret(&before_cursor))
            && let Some(front) = self.waiting.pop_front()
        {
            let _shown = self.resolve_anchored(front, screen, events);
        }
    }

    /// Output came after the Enter of the waiting anchored line.
    fn output_came(&mut self) {
        if let Some(front) = self.waiting.front_mut() {
            front.output_after_enter = true;
        }
    }

    /// Enter on `line`: announce it, then wait for the shell's answer — or, in a full-screen
    /// program, which may never answer with a newline, decide it now.
    fn enter(
        &mut self,
        mut line: Line,
        full_screen: bool,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) {
        // A secret prompt drawn at the anchor while the line was typed (sudo's prompt after a
        // password typed ahead of it). One drawn there after Enter asks for the next line.
        if let Some(anchor) = line.anchor
            && !line.echoed
            && asks_for_secret(&span_text(screen, anchor))
        {
            line.secret_prompt = true;
        }
        events.push(DetectorEvent::Entered {
            line: line.id,
            shown: line.shown_at_enter(screen),
        });
        if full_screen {
            self.resolve_anchored(line, screen, events);
            return;
        }
        self.waiting.push_back(line);
        if self.waiting.len() > MAX_WAITING_LINES
            && let Some(oldest) = self.waiting.pop_front()
        {
            if oldest.anchor.is_some() {
                self.resolve_anchored(oldest, screen, events);
            } else {
                self.resolve_unseen(oldest, events);
            }
        }
    }

    /// The oldest line, which can gather echo evidence when it is anchored.
    fn anchored_mut(&mut self) -> Option<&mut Line> {
        let line = match self.waiting.front_mut() {
            Some(front) => front,
            None => self.open.as_mut()?,
        };
        line.anchor.is_some().then_some(line)
    }

    fn check_echo(&mut self, screen: &vt100::Screen) {
        if let Some(line) = self.anchored_mut()
            && let Some(anchor) = line.anchor
            && !line.echoed
            && line.typed.any_printable
            && line.typed.evidenced_by(&span_text(screen, anchor))
        {
            line.echoed = true;
        }
    }

    /// Tell the recorder as soon as the anchored line is known to echo.
    fn announce_echo(&mut self, events: &mut Vec<DetectorEvent>) {
        if let Some(line) = self.anchored_mut()
            && line.echoed
            && !line.decided
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
            let shown = span_text(screen, 0);
            if !self.match_typed_ahead(&shown, events) {
                self.mark_secret_prompt(&shown);
            }
        }
    }

    /// A prompt asking for a secret on the screen answers the first typed-ahead line that has
    /// none yet.
    fn mark_secret_prompt(&mut self, shown: &str) {
        if asks_for_secret(shown)
            && let Some(line) = self
                .waiting
                .iter_mut()
                .find(|l| l.anchor.is_none() && !l.secret_prompt)
        {
            line.secret_prompt = true;
        }
    }

    /// Resolve the waiting anchored line, if any; whether it was shown on the screen.
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

    /// Report a line from the screen at its anchor, or from its keys when the screen does not
    /// show it; whether it was shown.
    fn resolve_anchored(
        &mut self,
        mut line: Line,
        screen: &vt100::Screen,
        events: &mut Vec<DetectorEvent>,
    ) -> bool {
        let Some(anchor) = line.anchor else {
            self.resolve_unseen(line, events);
            return false;
        };
        let shown = span_text(screen, anchor);
        if !line.echoed && line.typed.any_printable && line.typed.evidenced_by(&shown) {
            line.echoed = true;
        }
        if line.echoed || !line.typed.has_content() {
            let (text, located) = line.text(screen);
            self.report(line, text, located, events);
            true
        } else {
            // A line typed on an empty row that a secret prompt then filled: typed before sudo
            // asked, answered to it. (After a shell prompt, it asks for the next line.)
            if line.blank_prompt() && asks_for_secret(&shown) {
                line.secret_prompt = true;
            }
            self.resolve_unseen(line, events);
            false
        }
    }

    /// A line the screen did not show: typed at a secret prompt it is hidden, otherwise it ran
    /// without echo (`stty -echo`, a full-screen mode) and is reported from its keys.
    fn resolve_unseen(&mut self, line: Line, events: &mut Vec<DetectorEvent>) {
        if line.at_secret_prompt() && !line.echoed && line.typed.has_content() {
            self.hide(line, events);
        } else {
            let (text, located) = line.keys_text();
            self.report(line, text, located, events);
        }
    }

    /// Typed-ahead lines: find the first one whose text the current output line shows; whether
    /// one was found.
    fn match_typed_ahead(&mut self, shown: &str, events: &mut Vec<DetectorEvent>) -> bool {
        if self.anchored_waiting() || self.waiting.is_empty() {
            return false;
        }
        let mut found = None;
        for (i, line) in self.waiting.iter().enumerate() {
            if !line.typed.certain {
                if i == 0
                    && let Some(after) = after_prompt(shown)
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
            if ends_with_word(shown, expected) {
                found = Some((i, expected.to_string(), Located::TypedText));
                break;
            }
        }
        let Some((index, text, located)) = found else {
            return false;
        };
        // Lines typed before the one shown were never on the screen.
        for _ in 0..index {
            if let Some(unseen) = self.waiting.pop_front() {
                self.resolve_unseen(unseen, events);
            }
        }
        if let Some(mut line) = self.waiting.pop_front() {
            if line.typed.evidenced_by(&text) {
                line.echoed = true;
            }
            match located {
                Located::PromptGuess if !line.echoed && line.typed.has_content() => {
                    self.resolve_unseen(line, events);
                }
                Located::Anchor
                | Located::TypedText
                | Located::PromptGuess
                | Located::Keys
                | Located::RawKeys => self.report(line, text, located, events),
            }
        }
        true
    }

    /// Report a line's text: as its own command, or joined to a command it continues.
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
        let (text, located, carried) = match line.carried {
            // Only keys typed in a full-screen program: they are the line.
            Some(carried) if text.is_empty() => (carried, Located::RawKeys, None),
            carried => (text, located, carried),
        };
        let pending = match self.pending.take() {
            Some(mut pending) => {
                shell::join(&mut pending.text, pending.open, &text);
                pending.last = line.id;
                pending.lines += 1;
                if located.rank() > pending.located.rank() {
                    pending.located = located;
                }
                pending.carried = pending.carried.or(carried);
                pending
            }
            None if text.is_empty() && carried.is_none() => return,
            None => Pending {
                first: line.id,
                last: line.id,
                text,
                open: Open::Complete,
                lines: 1,
                located,
                carried,
            },
        };
        self.continue_or_emit(pending, events);
    }

    fn continue_or_emit(&mut self, mut pending: Pending, events: &mut Vec<DetectorEvent>) {
        pending.open = shell::scan(&pending.text);
        let bounded = pending.lines >= MAX_JOINED_LINES || pending.text.len() >= MAX_JOINED_BYTES;
        match pending.open {
            Open::Complete => Lines::emit(pending, events),
            Open::Backslash
            | Open::SingleQuote
            | Open::DoubleQuote
            | Open::HereDoc
            | Open::Operator => {
                if bounded {
                    Lines::emit(pending, events);
                } else {
                    self.pending = Some(pending);
                }
            }
        }
    }

    fn emit(pending: Pending, events: &mut Vec<DetectorEvent>) {
        events.push(DetectorEvent::Command(Detected {
            line: pending.first,
            last_line: pending.last,
            command: pending.text,
            echo_off: false,
            located: pending.located,
            carried: pending.carried,
            hidden_chars: None,
        }));
    }

    /// Report a command still being continued with what it has.
    fn flush(&mut self, events: &mut Vec<DetectorEvent>) {
        if let Some(pending) = self.pending.take() {
            Lines::emit(pending, events);
        }
    }

    fn hide(&mut self, line: Line, events: &mut Vec<DetectorEvent>) {
        // A secret prompt is no part of a shell command being continued.
        self.flush(events);
        if !line.decided {
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: false,
            });
        }
        events.push(DetectorEvent::Command(Detected {
            line: line.id,
            last_line: line.id,
            command: String::new(),
            echo_off: true,
            located: Located::Keys,
            carried: None,
            hidden_chars: Some(line.typed.chars()),
        }));
    }

    /// A line given up without Enter (ctrl-C, the end): no command; its input is kept unless it
    /// was typed without echo at a secret prompt.
    fn abandon(line: Line, events: &mut Vec<DetectorEvent>) {
        if !line.decided {
            let secret = line.at_secret_prompt() && !line.echoed && line.typed.has_content();
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: !secret,
            });
        }
    }

    /// The screen the anchors point into is gone: read every line from its keys.
    fn forget_anchors(&mut self) {
        for line in self.waiting.iter_mut().chain(self.open.as_mut()) {
            line.anchor = None;
        }
    }

    /// The alternate screen came up. Lines still waiting for the shell (typed ahead of it) are
    /// decided from their keys; the line being typed can no longer be read from the screen, so
    /// it will be reported from its keys.
    fn entering_full_screen(&mut self, events: &mut Vec<DetectorEvent>) {
        while let Some(line) = self.waiting.pop_front() {
            self.resolve_unseen(line, events);
        }
        if let Some(line) = self.open.as_mut() {
            line.anchor = None;
        }
    }

    /// The alternate screen went away. Keys typed in the full-screen program without Enter
    /// (`q` to quit `less`) are carried to the next line rather than put in front of it; a line
    /// begun before the program will be reported from its keys.
    fn leaving_full_screen(&mut self, events: &mut Vec<DetectorEvent>) {
        let Some(line) = self.open.take() else {
            return;
        };
        if !line.in_full_screen {
            self.open = Some(Line {
                anchor: None,
                ..line
            });
            return;
        }
        let secret = line.at_secret_prompt() && !line.echoed && line.typed.has_content();
        let (text, _) = line.keys_text();
        if !secret && !text.is_empty() {
            self.carried = Some(text);
        }
        Lines::abandon(line, events);
    }
}
