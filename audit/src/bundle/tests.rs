use std::collections::BTreeMap;

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
