//! Replays of recordings for the console's player: the asciicast v2 file is run through the
//! same vt100 screen model the gateway uses, and what the screen shows is sent as frames (the
//! rows that changed since the previous frame, at most one frame per 40 ms of the recording).
//! Channels without a pty (term `dumb`) are shown as their output stream instead.

use serde::Serialize;
use serde_json::Value;

/// Frames closer than this (seconds of the recording) are merged into one.
const FRAME_GAP: f64 = 0.04;
/// At most this many frames per replay; past it, frames are merged further apart.
const MAX_FRAMES: usize = 20_000;
/// Output stream shown for a channel without a pty, at most (bytes).
const MAX_STREAM: usize = 2 << 20;
/// Screen sizes the model follows (vt100 panics below two rows or columns).
const MIN_DIM: u16 = 2;
const MAX_DIM: u16 = 500;

/// What the player shows.
#[derive(Debug, Serialize)]
pub struct Replay {
    pub width: u16,
    pub height: u16,
    /// A terminal (pty) channel; otherwise an output stream.
    pub pty: bool,
    /// Seconds from the first to the last event.
    pub duration: f64,
    /// Unix seconds when the channel started (the header's timestamp), when known.
    pub started: Option<u64>,
    pub title: String,
    pub frames: Vec<Frame>,
    /// The output stream (non-pty channels), escape sequences removed.
    pub stream: String,
    /// The screen at the end, row by row.
    #[serde(skip)]
    pub last_screen: Vec<String>,
}

/// The screen at `t`: the rows that differ from the previous frame, and the size when it changed.
#[derive(Debug, Serialize, PartialEq)]
pub struct Frame {
    pub t: f64,
    pub rows: Vec<(u16, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<(u16, u16)>,
}

fn dim(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(MAX_DIM).clamp(MIN_DIM, MAX_DIM)
}

/// Build the replay of a recording's text. Bad lines are an error naming the line.
pub fn replay(cast: &str) -> Result<Replay, String> {
    let mut lines = cast.lines();
    let header: Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("the recording has no asciicast header")?;
    if header["version"] != 2 {
        return Err("the recording is not asciicast version 2".into());
    }
    let mut width = dim(header["width"].as_u64().unwrap_or(80));
    let mut height = dim(header["height"].as_u64().unwrap_or(24));
    let pty = header["env"]["TERM"]
        .as_str()
        .or(header["env"]["term"].as_str())
        != Some("dumb");
    let mut parser = vt100::Parser::new(height, width, 0);
    let mut shown: Vec<String> = vec![String::new(); usize::from(height)];
    let mut frames = Vec::new();
    let mut stream = String::new();
    let mut pending_size = None;
    // A burst of events closer than `gap` to each other is one frame, stamped with its last
    // event; a burst never holds a frame back longer than MAX_HOLD.
    const MAX_HOLD: f64 = 0.25;
    let mut last_t = 0.0;
    // When the first change not yet in a frame happened.
    let mut burst_start = 0.0;
    let mut dirty = false;
    let mut gap = FRAME_GAP;
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (at, code, data): (f64, String, String) = serde_json::from_str(line)
            .map_err(|e| format!("event line {} cannot be read: {e}", n + 2))?;
        let at = if at.is_finite() {
            at.max(last_t)
        } else {
            last_t
        };
        // Only what changes the screen times a frame: a frame stamped with an input event's time
        // would show, at a command's moment, the screen from before its echo.
        if code != "o" && code != "r" {
            continue;
        }
        if pty && dirty && (at - last_t >= gap || last_t - burst_start >= MAX_HOLD) {
            frames.push(frame(last_t, &parser, &mut shown, pending_size.take()));
            dirty = false;
            if frames.len() >= MAX_FRAMES {
                gap *= 2.0;
            }
        }
        last_t = at;
        match code.as_str() {
            "o" => {
                if pty {
                    parser.process(data.as_bytes());
                    if !dirty {
                        burst_start = at;
                    }
                    dirty = true;
                } else if stream.len() < MAX_STREAM {
                    stream.push_str(&data);
                }
            }
            "r" => {
                if let Some((w, h)) = data.split_once('x')
                    && let (Ok(w), Ok(h)) = (w.trim().parse::<u64>(), h.trim().parse::<u64>())
                {
                    width = dim(w);
                    height = dim(h);
                    parser.screen_mut().set_size(height, width);
                    pending_size = Some((width, height));
                    if !dirty {
                        burst_start = at;
                    }
                    dirty = true;
                }
            }
            _ => {}
        }
    }
    if pty && (dirty || frames.is_empty()) {
        frames.push(frame(last_t, &parser, &mut shown, pending_size.take()));
    }
    let t = last_t;
    Ok(Replay {
        width,
        height,
        pty,
        // Rounded as frames are: the last frame is at the end, never past it.
        duration: (t * 1000.0).round() / 1000.0,
        started: header["timestamp"].as_u64(),
        title: header["title"].as_str().unwrap_or_default().to_string(),
        frames,
        stream: strip_escapes(&stream),
        last_screen: shown,
    })
}

/// The rows of the screen now that differ from `shown` (which is brought up to date).
fn frame(
    t: f64,
    parser: &vt100::Parser,
    shown: &mut Vec<String>,
    size: Option<(u16, u16)>,
) -> Frame {
    let screen = parser.screen();
    let (rows, cols) = screen.size();
    let now: Vec<String> = screen
        .rows(0, cols)
        .take(usize::from(rows))
        .map(|r| r.trim_end().to_string())
        .collect();
    let mut changed = Vec::new();
    if size.is_some() || now.len() != shown.len() {
        changed = now
            .iter()
            .enumerate()
            .map(|(i, r)| (u16::try_from(i).unwrap_or(u16::MAX), r.clone()))
            .collect();
    } else {
        for (i, r) in now.iter().enumerate() {
            if shown.get(i) != Some(r) {
                changed.push((u16::try_from(i).unwrap_or(u16::MAX), r.clone()));
            }
        }
    }
    *shown = now;
    Frame {
        t: (t * 1000.0).round() / 1000.0,
        rows: changed,
        size,
    }
}

/// Terminal control sequences removed from an output stream; text, tabs and newlines kept.
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.peek() == Some(&'\\')) {
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(term: &str, events: &[(f64, &str, &str)]) -> String {
        let mut s = format!(
            "{{\"version\":2,\"width\":20,\"height\":4,\"timestamp\":1700000000,\"env\":{{\"TERM\":\"{term}\"}}}}\n"
        );
        for (t, c, d) in events {
            s.push_str(&serde_json::to_string(&(t, c, d)).unwrap());
            s.push('\n');
        }
        s
    }

    #[test]
    fn a_pty_recording_replays_as_screens_with_only_changed_rows() {
        let r = replay(&cast(
            "xterm",
            &[
                (0.1, "o", "$ "),
                (0.5, "i", "ls\r"),
                (0.6, "o", "ls\r\nfile-a  file-b\r\n$ "),
                (0.61, "o", "x"),
                (3.0, "o", "\r\n"),
            ],
        ))
        .unwrap();
        assert!(r.pty);
        assert_eq!(r.duration, 3.0);
        assert_eq!(r.started, Some(1_700_000_000));
        assert_eq!(r.frames[0].rows, vec![(0, "$".to_string())]);
        // 0.61 is within 40 ms of 0.6: one frame, stamped with the later.
        let at_06 = &r.frames[1];
        assert_eq!(at_06.t, 0.61);
        assert!(at_06.rows.contains(&(1, "file-a  file-b".to_string())));
        assert!(
            !at_06.rows.iter().any(|(i, _)| *i == 3),
            "unchanged rows are not sent"
        );
        assert_eq!(r.last_screen[2], "$ x");
        assert_eq!(r.frames.len(), 3);
    }

    #[test]
    fn frames_are_stamped_by_output_never_by_input() {
        let r = replay(&cast(
            "xterm",
            &[
                (1.0, "o", "$ "),
                (1.02, "i", "ls\r"),
                (1.2, "o", "ls\r\nfile\r\n"),
            ],
        ))
        .unwrap();
        // The screen before the echo is stamped 1.0, not with the Enter at 1.02.
        assert_eq!(r.frames[0].t, 1.0);
        assert_eq!(r.frames[1].t, 1.2);
        assert!(r.frames.iter().all(|f| f.t != 1.02));
        // A player that clamps to the duration still reaches the last frame.
        let r = replay(&cast("xterm", &[(0.1, "o", "a"), (1.787949, "o", "b")])).unwrap();
        assert_eq!(r.frames.last().unwrap().t, r.duration);
    }

    #[test]
    fn resizes_send_the_whole_screen_and_bad_sizes_are_bounded() {
        let r = replay(&cast(
            "xterm",
            &[
                (0.1, "o", "hello"),
                (1.0, "r", "30x5"),
                (2.0, "r", "0x99999"),
            ],
        ))
        .unwrap();
        assert_eq!(r.frames[1].size, Some((30, 5)));
        assert_eq!(r.frames[1].rows.len(), 5);
        assert_eq!((r.width, r.height), (MIN_DIM, MAX_DIM));
    }

    #[test]
    fn a_channel_without_a_pty_is_its_output_stream_without_escapes() {
        let r = replay(&cast(
            "dumb",
            &[(
                0.1,
                "o",
                "one\r\n\u{1b}[31mred\u{1b}[0m\n\u{1b}]0;title\u{7}two\n",
            )],
        ))
        .unwrap();
        assert!(!r.pty);
        assert!(r.frames.is_empty());
        assert_eq!(r.stream, "one\nred\ntwo\n");
    }

    #[test]
    fn broken_recordings_are_errors_not_panics() {
        assert!(replay("").is_err());
        assert!(replay("{\"version\":1}\n").is_err());
        let e = replay(&format!("{}[1, \"o\"\n", cast("xterm", &[]))).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
