//! Evidence bundles: what `sallyport audit export` writes and `sallyport audit verify --bundle`
//! checks, offline. Pure: the layout, the manifest, and the checks over files already read (the
//! caller reads the directory and checks the signatures with the keys; this module says what
//! holds and names what does not).
//!
//! A bundle is a directory:
//!
//! | file | what it is |
//! |---|---|
//! | `manifest.json` | the selection, the counts, and the size and SHA-256 of every other file |
//! | `manifest.sig` | an SSHSIG of `manifest.json` by the broker's audit key (namespace `sallyport-audit-bundle`) |
//! | `keys.txt` | `<source> <public key>` of the broker and of every chain in the bundle |
//! | `events.jsonl` | the selected events: the stored records, one per line |
//! | `chain/links.jsonl` | the other records that link each selected event to a signed head of its chain |
//! | `chain/signatures.jsonl` | the signed heads that end those links: `{source, seq, hash, signature}` |
//! | `recordings/<id>.cast` | the recordings the selected events name |
//! | `index.html` | an offline viewer of the events and recordings |
//!
//! A chain can only be checked with each record's contents (a record's hash covers the previous
//! hash and its own contents), so a selected event is linked to the first signed head at or after
//! it by the whole records in between (`chain/links.jsonl`); the records before it are
//! represented by its `prev_hash` alone. The broker signs each record of its own chain, so its
//! events need no links. An event with no signed head after it (the live tail of a chain) is
//! shipped alone and shown as unsigned: only the manifest's signature binds it.

use serde::{Deserialize, Serialize};

use crate::AuditRecord;

mod chains;
mod files;
#[cfg(test)]
mod tests;

pub use chains::{ChainReport, CheckedHead, check_chains};
pub use files::{RecordingReport, check_files, check_recordings};

pub const FORMAT: &str = "sallyport-audit-bundle/1";
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SIG: &str = "manifest.sig";
pub const KEYS: &str = "keys.txt";
pub const EVENTS: &str = "events.jsonl";
pub const LINKS: &str = "chain/links.jsonl";
pub const SIGNATURES: &str = "chain/signatures.jsonl";
pub const INDEX: &str = "index.html";
pub const RECORDINGS: &str = "recordings";

/// The event kinds that say a recording file exists (the gateway finished or recovered it; the
/// broker stored it): a bundle holding such an event must hold the recording.
pub const RECORDING_KINDS: [&str; 3] = [
    "recording_finished",
    "recording_recovered",
    "recording_stored",
];

/// Where a recording lives in a bundle.
pub fn recording_path(id: &str) -> String {
    format!("{RECORDINGS}/{id}.cast")
}

/// A path a bundle may hold (what an unpacker accepts): the fixed files and
/// `recordings/<session id>.cast`.
pub fn allowed_path(path: &str) -> bool {
    [
        MANIFEST,
        MANIFEST_SIG,
        KEYS,
        EVENTS,
        LINKS,
        SIGNATURES,
        INDEX,
    ]
    .contains(&path)
        || path
            .strip_prefix("recordings/")
            .and_then(|n| n.strip_suffix(".cast"))
            .is_some_and(crate::writers::valid_session)
}

/// What was exported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub ticket: Option<String>,
    pub session: Option<String>,
    pub customer: Option<String>,
    /// Unix ms, inclusive.
    pub since_ms: Option<u64>,
    /// Unix ms, exclusive.
    pub until_ms: Option<u64>,
}

impl Selection {
    /// In words, for a heading.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, v) in [
            ("ticket", &self.ticket),
            ("session", &self.session),
            ("customer", &self.customer),
        ] {
            if let Some(v) = v {
                parts.push(format!("{what} {}", crate::sanitize(v)));
            }
        }
        if let Some(t) = self.since_ms {
            parts.push(format!("since {t} ms"));
        }
        if let Some(t) = self.until_ms {
            parts.push(format!("until {t} ms"));
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingRecording {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// RFC 3339.
    pub created: String,
    pub created_ms: u64,
    /// Who exported (the caller's label at the broker).
    pub by: String,
    pub selection: Selection,
    /// The broker's audit public key (OpenSSH line) and its SHA-256 fingerprint: the key of
    /// `manifest.sig` and of the `broker` chain.
    pub broker_key: String,
    pub broker_key_fingerprint: String,
    /// Lines of `events.jsonl` and `chain/links.jsonl`.
    pub events: u64,
    pub links: u64,
    /// Recordings named by the selected events that the broker does not hold.
    pub missing_recordings: Vec<MissingRecording>,
    /// Every file of the bundle but `manifest.json` and `manifest.sig`.
    pub files: Vec<FileEntry>,
}

/// One signed head as a line of `chain/signatures.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadLine {
    pub source: String,
    pub seq: u64,
    pub hash: String,
    pub signature: String,
}

/// Something in a bundle that does not hold: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub problem: String,
}

impl Problem {
    pub fn file(file: &str, problem: impl Into<String>) -> Problem {
        Problem {
            file: Some(file.into()),
            line: None,
            source: None,
            seq: None,
            problem: problem.into(),
        }
    }

    fn at(p: &Placed, problem: impl Into<String>) -> Problem {
        Problem {
            file: Some(p.file.clone()),
            line: Some(p.line),
            source: Some(p.record.source.clone()),
            seq: Some(p.record.seq),
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", crate::sanitize(file))?;
            if let Some(line) = self.line {
                write!(f, " line {line}")?;
            }
            wrote = true;
        }
        if let (Some(source), Some(seq)) = (&self.source, self.seq) {
            let event = format!("event {}#{seq}", crate::sanitize(source));
            if wrote {
                write!(f, " ({event})")?;
            } else {
                write!(f, "{event}")?;
            }
            wrote = true;
        }
        if wrote {
            write!(f, ": ")?;
        }
        write!(f, "{}", self.problem)
    }
}

/// A record as read from a bundle file.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub record: AuditRecord,
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// In `events.jsonl` (selected), not `chain/links.jsonl`.
    pub selected: bool,
}

/// Parse a JSON-lines file of records; a line that is not a record is a problem.
pub fn parse_records(file: &str, text: &str, selected: bool) -> (Vec<Placed>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditRecord>(line) {
            Ok(record) => out.push(Placed {
                record,
                file: file.into(),
                line: i + 1,
                selected,
            }),
            Err(e) => problems.push(Problem {
                file: Some(file.into()),
                line: Some(i + 1),
                source: None,
                seq: None,
                problem: format!("not an audit record: {e}"),
            }),
        }
    }
    (out, problems)
}
