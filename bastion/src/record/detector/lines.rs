//! The lines as they are typed: each key on the open line, Enter, the anchor and the prompt a
//! line starts at, and the echo evidence the screen shows for it.

use super::keys::{Key, Typed};
use super::screen::{
    asks_for_secret, cells, cursor_offset, ends_like_prompt, prompt_text, span_text,
};
use super::{Detected, DetectorEvent, Disposition, Line, Lines, Located, MAX_WAITING_LINES};

impl Line {
    /// Typed without echo at a prompt asking for a secret.
    pub(super) fn at_secret_prompt(&self) -> bool {
        !self.prompt_untrusted && (self.secret_prompt || asks_for_secret(&self.prompt))
    }

    /// Nothing but blanks before the anchor: the line did not start at a shell prompt.
    pub(super) fn blank_prompt(&self) -> bool {
        self.prompt.trim().is_empty()
    }

    /// The text from the screen if it shows the whole line, else from the keys.
    pub(super) fn text(&self, screen: &vt100::Screen) -> (String, Located) {
        match self.anchor {
            // Past the screen's size its start has scrolled away.
            Some(anchor) if anchor + self.typed.chars() < cells(screen) => {
                (span_text(screen, anchor), Located::Anchor)
            }
            Some(_) | None => self.keys_text(),
        }
    }

    pub(super) fn keys_text(&self) -> (String, Located) {
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
    pub(super) fn anchored_waiting(&self) -> bool {
        self.waiting.front().is_some_and(|l| l.anchor.is_some())
    }

    /// One input byte (and the key it completed, if any).
    pub(super) fn key(
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
            // The shell runs part of the line now and keeps it: the line as it stands is a
            // command now, and again at its Enter (reported twice: the safe side).
            Some(Key::RunsLine) => {
                line.typed.uncertain();
                if !line.at_secret_prompt() {
                    let (command, located) = match line.anchor {
                        Some(_) if line.echoed => line.text(screen),
                        Some(_) | None => line.keys_text(),
                    };
                    if !command.is_empty() {
                        events.push(DetectorEvent::Command(Detected {
                            line: line.id,
                            last_line: line.id,
                            command,
                            echo_off: false,
                            located,
                            carried: None,
                            hidden_chars: None,
                            hidden_text: None,
                        }));
                    }
                }
            }
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
        let prompts_forged = &self.prompts_forged;
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
                prompt_untrusted: *prompts_forged,
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
    pub(super) fn answered_without_newline(
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
    pub(super) fn output_came(&mut self) {
        if let Some(front) = self.waiting.front_mut() {
            front.output_after_enter = true;
        }
    }

    /// Enter on `line`: announce it, then wait for the shell's answer — or, in a full-screen
    /// program, which may never answer with a newline, decide it now.
    pub(super) fn enter(
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

    pub(super) fn check_echo(&mut self, screen: &vt100::Screen) {
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
    pub(super) fn announce_echo(&mut self, events: &mut Vec<DetectorEvent>) {
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
}
