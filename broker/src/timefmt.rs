//! RFC 3339 text of a time given in milliseconds since 1970, never a panic: humantime's
//! formatter fails past the year 9999 (and `to_string` then panics), and the times shown come
//! from outside — records a gateway or an edge signed, bounds of a query.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

fn format(ms: u64, millis: bool) -> String {
    let Some(t) = UNIX_EPOCH.checked_add(Duration::from_millis(ms)) else {
        return beyond(ms);
    };
    let mut s = String::new();
    let written = if millis {
        write!(s, "{}", humantime::format_rfc3339_millis(t))
    } else {
        write!(s, "{}", humantime::format_rfc3339_seconds(t))
    };
    match written {
        Ok(()) => s,
        Err(_) => beyond(ms),
    }
}

fn beyond(ms: u64) -> String {
    format!("after 9999-12-31 ({ms} ms since 1970)")
}

/// `2026-12-07T01:02:03Z`.
pub fn seconds(ms: u64) -> String {
    format(ms, false)
}

/// `2026-12-07T01:02:03.456Z`.
pub fn millis(ms: u64) -> String {
    format(ms, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_year_9999_are_text_not_a_panic() {
        assert_eq!(seconds(1_796_605_323_000), "2026-12-07T01:02:03Z");
        assert_eq!(millis(1_796_605_323_456), "2026-12-07T01:02:03.456Z");
        assert_eq!(seconds(253_402_300_799_000), "9999-12-31T23:59:59Z");
        for ms in [253_402_300_800_000, u64::MAX / 2, u64::MAX] {
            assert!(seconds(ms).starts_with("after 9999-12-31"), "{ms}");
            assert!(millis(ms).starts_with("after 9999-12-31"), "{ms}");
        }
    }
}
