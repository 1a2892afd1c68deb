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

/// The text of the cells `cells` of the logical line holding `first_row`..=`last_row`.
fn logical_text(
    screen: &vt100::Screen,
    first_row: u16,
    last_row: u16,
    cells: std::ops::Range<usize>,
) -> String {
    let (_, cols) = screen.size();
    let mut text = String::new();
    for row in first_row..=last_row {
        let base = usize::from(row - first_row) * usize::from(cols);
        for col in 0..cols {
            if !cells.contains(&(base + usize::from(col))) {
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

/// The text of the cursor's logical line from cell `anchor` on.
pub(super) fn span_text(screen: &vt100::Screen, anchor: usize) -> String {
    let (first, last) = logical_bounds(screen, cursor_row(screen));
    logical_text(screen, first, last, anchor..usize::MAX)
}

/// The text of the cursor's logical line before cell `anchor`: the prompt of a line that starts
/// there.
pub(super) fn prompt_text(screen: &vt100::Screen, anchor: usize) -> String {
    let (first, last) = logical_bounds(screen, cursor_row(screen));
    logical_text(screen, first, last, 0..anchor)
}

/// Where the first sequence that may switch to the alternate screen (`ESC[?47h`,
/// `ESC[?1047h`, `ESC[?1049h`, alone or among other modes) starts in `bytes`.
pub(super) fn alternate_screen_at(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = bytes[from..].windows(3).position(|w| w == b"\x1b[?") {
        let start = from + found;
        let params_start = start + 3;
        let params_len = bytes[params_start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b';')
            .count();
        let params = &bytes[params_start..params_start + params_len];
        if bytes.get(params_start + params_len) == Some(&b'h')
            && params
                .split(|&b| b == b';')
                .any(|p| matches!(p, b"47" | b"1047" | b"1049"))
        {
            return Some(start);
        }
        from = params_start;
    }
    None
}

/// How many cells the screen has.
pub(super) fn cells(screen: &vt100::Screen) -> usize {
    let (rows, cols) = screen.size();
    usize::from(rows) * usize::from(cols)
}

/// `text` (trailing blanks trimmed) ends like a shell prompt: `$`, `#`, `%`, `>`, `❯`, `➜`.
pub(super) fn ends_like_prompt(text: &str) -> bool {
    PROMPT_MARKERS
        .iter()
        .filter_map(|m| m.chars().next())
        .any(|marker| text.trim_end().ends_with(marker))
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

/// Words that make a prompt ask for a secret (matched case-insensitively; ASCII ones as whole
/// words, others anywhere).
const SECRET_WORDS: [&str; 27] = [
    "password",
    "passwd",
    "passphrase",
    "pass phrase",
    "passcode",
    "pin",
    "token",
    "secret",
    "otp",
    "one-time code",
    "verification code",
    "authentication code",
    "security code",
    "2fa",
    "mfa",
    "totp",
    "api key",
    "passwort",
    "kennwort",
    "mot de passe",
    "contraseña",
    "senha",
    "wachtwoord",
    "пароль",
    "パスワード",
    "密码",
    "비밀번호",
];

/// How far back from the end of a prompt a secret word is looked for.
const SECRET_PROMPT_TAIL: usize = 64;

/// The prompt (the text before where the input begins) asks for a secret: it ends with `:` or
/// `?` and its last [`SECRET_PROMPT_TAIL`] characters hold one of [`SECRET_WORDS`] as a whole
/// word. `[sudo] password for x:`, `Password:`, `Enter passphrase for key '/k':`, `Token:`,
/// `Verification code:`, `Enter PIN for 'card':`.
pub(super) fn asks_for_secret(prompt: &str) -> bool {
    let prompt = prompt.trim_end();
    if !prompt.ends_with([':', '?', '：', '？']) {
        return false;
    }
    let skip = prompt.chars().count().saturating_sub(SECRET_PROMPT_TAIL);
    let tail: String = prompt.chars().skip(skip).collect::<String>().to_lowercase();
    SECRET_WORDS.iter().any(|word| has_word(&tail, word))
}

/// `text` holds `word`, not inside a longer word when `word` is ASCII (scripts without spaces
/// between words have no such bounds).
fn has_word(text: &str, word: &str) -> bool {
    if !word.is_ascii() {
        return text.contains(word);
    }
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}
