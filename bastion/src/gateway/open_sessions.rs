//! The sessions open now, each a small file `sessions/<id>.json` in the data directory holding
//! the session's audit fields: written when an engineer is let in, removed once its
//! `session_ended` is in the spool. A gateway killed while sessions ran finds them at its next
//! start and writes their end then.

use std::path::Path;

use serde_json::Value;

/// Mark session `sid` open. A mark that cannot be written is logged: the session goes on
/// (its start is in the spool; only an end after a crash would be missing).
pub fn mark(dir: &Path, sid: &str, fields: &Value) {
    let written = crate::private::create_dir(dir).and_then(|()| {
        use std::io::Write;
        let tmp = dir.join(format!(".{sid}.tmp"));
        crate::private::create_file(&tmp)?.write_all(fields.to_string().as_bytes())?;
        std::fs::rename(&tmp, dir.join(format!("{sid}.json")))
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, session = sid, "cannot mark a session open (its end after a crash would be missing)");
    }
}

pub fn unmark(dir: &Path, sid: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{sid}.json")));
}

/// The sessions marked open, with their fields (oldest mark first); unreadable marks are
/// logged and removed.
pub fn left(dir: &Path) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(sid) = name.strip_suffix(".json") else {
            continue;
        };
        let fields = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|v| v.is_object() && v["session"] == sid);
        match fields {
            Some(v) => {
                let at = e.metadata().and_then(|m| m.modified()).ok();
                found.push((at, sid.to_string(), v));
            }
            None => {
                tracing::error!(path = %path.display(), "an unreadable open-session mark; removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    found.into_iter().map(|(_, sid, v)| (sid, v)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_mark_lasts_until_unmarked_and_bad_marks_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("sessions");
        assert!(left(&dir).is_empty(), "no directory yet: nothing left");
        mark(&dir, "s-1", &json!({"session": "s-1", "engineer": "alice"}));
        mark(&dir, "s-2", &json!({"session": "s-2", "engineer": "bob"}));
        unmark(&dir, "s-1");
        let found = left(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "s-2");
        assert_eq!(found[0].1["engineer"], "bob");
        // Private, like all of the data directory.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("s-2.json")), 0o600);
        // A torn or foreign mark is not a session: dropped, not ended.
        std::fs::write(dir.join("s-3.json"), "{\"sess").unwrap();
        std::fs::write(dir.join("s-4.json"), r#"{"session": "s-5"}"#).unwrap();
        std::fs::write(dir.join(".s-6.tmp"), "{}").unwrap();
        assert_eq!(left(&dir).len(), 1);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["s-2.json".to_string()]);
    }
}
