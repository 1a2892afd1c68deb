//! The SHA-256 of the bytes that pass through a handle, each way, while they come in order.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{DigestUnavailable, MAX_REORDER_BYTES};

/// The SHA-256 of the bytes of one way of a handle, while they come as one run from offset 0.
#[derive(Debug, Default)]
pub(super) struct Run {
    sha: Sha256,
    /// The offset just after the bytes hashed.
    next: u64,
    /// Bytes that flowed this way, hashed or not.
    pub(super) seen: u64,
    unavailable: Option<DigestUnavailable>,
}

impl Run {
    /// Hash `data` if it continues the run; `seen` is counted by the caller.
    pub(super) fn add(&mut self, offset: u64, data: &[u8]) {
        if self.unavailable.is_some() {
            return;
        }
        if offset != self.next {
            self.fail(DigestUnavailable::NonSequential);
            return;
        }
        self.sha.update(data);
        self.next = self.next.saturating_add(data.len() as u64);
    }

    fn fail(&mut self, why: DigestUnavailable) {
        if self.unavailable.is_none() {
            self.unavailable = Some(why);
        }
    }

    pub(super) fn result(&self) -> (Option<String>, Option<DigestUnavailable>) {
        if self.seen == 0 {
            return (None, None);
        }
        match self.unavailable {
            Some(why) => (None, Some(why)),
            None => (Some(hex::encode(self.sha.clone().finalize())), None),
        }
    }
}

/// The read side of a handle: replies may come out of order, those ahead wait for the gap.
#[derive(Debug, Default)]
pub(super) struct ReadRun {
    run: Run,
    /// The end of the furthest read requested.
    requested_end: u64,
    /// Replies ahead of `run.next`, by offset.
    pub(super) ahead: BTreeMap<u64, Vec<u8>>,
    /// Their bytes (counted in the channel's reorder budget too).
    pub(super) ahead_bytes: usize,
}

impl ReadRun {
    /// A read request: one past everything requested so far leaves a gap.
    pub(super) fn requested(&mut self, offset: u64, len: u32, budget: &mut usize) {
        if offset > self.requested_end {
            self.fail(DigestUnavailable::NonSequential, budget);
        }
        self.requested_end = self
            .requested_end
            .max(offset.saturating_add(u64::from(len)));
    }

    /// The data a read at `offset` returned.
    pub(super) fn reply(&mut self, offset: u64, data: &[u8], budget: &mut usize) {
        self.run.seen = self.run.seen.saturating_add(data.len() as u64);
        if self.run.unavailable.is_some() {
            return;
        }
        if offset == self.run.next {
            self.run.add(offset, data);
            self.drain(budget);
        } else if offset < self.run.next || self.ahead.contains_key(&offset) {
            self.fail(DigestUnavailable::NonSequential, budget);
        } else if budget.saturating_add(data.len()) > MAX_REORDER_BYTES {
            self.fail(DigestUnavailable::ReorderOverflow, budget);
        } else {
            self.ahead.insert(offset, data.to_vec());
            self.ahead_bytes += data.len();
            *budget += data.len();
        }
    }

    /// Hash the replies kept that now continue the run.
    fn drain(&mut self, budget: &mut usize) {
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.run.next {
                return;
            }
            if *entry.key() < self.run.next {
                // Overlaps bytes already hashed.
                self.fail(DigestUnavailable::NonSequential, budget);
                return;
            }
            let data = entry.remove();
            self.ahead_bytes = self.ahead_bytes.saturating_sub(data.len());
            *budget = budget.saturating_sub(data.len());
            self.run.add(self.run.next, &data);
        }
    }

    fn fail(&mut self, why: DigestUnavailable, budget: &mut usize) {
        self.run.fail(why);
        *budget = budget.saturating_sub(self.ahead_bytes);
        self.ahead_bytes = 0;
        self.ahead.clear();
    }

    pub(super) fn result(&self) -> (Option<String>, Option<DigestUnavailable>) {
        match self.run.result() {
            // A gap before replies kept was never filled.
            (Some(_), None) if !self.ahead.is_empty() => {
                (None, Some(DigestUnavailable::NonSequential))
            }
            other => other,
        }
    }
}
