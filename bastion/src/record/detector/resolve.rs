//! Deciding the lines entered: read from the screen at their anchor, found among typed-ahead
//! lines, reported from their keys or hidden (a secret prompt); joined into commands the way
//! the shell continues them; and what a switch to or from the alternate screen does to them.

use super::screen::{after_prompt, asks_for_secret, ends_with_word, span_text};
use super::shell::{self, Open};
use super::{
    Detected, DetectorEvent, HiddenText, Line, Lines, Located, MAX_JOINED_BYTES, MAX_JOINED_LINES,
    Pending,
};

impl Lines {
    /// The shell answered with a newline (the screen is as it was just before it).
    pub(super) fn at_newline(&mut self, screen: &vt100::Screen, events: &mut Vec<DetectorEvent>) {
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
    pub(super) fn mark_secret_prompt(&mut self, shown: &str) {
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
    pub(super) fn resolve_front_anchored(
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
    pub(super) fn resolve_anchored(
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
    pub(super) fn resolve_unseen(&mut self, line: Line, events: &mut Vec<DetectorEvent>) {
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
    pub(super) fn report(
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
        self.prompts_forged |= shell::forges_prompts(&text);
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
            hidden_text: None,
        }));
    }

    /// Report a command still being continued with what it has.
    pub(super) fn flush(&mut self, events: &mut Vec<DetectorEvent>) {
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
            hidden_text: Some(HiddenText(line.keys_text().0)),
        }));
    }

    /// A line given up without Enter (ctrl-C, the end): no command; its input is kept unless it
    /// was typed without echo at a secret prompt.
    pub(super) fn abandon(line: Line, events: &mut Vec<DetectorEvent>) {
        if !line.decided {
            let secret = line.at_secret_prompt() && !line.echoed && line.typed.has_content();
            events.push(DetectorEvent::LineEcho {
                line: line.id,
                echoed: !secret,
            });
        }
    }

    /// The screen the anchors point into is gone: read every line from its keys.
    pub(super) fn forget_anchors(&mut self) {
        for line in self.waiting.iter_mut().chain(self.open.as_mut()) {
            line.anchor = None;
        }
    }

    /// The alternate screen came up. Lines still waiting for the shell (typed ahead of it) are
    /// decided from their keys; the line being typed can no longer be read from the screen, so
    /// it will be reported from its keys.
    pub(super) fn entering_full_screen(&mut self, events: &mut Vec<DetectorEvent>) {
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
    pub(super) fn leaving_full_screen(&mut self, events: &mut Vec<DetectorEvent>) {
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
