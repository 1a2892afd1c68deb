//! What the recording finds, as audit events: commands, lines entered, full-screen switches
//! (bounded per channel), stdin lines and file operations, each with its moment.

use serde_json::{Value, json};

use super::Event;
use crate::record::detector::DetectorEvent;
use crate::record::exec::StdinLine;
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::seal::{SealKey, hidden_line_place};

/// Events that the node's output alone can cause (a full-screen program starting or ending)
/// are bounded per channel: at most [`Throttle::PER_WINDOW`] per [`Throttle::WINDOW_SECS`]; the
/// rest are counted, and the next one written (or a last one when the channel ends) says how
/// many were left out. A node printing mode switches in a loop cannot flood the audit spool.
#[derive(Default)]
pub(super) struct Throttle {
    window_start: f64,
    in_window: u32,
    suppressed: u64,
}

impl Throttle {
    const WINDOW_SECS: f64 = 10.0;
    pub(super) const PER_WINDOW: u32 = 20;
    const KINDS: [GatewayKind; 1] = [GatewayKind::FullScreen];

    pub(super) fn bound(&mut self, t: f64, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for (kind, mut data) in events {
            if !Self::KINDS.contains(&kind) {
                out.push((kind, data));
                continue;
            }
            if t - self.window_start >= Self::WINDOW_SECS {
                self.window_start = t;
                self.in_window = 0;
            }
            if self.in_window >= Self::PER_WINDOW {
                self.suppressed += 1;
                continue;
            }
            self.in_window += 1;
            if self.suppressed > 0 {
                data["suppressed_before"] = json!(std::mem::take(&mut self.suppressed));
            }
            out.push((kind, data));
        }
        out
    }

    /// What was left out since the last event written.
    pub(super) fn summary(&mut self) -> Option<Event> {
        (self.suppressed > 0).then(|| {
            (
                GatewayKind::FullScreenSuppressed,
                json!({"count": std::mem::take(&mut self.suppressed),
                       "reason": "the node switched terminal modes faster than the audit log records them"}),
            )
        })
    }
}

/// Lines an interpreter read on stdin, as commands.
pub(super) fn stdin_events(lines: Vec<StdinLine>) -> Vec<Event> {
    lines
        .into_iter()
        .map(|l| {
            let mut v = json!({"command": l.text, "via": "stdin"});
            // A piece of a long line: which, whether more follow; the last has the line's
            // length and SHA-256.
            if l.part > 0 {
                v["part"] = json!(l.part);
                v["continued"] = json!(l.more);
                if !l.more {
                    v["line_bytes"] = json!(l.bytes);
                    v["line_sha256"] = json!(l.sha256);
                }
            }
            // An unterminated line's bytes reported ahead, and the line that continues them.
            if l.partial {
                v["partial"] = json!(true);
            }
            if l.after_partial {
                v["continues_partial"] = json!(true);
            }
            (GatewayKind::Command, v)
        })
        .collect()
}

/// `evs` without the commands of lines whose Enter was refused (see [`ChannelRecorder::refuse`]).
///
/// [`ChannelRecorder::refuse`]: super::ChannelRecorder::refuse
pub(super) fn drop_refused(refused: &[Value], evs: Vec<Event>) -> Vec<Event> {
    if refused.is_empty() {
        return evs;
    }
    evs.into_iter()
        .filter(|(kind, v)| {
            !(*kind == GatewayKind::Command
                && ["line", "last_line"]
                    .iter()
                    .any(|k| v.get(*k).is_some_and(|l| refused.contains(l))))
        })
        .collect()
}

/// Each event says when it happened in the recording (`at`, seconds since the channel's
/// recording started): the console's player opens a command's moment from it.
pub(super) fn at(mut evs: Vec<Event>, t: f64) -> Vec<Event> {
    for (_, v) in &mut evs {
        if let Some(m) = v.as_object_mut() {
            m.entry("at")
                .or_insert(json!((t * 1000.0).round() / 1000.0));
        }
    }
    evs
}

/// Where a pty channel's hidden lines are sealed to: the broker's hidden-input key, and the
/// channel they are bound to.
#[derive(Debug, Clone)]
pub struct Sealing {
    pub key: SealKey,
    pub session: String,
    pub channel: u64,
}

impl Sealing {
    /// A line typed without echo at a secret prompt: sealed, so that a command typed at a shell
    /// whose prompt was made to read like a password prompt is not lost. Sealing cannot fail
    /// short of the system's randomness failing; then the recorder fails closed (the channel
    /// ends) rather than drop the line.
    fn hidden(&self, d: &crate::record::detector::Detected) -> Event {
        let text = d.hidden_text.as_ref().map(|t| t.0.as_str()).unwrap_or("");
        let place = hidden_line_place(&self.session, self.channel, d.line);
        let sealed = match self.key.seal(text.as_bytes(), &place) {
            Ok(s) => s,
            Err(e) => panic!("a hidden line could not be sealed: {e}"),
        };
        (
            GatewayKind::InputHidden,
            json!({"reason": "typed without echo at a prompt asking for a secret: sealed, not a command and not in the recording; the security team can open it (`sallyport audit unseal`), which is audited",
                   "line": d.line, "chars": d.hidden_chars, "sealed": sealed, "seal_key": self.key.id()}),
        )
    }
}

pub(super) fn events(events: &[DetectorEvent], sealing: &Sealing) -> Vec<Event> {
    events
        .iter()
        .filter_map(|e| match e {
            DetectorEvent::Command(d) if d.echo_off => Some(sealing.hidden(d)),
            DetectorEvent::Command(d) => Some((
                GatewayKind::Command,
                json!({"command": d.command, "via": "interactive", "line": d.line, "last_line": d.last_line, "located": d.located, "carried": d.carried}),
            )),
            DetectorEvent::Entered { line, shown } => Some((
                GatewayKind::LineEntered,
                json!({"line": line, "shown": shown, "via": "interactive"}),
            )),
            DetectorEvent::FullScreen { entered } => Some((GatewayKind::FullScreen, json!({"entered": entered}))),
            DetectorEvent::LineEcho { .. } => None,
        })
        .collect()
}

pub(super) fn scp_events(ops: Vec<crate::record::scp::ScpOp>) -> Vec<Event> {
    ops.into_iter()
        .map(|op| (GatewayKind::FileOp, json!({"via": "scp", "op": op})))
        .collect()
}

pub(super) fn sftp_events(ops: Vec<crate::record::sftp::SftpOp>) -> Vec<Event> {
    ops.into_iter()
        .map(|op| (GatewayKind::FileOp, json!({"via": "sftp", "op": op})))
        .collect()
}
