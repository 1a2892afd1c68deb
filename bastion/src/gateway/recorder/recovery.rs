//! Recordings a stopped gateway left unfinished (`.cast.part`), finished at the next start.

use std::path::Path;

use serde_json::{Value, json};

use super::Event;
use sallyport_audit::writers::GatewayKind;

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
                        GatewayKind::RecordingRecovered,
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
                    GatewayKind::RecordingUnreadable,
                    json!({"recording": id, "bytes_found": text.len(),
                           "reason": "the gateway stopped before the recording's header was written whole"}),
                ));
            }
        }
    }
    events
}
