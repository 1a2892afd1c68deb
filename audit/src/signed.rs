//! What a chain's signatures prove: given an intact chain (checked with
//! [`verify_chain`](crate::verify_chain)) and its signed heads (each already checked against the
//! chain's trusted key), which records are covered by a valid signature, which have a valid hash
//! but no valid signature (tampered: the chain was rewritten and re-hashed after it was signed),
//! and which come after the last signature (unsigned: the live tail, or a tail whose signatures
//! were removed).

use crate::AuditRecord;

/// One signed head of a chain: record `seq` had `hash`; `signature_holds` when the signature
/// verified against the chain's trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub seq: u64,
    pub hash: String,
    pub signature_holds: bool,
}

/// A signed head that proves nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHead {
    pub seq: u64,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Every record up to this sequence number leads by its hash chain to a valid signature
    /// (0: none).
    pub signed_through: u64,
    /// Records with a valid hash chain but no valid signature, although a later signature
    /// exists: first and last sequence number.
    pub tampered: Option<(u64, u64)>,
    /// Signed heads that do not hold.
    pub bad: Vec<BadHead>,
    /// Records after the last signature of any kind: first and last sequence number.
    pub unsigned: Option<(u64, u64)>,
}

impl Coverage {
    /// Nothing here says the chain was altered (an unsigned tail alone is not proof of it).
    pub fn holds(&self) -> bool {
        self.tampered.is_none() && self.bad.is_empty()
    }
}

/// `records`: one source's chain from seq 1, intact. `heads`: its signed heads.
pub fn coverage(records: &[AuditRecord], heads: &[SignedHead]) -> Coverage {
    let n = records.len() as u64;
    let stored = |seq: u64| -> Option<&AuditRecord> {
        let r = records.get(usize::try_from(seq.checked_sub(1)?).ok()?)?;
        (r.seq == seq).then_some(r)
    };
    let mut c = Coverage::default();
    let mut last_head = 0;
    for h in heads {
        last_head = last_head.max(h.seq);
        let problem = match stored(h.seq) {
            None => Some("signs a record the broker does not hold".to_string()),
            Some(r) if r.hash != h.hash => Some(
                "the signed hash is not the stored record's: the chain was rewritten after it \
                 was signed"
                    .to_string(),
            ),
            Some(_) if !h.signature_holds => {
                Some("the signature does not verify with the chain's trusted key".to_string())
            }
            Some(_) => None,
        };
        match problem {
            None => c.signed_through = c.signed_through.max(h.seq),
            Some(problem) => c.bad.push(BadHead {
                seq: h.seq,
                problem,
            }),
        }
    }
    let last_bad = c.bad.iter().map(|b| b.seq).max().unwrap_or(0);
    if last_bad > c.signed_through {
        c.tampered = Some((c.signed_through + 1, last_bad.min(n)));
    }
    let after = c.signed_through.max(last_head);
    if n > after {
        c.unsigned = Some((after + 1, n));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            out.push(AuditRecord::next(
                "gateway:g",
                prev,
                i,
                "command",
                json!({"i": i}),
            ));
        }
        out
    }

    fn head(c: &[AuditRecord], seq: u64, holds: bool) -> SignedHead {
        SignedHead {
            seq,
            hash: c[seq as usize - 1].hash.clone(),
            signature_holds: holds,
        }
    }

    #[test]
    fn cases() {
        let c = chain(10);
        let mut rewritten = c.clone();
        rewritten[4].data = json!({"i": "edited"});
        for i in 4..10 {
            let prev = if i == 0 {
                crate::GENESIS.to_string()
            } else {
                rewritten[i - 1].hash.clone()
            };
            rewritten[i].prev_hash = prev;
            rewritten[i].hash = rewritten[i].compute_hash();
        }
        let heads = vec![head(&c, 3, true), head(&c, 7, true), head(&c, 10, true)];
        // All signed.
        let all = coverage(&c, &heads);
        assert_eq!(
            (all.signed_through, all.tampered, all.unsigned),
            (10, None, None)
        );
        assert!(all.holds());
        // A live tail.
        let tail = coverage(&c, &heads[..2]);
        assert_eq!((tail.signed_through, tail.unsigned), (7, Some((8, 10))));
        assert!(tail.holds());
        // Rewritten from #5 and re-hashed: #5..#10 have valid hashes but no valid signature.
        let t = coverage(&rewritten, &heads);
        assert_eq!(t.signed_through, 3);
        assert_eq!(t.tampered, Some((4, 10)));
        assert_eq!(t.bad.len(), 2);
        assert!(!t.holds());
        // A signature that does not verify (a forged one, another key).
        let f = coverage(&c, &[head(&c, 3, true), head(&c, 10, false)]);
        assert_eq!((f.signed_through, f.tampered), (3, Some((4, 10))));
        // No signatures at all.
        let none = coverage(&c, &[]);
        assert_eq!((none.signed_through, none.unsigned), (0, Some((1, 10))));
        assert!(none.holds());
        // A signature of a record the broker lost (the tail was cut).
        let cut = coverage(&c[..5], &heads);
        assert_eq!(cut.signed_through, 3);
        assert!(!cut.holds());
    }
}
