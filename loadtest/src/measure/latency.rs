//! One-way latency: publishers stamp packets with the wall clock, subscribers on the same
//! machine subtract it from their own. The wall clock (not `Instant`) so that a publisher in
//! another process on this machine (another target's client) can be measured too.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Latency of a packet stamped `sent_us`, received at `now_us`; `None` for stamps from the
/// future by more than a millisecond (a clock step, or bytes that only looked like a stamp).
pub fn one_way_us(sent_us: u64, now_us: u64) -> Option<u64> {
    if sent_us > now_us + 1_000 {
        return None;
    }
    Some(now_us.saturating_sub(sent_us))
}
