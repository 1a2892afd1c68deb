//! asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>): a JSON header line, then one
//! JSON array per event: `[seconds, "o" | "i" | "r", "data"]` — output, input, resize (`"WxH"`).
//!
//! The writer is pure: the caller passes the time and appends the returned lines (each ends with
//! `\n`) to the recording file. SSH channel data is bytes, and a chunk may end in the middle of a
//! UTF-8 sequence: the incomplete tail of each direction is kept until the next chunk of that
//! direction, and bytes that are not UTF-8 become U+FFFD, so every line is valid UTF-8 JSON.
//! Times never go backwards (a time earlier than the last one written is raised to it) and are
//! rounded to microseconds.

use serde::{Deserialize, Serialize};

use super::clamp_dimension;

#[derive(Debug, thiserror::Error)]
pub enum AsciicastError {
    #[error("the recording has no header line")]
    NoHeader,
    #[error("line {line}: not an asciicast v2 header: {problem}")]
    BadHeader { line: usize, problem: String },
    #[error("line {line}: not an asciicast v2 event: {problem}")]
    BadEvent { line: usize, problem: String },
}

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<HeaderEnv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderEnv {
    #[serde(rename = "TERM", default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

/// Longest TERM value kept in the header (it comes from the client's pty request).
const MAX_TERM_LEN: usize = 64;

/// Decodes a byte stream into UTF-8 text, keeping an incomplete trailing sequence (at most three
/// bytes) for the next chunk; invalid bytes become U+FFFD.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    tail: Vec<u8>,
}

impl Utf8Stream {
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let joined;
        let input: &[u8] = if self.tail.is_empty() {
            bytes
        } else {
            let mut v = std::mem::take(&mut self.tail);
            v.extend_from_slice(bytes);
            joined = v;
            &joined
        };
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            // An incomplete sequence at the very end: wait for more bytes.
                            self.tail = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// The stream ended: an incomplete tail becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.tail.is_empty() {
            String::new()
        } else {
            self.tail.clear();
            "\u{FFFD}".to_string()
        }
    }

    /// Forget an incomplete tail (its bytes were dropped from the recording).
    pub fn reset(&mut self) {
        self.tail.clear();
    }
}

/// Writes one pty channel as asciicast v2.
#[derive(Debug, Clone)]
pub struct AsciicastWriter {
    width: u32,
    height: u32,
    term: String,
    start_unix: u64,
    title: Option<String>,
    output: Utf8Stream,
    input: Utf8Stream,
    last_t: f64,
}

impl AsciicastWriter {
    /// `width` and `height` are the pty request's columns and rows (clamped to the range the
    /// screen model accepts); `start_unix` is the channel's start time in Unix seconds.
    pub fn new(width: u32, height: u32, term: &str, start_unix: u64) -> Self {
        AsciicastWriter {
            width: u32::from(clamp_dimension(width)),
            height: u32::from(clamp_dimension(height)),
            term: term.chars().take(MAX_TERM_LEN).collect(),
            start_unix,
            title: None,
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            last_t: 0.0,
        }
    }

    /// A title for players (e.g. `engineer@node.cluster`), written in the header.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The header line, ending with `\n`.
    pub fn header(&self) -> String {
        let header = Header {
            version: 2,
            width: self.width,
            height: self.height,
            timestamp: Some(self.start_unix),
            env: Some(HeaderEnv {
                term: Some(self.term.clone()),
            }),
            title: self.title.clone(),
        };
        let mut line = serde_json::to_string(&header).unwrap_or_else(|_| {
            format!(
                "{{\"version\":2,\"width\":{},\"height\":{}}}",
                self.width, self.height
            )
        });
        line.push('\n');
        line
    }

    /// Bytes from the node at `t` seconds since the start: a line to append, or `None` when
    /// nothing complete is there yet.
    pub fn output(&mut self, t: f64, bytes: &[u8]) -> Option<String> {
        let text = self.output.decode(bytes);
        self.event(t, "o", &text)
    }

    /// Bytes typed by the engineer. With `keep == false` they are left out of the recording (input
    /// typed while the terminal did not echo it), and a kept incomplete UTF-8 tail is forgotten.
    pub fn input(&mut self, t: f64, bytes: &[u8], keep: bool) -> Option<String> {
        if !keep {
            self.input.reset();
            return None;
        }
        let text = self.input.decode(bytes);
        self.event(t, "i", &text)
    }

    /// The terminal was resized to `width` columns and `height` rows.
    pub fn resize(&mut self, t: f64, width: u32, height: u32) -> String {
        let size = format!("{}x{}", clamp_dimension(width), clamp_dimension(height));
        self.line(t, "r", &size)
    }

    /// The channel ended: incomplete UTF-8 tails become U+FFFD events.
    pub fn finish(&mut self, t: f64) -> Vec<String> {
        let output = self.output.finish();
        let input = self.input.finish();
        [self.event(t, "o", &output), self.event(t, "i", &input)]
            .into_iter()
            .flatten()
            .collect()
    }

    fn event(&mut self, t: f64, code: &str, text: &str) -> Option<String> {
        if text.is_empty() {
            None
        } else {
            Some(self.line(t, code, text))
        }
    }

    fn line(&mut self, t: f64, code: &str, text: &str) -> String {
        let t = if t.is_finite() && t > 0.0 { t } else { 0.0 };
        let t = ((t.max(self.last_t)) * 1e6).round() / 1e6;
        self.last_t = t;
        let data = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
        format!("[{t:?}, \"{code}\", {data}]\n")
    }
}

/// What an event line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Output,
    Input,
    Resize,
    Marker,
}

impl EventKind {
    fn from_code(code: &str) -> Option<EventKind> {
        match code {
            "o" => Some(EventKind::Output),
            "i" => Some(EventKind::Input),
            "r" => Some(EventKind::Resize),
            "m" => Some(EventKind::Marker),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub kind: EventKind,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub header: Header,
    pub events: Vec<Event>,
}

/// Read a whole recording. Empty lines are skipped.
pub fn parse(text: &str) -> Result<Recording, AsciicastError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let (n, first) = lines.next().ok_or(AsciicastError::NoHeader)?;
    let header: Header = serde_json::from_str(first).map_err(|e| AsciicastError::BadHeader {
        line: n,
        problem: e.to_string(),
    })?;
    if header.version != 2 {
        return Err(AsciicastError::BadHeader {
            line: n,
            problem: format!("version {} (expected 2)", header.version),
        });
    }
    let mut events = Vec::new();
    for (n, line) in lines {
        let bad = |problem: String| AsciicastError::BadEvent { line: n, problem };
        let (time, code, data): (f64, String, String) =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let kind =
            EventKind::from_code(&code).ok_or_else(|| bad(format!("event code {code:?}")))?;
        events.push(Event { time, kind, data });
    }
    Ok(Recording { header, events })
}

/// The events of a recording (the header is checked, then dropped).
pub fn parse_events(text: &str) -> Result<Vec<Event>, AsciicastError> {
    parse(text).map(|r| r.events)
}

/// `"WxH"` of a resize event.
pub fn parse_size(data: &str) -> Option<(u16, u16)> {
    let (w, h) = data.split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Replay the output (and resize) events into a `rows`×`cols` screen and return what it shows at
/// the end, as plain text — to check that a recording shows what the terminal showed.
pub fn replay_screen(text: &str, rows: u16, cols: u16) -> Result<String, AsciicastError> {
    let mut parser = vt100::Parser::new(rows.max(1), cols.max(1), 0);
    for event in parse_events(text)? {
        match event.kind {
            EventKind::Output => parser.process(event.data.as_bytes()),
            EventKind::Resize => {
                if let Some((w, h)) = parse_size(&event.data) {
                    parser.screen_mut().set_size(h.max(1), w.max(1));
                }
            }
            EventKind::Input | EventKind::Marker => {}
        }
    }
    Ok(parser.screen().contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> AsciicastWriter {
        AsciicastWriter::new(80, 24, "xterm-256color", 1_700_000_000)
    }

    #[test]
    fn header_is_v2_json_with_term_and_title() {
        let w = writer().with_title("alice@web-1.prod");
        let line = w.header();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["width"], 80);
        assert_eq!(v["height"], 24);
        assert_eq!(v["timestamp"], 1_700_000_000u64);
        assert_eq!(v["env"]["TERM"], "xterm-256color");
        assert_eq!(v["title"], "alice@web-1.prod");
        // Without a title there is no title key.
        let v: serde_json::Value = serde_json::from_str(writer().header().trim_end()).unwrap();
        assert!(v.get("title").is_none());
    }

    #[test]
    fn event_lines_are_json_arrays() {
        let mut w = writer();
        let cases: Vec<(&str, Option<String>)> = vec![
            ("plain", w.output(0.5, b"hello")),
            ("quotes and controls", w.output(1.25, b"a\"b\\c\r\n\x1b[0m")),
            ("empty output", w.output(1.5, b"")),
            ("input", w.input(2.0, b"ls\r", true)),
            ("dropped input", w.input(2.5, b"hunter2\r", false)),
        ];
        let expected = [
            ("plain", Some("[0.5, \"o\", \"hello\"]\n")),
            (
                "quotes and controls",
                Some("[1.25, \"o\", \"a\\\"b\\\\c\\r\\n\\u001b[0m\"]\n"),
            ),
            ("empty output", None),
            ("input", Some("[2.0, \"i\", \"ls\\r\"]\n")),
            ("dropped input", None),
        ];
        for ((name, got), (_, want)) in cases.into_iter().zip(expected) {
            assert_eq!(got.as_deref(), want, "{name}");
        }
        assert_eq!(w.resize(3.0, 100, 30), "[3.0, \"r\", \"100x30\"]\n");
    }

    #[test]
    fn times_never_go_backwards_and_are_sanitized() {
        let mut w = writer();
        let cases: [(f64, f64); 6] = [
            (1.0, 1.0),
            (0.5, 1.0),
            (f64::NAN, 1.0),
            (f64::INFINITY, 1.0),
            (-3.0, 1.0),
            (2.123_456_789, 2.123_457),
        ];
        for (given, want) in cases {
            let line = w.output(given, b"x").unwrap();
            let events = parse_events(&format!("{}{}", w.header(), line)).unwrap();
            assert_eq!(events[0].time, want, "time {given}");
        }
    }

    /// Split points inside multi-byte sequences, and invalid bytes.
    #[test]
    fn utf8_split_across_chunks() {
        let cases: &[(&str, &[&[u8]], &str)] = &[
            ("ascii", &[b"ab", b"cd"], "abcd"),
            ("2-byte split", &[b"caf\xc3", b"\xa9!"], "café!"),
            ("3-byte split 1+2", &[b"\xe2", b"\x82\xac"], "€"),
            ("3-byte split 2+1", &[b"\xe2\x82", b"\xac"], "€"),
            (
                "4-byte split 1+1+1+1",
                &[b"\xf0", b"\x9f", b"\x98", b"\x80"],
                "😀",
            ),
            ("invalid byte", &[b"a\xffb"], "a\u{fffd}b"),
            ("lone continuation", &[b"\x80x"], "\u{fffd}x"),
            ("truncated then ascii", &[b"\xe2\x82", b"x"], "\u{fffd}x"),
            ("incomplete at the end", &[b"ok\xf0\x9f"], "ok\u{fffd}"),
        ];
        for (name, chunks, want) in cases {
            let mut w = writer();
            let mut text = w.header();
            for (i, chunk) in chunks.iter().enumerate() {
                if let Some(line) = w.output(i as f64, chunk) {
                    // Every line on its own is valid JSON.
                    serde_json::from_str::<serde_json::Value>(line.trim_end()).unwrap();
                    text.push_str(&line);
                }
            }
            for line in w.finish(10.0) {
                text.push_str(&line);
            }
            let got: String = parse_events(&text)
                .unwrap()
                .into_iter()
                .map(|e| e.data)
                .collect();
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn input_and_output_tails_are_separate() {
        let mut w = writer();
        assert_eq!(w.output(0.0, b"\xc3"), None);
        assert_eq!(w.input(0.1, b"\xe2\x82", true), None);
        assert_eq!(
            w.output(0.2, b"\xa9").as_deref(),
            Some("[0.2, \"o\", \"é\"]\n")
        );
        assert_eq!(
            w.input(0.3, b"\xac", true).as_deref(),
            Some("[0.3, \"i\", \"€\"]\n")
        );
    }

    #[test]
    fn dropped_input_forgets_its_tail() {
        let mut w = writer();
        assert_eq!(w.input(0.0, b"\xc3", true), None);
        assert_eq!(w.input(0.1, b"secret", false), None);
        assert_eq!(
            w.input(0.2, b"\xa9x", true).as_deref(),
            Some("[0.2, \"i\", \"\u{fffd}x\"]\n")
        );
    }

    #[test]
    fn parse_rejects_bad_recordings() {
        let header = writer().header();
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("not json", "hello\n".to_string()),
            (
                "version 1",
                "{\"version\":1,\"width\":80,\"height\":24}\n".to_string(),
            ),
            ("event not an array", format!("{header}{{}}\n")),
            ("unknown code", format!("{header}[1.0, \"x\", \"\"]\n")),
            ("missing data", format!("{header}[1.0, \"o\"]\n")),
        ];
        for (name, text) in cases {
            assert!(parse(&text).is_err(), "{name}");
        }
        let ok = format!("{header}\n[1.0, \"o\", \"a\"]\n[2.0, \"m\", \"\"]\n");
        let rec = parse(&ok).unwrap();
        assert_eq!(rec.header.width, 80);
        assert_eq!(
            rec.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EventKind::Output, EventKind::Marker]
        );
    }

    #[test]
    fn parse_size_cases() {
        let cases = [
            ("80x24", Some((80, 24))),
            ("100x30", Some((100, 30))),
            ("80", None),
            ("x24", None),
            ("80x", None),
            ("-1x5", None),
        ];
        for (data, want) in cases {
            assert_eq!(parse_size(data), want, "{data}");
        }
    }

    /// Replaying the recording shows what a terminal fed the raw bytes shows, however the bytes
    /// were chunked (including inside UTF-8 sequences and escape sequences).
    #[test]
    fn replay_shows_the_same_screen() {
        let stream: &[u8] = "\x1b[1;32muser@host\x1b[0m:~$ ls\r\nfichier-é  π  😀\r\n\
              \x1b[31mred\x1b[0m line\r\n$ printf 'a\\tb'\r\na\tb$ \x1b[2J\x1b[Hcleared ✓\r\n"
            .as_bytes();
        for chunk_len in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut w = writer();
            let mut text = w.header();
            for (i, chunk) in stream.chunks(chunk_len).enumerate() {
                if let Some(line) = w.output(i as f64 / 10.0, chunk) {
                    text.push_str(&line);
                }
                if let Some(line) = w.input(i as f64 / 10.0, b"k", true) {
                    text.push_str(&line);
                }
            }
            let mut direct = vt100::Parser::new(24, 80, 0);
            direct.process(stream);
            assert_eq!(
                replay_screen(&text, 24, 80).unwrap(),
                direct.screen().contents(),
                "chunks of {chunk_len}"
            );
        }
    }

    #[test]
    fn replay_applies_resizes() {
        let mut w = AsciicastWriter::new(10, 3, "xterm", 0);
        let mut text = w.header();
        text.push_str(&w.resize(0.1, 20, 3));
        text.push_str(&w.output(0.2, b"0123456789abcdefghij").unwrap());
        assert_eq!(replay_screen(&text, 3, 10).unwrap(), "0123456789abcdefghij");
    }

    #[test]
    fn sizes_are_clamped() {
        let w = AsciicastWriter::new(1_000_000, 0, &"t".repeat(500), 0);
        let h: Header = serde_json::from_str(w.header().trim_end()).unwrap();
        assert_eq!((h.width, h.height), (u32::from(u16::MAX), 1));
        assert_eq!(h.env.unwrap().term.unwrap().len(), MAX_TERM_LEN);
    }
}
