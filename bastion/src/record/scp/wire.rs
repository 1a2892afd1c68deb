//! The wire: record and message lines cut out of the stream, and their fields.

use super::MAX_LINE;

/// Longest message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// Append `bytes` up to a `\n` to `buf`; the whole line (without `\n`) once it is there.
pub(super) fn take_line(buf: &mut Vec<u8>, bytes: &mut &[u8]) -> Result<Option<Vec<u8>>, String> {
    let newline = bytes.iter().position(|&b| b == b'\n');
    let part = &bytes[..newline.unwrap_or(bytes.len())];
    if buf.len() + part.len() > MAX_LINE {
        return Err(format!("a line longer than {MAX_LINE} bytes"));
    }
    buf.extend_from_slice(part);
    match newline {
        Some(end) => {
            *bytes = &bytes[end + 1..];
            Ok(Some(std::mem::take(buf)))
        }
        None => {
            *bytes = &[];
            Ok(None)
        }
    }
}

/// `<4 octal digits> <size> <name>` of a `C` or `D` line.
pub(super) fn parse_entry(rest: &[u8]) -> Option<(String, u64, String)> {
    let text = std::str::from_utf8(rest.get(..5)?).ok()?;
    let (mode, space) = text.split_at(4);
    if space != " " || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let rest = &rest[5..];
    let digits = rest.iter().position(|&b| b == b' ')?;
    let size = parse_u64(&rest[..digits])?;
    let name = &rest[digits + 1..];
    if name.is_empty() {
        return None;
    }
    Some((
        mode.to_string(),
        size,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

/// `<mtime> <usec> <atime> <usec>` of a `T` line: the mtime.
pub(super) fn parse_times(rest: &[u8]) -> Option<u64> {
    let mut fields = rest.split(|&b| b == b' ');
    let mtime = parse_u64(fields.next()?)?;
    for _ in 0..3 {
        parse_u64(fields.next()?)?;
    }
    fields.next().is_none().then_some(mtime)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

pub(super) fn message(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

pub(super) fn bad(what: &str, line: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
    format!("malformed {what} line {shown:?}")
}
