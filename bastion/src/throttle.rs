//! Refusals anyone can repeat (a connection opening channel after channel past its limit, an
//! address offering key after key it has no certificate for) are audited a few times per key and
//! window, never more: the first refusals of a key are written as they happen; the rest are folded
//! in, and the last of them is written when the window ends (or its connection or session does)
//! with `suppressed`, the number of others folded into it. So the log shows that it happened, the
//! first and the last one, and how often (every event stands for itself plus its `suppressed`),
//! without letting anyone fill the edge's or the gateway's spool.
//!
//! The decision is pure (the time is passed in); writing the events is the caller's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Keys remembered at most; beyond, every new key shares one (`*`), so memory stays bounded.
const MAX_KEYS: usize = 10_000;

/// `T`: what is kept of a folded refusal to write it later (its event's data, or its kind and
/// data).
pub struct Throttle<T = Value> {
    window: u64,
    burst: u32,
    keys: Mutex<HashMap<String, Slot<T>>>,
}

struct Slot<T> {
    /// When this key's window began (unix seconds).
    since: u64,
    /// Events written in this window.
    written: u32,
    /// Refusals folded in and not written yet.
    folded: u64,
    /// The last of them.
    last: Option<T>,
}

/// Folded refusals to write now: the last one, with the number of others folded into it.
#[derive(Debug, PartialEq)]
pub struct Folded<T = Value> {
    pub data: T,
    pub others: u64,
}

impl Folded<Value> {
    /// The event to write: the last refusal, saying how many others it stands for.
    pub fn into_event(self) -> Value {
        let mut data = self.data;
        note_suppressed(&mut data, self.others);
        data
    }
}

impl<T: Clone> Throttle<T> {
    /// At most `burst` events per key per `window_secs` (each at least 1).
    pub fn new(window_secs: u64, burst: u32) -> Throttle<T> {
        Throttle {
            window: window_secs.max(1),
            burst: burst.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Another refusal of `key` at `now`: `Some(n)` to write it, saying that `n` others were
    /// folded in since the last event of the key; `None` when it is folded in (kept as the key's
    /// last, written later by [`Throttle::due`] or [`Throttle::take`]).
    pub fn admit(&self, key: &str, now: u64, data: &T) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            let window = self.window;
            keys.retain(|_, s| now < s.since + window || s.folded > 0);
        }
        let key = if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            "*"
        } else {
            key
        };
        let fresh = Slot {
            since: now,
            written: 1,
            folded: 0,
            last: None,
        };
        match keys.get_mut(key) {
            Some(s) if now < s.since + self.window && s.written >= self.burst => {
                s.folded += 1;
                s.last = Some(data.clone());
                None
            }
            Some(s) if now < s.since + self.window => {
                s.written += 1;
                Some(std::mem::take(&mut s.folded))
            }
            Some(s) => {
                let n = s.folded;
                *s = fresh;
                Some(n)
            }
            None => {
                keys.insert(key.to_string(), fresh);
                Some(0)
            }
        }
    }

    /// The folded refusals of keys whose window ended by `now`, to write now; keys whose window
    /// ended are forgotten.
    pub fn due(&self, now: u64) -> Vec<Folded<T>> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<String> = keys
            .iter()
            .filter(|(_, s)| now >= s.since + self.window)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| keys.remove(&k))
            .filter_map(Slot::folded)
            .collect()
    }

    /// The folded refusals of every key that starts with `prefix` (a connection or a session
    /// that ended), whatever their window, to write now; those keys are forgotten.
    pub fn take(&self, prefix: &str) -> Vec<Folded<T>> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<String> = keys
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        mine.into_iter()
            .filter_map(|k| keys.remove(&k))
            .filter_map(Slot::folded)
            .collect()
    }
}

impl<T> Slot<T> {
    fn folded(self) -> Option<Folded<T>> {
        let data = self.last.filter(|_| self.folded > 0)?;
        Some(Folded {
            data,
            others: self.folded - 1,
        })
    }
}

/// Say in a refusal's event that `n` others like it were not written one by one: the field
/// `suppressed`, and the reason says so in words.
pub fn note_suppressed(data: &mut Value, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(reason) = data.get("reason").and_then(Value::as_str) {
        let reason = format!(
            "{reason} ({n} more such refusals since the last event of this kind, not written one \
             by one)"
        );
        data["reason"] = json!(reason);
    }
    data["suppressed"] = json!(n);
}

/// The part of a source address that one party controls: an IPv4 address, or an IPv6 /64 (one
/// host often holds a whole /64).
pub fn source_key(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> Value {
        json!({"code": "too_many_forwards", "reason": "at most 5", "i": i})
    }

    #[test]
    fn the_first_refusals_are_written_the_rest_folded_into_the_last() {
        let t: Throttle = Throttle::new(60, 3);
        let cases: Vec<(&str, u64, Option<u64>)> = vec![
            ("a", 1000, Some(0)),
            ("a", 1001, Some(0)),
            ("a", 1002, Some(0)),
            // Past the burst: folded.
            ("a", 1003, None),
            ("a", 1010, None),
            ("a", 1059, None),
            // Another key has its own.
            ("b", 1030, Some(0)),
            // The window is over: written, saying how many were folded in since.
            ("a", 1060, Some(3)),
            ("a", 1061, Some(0)),
        ];
        for (i, (key, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                t.admit(key, now, &ev(i as u64)),
                want,
                "case {i}: {key} at {now}"
            );
        }
    }

    #[test]
    fn folded_refusals_are_written_when_the_window_or_the_connection_ends() {
        let t: Throttle = Throttle::new(60, 2);
        let mut written = 0;
        for i in 0..100 {
            if t.admit("c-1:too_many_forwards", 1000, &ev(i)).is_some() {
                written += 1;
            }
            if t.admit("s127.0.0.1:not_a_certificate", 1000, &ev(i))
                .is_some()
            {
                written += 1;
            }
        }
        assert_eq!(written, 4);
        // Nothing is due before the window ends.
        assert_eq!(t.due(1059), vec![]);
        // The connection ended: its last refusal is written, standing for the 97 others.
        let folded = t.take("c-1:");
        assert_eq!(
            folded,
            vec![Folded {
                data: ev(99),
                others: 97
            }]
        );
        let e = folded.into_iter().next().unwrap().into_event();
        assert_eq!(e["suppressed"], 97);
        assert!(e["reason"].as_str().unwrap().contains("97 more"), "{e}");
        // Every refusal is accounted for once: 2 written at once, 1 + 97 in this event.
        assert_eq!(t.take("c-1:"), vec![]);
        // The address's window ends: due once, then forgotten (the next one is written).
        assert_eq!(t.due(1060).len(), 1);
        assert_eq!(t.due(1200), vec![]);
        assert_eq!(
            t.admit("s127.0.0.1:not_a_certificate", 1200, &ev(0)),
            Some(0)
        );
    }

    #[test]
    fn a_key_with_nothing_folded_writes_nothing_later() {
        let t: Throttle = Throttle::new(60, 5);
        assert_eq!(t.admit("k", 0, &ev(0)), Some(0));
        assert_eq!(t.take("k"), vec![]);
        assert_eq!(t.admit("k", 0, &ev(1)), Some(0));
        assert_eq!(t.due(100), vec![]);
        let mut e = ev(0);
        note_suppressed(&mut e, 0);
        assert!(e.get("suppressed").is_none());
    }

    #[test]
    fn many_keys_share_one_slot_instead_of_growing() {
        let t: Throttle = Throttle::new(60, 1);
        for i in 0..MAX_KEYS {
            assert_eq!(t.admit(&format!("k{i}"), 5, &ev(0)), Some(0));
        }
        assert_eq!(t.admit("new-1", 5, &ev(0)), Some(0));
        assert_eq!(t.admit("new-2", 5, &ev(0)), None);
        assert!(t.keys.lock().unwrap().len() <= MAX_KEYS + 1);
    }

    #[test]
    fn source_keys() {
        let k = |s: &str| source_key(Some(s.parse().unwrap()));
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), k("2001:db8:1:2:ffff::1"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(source_key(None), "unknown");
    }
}
