//! sallyport-audit: audit records, their canonical form and hash chain. Pure: no I/O, no
//! clock. The broker (its store and its own chain), the edge and the gateway (their spools) and
//! the CLI (`audit verify`) all use it.
//!
//! Each record holds `prev_hash` and `hash = SHA-256(prev_hash ‖ canonical JSON)`, where the
//! canonical JSON is the record's `source`, `seq`, `time` (unix milliseconds), `kind` and the
//! event's fields, with object keys sorted and no whitespace. The chain of one source starts
//! with a `prev_hash` of 64 zeros.
//!
//! [`writers`] is the table of who may write which chain with which event kinds and subject
//! fields, and the text a source signs for its chain head.

pub mod bundle;
pub mod signed;
pub mod text;
pub mod writers;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One link of a chain, as stored and shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub source: String,
    pub seq: u64,
    /// Unix milliseconds.
    pub time: u64,
    pub kind: String,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields indexed for search, read from an event's data.
pub const SUBJECT_FIELDS: [&str; 5] = ["engineer", "ticket", "cluster", "node", "session"];

impl AuditRecord {
    /// Make the next link after `prev` (`None` = the first of the source).
    pub fn next(
        source: &str,
        prev: Option<(u64, &str)>,
        time: u64,
        kind: &str,
        data: Value,
    ) -> AuditRecord {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let mut r = AuditRecord {
            source: source.into(),
            seq,
            time,
            kind: kind.into(),
            data,
            prev_hash,
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    pub fn canonical(&self) -> String {
        let v = serde_json::json!({
            "source": self.source,
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "data": self.data,
        });
        let mut out = String::new();
        write_canonical(&v, &mut out);
        out
    }

    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(self.canonical().as_bytes());
        hex::encode(h.finalize())
    }

    pub fn subject(&self, field: &str) -> Option<String> {
        self.data
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// JSON with object keys sorted, no whitespace (serde_json's own escaping of strings).
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub source: String,
    pub seq: u64,
    pub problem: String,
}

/// Check records of one source, in sequence order, from its first record.
pub fn verify_chain(records: &[AuditRecord]) -> Result<u64, ChainBreak> {
    let mut prev: Option<&AuditRecord> = None;
    for r in records {
        continues(prev.map(|p| (p.seq, p.hash.as_str())), r).map_err(|problem| ChainBreak {
            source: r.source.clone(),
            seq: r.seq,
            problem,
        })?;
        prev = Some(r);
    }
    Ok(records.len() as u64)
}

/// Display-safe: control characters replaced, length capped. For names typed by users.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().count() > 128 {
        out.push('…');
    }
    out
}

/// Does `r` follow `prev` (`None`: `r` is the first of its source)? The one check of chain
/// continuity, for the spool, the broker's ingest and `verify_chain`.
pub fn continues(prev: Option<(u64, &str)>, r: &AuditRecord) -> Result<(), String> {
    let (want_seq, want_prev) = match prev {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS),
    };
    if r.seq != want_seq {
        return Err(format!("expected sequence {want_seq}: an event is missing"));
    }
    if r.prev_hash != want_prev {
        return Err("prev_hash does not match the previous event's hash".into());
    }
    if r.compute_hash() != r.hash {
        return Err("hash does not match the event's contents: it was altered".into());
    }
    Ok(())
}

/// A name the data plane and the broker accept for engineers, edges and gateways: letters,
/// digits, `.`, `_`, `-`, starting with a letter or digit, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The configuration of the workspace's property tests: `cases` generated inputs each, or
/// `PROPTEST_CASES` when set (a longer run). A failing input is kept, shrunk, under
/// `proptest-regressions/` next to the crate's sources and tried first on every later run.
/// For tests only: the other crates' dev-dependencies enable the `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let r = AuditRecord::next(
                "broker",
                prev,
                1000 + i as u64,
                "x",
                json!({"i": i, "b": "z"}),
            );
            out.push(r);
        }
        out
    }

    #[test]
    fn canonical_sorts_keys() {
        let mut s = String::new();
        write_canonical(&json!({"b": 1, "a": {"d": [1, "x"], "c": null}}), &mut s);
        assert_eq!(s, r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#);
    }

    #[test]
    fn verify_finds_the_first_broken_link() {
        let good = chain(5);
        assert_eq!(verify_chain(&good), Ok(5));
        type Change = Box<dyn Fn(&mut Vec<AuditRecord>)>;
        let cases: Vec<(&str, Change, u64, &str)> = vec![
            (
                "data edited",
                Box::new(|c| c[2].data = json!({"i": 99})),
                3,
                "altered",
            ),
            (
                "kind edited",
                Box::new(|c| c[1].kind = "y".into()),
                2,
                "altered",
            ),
            ("time edited", Box::new(|c| c[4].time = 1), 5, "altered"),
            (
                "removed",
                Box::new(|c| {
                    c.remove(2);
                }),
                4,
                "missing",
            ),
            (
                "rehashed alone",
                Box::new(|c| {
                    c[2].data = json!({"i": 99});
                    c[2].hash = c[2].compute_hash();
                }),
                4,
                "prev_hash",
            ),
        ];
        for (name, change, seq, word) in cases {
            let mut c = good.clone();
            change(&mut c);
            let err = verify_chain(&c).unwrap_err();
            assert_eq!(err.seq, seq, "{name}");
            assert!(err.problem.contains(word), "{name}: {}", err.problem);
        }
    }

    #[test]
    fn sanitize_strips_controls() {
        assert_eq!(sanitize("a\nb\u{1b}[31m"), "a\u{fffd}b\u{fffd}[31m");
        assert_eq!(sanitize(&"x".repeat(200)).chars().count(), 129);
    }
}
