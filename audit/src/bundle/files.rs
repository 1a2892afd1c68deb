//! The files of a bundle: those found against those the manifest lists, and the recordings
//! against the events that say they exist.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::{FileEntry, MANIFEST, MissingRecording, Placed, Problem, recording_path};

/// Compare the files found with those the manifest lists. `found`: path → (size, SHA-256 hex)
/// of every file in the bundle but the manifest and its signature.
pub fn check_files(listed: &[FileEntry], found: &BTreeMap<String, (u64, String)>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in listed {
        if !seen.insert(f.path.as_str()) {
            out.push(Problem::file(MANIFEST, format!("lists {} twice", f.path)));
            continue;
        }
        match found.get(&f.path) {
            None => out.push(Problem::file(
                &f.path,
                "listed in the manifest but missing from the bundle",
            )),
            Some((size, sha)) if *sha != f.sha256 || *size != f.size => out.push(Problem::file(
                &f.path,
                format!(
                    "its SHA-256 is {sha} ({size} bytes), the manifest says {} ({} bytes): the \
                     file was altered",
                    f.sha256, f.size
                ),
            )),
            Some(_) => {}
        }
    }
    for path in found.keys() {
        if !seen.contains(path.as_str()) {
            out.push(Problem::file(
                path,
                "not listed in the manifest: nothing vouches for it",
            ));
        }
    }
    out
}

/// How a recording in a bundle is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingReport {
    pub id: String,
    pub present: bool,
    /// The `recording_stored` event of the broker's chain whose SHA-256 the file matches
    /// (`broker#seq`); `None`: only the manifest's signature binds the file.
    pub stored_event: Option<String>,
}

/// Every recording a selected event says exists must be in the bundle, matching the SHA-256
/// and size the broker recorded when it stored it; every recording in the bundle must be named
/// by an event. `files`: recording id → (size, SHA-256 hex); `missing`: what the manifest says of
/// recordings the broker did not hold.
pub fn check_recordings(
    records: &[Placed],
    files: &BTreeMap<String, (u64, String)>,
    missing: &[MissingRecording],
) -> (Vec<RecordingReport>, Vec<Problem>) {
    let mut problems = Vec::new();
    // id → the first event that says it exists.
    let mut expected: BTreeMap<String, &Placed> = BTreeMap::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut stored: BTreeMap<String, &Placed> = BTreeMap::new();
    for p in records.iter().filter(|p| p.selected) {
        let r = &p.record;
        let str_of = |k: &str| r.data.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(id) = str_of("recording") {
            named.insert(id);
        }
        let id = match r.kind.as_str() {
            "recording_stored" if r.source == "broker" => str_of("session"),
            "recording_finished" | "recording_recovered" => str_of("recording"),
            _ => None,
        };
        let Some(id) = id else { continue };
        named.insert(id.clone());
        if r.kind == "recording_stored" {
            stored.entry(id.clone()).or_insert(p);
        }
        expected.entry(id).or_insert(p);
    }
    let mut reports = Vec::new();
    for (id, p) in &expected {
        let path = recording_path(id);
        let Some((size, sha)) = files.get(id) else {
            let why = missing
                .iter()
                .find(|m| &m.id == id)
                .map(|m| format!(" (the manifest says: {})", m.reason))
                .unwrap_or_default();
            problems.push(Problem::at(
                p,
                format!(
                    "names recording {} ({}), which is not in the bundle{why}",
                    crate::sanitize(id),
                    path
                ),
            ));
            reports.push(RecordingReport {
                id: id.clone(),
                present: false,
                stored_event: None,
            });
            continue;
        };
        let mut stored_event = None;
        if let Some(s) = stored.get(id) {
            let want_sha = s.record.data.get("sha256").and_then(Value::as_str);
            let want_size = s.record.data.get("size").and_then(Value::as_u64);
            if want_sha != Some(sha.as_str()) || want_size != Some(*size) {
                problems.push(Problem {
                    file: Some(path.clone()),
                    line: None,
                    source: Some(s.record.source.clone()),
                    seq: Some(s.record.seq),
                    problem: format!(
                        "its SHA-256 is {sha} ({size} bytes), but the broker recorded {} ({} \
                         bytes) when it stored it: the recording was altered",
                        want_sha.unwrap_or("none"),
                        want_size.map_or_else(|| "?".to_string(), |n| n.to_string())
                    ),
                });
            } else {
                stored_event = Some(format!("{}#{}", s.record.source, s.record.seq));
            }
        }
        reports.push(RecordingReport {
            id: id.clone(),
            present: true,
            stored_event,
        });
    }
    for id in files.keys() {
        if !named.contains(id) {
            problems.push(Problem::file(
                &recording_path(id),
                "no event of the bundle names this recording",
            ));
        } else if !expected.contains_key(id) {
            reports.push(RecordingReport {
                id: id.clone(),
                present: true,
                stored_event: None,
            });
        }
    }
    (reports, problems)
}
