//! A pty channel's recording, step by step: the asciicast writer and the command-line detector
//! together, with the input of lines not yet decided held back until they are — so a password
//! typed without echo at a prompt asking for a secret never reaches the recording (every other
//! line's input does, echoed or not).
//!
//! The gateway calls [`PtyRecorder::output`] / [`PtyRecorder::input`] / [`PtyRecorder::resize`]
//! with each chunk as it passes, appends [`Step::lines`] to the recording file (after
//! [`PtyRecorder::header`]), and turns [`Step::events`] into audit events (commands, full-screen
//! programs). Held input is written when it is released, at that time or later: an input event can
//! come after output that followed it, never before it, and times never go backwards.

use std::collections::VecDeque;

use super::asciicast::AsciicastWriter;
use super::detector::{Detector, DetectorEvent, Disposition, LineId};

/// Most input bytes held for one undecided line; more is left out of the recording.
const MAX_HELD_PER_LINE: usize = 8 * 1024;

/// What one call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Lines to append to the recording, in order (each ends with `\n`).
    pub lines: Vec<String>,
    /// What the detector found.
    pub events: Vec<DetectorEvent>,
}

struct Held {
    line: LineId,
    chunks: Vec<(f64, Vec<u8>)>,
    bytes: usize,
}

pub struct PtyRecorder {
    writer: AsciicastWriter,
    detector: Detector,
    held: VecDeque<Held>,
}

impl PtyRecorder {
    /// A recorder for a pty of `cols`×`rows` with `term` (from the pty request), started at
    /// `start_unix`.
    pub fn new(cols: u32, rows: u32, term: &str, start_unix: u64) -> Self {
        PtyRecorder {
            writer: AsciicastWriter::new(cols, rows, term, start_unix),
            detector: Detector::new(cols, rows),
            held: VecDeque::new(),
        }
    }

    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.writer = self.writer.with_title(title);
        self
    }

    /// The first line of the recording.
    pub fn header(&self) -> String {
        self.writer.header()
    }

    /// Bytes from the node, `t` seconds after the start.
    pub fn output(&mut self, t: f64, bytes: &[u8]) -> Step {
        let mut step = Step::default();
        let events = self.detector.output(bytes);
        // Input released by this output was typed before it.
        self.settle(&events, &mut step.lines);
        step.lines.extend(self.writer.output(t, bytes));
        step.events = events;
        step
    }

    /// Bytes typed by the engineer, `t` seconds after the start.
    pub fn input(&mut self, t: f64, bytes: &[u8]) -> Step {
        let mut step = Step::default();
        let detected = self.detector.input(bytes);
        for segment in &detected.segments {
            let Some(part) = bytes.get(segment.range.clone()) else {
                continue;
            };
            match segment.disposition {
                Disposition::Keep => step.lines.extend(self.writer.input(t, part, true)),
                Disposition::Hold(line) => self.hold(line, t, part),
            }
        }
        self.settle(&detected.events, &mut step.lines);
        step.events = detected.events;
        step
    }

    /// Idle: let the screen model rest (see [`Detector::rest`]); whether it rests.
    pub fn rest(&mut self) -> bool {
        self.detector.rest()
    }

    /// The terminal was resized.
    pub fn resize(&mut self, t: f64, cols: u32, rows: u32) -> Step {
        self.detector.resize(cols, rows);
        Step {
            lines: vec![self.writer.resize(t, cols, rows)],
            events: Vec::new(),
        }
    }

    /// The channel ended at `t`: decide what is still held and flush the writer.
    pub fn finish(&mut self, t: f64) -> Step {
        let mut step = Step::default();
        let events = self.detector.finish();
        self.settle(&events, &mut step.lines);
        // Anything the detector did not decide is not known to have been echoed.
        self.held.clear();
        step.lines.extend(self.writer.finish(t));
        step.events = events;
        step
    }

    fn hold(&mut self, line: LineId, t: f64, part: &[u8]) {
        let index = match self.held.iter().position(|h| h.line == line) {
            Some(i) => i,
            None => {
                self.held.push_back(Held {
                    line,
                    chunks: Vec::new(),
                    bytes: 0,
                });
                self.held.len() - 1
            }
        };
        if let Some(held) = self.held.get_mut(index) {
            let room = MAX_HELD_PER_LINE.saturating_sub(held.bytes);
            let part = &part[..part.len().min(room)];
            if !part.is_empty() {
                held.bytes += part.len();
                held.chunks.push((t, part.to_vec()));
            }
        }
    }

    fn settle(&mut self, events: &[DetectorEvent], lines: &mut Vec<String>) {
        for event in events {
            match event {
                DetectorEvent::LineEcho { line, echoed } => {
                    let Some(index) = self.held.iter().position(|h| h.line == *line) else {
                        continue;
                    };
                    let Some(held) = self.held.remove(index) else {
                        continue;
                    };
                    for (t, bytes) in held.chunks {
                        lines.extend(self.writer.input(t, &bytes, *echoed));
                    }
                }
                DetectorEvent::Command(_)
                | DetectorEvent::FullScreen { .. }
                | DetectorEvent::Entered { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::asciicast::{EventKind, parse_events, replay_screen};
    use crate::record::detector::Detected;

    enum Io {
        In(&'static str),
        Out(&'static [u8]),
        Resize(u32, u32),
    }
    use Io::{In, Out, Resize};

    fn record(steps: &[Io]) -> (String, Vec<DetectorEvent>, Vec<u8>) {
        let mut r = PtyRecorder::new(80, 24, "xterm-256color", 1_700_000_000).with_title("t");
        let mut cast = r.header();
        let mut events = Vec::new();
        let mut raw_output = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let t = i as f64 * 0.25;
            let s = match step {
                In(s) => r.input(t, s.as_bytes()),
                Out(s) => {
                    raw_output.extend_from_slice(s);
                    r.output(t, s)
                }
                Resize(c, rows) => r.resize(t, *c, *rows),
            };
            cast.extend(s.lines);
            events.extend(s.events);
        }
        let s = r.finish(steps.len() as f64);
        cast.extend(s.lines);
        events.extend(s.events);
        (cast, events, raw_output)
    }

    fn commands(events: &[DetectorEvent]) -> Vec<(String, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::Command(Detected {
                    command, echo_off, ..
                }) => Some((command.clone(), *echo_off)),
                DetectorEvent::FullScreen { .. }
                | DetectorEvent::LineEcho { .. }
                | DetectorEvent::Entered { .. } => None,
            })
            .collect()
    }

    const SUDO: &[Io] = &[
        Out(b"user@host:~$ "),
        In("s"),
        Out(b"s"),
        In("udo id\r"),
        Out(b"udo id\r\n[sudo] password for user: "),
        In("hunt"),
        In("er2"),
        In("\r"),
        Out(b"\r\nuid=0(root)\r\nuser@host:~$ "),
        In("ls\r"),
        Out(b"ls\r\na.txt\r\nuser@host:~$ "),
    ];

    #[test]
    fn passwords_stay_out_of_the_recording() {
        let (cast, events, _) = record(SUDO);
        assert!(!cast.contains("hunt"), "{cast}");
        assert!(!cast.contains("er2"), "{cast}");
        let input: String = parse_events(&cast)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::Input)
            .map(|e| e.data)
            .collect();
        assert_eq!(input, "sudo id\rls\r");
        assert_eq!(
            commands(&events),
            vec![
                ("sudo id".to_string(), false),
                (String::new(), true),
                ("ls".to_string(), false)
            ]
        );
    }

    #[test]
    fn recording_is_ordered_valid_and_replays_the_screen() {
        let steps = [
            Out(b"user@host:~$ "),
            In("echo é"),
            Out(b"echo \xc3"),
            Resize(100, 30),
            Out(b"\xa9"),
            In("\r"),
            Out(b"\r\n\xc3\xa9\r\nuser@host:~$ "),
            In("vim\r"),
            Out(b"vim\r\n\x1b[?1049h~"),
            In(":q\r"),
            Out(b"\x1b[?1049luser@host:~$ "),
        ];
        let (cast, events, raw) = record(&steps);
        let parsed = parse_events(&cast).unwrap();
        let mut last = 0.0;
        for e in &parsed {
            assert!(e.time >= last, "times go forward");
            last = e.time;
        }
        let mut direct = vt100::Parser::new(24, 80, 0);
        for step in &steps {
            match step {
                Out(s) => direct.process(s),
                Resize(c, r) => direct.screen_mut().set_size(*r as u16, *c as u16),
                In(_) => {}
            }
        }
        assert_eq!(
            replay_screen(&cast, 24, 80).unwrap(),
            direct.screen().contents()
        );
        assert!(!raw.is_empty());
        let input: String = parsed
            .iter()
            .filter(|e| e.kind == EventKind::Input)
            .map(|e| e.data.as_str())
            .collect();
        assert_eq!(input, "echo é\rvim\r:q\r");
        // `:q` entered in vim is reported too (from its keys): over-reporting is safe.
        assert_eq!(
            commands(&events),
            vec![
                ("echo é".to_string(), false),
                ("vim".to_string(), false),
                (":q".to_string(), false)
            ]
        );
        assert!(events.contains(&DetectorEvent::FullScreen { entered: true }));
        assert!(events.contains(&DetectorEvent::FullScreen { entered: false }));
    }

    #[test]
    fn undecided_input_at_the_end_is_dropped() {
        let (cast, _, _) = record(&[Out(b"Password: "), In("hunter2")]);
        assert!(!cast.contains("hunter2"));
    }

    #[test]
    fn recorder_can_move_between_tasks() {
        fn send<T: Send + 'static>() {}
        send::<PtyRecorder>();
        send::<crate::record::sftp::SftpParser>();
    }

    #[test]
    fn held_input_is_bounded() {
        let mut r = PtyRecorder::new(80, 24, "xterm", 0);
        r.output(0.0, b"Password: ");
        let big = vec![b'a'; MAX_HELD_PER_LINE * 4];
        for _ in 0..4 {
            r.input(0.1, &big);
        }
        assert!(r.held.iter().all(|h| h.bytes <= MAX_HELD_PER_LINE));
    }
}
