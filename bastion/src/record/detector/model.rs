//! The vt100 screen model, kept from panicking out of the detector.
//!
//! vt100 0.16 has panics reachable from a node's output: on a screen one row high or one column
//! wide (avoided by [`super::super::MIN_MODEL`]), and after a resize that cuts a wide character at
//! the last column (writing over that cell then looks for its missing second half). The output
//! is the node's to choose, so every call into vt100 is made under `catch_unwind`: after a
//! panic the model starts again blank at the same size and the caller is told, so that lines
//! anchored on the lost screen are read from their keys instead. The recording is unaffected.

use std::panic::{AssertUnwindSafe, catch_unwind};

pub(super) struct Model {
    parser: vt100::Parser,
    rows: u16,
    cols: u16,
}

impl Model {
    pub(super) fn new(rows: u16, cols: u16) -> Self {
        Model {
            parser: vt100::Parser::new(rows, cols, 0),
            rows,
            cols,
        }
    }

    pub(super) fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// Feed output; `false` when vt100 panicked and the screen was lost.
    #[must_use]
    pub(super) fn process(&mut self, bytes: &[u8]) -> bool {
        let parser = &mut self.parser;
        let ok = catch_unwind(AssertUnwindSafe(|| parser.process(bytes))).is_ok();
        if !ok {
            self.reset();
        }
        ok
    }

    /// Resize; `false` when vt100 panicked and the screen was lost.
    #[must_use]
    pub(super) fn set_size(&mut self, rows: u16, cols: u16) -> bool {
        self.rows = rows;
        self.cols = cols;
        let parser = &mut self.parser;
        let ok = catch_unwind(AssertUnwindSafe(|| {
            parser.screen_mut().set_size(rows, cols)
        }))
        .is_ok();
        if !ok {
            self.reset();
        }
        ok
    }

    fn reset(&mut self) {
        self.parser = vt100::Parser::new(self.rows, self.cols, 0);
    }
}
