//! How long a subscriber connection keeps the video it sent for retransmission, from its RTT.
//!
//! str0m keeps every sent video packet of a stream for the age given to
//! `StreamTx::set_rtx_cache`, each in a full `RtpPacket` slot (~432 B; the payload itself is
//! shared) of a buffer that grows and never shrinks (docs/str0m-upstream.md item 3): per
//! subscriber, the largest cost of forwarding after str0m's fixed TWCC history. A kept packet
//! is worth something only while the receiver may still ask for it: libwebrtc's receiver
//! NACKs a gap when it sees it and asks again every RTT, at most 10 times, so nothing older
//! than about ten round trips is ever asked for. The age is therefore 10 RTT + 100 ms, in
//! 250 ms steps, between [`MIN_AGE`] and [`MAX_AGE`] (mediasoup keeps 2 s for video, LiveKit
//! a ring of per-packet records; both keep small records pointing at a shared packet rather
//! than a copy per subscriber).
//!
//! Until the first RTT is known (receiver reports, a second or so into media) a connection
//! keeps [`MIN_AGE`], which is all that an RTT of up to 40 ms needs: most connections never
//! change it. `set_rtx_cache` drops what the cache holds, so the age only ever grows: on a
//! shaped 80 ms link the RTT read 100–173 ms from one second to
//! the next (queueing), and a window that followed it down and up again dropped the cache
//! every 2–4 s, each time losing the packets a NACK in flight asks for. Shrinking would not give
//! memory back anyway: the allocator keeps the freed buffers as the process's high-water
//! mark.

use std::time::Duration;

/// At most this many packets per video stream, whatever the age (about 2 s of a 2 Mbit/s
/// camera).
pub const RTX_CACHE_PACKETS: usize = 512;
/// Retransmissions may take at most this share of what a stream sends (str0m's cap): a
/// receiver that lost much of a collapsed link does not get its bandwidth spent on resends.
pub const RTX_RATIO_CAP: f32 = 0.15;
/// The most any RTT gets.
pub const MAX_AGE: Duration = Duration::from_millis(1500);
/// The least, and the age before any RTT is known: NACKs that come back within a few
/// milliseconds (a LAN, loopback) still need the packets of the last frames, and a
/// receiver's own RTT estimate starts at 100 ms.
pub const MIN_AGE: Duration = Duration::from_millis(500);
/// Ages are whole steps: RTT jitter within a step changes nothing.
const STEP: Duration = Duration::from_millis(250);

/// The age a connection with this RTT needs.
pub fn age_for_rtt(rtt: Duration) -> Duration {
    let want = rtt.saturating_mul(10) + Duration::from_millis(100);
    let steps = want.as_millis().div_ceil(STEP.as_millis()) as u32;
    (STEP * steps).clamp(MIN_AGE, MAX_AGE)
}

/// One subscriber connection's retransmission age.
#[derive(Debug, Clone)]
pub struct RtxWindow {
    age: Duration,
}

impl Default for RtxWindow {
    fn default() -> Self {
        Self { age: MIN_AGE }
    }
}

impl RtxWindow {
    /// The age a video stream of this connection gets now.
    pub fn age(&self) -> Duration {
        self.age
    }

    /// An RTT sample of the connection. Returns the new age when its video caches must be
    /// remade with it: only when the RTT needs more than the age.
    pub fn on_rtt(&mut self, rtt: Duration) -> Option<Duration> {
        let want = age_for_rtt(rtt);
        if want <= self.age {
            return None;
        }
        self.age = want;
        Some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_age_is_ten_round_trips_in_steps_within_bounds() {
        assert_eq!(age_for_rtt(MS), MIN_AGE);
        assert_eq!(age_for_rtt(40 * MS), MIN_AGE);
        assert_eq!(age_for_rtt(41 * MS), 750 * MS);
        assert_eq!(age_for_rtt(100 * MS), 1250 * MS);
        assert_eq!(age_for_rtt(140 * MS), MAX_AGE);
        assert_eq!(age_for_rtt(Duration::from_secs(3)), MAX_AGE);
    }

    #[test]
    fn a_connection_starts_small_and_a_short_rtt_changes_nothing() {
        let mut w = RtxWindow::default();
        assert_eq!(w.age(), MIN_AGE);
        for i in 0..100 {
            assert_eq!(w.on_rtt((1 + i % 40) * MS), None);
        }
        assert_eq!(w.age(), MIN_AGE);
    }

    #[test]
    fn a_longer_rtt_grows_the_cache_at_once_and_a_shorter_one_never_shrinks_it() {
        let mut w = RtxWindow::default();
        assert_eq!(w.on_rtt(60 * MS), Some(750 * MS));
        // RTT wandering 30-60 ms: nothing moves.
        for i in 0..100 {
            assert_eq!(w.on_rtt((30 + i % 31) * MS), None, "sample {i}");
        }
        assert_eq!(w.on_rtt(80 * MS), Some(1000 * MS));
        assert_eq!(w.on_rtt(Duration::from_secs(1)), Some(MAX_AGE));
    }

    #[test]
    fn a_queueing_link_does_not_flap_the_cache() {
        // RTTs read on a shaped 80 ms link (browser test `thin`): 100-173 ms.
        let mut w = RtxWindow::default();
        let mut remade = 0;
        for rtt in [118, 100, 140, 100, 173, 100, 120, 110, 160, 100].repeat(10) {
            remade += usize::from(w.on_rtt(rtt * MS).is_some());
        }
        assert_eq!(remade, 1);
        assert_eq!(w.age(), MAX_AGE);
    }
}
