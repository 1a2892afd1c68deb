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

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditRecord, GENESIS};

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

/// A signed head as read, with the verdict on its signature (checked by the caller against the
/// chain's key): `None` when it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHead {
    pub head: HeadLine,
    pub line: usize,
    pub problem: Option<String>,
}

/// What a bundle proves of one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub source: String,
    /// Selected events and link records of this chain.
    pub events: u64,
    pub links: u64,
    /// Runs of consecutive records.
    pub segments: u64,
    /// Valid signed heads.
    pub signatures: u64,
    /// Records (selected or links) that no valid signature covers: ranges of sequence numbers.
    pub unsigned: Vec<(u64, u64)>,
}

/// Check every record's hash, the links between consecutive records, and the signed heads; say
/// which records a valid signature covers.
pub fn check_chains(records: &[Placed], heads: &[CheckedHead]) -> (Vec<ChainReport>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut by_source: BTreeMap<&str, BTreeMap<u64, &Placed>> = BTreeMap::new();
    for p in records {
        if p.record.compute_hash() != p.record.hash {
            problems.push(Problem::at(
                p,
                "hash does not match the event's contents: it was altered",
            ));
        }
        let chain = by_source.entry(p.record.source.as_str()).or_default();
        if let Some(first) = chain.get(&p.record.seq) {
            problems.push(Problem::at(
                p,
                format!(
                    "the bundle holds this event twice (also {} line {})",
                    first.file, first.line
                ),
            ));
            continue;
        }
        chain.insert(p.record.seq, p);
    }
    let mut reports = Vec::new();
    for (source, chain) in &by_source {
        let mut report = ChainReport {
            source: source.to_string(),
            ..ChainReport::default()
        };
        // Links: each record's prev_hash is the hash of the record before it, when the bundle
        // holds that one. `intact_from[seq]`: the first seq of the intact run ending at seq.
        let mut run_start: BTreeMap<u64, u64> = BTreeMap::new();
        let mut prev: Option<&Placed> = None;
        for (seq, p) in chain {
            if p.selected {
                report.events += 1;
            } else {
                report.links += 1;
            }
            let start = match prev {
                Some(q) if q.record.seq + 1 == *seq => {
                    if p.record.prev_hash == q.record.hash {
                        run_start.get(&q.record.seq).copied().unwrap_or(*seq)
                    } else {
                        problems.push(Problem::at(
                            p,
                            format!(
                                "prev_hash is not the hash of event #{} before it: the chain is \
                                 broken here",
                                q.record.seq
                            ),
                        ));
                        *seq
                    }
                }
                _ => {
                    report.segments += 1;
                    if *seq == 1 && p.record.prev_hash != GENESIS {
                        problems.push(Problem::at(
                            p,
                            "the first event of a chain must have a prev_hash of zeros",
                        ));
                    }
                    *seq
                }
            };
            run_start.insert(*seq, start);
            prev = Some(p);
        }
        // Signatures: each valid one covers its record and the intact run before it.
        let mut covered: BTreeSet<u64> = BTreeSet::new();
        for h in heads.iter().filter(|h| h.head.source == *source) {
            let at = |problem: String| Problem {
                file: Some(SIGNATURES.into()),
                line: Some(h.line),
                source: Some(h.head.source.clone()),
                seq: Some(h.head.seq),
                problem,
            };
            let Some(p) = chain.get(&h.head.seq) else {
                problems.push(at("signs an event the bundle does not hold".into()));
                continue;
            };
            if p.record.hash != h.head.hash {
                problems.push(at(
                    "the signed hash is not the event's hash: the event was \
                     rewritten after it was signed"
                        .into(),
                ));
                continue;
            }
            if let Some(why) = &h.problem {
                problems.push(at(why.clone()));
                continue;
            }
            if p.record.compute_hash() != p.record.hash {
                continue;
            }
            report.signatures += 1;
            let from = run_start.get(&h.head.seq).copied().unwrap_or(h.head.seq);
            covered.extend(from..=h.head.seq);
        }
        let mut range: Option<(u64, u64)> = None;
        for seq in chain.keys() {
            if covered.contains(seq) {
                continue;
            }
            range = match range {
                Some((a, b)) if b + 1 == *seq => Some((a, *seq)),
                Some(r) => {
                    report.unsigned.push(r);
                    Some((*seq, *seq))
                }
                None => Some((*seq, *seq)),
            };
        }
        report.unsigned.extend(range);
        reports.push(report);
    }
    for h in heads {
        if !by_source.contains_key(h.head.source.as_str()) {
            problems.push(Problem {
                file: Some(SIGNATURES.into()),
                line: Some(h.line),
                source: Some(h.head.source.clone()),
                seq: Some(h.head.seq),
                problem: "signs an event of a chain the bundle does not hold".into(),
            });
        }
    }
    (reports, problems)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(source: &str, n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            out.push(AuditRecord::next(
                source,
                prev,
                i,
                "command",
                json!({"i": i}),
            ));
        }
        out
    }

    fn placed(c: &[AuditRecord], seqs: &[u64], selected: &[u64]) -> Vec<Placed> {
        seqs.iter()
            .enumerate()
            .map(|(i, s)| Placed {
                record: c[*s as usize - 1].clone(),
                file: if selected.contains(s) { EVENTS } else { LINKS }.into(),
                line: i + 1,
                selected: selected.contains(s),
            })
            .collect()
    }

    fn head(c: &[AuditRecord], seq: u64, problem: Option<&str>) -> CheckedHead {
        let r = &c[seq as usize - 1];
        CheckedHead {
            head: HeadLine {
                source: r.source.clone(),
                seq,
                hash: r.hash.clone(),
                signature: "sig".into(),
            },
            line: 1,
            problem: problem.map(str::to_string),
        }
    }

    #[test]
    fn chains_in_a_bundle() {
        let c = chain("gateway:g", 10);
        type Case = (
            &'static str,
            Vec<Placed>,
            Vec<CheckedHead>,
            Vec<(u64, u64)>,
            Option<(u64, &'static str)>,
        );
        let mut rewritten = placed(&c, &[4, 5, 6], &[4]);
        rewritten[0].record.data = json!({"i": "x"});
        let mut rehashed = rewritten.clone();
        rehashed[0].record.hash = rehashed[0].record.compute_hash();
        let cases: Vec<Case> = vec![
            (
                "linked to a signed head",
                placed(&c, &[4, 5, 6], &[4]),
                vec![head(&c, 6, None)],
                vec![],
                None,
            ),
            (
                "two segments, one unsigned",
                placed(&c, &[2, 3, 8], &[2, 8]),
                vec![head(&c, 3, None)],
                vec![(8, 8)],
                None,
            ),
            (
                "an event edited",
                rewritten,
                vec![head(&c, 6, None)],
                vec![],
                Some((4, "altered")),
            ),
            (
                "an event edited and re-hashed",
                rehashed,
                vec![head(&c, 6, None)],
                vec![(4, 4)],
                Some((5, "broken")),
            ),
            (
                "a bad signature",
                placed(&c, &[4, 5, 6], &[4]),
                vec![head(&c, 6, Some("does not verify"))],
                vec![(4, 6)],
                Some((6, "does not verify")),
            ),
            (
                "a signature of a record not held",
                placed(&c, &[4], &[4]),
                vec![head(&c, 6, None)],
                vec![(4, 4)],
                Some((6, "does not hold")),
            ),
        ];
        for (name, records, heads, unsigned, problem) in cases {
            let (reports, problems) = check_chains(&records, &heads);
            assert_eq!(reports.len(), 1, "{name}");
            assert_eq!(reports[0].unsigned, unsigned, "{name}");
            match problem {
                None => assert!(problems.is_empty(), "{name}: {problems:?}"),
                Some((seq, word)) => {
                    assert!(
                        problems
                            .iter()
                            .any(|p| p.seq == Some(seq) && p.problem.contains(word)),
                        "{name}: {problems:?}"
                    );
                }
            }
        }
        // Twice the same event, and a first event whose prev_hash is not zeros.
        let mut first = placed(&c, &[1], &[1]);
        first[0].record.prev_hash = "ab".into();
        first[0].record.hash = first[0].record.compute_hash();
        let (_, p) = check_chains(&first, &[]);
        assert!(p[0].problem.contains("zeros"), "{p:?}");
        let twice = placed(&c, &[3, 3], &[3]);
        let (_, p) = check_chains(&twice, &[]);
        assert!(p[0].problem.contains("twice"), "{p:?}");
    }

    #[test]
    fn files_and_recordings() {
        let listed = vec![
            FileEntry {
                path: EVENTS.into(),
                size: 3,
                sha256: "aa".into(),
            },
            FileEntry {
                path: "recordings/s-c0.cast".into(),
                size: 5,
                sha256: "bb".into(),
            },
        ];
        let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
        found.insert(EVENTS.into(), (3, "aa".into()));
        found.insert("recordings/s-c0.cast".into(), (5, "bb".into()));
        assert!(check_files(&listed, &found).is_empty());
        found.insert(EVENTS.into(), (3, "ac".into()));
        found.insert("extra".into(), (1, "00".into()));
        found.remove("recordings/s-c0.cast");
        let p = check_files(&listed, &found);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(text[0].starts_with("events.jsonl: its SHA-256"), "{text:?}");
        assert!(text[1].contains("missing"), "{text:?}");
        assert!(text[2].starts_with("extra: not listed"), "{text:?}");

        let fin = AuditRecord::next(
            "gateway:g",
            None,
            1,
            "recording_finished",
            json!({"recording": "s-c0", "session": "s"}),
        );
        let stored = AuditRecord::next(
            "broker",
            None,
            2,
            "recording_stored",
            json!({"session": "s-c0", "sha256": "bb", "size": 5}),
        );
        let ctx = AuditRecord::next(
            "gateway:g",
            Some((1, &fin.hash)),
            3,
            "command",
            json!({"recording": "s-c1"}),
        );
        let records: Vec<Placed> = [fin, stored, ctx]
            .into_iter()
            .enumerate()
            .map(|(i, record)| Placed {
                record,
                file: EVENTS.into(),
                line: i + 1,
                selected: true,
            })
            .collect();
        let mut files: BTreeMap<String, (u64, String)> = BTreeMap::new();
        files.insert("s-c0".into(), (5, "bb".into()));
        let (r, p) = check_recordings(&records, &files, &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(r[0].stored_event.as_deref(), Some("broker#1"));
        // Altered.
        files.insert("s-c0".into(), (5, "bc".into()));
        let (_, p) = check_recordings(&records, &files, &[]);
        assert!(
            p[0].to_string()
                .starts_with("recordings/s-c0.cast (event broker#1): its SHA-256 is bc"),
            "{p:?}"
        );
        // Missing, with the manifest's reason; and a file nobody names.
        files.remove("s-c0");
        files.insert("other".into(), (1, "00".into()));
        let missing = vec![MissingRecording {
            id: "s-c0".into(),
            reason: "not uploaded yet".into(),
        }];
        let (_, p) = check_recordings(&records, &files, &missing);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains("gateway:g#1")
                && t.contains("not in the bundle (the manifest says: not uploaded yet)")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("recordings/other.cast: no event")),
            "{text:?}"
        );
    }

    #[test]
    fn paths_a_bundle_may_hold() {
        for ok in [MANIFEST, EVENTS, LINKS, "recordings/s-1-c0.cast"] {
            assert!(allowed_path(ok), "{ok}");
        }
        for bad in [
            "../x",
            "recordings/../x.cast",
            "recordings/a/b.cast",
            "chain/other",
            "/etc/passwd",
            "recordings/.cast",
        ] {
            assert!(!allowed_path(bad), "{bad}");
        }
    }
}
