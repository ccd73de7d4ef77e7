//! A subscriber connection's own send queue (str0m's pacer), judged before each video frame.
//!
//! str0m paces video at its raw estimate and queues what is forwarded beyond it, for up to
//! 2 s (its pacer's queue limit) before bursting it out. When a link collapses, the
//! allocator's cut comes after a few hundred ms, and by then the queue holds a second or
//! more of the old layer: the keyframe of the lower layer waits behind it, then the
//! lower layer plus audio barely drain it, and the subscriber watches video that is 1.5 s
//! late and keeps freezing (measured: 28-54 kB queued for 1.6 s after a 2 Mbit/s ->
//! 250 kbit/s drop). A queued packet cannot be taken back; what can be done is not to add
//! to the queue: a frame that would start behind more than [`QUEUE_LIMIT`] of backlog is
//! not forwarded, the downtrack waits for a keyframe (asked for at once), and the allocator
//! caps the subscriber at the raw estimate (see `DownlinkMonitor::on_backlog`).
//! Decided at frame starts only, so a keyframe that fits is never cut in two.

use std::time::Duration;

/// The most send-queue delay a new video frame may start behind.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(250);
/// How long the oldest queued packet must have waited before the queue's size counts.
pub const MIN_WAIT: Duration = Duration::from_millis(100);
/// Below this many queued bytes nothing is a backlog (a keyframe of a small layer, or a
/// raw estimate that dipped for a moment, must not stop a stream).
pub const MIN_LIMIT_BYTES: usize = 6_000;

/// Queued bytes a frame may start behind when the allocator counts on `bps` for this
/// subscriber (its estimate, capped while congested; none yet: no limit).
pub fn limit_bytes(bps: Option<u64>) -> usize {
    match bps {
        Some(bps) => {
            let bytes = bps as f64 / 8.0 * QUEUE_LIMIT.as_secs_f64();
            (bytes as usize).max(MIN_LIMIT_BYTES)
        }
        None => usize::MAX,
    }
}

/// Whether a delta frame starting now would wait too long: the oldest queued packet has
/// waited [`QUEUE_LIMIT`], or more than `limit` bytes are queued and the oldest has waited
/// [`MIN_WAIT`] (the queue's size alone also counts padding and probes str0m just queued).
/// A keyframe is never held back: it is what a held-back subscriber waits for, and each one
/// asked for again costs every subscriber of that layer.
pub fn backlogged(
    queued_bytes: usize,
    oldest_waiting: Option<Duration>,
    limit: usize,
    keyframe: bool,
) -> bool {
    let waited = oldest_waiting.unwrap_or_default();
    !keyframe
        && queued_bytes > MIN_LIMIT_BYTES
        && (waited >= QUEUE_LIMIT || (queued_bytes > limit && waited >= MIN_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_keyframe_on_an_open_link_is_no_backlog_and_a_second_of_video_is() {
        // 2.5 Mbit/s: a 40 kB 720p keyframe queued (128 ms to send) is normal.
        let open = limit_bytes(Some(2_500_000));
        assert!(!backlogged(40_000, Some(MS(60)), open, false));
        assert!(backlogged(90_000, Some(MS(200)), open, false));
        // 250 kbit/s after a collapse: 28 kB queued is nearly a second.
        let thin = limit_bytes(Some(250_000));
        assert_eq!(thin, MIN_LIMIT_BYTES.max(7_812));
        assert!(backlogged(28_000, Some(MS(270)), thin, false));
        // A 180p frame behind a few kB at 250 kbit/s still starts.
        assert!(!backlogged(5_000, Some(MS(100)), thin, false));
        // Behind 300 ms of queue a delta frame waits, the keyframe that ends the wait not.
        assert!(backlogged(10_000, Some(MS(300)), thin, false));
        assert!(!backlogged(28_000, Some(MS(600)), thin, true));
        // A probe's padding, just queued, is no backlog however large.
        assert!(!backlogged(30_000, Some(MS(0)), thin, false));
    }

    #[test]
    fn the_oldest_packets_wait_tells_when_the_estimate_is_stale() {
        // The estimate from before the collapse allows 50 kB, but packets wait 300 ms.
        let stale = limit_bytes(Some(1_600_000));
        assert!(backlogged(20_000, Some(MS(300)), stale, false));
        // A few packets waiting long (padding, a lone retransmission) are no backlog.
        assert!(!backlogged(3_000, Some(MS(400)), stale, false));
    }

    #[test]
    fn no_estimate_no_limit() {
        assert!(!backlogged(1_000_000, None, limit_bytes(None), false));
    }
}
