//! The chains in a bundle: every record's hash, the links between consecutive records, and which
//! records a valid signed head covers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{HeadLine, Placed, Problem, SIGNATURES};
use crate::GENESIS;

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
