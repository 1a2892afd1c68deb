//! The spool's files: segment names and their listing, the broker's acknowledgement, and the
//! check of a segment against the chain.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sallyport_audit::AuditRecord;

use super::SpoolError;

pub(super) fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The segments in `dir`, oldest first: (first sequence number, path).
pub(super) fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out)
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The broker's acknowledgement: the sequence number, and (since segments are deleted) the hash
/// of that record, which anchors the chain when no record is left in the spool.
pub(super) fn read_acked(dir: &Path) -> (u64, Option<String>) {
    let text = std::fs::read_to_string(dir.join("acked")).unwrap_or_default();
    let mut words = text.split_whitespace();
    let seq = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (seq, words.next().map(str::to_string))
}

/// Check one segment against the chain so far (`last`); the length of its whole, chained lines.
/// A torn last line is allowed in the last segment only.
pub(super) fn check_segment(
    file: &std::fs::File,
    path: &Path,
    source: &str,
    first_seq: u64,
    last: &mut Option<(u64, String)>,
    is_last: bool,
) -> Result<u64, SpoolError> {
    let corrupt = |line: usize, problem: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut good_len = 0u64;
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| SpoolError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        n += 1;
        if !line.ends_with('\n') {
            if !is_last {
                return Err(corrupt(n, "a closed segment ends with a torn line".into()));
            }
            // Torn write of the last line: it was never acknowledged to anyone.
            tracing::warn!(line = n, "audit spool: cutting off a torn last line");
            break;
        }
        let r: AuditRecord = serde_json::from_str(&line).map_err(|e| corrupt(n, e.to_string()))?;
        let link = match last.as_ref() {
            Some((seq, hash)) => sallyport_audit::continues(Some((*seq, hash)), &r),
            None if r.seq <= 1 => sallyport_audit::continues(None, &r),
            // The oldest segment kept: the broker acknowledged what came before it.
            None if r.seq == first_seq => {
                sallyport_audit::continues(Some((r.seq - 1, r.prev_hash.as_str())), &r)
            }
            None => Err(format!("the segment starts at {first_seq}, not {}", r.seq)),
        };
        if r.source != source {
            return Err(corrupt(
                n,
                format!("the record is of another source ({})", r.source),
            ));
        }
        if let Err(problem) = link {
            return Err(corrupt(
                n,
                format!("the record does not continue the chain: {problem}"),
            ));
        }
        good_len += read as u64;
        *last = Some((r.seq, r.hash));
    }
    Ok(good_len)
}
