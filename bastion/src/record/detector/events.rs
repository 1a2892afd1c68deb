//! What the detector tells: the commands it found ([`Detected`], how each was [`Located`]), the
//! events of a session ([`DetectorEvent`]), and what may be recorded of the input
//! ([`Disposition`], [`InputStep`]).

use std::ops::Range;

use super::LineId;

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
    /// For `echo_off`: what the keys typed, only to be sealed (the gateway cannot tell a
    /// password from a command typed at a shell whose prompt reads like a password prompt).
    /// Never shown: not in `Debug`, not serialized.
    #[serde(skip)]
    pub hidden_text: Option<HiddenText>,
}

/// A line typed without echo at a secret prompt. Its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct HiddenText(pub String);

impl std::fmt::Debug for HiddenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HiddenText({} bytes)", self.0.len())
    }
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
    pub(super) fn rank(self) -> u8 {
        match self {
            Located::Anchor => 0,
            Located::TypedText => 1,
            Located::PromptGuess => 2,
            Located::Keys => 3,
            Located::RawKeys => 4,
        }
    }

    pub(super) fn from_keys(certain: bool) -> Located {
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
