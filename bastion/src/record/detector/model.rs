//! The vt100 screen model, kept from panicking out of the detector, and resting while idle.
//!
//! vt100 0.16 has panics reachable from a node's output: on a screen one row high or one column
//! wide (avoided by [`super::super::MIN_MODEL`]), and after a resize that cuts a wide character at
//! the last column (writing over that cell then looks for its missing second half). The output
//! is the node's to choose, so every call into vt100 is made under `catch_unwind`: after a
//! panic the model starts again blank at the same size and the caller is told, so that lines
//! anchored on the lost screen are read from their keys instead. The recording is unaffected.
//!
//! **Resting.** A screen model is 60 KiB (24 × 80 cells of 32 bytes); most sessions spend most
//! of their time idle at a prompt. [`Model::rest`] keeps the screen as the escape sequences that
//! redraw it (a few hundred bytes) and drops the parser; the next call rebuilds it from them. It
//! rests only when nothing can be lost, and otherwise stays awake:
//! - the parser is between sequences (ground state), shown by replaying the output since the last
//!   ESC, CAN or SUB — each puts vte in the same state whatever came before — into a scratch
//!   parser and seeing a probe character printed;
//! - the screen rebuilt from the sequences is equal in every field to the live one (cells and
//!   attributes, cursor and saved cursor, scroll region, modes, the alternate grid: vt100 is
//!   patched to compare screens, third_party/vt100/SALLYPORT-PATCH.md).

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Most output kept to show the parser is between sequences (since the last ESC, CAN or SUB);
/// past it the model does not rest until the next of those.
const TAIL: usize = 512;

pub(super) struct Model {
    /// `None` while the model rests.
    parser: Option<Box<vt100::Parser>>,
    /// While it rests: the screen as the escape sequences that redraw it on a blank one of the
    /// same size (empty while awake).
    resting: Box<[u8]>,
    rows: u16,
    cols: u16,
    /// Output since the last byte that resets vte's state (or since the start); `None` when
    /// that was more than [`TAIL`] bytes ago.
    tail: Option<Vec<u8>>,
    /// A rebuild failed: the screen was lost (reported once by [`Model::take_lost`]).
    lost: bool,
}

impl Model {
    pub(super) fn new(rows: u16, cols: u16) -> Self {
        Model {
            parser: Some(Box::new(vt100::Parser::new(rows, cols, 0))),
            resting: Box::default(),
            rows,
            cols,
            tail: Some(Vec::new()),
            lost: false,
        }
    }

    /// The parser, rebuilt first if the model rests.
    fn parser(&mut self) -> &mut vt100::Parser {
        let Model {
            parser,
            resting,
            rows,
            cols,
            lost,
            ..
        } = self;
        parser.get_or_insert_with(|| {
            let state = std::mem::take(resting);
            let rebuilt = catch_unwind(AssertUnwindSafe(|| {
                let mut parser = vt100::Parser::new(*rows, *cols, 0);
                parser.process(&state);
                parser
            }));
            Box::new(rebuilt.unwrap_or_else(|_| {
                *lost = true;
                vt100::Parser::new(*rows, *cols, 0)
            }))
        })
    }

    /// Wake the model if it rests; `false` when it could not be rebuilt (the screen was lost:
    /// see [`Model::take_lost`]). Callers wake it before reading anything anchored on it.
    #[must_use]
    pub(super) fn wake(&mut self) -> bool {
        let _ = self.parser();
        !self.take_lost()
    }

    /// Whether the screen was lost since the last call.
    fn take_lost(&mut self) -> bool {
        std::mem::take(&mut self.lost)
    }

    pub(super) fn screen(&mut self) -> &vt100::Screen {
        self.parser().screen()
    }

    /// Whether the model rests (its screen kept as escape sequences).
    #[cfg(test)]
    pub(super) fn resting(&self) -> bool {
        self.parser.is_none()
    }

    /// Feed output; `false` when vt100 panicked and the screen was lost.
    #[must_use]
    pub(super) fn process(&mut self, bytes: &[u8]) -> bool {
        self.follow_tail(bytes);
        let parser = self.parser();
        let ok = catch_unwind(AssertUnwindSafe(|| parser.process(bytes))).is_ok();
        if !ok {
            self.reset();
        }
        ok && !self.take_lost()
    }

    /// Resize; `false` when vt100 panicked and the screen was lost.
    #[must_use]
    pub(super) fn set_size(&mut self, rows: u16, cols: u16) -> bool {
        let parser = self.parser();
        let ok = catch_unwind(AssertUnwindSafe(|| {
            parser.screen_mut().set_size(rows, cols)
        }))
        .is_ok();
        self.rows = rows;
        self.cols = cols;
        if !ok {
            self.reset();
        }
        ok && !self.take_lost()
    }

    /// Keep the screen as the sequences that redraw it and drop the parser, when nothing is
    /// lost by it (see the module's documentation); whether the model rests now.
    pub(super) fn rest(&mut self) -> bool {
        let Some(parser) = &self.parser else {
            return true;
        };
        if !self.tail.as_deref().is_some_and(between_sequences) {
            return false;
        }
        let screen = parser.screen();
        let (rows, cols) = (self.rows, self.cols);
        let same = catch_unwind(AssertUnwindSafe(|| {
            // After a full-screen program, the alternate screen as it was left (mode 47 shows it
            // again): drawn first, then the main screen's state.
            let mut state = match screen.alternate_contents_formatted() {
                Some(alternate) => [&b"\x1b[?47h"[..], &alternate, b"\x1b[?47l"].concat(),
                None => Vec::new(),
            };
            // The saved cursor (a full-screen program and some prompts leave one), then the
            // screen itself.
            state.extend(screen.saved_cursor_formatted().unwrap_or_default());
            state.extend(screen.state_formatted());
            let mut rebuilt = vt100::Parser::new(rows, cols, 0);
            rebuilt.process(&state);
            (rebuilt.screen() == screen).then_some(state)
        }));
        match same {
            Ok(Some(state)) => {
                self.resting = state.into_boxed_slice();
                self.parser = None;
                // A rebuilt parser starts between sequences.
                self.tail = Some(Vec::new());
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    fn follow_tail(&mut self, bytes: &[u8]) {
        let reset = bytes.iter().rposition(|&b| matches!(b, 0x1b | 0x18 | 0x1a));
        let (base, new) = match reset {
            Some(at) => (Some(Vec::new()), &bytes[at..]),
            None => (self.tail.take(), bytes),
        };
        self.tail = base.filter(|t| t.len() + new.len() <= TAIL).map(|mut t| {
            t.extend_from_slice(new);
            t
        });
    }

    fn reset(&mut self) {
        self.parser = Some(Box::new(vt100::Parser::new(self.rows, self.cols, 0)));
        self.resting = Box::default();
        self.tail = Some(Vec::new());
    }
}

/// Whether vte, fed `tail` from a state that every byte of its start resets to (or from its
/// first state), ends between sequences: a probe character is then printed and nothing else.
fn between_sequences(tail: &[u8]) -> bool {
    #[derive(Default)]
    struct Probe {
        printed: Vec<char>,
        other: bool,
    }
    impl vte::Perform for Probe {
        fn print(&mut self, c: char) {
            self.printed.push(c);
        }
        fn execute(&mut self, _byte: u8) {
            self.other = true;
        }
        fn hook(&mut self, _: &vte::Params, _: &[u8], _: bool, _: char) {
            self.other = true;
        }
        fn put(&mut self, _byte: u8) {
            self.other = true;
        }
        fn unhook(&mut self) {
            self.other = true;
        }
        fn osc_dispatch(&mut self, _: &[&[u8]], _: bool) {
            self.other = true;
        }
        fn csi_dispatch(&mut self, _: &vte::Params, _: &[u8], _: bool, _: char) {
            self.other = true;
        }
        fn esc_dispatch(&mut self, _: &[u8], _: bool, _: u8) {
            self.other = true;
        }
    }
    let mut parser = vte::Parser::new();
    let mut probe = Probe::default();
    parser.advance(&mut probe, tail);
    let mut probe = Probe::default();
    parser.advance(&mut probe, b"x");
    probe.printed == ['x'] && !probe.other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(bytes: &[u8]) -> Model {
        let mut m = Model::new(24, 80);
        assert!(m.process(bytes));
        m
    }

    /// Feed `more` to a model that rested and to one that never did: the screens agree.
    fn agree_after(first: &[u8], more: &[u8]) {
        let mut rested = fed(first);
        assert!(rested.rest(), "rests after {first:?}");
        assert!(rested.resting());
        let mut awake = fed(first);
        assert!(rested.process(more));
        assert!(awake.process(more));
        assert!(
            rested.screen() == awake.screen(),
            "after {first:?} then {more:?}"
        );
    }

    #[test]
    fn a_model_at_a_prompt_rests_and_wakes_unchanged() {
        let prompt = b"\x1b]0;alice@node1: ~\x07\x1b[?2004h\x1b[01;32malice@node1\x1b[00m:~$ ";
        agree_after(prompt, b"ls -la\r\n");
        agree_after(b"plain\r\n$ ", b"echo hi\r\nhi\r\n$ ");
        // Colours, the pen left set, wide characters, wrapped lines.
        agree_after(b"\x1b[1;4;31mred and still red", b" more");
        agree_after("漢字\r\n".repeat(3).as_bytes(), "かな".as_bytes());
        agree_after(&b"x".repeat(200), b"y\r\n");
        // A prompt that draws a clock with the cursor saved and restored (DECSC/DECRC).
        agree_after(
            b"\x1b7\x1b[1;70H\x1b[2m12:00\x1b8$ ",
            b"ls\x1b7\x1b[1;70H12:01\x1b8 -l",
        );
        // A scroll region and a saved cursor are part of what is rebuilt or compared.
        let mut m = fed(b"\x1b[5;10r\x1b[3;3H\x1b7\x1b[1;1Hprompt$ ");
        if m.rest() {
            let mut awake = fed(b"\x1b[5;10r\x1b[3;3H\x1b7\x1b[1;1Hprompt$ ");
            assert!(m.process(b"\x1b8\n\n\n\n\n\n\n\nend"));
            assert!(awake.process(b"\x1b8\n\n\n\n\n\n\n\nend"));
            assert!(m.screen() == awake.screen());
        }
    }

    #[test]
    fn a_model_inside_a_sequence_stays_awake() {
        for unfinished in [
            &b"$ \x1b["[..],
            b"$ \x1b[1;3",
            b"$ \x1b]0;title without end",
            b"$ \x1bP1$r",
            b"$ \xe6\xbc",
            b"$ \x1b",
            b"$ \x1b(",
        ] {
            let mut m = fed(unfinished);
            assert!(!m.rest(), "rested inside {unfinished:?}");
            assert!(!m.resting());
        }
    }

    #[test]
    fn output_past_the_tail_without_a_reset_keeps_it_awake_until_one() {
        let mut m = fed(b"\x1b]0;");
        assert!(m.process(&b"t".repeat(TAIL + 1)));
        assert!(!m.rest(), "inside an OSC that began too long ago to tell");
        // BEL ends the OSC but is no reset from every state: awake until an ESC.
        assert!(m.process(b"\x07$ "));
        assert!(!m.rest());
        assert!(m.process(b"\x1b[0m$ "));
        assert!(m.rest());
        // From the start with no reset at all: the first state is known.
        let mut m = fed(b"hello $ ");
        assert!(m.rest());
        let mut m = fed(&b"a".repeat(TAIL + 1));
        assert!(!m.rest());
    }

    #[test]
    fn after_a_full_screen_program_it_rests_with_the_alternate_screen_as_it_was_left() {
        let vim = b"$ vim\r\n\x1b[?1049h\x1b[1;1H~ file\r\n~\x1b[7mstatus\x1b[?1049l$ ";
        // Shown again as it was left by mode 47; then a program that clears it (1049).
        agree_after(vim, b"\x1b[?47hmore\x1b[?47l$ ");
        agree_after(vim, b"\x1b[?1049hnew\x1b[?1049l$ ");
        let mut m = fed(vim);
        assert!(m.rest());
        assert!(m.process(b"\x1b[?47h"));
        assert!(
            m.screen().contents().contains("~ file"),
            "{}",
            m.screen().contents()
        );
    }

    #[test]
    fn a_full_screen_program_keeps_it_awake_and_after_it_a_rebuilt_screen_must_match() {
        let mut m = fed(b"$ vim\r\n\x1b[?1049h\x1b[1;1H~\r\n~");
        // On the alternate screen: whatever rest decides, waking gives the same screen.
        let rested = m.rest();
        let mut awake = fed(b"$ vim\r\n\x1b[?1049h\x1b[1;1H~\r\n~");
        assert!(m.process(b"\x1b[?1049l$ "));
        assert!(awake.process(b"\x1b[?1049l$ "));
        assert!(m.screen() == awake.screen(), "rested: {rested}");
    }

    #[test]
    fn resize_and_finish_work_on_a_resting_model() {
        let mut m = fed(b"$ ");
        assert!(m.rest());
        assert!(m.set_size(30, 100));
        assert!(!m.resting());
        assert_eq!(m.screen().size(), (30, 100));
        assert!(m.rest());
        assert!(m.wake());
        assert_eq!(m.screen().contents().trim_end(), "$");
    }
}
