//! Repeated refusals that anyone may cause without a credential (a locked-out user's next
//! tries, malformed user names) are audited once per key and minute; the next event of the key
//! says how many were refused in between, so the log tells the whole story without letting a
//! flood of tries fill it.

use std::collections::HashMap;
use std::sync::Mutex;

/// One event per key per this many seconds.
const WINDOW_SECS: u64 = 60;
/// Keys remembered at most; beyond, every key shares one.
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Slot>>,
}

struct Slot {
    since: u64,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)`: audit this refusal, saying that `n` more were refused since the last event of
    /// `key`; `None`: counted, not audited.
    pub fn allow(&self, key: &str, now: u64) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            keys.retain(|_, s| now < s.since + WINDOW_SECS || s.suppressed > 0);
        }
        let key = if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            "*"
        } else {
            key
        };
        match keys.get_mut(key) {
            Some(s) if now < s.since + WINDOW_SECS => {
                s.suppressed += 1;
                None
            }
            Some(s) => {
                let n = s.suppressed;
                *s = Slot {
                    since: now,
                    suppressed: 0,
                };
                Some(n)
            }
            None => {
                keys.insert(
                    key.to_string(),
                    Slot {
                        since: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The reason of a throttled refusal, with the refusals not audited since the last one.
pub fn with_repeats(reason: &str, suppressed: u64) -> String {
    if suppressed == 0 {
        reason.to_string()
    } else {
        format!("{reason} ({suppressed} more refused since the last such event)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_and_window_then_the_count() {
        let t = Throttle::default();
        assert_eq!(t.allow("a", 1000), Some(0));
        assert_eq!(t.allow("a", 1001), None);
        assert_eq!(t.allow("a", 1030), None);
        assert_eq!(t.allow("b", 1030), Some(0));
        assert_eq!(t.allow("a", 1060), Some(2));
        assert_eq!(t.allow("a", 1061), None);
    }

    #[test]
    fn many_keys_share_one_slot_instead_of_growing() {
        let t = Throttle::default();
        for i in 0..MAX_KEYS {
            assert_eq!(t.allow(&format!("k{i}"), 5), Some(0));
        }
        assert_eq!(t.allow("new-1", 5), Some(0));
        assert_eq!(t.allow("new-2", 5), None);
        assert!(t.keys.lock().unwrap().len() <= MAX_KEYS + 1);
    }
}
