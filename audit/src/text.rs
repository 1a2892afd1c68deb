//! What the audit log's full-text search indexes of an event: the text of what an engineer did.
//! Pure: the broker's store calls [`search_text`] for every record it stores (and for records
//! stored before the index existed) and keeps the result beside the record.
//!
//! | kind (gateway chains) | text indexed |
//! |---|---|
//! | `command` | `command`: an exec command, a line read by an interpreter on stdin, or a command line typed at a shell |
//! | `line_entered` | `shown`: the line on screen when Enter was pressed (also at prompts that are not a shell's) |
//! | `file_op` | the paths of an sftp or scp operation (`path`, `from`/`to`, `target`/`link`) |
//! | `file_transfer` | the remote path an scp command named |
//!
//! Nothing else: broker and edge events say nothing of a session's content, and the other
//! gateway kinds carry no text an engineer typed or saw. Several texts of one event are joined by
//! a newline, so a search never matches across two of them. The text is capped at
//! [`MAX_TEXT_CHARS`] characters. A NUL character (an engineer's client can send one in a
//! command or a path) is indexed as U+FFFD: PostgreSQL's `text` cannot hold it, and the event
//! itself keeps it (escaped in its JSON), so the index must not refuse the event.

use serde_json::Value;

use crate::writers::{ChainKind, EdgeKind, GatewayKind, Role};

/// The longest text indexed for one event, in characters (a longer command is indexed by its
/// beginning; the event itself keeps all of it).
pub const MAX_TEXT_CHARS: usize = 8192;

/// The text to index for a record of `source` with `kind` and `data`; `None` when the event
/// carries none.
pub fn search_text(source: &str, kind: &str, data: &Value) -> Option<String> {
    let texts = match Role::of(source)?.0 {
        Role::Broker => vec![],
        Role::Edge => match EdgeKind::ALL.iter().find(|k| k.as_str() == kind)? {
            EdgeKind::EdgeSession
            | EdgeKind::EdgeRefused
            | EdgeKind::EdgeDisconnected
            | EdgeKind::EdgeShutdown
            | EdgeKind::EdgeStopped
            | EdgeKind::EdgeUserCasRefused
            | EdgeKind::EdgeConfigReloaded
            | EdgeKind::EdgeConfigReloadRefused => vec![],
        },
        Role::Gateway => {
            gateway_texts(*GatewayKind::ALL.iter().find(|k| k.as_str() == kind)?, data)
        }
    };
    let mut out = String::new();
    for t in texts.into_iter().filter(|t| !t.trim().is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(t);
    }
    if out.is_empty() {
        return None;
    }
    if out.chars().count() > MAX_TEXT_CHARS {
        out = out.chars().take(MAX_TEXT_CHARS).collect();
    }
    if out.contains('\0') {
        out = out.replace('\0', "\u{fffd}");
    }
    Some(out)
}

fn gateway_texts(kind: GatewayKind, data: &Value) -> Vec<&str> {
    let field = |v: &'static str| data.get(v).and_then(Value::as_str);
    match kind {
        GatewayKind::Command => field("command").into_iter().collect(),
        GatewayKind::LineEntered => field("shown").into_iter().collect(),
        GatewayKind::FileOp => {
            let op = data.get("op");
            // `content`: what was written to a file that runs later (see `kept_content`).
            ["path", "from", "to", "target", "link", "content"]
                .iter()
                .filter_map(|f| op.and_then(|o| o.get(f)).and_then(Value::as_str))
                .collect()
        }
        GatewayKind::FileTransfer => data
            .get("transfer")
            .and_then(|t| t.get("path"))
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        GatewayKind::SessionRefused
        | GatewayKind::SessionStarted
        | GatewayKind::SessionTerminated
        | GatewayKind::SessionEnded
        | GatewayKind::NodeUnreachable
        | GatewayKind::NodeKeyRefused
        | GatewayKind::NodeKeyPinned
        | GatewayKind::ObserverJoined
        | GatewayKind::ChannelRefused
        | GatewayKind::ForwardRefused
        | GatewayKind::ChannelExit
        | GatewayKind::Env
        | GatewayKind::Shell
        | GatewayKind::InputHidden
        | GatewayKind::FullScreen
        | GatewayKind::FullScreenSuppressed
        | GatewayKind::OutputRecorded
        | GatewayKind::SftpStarted
        | GatewayKind::Forward
        | GatewayKind::ForwardFailed
        | GatewayKind::RecordingFinished
        | GatewayKind::RecordingFailed
        | GatewayKind::RecordingRecovered
        | GatewayKind::RecordingUnreadable
        | GatewayKind::UserCasRefused
        | GatewayKind::GatewayConfigReloaded
        | GatewayKind::GatewayConfigReloadRefused => vec![],
    }
}

/// A search query as words: each must appear in an event's text (as a substring, ignoring
/// case). Words are separated by white space; every other character, quotes and operators
/// included, is part of a word. At most [`MAX_QUERY_WORDS`] words.
pub fn query_words(q: &str) -> Result<Vec<String>, QueryError> {
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(QueryError::TooLong);
    }
    if q.contains('\0') {
        return Err(QueryError::Nul);
    }
    let words: Vec<String> = q.split_whitespace().map(str::to_string).collect();
    if words.len() > MAX_QUERY_WORDS {
        return Err(QueryError::TooManyWords);
    }
    Ok(words)
}

pub const MAX_QUERY_WORDS: usize = 16;
pub const MAX_QUERY_CHARS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the search text is longer than 512 characters")]
    TooLong,
    #[error("the search text has more than 16 words")]
    TooManyWords,
    #[error("the search text holds a NUL character: no indexed text can hold one")]
    Nul,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// PostgreSQL refused the index row of a command with a NUL, and so the whole record: the
    /// gateway's chain stopped there (found by the store's property test).
    #[test]
    fn a_nul_is_indexed_as_a_replacement_character() {
        let data = json!({"command": "printf 'a\u{0}b'", "via": "exec"});
        assert_eq!(
            search_text("gateway:g1", "command", &data).as_deref(),
            Some("printf 'a\u{fffd}b'")
        );
        let data = json!({"op": {"op": "remove", "path": "\u{0}"}});
        assert_eq!(
            search_text("gateway:g1", "file_op", &data).as_deref(),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn what_is_indexed() {
        let gw = "gateway:g1";
        let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
            (
                gw,
                "command",
                json!({"command": "sudo systemctl restart nginx", "via": "interactive"}),
                Some("sudo systemctl restart nginx"),
            ),
            (
                gw,
                "command",
                json!({"command": "cat /etc/passwd", "via": "exec"}),
                Some("cat /etc/passwd"),
            ),
            (gw, "command", json!({"command": "   "}), None),
            (
                gw,
                "line_entered",
                json!({"line": 3, "shown": "SELECT 1;"}),
                Some("SELECT 1;"),
            ),
            (gw, "line_entered", json!({"line": 3, "shown": null}), None),
            (
                gw,
                "file_op",
                json!({"via": "sftp", "op": {"op": "open", "path": "/etc/hosts"}}),
                Some("/etc/hosts"),
            ),
            (
                gw,
                "file_op",
                json!({"via": "sftp", "op": {"op": "rename", "from": "/a", "to": "/b"}}),
                Some("/a\n/b"),
            ),
            (
                gw,
                "file_op",
                json!({"via": "sftp", "op": {"op": "symlink", "target": "/t", "link": "/l"}}),
                Some("/t\n/l"),
            ),
            (
                gw,
                "file_transfer",
                json!({"via": "scp", "transfer": {"path": "/srv/dump.sql"}}),
                Some("/srv/dump.sql"),
            ),
            (gw, "env", json!({"env_name": "LANG", "value": "C"}), None),
            (gw, "input_hidden", json!({"chars": 8}), None),
            (gw, "no_such_kind", json!({"command": "x"}), None),
            // Only a gateway's chain speaks of a session's content.
            ("broker", "command", json!({"command": "x"}), None),
            ("edge:e1", "edge_session", json!({"command": "x"}), None),
            ("elsewhere", "command", json!({"command": "x"}), None),
        ];
        for (source, kind, data, want) in cases {
            assert_eq!(
                search_text(source, kind, &data).as_deref(),
                want,
                "{source} {kind} {data}"
            );
        }
    }

    #[test]
    fn long_text_is_capped() {
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let t = search_text("gateway:g", "command", &json!({"command": long})).unwrap();
        assert_eq!(t.chars().count(), MAX_TEXT_CHARS);
    }

    #[test]
    fn query_words_keep_every_character() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("systemctl restart", vec!["systemctl", "restart"]),
            ("  a\tb\n", vec!["a", "b"]),
            (
                "\"x\" * - : NEAR( OR %_",
                vec!["\"x\"", "*", "-", ":", "NEAR(", "OR", "%_"],
            ),
            ("", vec![]),
        ];
        for (q, want) in cases {
            assert_eq!(query_words(q).unwrap(), want, "{q:?}");
        }
        assert_eq!(query_words(&"a ".repeat(17)), Err(QueryError::TooManyWords));
        assert_eq!(query_words(&"a".repeat(513)), Err(QueryError::TooLong));
        // Found by schemathesis: a NUL reached SQLite's LIKE pattern (500); no indexed text
        // holds one (they are replaced when indexed), so it is a clear 400.
        assert_eq!(query_words("a\0b"), Err(QueryError::Nul));
    }
}
