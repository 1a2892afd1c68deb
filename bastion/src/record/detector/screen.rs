//! Reading the screen model: logical lines (rows joined by autowrap) and small text tests.

/// Prompt endings used by [`super::Located::PromptGuess`].
const PROMPT_MARKERS: [&str; 6] = ["$ ", "# ", "% ", "> ", "❯ ", "➜ "];

/// The rows of the logical line containing `row`: (first, last).
fn logical_bounds(screen: &vt100::Screen, row: u16) -> (u16, u16) {
    let (rows, _) = screen.size();
    let mut first = row;
    while first > 0 && screen.row_wrapped(first - 1) {
        first -= 1;
    }
    let mut last = row;
    while last + 1 < rows && screen.row_wrapped(last) {
        last += 1;
    }
    (first, last)
}

fn cursor_row(screen: &vt100::Screen) -> u16 {
    let (rows, _) = screen.size();
    screen.cursor_position().0.min(rows.saturating_sub(1))
}

/// Where the cursor is, as a cell offset in its logical line.
pub(super) fn cursor_offset(screen: &vt100::Screen) -> usize {
    let (_, cols) = screen.size();
    let (row, col) = screen.cursor_position();
    let row = cursor_row(screen).min(row);
    let (first, _) = logical_bounds(screen, row);
    usize::from(row - first) * usize::from(cols) + usize::from(col.min(cols))
}

/// The text of the logical line holding `first_row`..=`last_row`, from cell `from` on.
fn logical_text(screen: &vt100::Screen, first_row: u16, last_row: u16, from: usize) -> String {
    let (_, cols) = screen.size();
    let mut text = String::new();
    for row in first_row..=last_row {
        let base = usize::from(row - first_row) * usize::from(cols);
        for col in 0..cols {
            if base + usize::from(col) < from {
                continue;
            }
            match screen.cell(row, col) {
                Some(cell) if cell.is_wide_continuation() => {}
                Some(cell) if cell.has_contents() => text.push_str(cell.contents()),
                Some(_) | None => text.push(' '),
            }
        }
    }
    text.trim_end().to_string()
}

/// The text from cell `anchor` of the logical line that is `extra` logical lines above the
/// cursor's, through the end of the cursor's logical line, lines joined with `\n`.
pub(super) fn span_text(screen: &vt100::Screen, anchor: usize, extra: usize) -> String {
    let (first, last) = logical_bounds(screen, cursor_row(screen));
    let mut spans = vec![(first, last)];
    for _ in 0..extra {
        let Some(&(top, _)) = spans.first() else {
            break;
        };
        if top == 0 {
            break;
        }
        spans.insert(0, logical_bounds(screen, top - 1));
    }
    spans
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| logical_text(screen, a, b, if i == 0 { anchor } else { 0 }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text after the first prompt marker of a line.
pub(super) fn after_prompt(line: &str) -> Option<&str> {
    let end = PROMPT_MARKERS
        .iter()
        .filter_map(|m| line.find(m).map(|i| i + m.len()))
        .min()?;
    line.get(end..).map(str::trim).filter(|s| !s.is_empty())
}

/// `line` ends with `word`, which starts the line or follows a blank.
pub(super) fn ends_with_word(line: &str, word: &str) -> bool {
    let line = line.trim_end();
    line.strip_suffix(word)
        .is_some_and(|before| before.is_empty() || before.ends_with(char::is_whitespace))
}

pub(super) fn ends_with_unescaped_backslash(text: &str) -> bool {
    text.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}
