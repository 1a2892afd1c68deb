//! The recording of one channel at the gateway: pty sessions as asciicast v2 (input and output,
//! with interactive command lines found by the detector), the output of exec commands (capped),
//! and sftp operations parsed from the subsystem stream. This module holds the state and turns
//! what the pure `record` modules find into audit events; the session does the I/O.
//!
//! Files: `data_dir/recordings/<session>-c<channel>.cast.part` while the channel is open, renamed
//! to `.cast` when it ends; the uploader sends finished files to the broker and marks them
//! `.uploaded`. Names come from the session id and channel number only, never from user input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use crate::record::asciicast::AsciicastWriter;
use crate::record::detector::DetectorEvent;
use crate::record::pty::{PtyRecorder, Step};
use crate::record::sftp::SftpParser;

/// Output of an exec command kept in its recording; past it, only the byte count.
const EXEC_OUTPUT_CAP: u64 = 1 << 20;

enum State {
    Idle,
    Pty(Box<PtyRecorder>),
    Exec {
        writer: AsciicastWriter,
        bytes: u64,
    },
    Sftp(Box<SftpParser>),
    /// Raw protocol streams (classic scp) are not kept byte for byte.
    Opaque,
}

struct Inner {
    state: State,
    file: Option<std::fs::File>,
    failed: bool,
}

pub struct ChannelRecorder {
    path: PathBuf,
    start: Instant,
    inner: Mutex<Inner>,
}

/// An audit event: kind and fields.
pub type Event = (&'static str, Value);

impl ChannelRecorder {
    pub fn new(dir: &Path, session: &str, channel: u32) -> ChannelRecorder {
        ChannelRecorder {
            path: dir.join(format!("{session}-c{channel}.cast.part")),
            start: Instant::now(),
            inner: Mutex::new(Inner {
                state: State::Idle,
                file: None,
                failed: false,
            }),
        }
    }

    /// The name the broker stores the recording under.
    pub fn recording_id(&self) -> String {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".cast.part").to_string())
            .unwrap_or_default()
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn write(inner: &mut Inner, path: &Path, lines: &[String]) {
        if lines.is_empty() || inner.failed {
            return;
        }
        if inner.file.is_none() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::File::create(path) {
                Ok(f) => inner.file = Some(f),
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "cannot write a recording");
                    inner.failed = true;
                    return;
                }
            }
        }
        if let Some(f) = inner.file.as_mut() {
            for l in lines {
                if f.write_all(l.as_bytes()).is_err() {
                    inner.failed = true;
                    return;
                }
            }
        }
    }

    pub fn start_pty(&self, cols: u32, rows: u32, term: &str, title: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let rec = PtyRecorder::new(cols, rows, term, crate::now()).with_title(title);
        let header = rec.header();
        inner.state = State::Pty(Box::new(rec));
        Self::write(&mut inner, &self.path, &[header]);
    }

    /// An exec request: with a pty the pty recording goes on; without, the output is kept.
    pub fn start_exec(&self, command: &str, scp: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if matches!(inner.state, State::Pty(_)) {
            return;
        }
        if scp {
            inner.state = State::Opaque;
            return;
        }
        let writer = AsciicastWriter::new(80, 24, "dumb", crate::now())
            .with_title(command.chars().take(200).collect::<String>());
        let header = writer.header();
        inner.state = State::Exec { writer, bytes: 0 };
        Self::write(&mut inner, &self.path, &[header]);
    }

    pub fn start_sftp(&self) {
        if let Ok(mut inner) = self.inner.lock()
            && !matches!(inner.state, State::Pty(_))
        {
            inner.state = State::Sftp(Box::new(SftpParser::new()));
        }
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        let t = self.t();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let State::Pty(rec) = &mut inner.state {
            let step = rec.resize(t, cols, rows);
            Self::write(&mut inner, &self.path, &step.lines);
        }
    }

    /// Bytes from the node to the engineer.
    pub fn output(&self, bytes: &[u8]) -> Vec<Event> {
        let t = self.t();
        let Ok(mut inner) = self.inner.lock() else {
            return vec![];
        };
        match &mut inner.state {
            State::Pty(rec) => {
                let step = rec.output(t, bytes);
                Self::write(&mut inner, &self.path, &step.lines);
                events(step)
            }
            State::Exec {
                writer,
                bytes: seen,
            } => {
                let keep = EXEC_OUTPUT_CAP.saturating_sub(*seen) as usize;
                *seen += bytes.len() as u64;
                let line = (keep > 0)
                    .then(|| writer.output(t, &bytes[..bytes.len().min(keep)]))
                    .flatten();
                Self::write(
                    &mut inner,
                    &self.path,
                    &line.into_iter().collect::<Vec<_>>(),
                );
                vec![]
            }
            State::Sftp(p) => sftp_events(p.server_data(bytes)),
            State::Idle | State::Opaque => vec![],
        }
    }

    /// Bytes typed (or sent) by the engineer.
    pub fn input(&self, bytes: &[u8]) -> Vec<Event> {
        let t = self.t();
        let Ok(mut inner) = self.inner.lock() else {
            return vec![];
        };
        match &mut inner.state {
            State::Pty(rec) => {
                let step = rec.input(t, bytes);
                Self::write(&mut inner, &self.path, &step.lines);
                events(step)
            }
            State::Sftp(p) => sftp_events(p.client_data(bytes)),
            State::Exec { .. } | State::Idle | State::Opaque => vec![],
        }
    }

    /// The channel ended: last events, and the finished file (if anything was recorded).
    pub fn finish(&self) -> (Vec<Event>, Option<PathBuf>) {
        let t = self.t();
        let Ok(mut inner) = self.inner.lock() else {
            return (vec![], None);
        };
        let state = std::mem::replace(&mut inner.state, State::Idle);
        let evs = match state {
            State::Pty(mut rec) => {
                let step = rec.finish(t);
                Self::write(&mut inner, &self.path, &step.lines);
                events(step)
            }
            State::Exec { mut writer, bytes } => {
                let lines = writer.finish(t);
                Self::write(&mut inner, &self.path, &lines);
                vec![(
                    "output_recorded",
                    json!({"bytes": bytes, "truncated": bytes > EXEC_OUTPUT_CAP}),
                )]
            }
            State::Sftp(mut p) => sftp_events(p.finish()),
            State::Idle | State::Opaque => vec![],
        };
        let file = inner.file.take();
        let done = match file {
            Some(f) if !inner.failed => {
                let _ = f.sync_all();
                let finished = self.path.with_extension("");
                std::fs::rename(&self.path, &finished)
                    .ok()
                    .map(|_| finished)
            }
            _ => None,
        };
        (evs, done)
    }
}

fn events(step: Step) -> Vec<Event> {
    step.events
        .into_iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(d) if d.echo_off => Some(("input_hidden", json!({"reason": "typed without echo at a prompt asking for a secret; kept neither as a command nor in the recording", "line": d.line, "chars": d.hidden_chars}))),
            DetectorEvent::Command(d) => Some((
                "command",
                json!({"command": d.command, "via": "interactive", "line": d.line, "last_line": d.last_line, "located": d.located, "carried": d.carried}),
            )),
            DetectorEvent::Entered { line, shown } => Some((
                "line_entered",
                json!({"line": line, "shown": shown, "via": "interactive"}),
            )),
            DetectorEvent::FullScreen { entered } => Some(("full_screen", json!({"entered": entered}))),
            DetectorEvent::LineEcho { .. } => None,
        })
        .collect()
}

fn sftp_events(ops: Vec<crate::record::sftp::SftpOp>) -> Vec<Event> {
    ops.into_iter()
        .map(|op| ("file_op", json!({"via": "sftp", "op": op})))
        .collect()
}

/// What a recording left unfinished by a stopped gateway becomes: its header and every whole
/// event line, up to the first line the crash cut (or anything after it), and a marker saying
/// where it ends. `None` when not even the header is whole.
pub fn repair_unfinished(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut last_t = 0.0f64;
    let mut lines = text.split_inclusive('\n');
    let header = lines.next()?;
    let parsed: serde_json::Value = serde_json::from_str(header.trim_end()).ok()?;
    if !header.ends_with('\n') || parsed.get("version").and_then(Value::as_u64) != Some(2) {
        return None;
    }
    out.push_str(header);
    for line in lines {
        if !line.ends_with('\n') {
            break;
        }
        let Ok((t, _, _)) = serde_json::from_str::<(f64, String, String)>(line.trim_end()) else {
            break;
        };
        last_t = last_t.max(t);
        out.push_str(line);
    }
    let note = serde_json::to_string(UNFINISHED_MARKER).unwrap_or_default();
    out.push_str(&format!("[{last_t:?}, \"m\", {note}]\n"));
    Some(out)
}

/// The marker that ends a recording finished at a restart.
pub const UNFINISHED_MARKER: &str =
    "sallyport: the gateway stopped before this channel ended; the recording ends here";

/// At start, before any session: finish the recordings a stopped gateway left open
/// (`.cast.part`) so that they are uploaded like any other. Returns audit events to spool.
pub fn recover_unfinished(dir: &Path) -> Vec<Event> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name.strip_suffix(".cast.part").map(str::to_string) else {
            continue;
        };
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(err) => {
                tracing::error!(error = %err, path = %path.display(), "cannot read an unfinished recording");
                continue;
            }
        };
        let finished = dir.join(format!("{id}.cast"));
        match repair_unfinished(&text) {
            Some(repaired) => {
                let written = crate::trust::write_atomic(&finished, repaired.as_bytes())
                    .and_then(|()| std::fs::remove_file(&path));
                match written {
                    Ok(()) => events.push((
                        "recording_recovered",
                        json!({"recording": id, "bytes_kept": repaired.len(), "bytes_found": text.len(),
                               "reason": "the gateway stopped before the channel ended; finished at restart"}),
                    )),
                    Err(err) => {
                        tracing::error!(error = %err, recording = id, "cannot finish an unfinished recording")
                    }
                }
            }
            None => {
                // Kept on disk for the operator, never uploaded as a recording.
                let _ = std::fs::rename(&path, dir.join(format!("{id}.cast.unreadable")));
                events.push((
                    "recording_unreadable",
                    json!({"recording": id, "bytes_found": text.len(),
                           "reason": "the gateway stopped before the recording's header was written whole"}),
                ));
            }
        }
    }
    events
}

/// Send finished recordings to the broker; retried until accepted. Runs forever.
pub async fn upload_forever(dir: PathBuf, broker: crate::broker_client::BrokerClient) {
    loop {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some("cast") {
                    continue;
                }
                let marker = path.with_extension("cast.uploaded");
                if marker.exists() {
                    continue;
                }
                let Some(id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                match broker.put_recording(&id, bytes).await {
                    Ok(()) => {
                        let _ = std::fs::write(&marker, b"");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, recording = id, "recording not uploaded yet; will retry")
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "{\"version\": 2, \"width\": 80, \"height\": 24}\n";

    #[test]
    fn an_unfinished_recording_keeps_every_whole_line_and_ends_with_a_marker() {
        let table: &[(&str, Option<&[&str]>)] = &[
            // cut in the middle of an event line
            (
                "[0.5, \"o\", \"$ \"]\n[1.25, \"i\", \"ls\"]\n[1.3, \"o\", \"l",
                Some(&["$ ", "ls"]),
            ),
            // cut right after a whole line
            ("[0.5, \"o\", \"$ \"]\n", Some(&["$ "])),
            // nothing after the header
            ("", Some(&[])),
            // a whole line of garbage stops the recovery there
            (
                "[0.5, \"o\", \"a\"]\n\u{0}\u{0}\n[2.0, \"o\", \"b\"]\n",
                Some(&["a"]),
            ),
        ];
        for (body, want) in table {
            let text = format!("{HEADER}{body}");
            let fixed = repair_unfinished(&text).expect("header is whole");
            let events = crate::record::asciicast::parse_events(&fixed).unwrap();
            let (last, rest) = events.split_last().unwrap();
            assert_eq!(
                last.kind,
                crate::record::asciicast::EventKind::Marker,
                "{body:?}"
            );
            assert_eq!(last.data, UNFINISHED_MARKER);
            let kept: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(Some(kept.as_slice()), want.map(|w| w), "{body:?}");
            // times never go backwards: the marker is at the last kept event's time
            assert!(rest.iter().all(|e| e.time <= last.time));
        }
        // A torn or missing header: nothing to replay.
        assert_eq!(repair_unfinished(""), None);
        assert_eq!(repair_unfinished("{\"version\": 2, \"wid"), None);
        assert_eq!(repair_unfinished("{\"version\": 1}\n"), None);
    }

    #[test]
    fn recovery_at_start_finishes_part_files_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("s-1-c0.cast.part"),
            format!("{HEADER}[0.1, \"o\", \"x\"]\n[0.2, \"o"),
        )
        .unwrap();
        std::fs::write(d.join("s-2-c0.cast.part"), "{\"vers").unwrap();
        std::fs::write(d.join("s-3-c0.cast"), HEADER).unwrap();
        let events = recover_unfinished(d);
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|(k, v)| (*k, v["recording"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(kinds.contains(&("recording_recovered", "s-1-c0")));
        assert!(kinds.contains(&("recording_unreadable", "s-2-c0")));
        assert!(!d.join("s-1-c0.cast.part").exists());
        let fixed = std::fs::read_to_string(d.join("s-1-c0.cast")).unwrap();
        assert!(fixed.ends_with(&format!(
            "{}]\n",
            serde_json::to_string(UNFINISHED_MARKER).unwrap()
        )));
        assert!(d.join("s-2-c0.cast.unreadable").exists());
        assert_eq!(
            std::fs::read_to_string(d.join("s-3-c0.cast")).unwrap(),
            HEADER
        );
        // A second start finds nothing more to do.
        assert!(recover_unfinished(d).is_empty());
    }
}
