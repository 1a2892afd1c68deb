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
//!   operate-and-get-next, ctrl-D, which hands a cooked terminal's pending text to the program,
//!   and Enter sent as a sequence in a mode the node can turn on: keypad
//!   `ESC O M`, kitty's `CSI 13 u`, xterm's `CSI 27;m;13~`; kitty's `CSI code u` letters are
//!   typed text) — in a bracketed paste too, since
//!   whether the program honours bracketed paste is not known (the mode is set by the node's
//!   output; `sh` ignores it and runs each pasted line). Each is announced at once
//!   ([`DetectorEvent::Entered`]); the gateway writes that durably before the Enter reaches the
//!   node, so a line that ran is in the audit log even if the gateway dies before the node
//!   answers. A bracketed paste that bash takes as one block comes out as one command per line.
//!   Readline's shell-expand-line (ESC ctrl-E: runs the line's `$(...)` at once) and
//!   edit-and-execute-command (ctrl-X ctrl-E) make the line as it stands a command at that key,
//!   before it reaches the node; the line stays open and is a command again at its Enter.
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
//!   row by output that reads like one, has its lines reported as hidden input, not as commands —
//!   with what was typed ([`HiddenText`]), which the gateway seals (`input_hidden`) so that such a
//!   line is not lost; the recording still shows their output. Once a command of the session
//!   visibly changed the prompt or the echo (`PS1=`, `PROMPT_COMMAND=`, `stty`), no prompt is
//!   trusted any more: a line typed without echo is then a command, also a password typed at a
//!   real prompt later in that session.
//! - A secret prompt in a language or wording not listed above is not recognised: what is typed
//!   at it without echo is reported as a command and recorded.
//! - Lines typed in a full-screen program are joined like shell lines: an odd quote typed in
//!   vim's insert mode joins the lines after it into one command, reported when the quote closes,
//!   at ctrl-C, at the end, or at the bound. A line entered there without printable keys
//!   (history recall in a shell running in the alternate screen) is read from the screen at
//!   Enter, which may not show it yet.
//! - Keys are known by their usual meaning: a shell rebound to accept a line on another key
//!   (`bind`, inputrc), or running an edited buffer (`fc`), runs lines with no Enter seen; only
//!   the typed `fc`, the editor's lines and the recording show them.
//! - A line typed on an empty row or typed ahead is announced ([`DetectorEvent::Entered`])
//!   without text, since a password prompt may still come for it; its command follows.
//! - Text on the same row after the command (a zsh right prompt, an autosuggestion) is part of the
//!   command; so is a prompt that is redrawn at a different length than when the line started.
//! - A shell that moves between the rows of a long line with explicit cursor motion instead of
//!   autowrap breaks the logical line. Lines too long for the screen come from the keys; past
//!   64 KiB of keys the text is cut, and says how many bytes more were typed (they are in the
//!   recording).
//! - Background output written over the line being typed can count as its echo; a password
//!   typed at a prompt that reprints the typed characters is treated as echoed.
//! - Text given to a program with ctrl-D instead of Enter (`cat`, `sh`) is a line of its own; in
//!   bash (where ctrl-D deletes a character) the line is then reported when bash next prints a
//!   newline.
//! - A shell that never answers an Enter with a newline leaves the line waiting until the next
//!   newline of output or the end of the session, where it is reported from its keys.
//! - The screen model is bounded ([`super::MIN_MODEL`] to [`super::MAX_COLS`]×[`super::MAX_ROWS`]);
//!   other sizes wrap differently in the model than on the engineer's screen.

use std::collections::VecDeque;

use super::model_size;

mod events;
mod keys;
mod lines;
mod model;
mod resolve;
mod screen;
mod shell;
#[cfg(test)]
mod tests;

pub use events::{
    Detected, DetectorEvent, Disposition, HiddenText, InputSegment, InputStep, Located,
};

use keys::{KeyLexer, Typed};
use model::Model;
use screen::span_text;
use shell::Open;

/// Numbers the lines the engineer types, from 0, per detector.
pub type LineId = u64;

/// Lines entered but not yet answered by the shell; past this the oldest is decided at once.
const MAX_WAITING_LINES: usize = 256;
/// Most physical lines joined into one command (an open quote that never closes).
const MAX_JOINED_LINES: usize = 1000;
/// Most bytes of one joined command.
const MAX_JOINED_BYTES: usize = 64 * 1024;
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
    /// A command of this session changed the shell's prompt or the terminal's echo (see
    /// [`shell::forges_prompts`]): from then on no prompt is trusted to ask for a secret, and
    /// what is typed without echo is a command like any other.
    prompts_forged: bool,
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
    /// Begun after a command of the session changed the prompt or the echo: its prompt is not
    /// trusted to ask for a secret.
    prompt_untrusted: bool,
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
