//! Engineers' sessions: the list (`GET /v1/sessions`), ending one
//! (`POST /v1/sessions/{session}/terminate`), watching one (`GET /v1/sessions/{session}/live`),
//! and the gateway's side of both (`GET /v1/gateway/terminations`, `GET /v1/gateway/watches`,
//! `POST /v1/gateway/live`).

use serde::{Deserialize, Serialize};

/// A session of an engineer on a node, as the gateway reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session: String,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub node: String,
    /// From the `session_started` event, when it says.
    pub login: Option<String>,
    pub peer: Option<String>,
    pub serial: Option<String>,
    /// Unix milliseconds.
    pub started_ms: u64,
    /// When the gateway recorded its end.
    pub ended_ms: Option<u64>,
    pub live: bool,
    pub commands: u64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    pub sessions: Vec<SessionSummary>,
}

/// `POST /v1/sessions/{session}/terminate`: why (the engineer and the audit log see it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    pub reason: String,
}

/// The answer `202 Accepted`: the gateway of `cluster` ends the session within seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationRequested {
    pub session: String,
    pub cluster: String,
    pub requested_by: String,
    pub reason: String,
}

/// A session of the gateway's cluster whose end was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub session: String,
    pub by: String,
    pub reason: String,
}

/// `GET /v1/gateway/terminations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminations {
    pub terminations: Vec<Termination>,
}

/// One channel of a watched session: its screen (a pty) or the tail of its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveChannel {
    pub recording: String,
    pub pty: bool,
    pub title: String,
    pub width: u16,
    pub height: u16,
    /// The screen now, row by row.
    pub rows: Vec<String>,
    /// The last 64 KiB of the output, escape sequences removed.
    pub stream: String,
    /// Seconds from the channel's first event to its last.
    pub seconds: f64,
}

/// `GET /v1/sessions/{session}/live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveView {
    pub session: String,
    pub cluster: String,
    pub live: bool,
    pub channels: Vec<LiveChannel>,
}

/// `GET /v1/gateway/watches`: the sessions of the gateway's cluster someone watches, and those
/// an approver of the customer watches (a moderated session may start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watches {
    pub sessions: Vec<String>,
    pub observed: Vec<String>,
}

/// `POST /v1/gateway/live`: a watched session's recording as it grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveChunk {
    pub session: String,
    pub recording: String,
    /// The recording's first line (its asciicast header).
    pub header: String,
    /// Where `data` starts in the recording's file.
    pub at: u64,
    /// Whole lines of the recording.
    pub data: String,
}

/// The answer to a live chunk (`200`, or `409` when the session is not watched or the chunk
/// does not start where the next must).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAck {
    pub watched: bool,
    /// Absent when the session is not watched; else where the next chunk starts, `null` when
    /// at any line (the recording is new to the broker). Read back, `null` is absent too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Option<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_bodies_round_trip() {
        let v = json!({"sessions": [{"session": "s1", "engineer": "alice", "ticket": "SUP-1",
            "cluster": "c", "node": "n1", "login": "ubuntu", "peer": null, "serial": "42",
            "started_ms": 1, "ended_ms": null, "live": true, "commands": 3}]});
        let s: Sessions = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        for v in [
            json!({"watched": false}),
            json!({"watched": true, "next": 9}),
        ] {
            let a: LiveAck = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&a).unwrap(), v);
        }
        let v = json!({"session": "s1", "cluster": "c", "live": false, "channels": [
            {"recording": "s1-c0", "pty": true, "title": "", "width": 80, "height": 24,
             "rows": ["$"], "stream": "", "seconds": 1.5}]});
        let any_line = LiveAck {
            watched: true,
            next: Some(None),
        };
        let v2 = json!({"watched": true, "next": null});
        assert_eq!(serde_json::to_value(&any_line).unwrap(), v2);
        let l: LiveView = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&l).unwrap(), v);
    }
}
