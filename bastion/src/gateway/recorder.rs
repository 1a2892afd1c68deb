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
            DetectorEvent::Command(d) if d.echo_off => Some(("input_hidden", json!({"reason": "typed while the terminal did not echo; kept neither as a command nor in the recording"}))),
            DetectorEvent::Command(d) => Some((
                "command",
                json!({"command": d.command, "via": "interactive", "continuation": d.continuation, "located": d.located}),
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
