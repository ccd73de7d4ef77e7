//! A subscriber connection with nothing to receive, and str0m's padding.
//!
//! With send-side estimation on, str0m pads every connection that negotiated transport-cc
//! up to 50 kbit/s whatever flows (`PacerControl::calculate`, docs/str0m-upstream.md item 1):
//! a subscriber whose publishers are all muted gets ~170 tiny padding datagrams a second,
//! and each fills str0m's 1000-record transport-wide CC history (~88 KiB per connection).
//! The padding is capped by str0m's estimate, and an estimate of zero also keeps its probe
//! controller quiet (it ignores a zero estimate), so a connection that has sent no media
//! for [`IDLE_AFTER`], or none yet, is **parked**: its estimator is restarted at zero and it
//! wants nothing. One that never sent media is parked at its first estimate: every padding
//! packet takes a record of str0m's history, which keeps its size once grown, and a
//! subscriber connection made for muted publishers would otherwise pad for seconds first. The first media packet written to it **resumes** it before the packet is
//! written: the estimator restarts from the estimate it had when parked.
//!
//! str0m's estimate events are the mean of the distinct estimates of the last 3 s
//! (`EstimateSmoother`), which has seen the zero: after a short park they would drag the
//! allocation down for seconds after an unmute. So while parked the allocation keeps the
//! estimate it had, and for [`RESUME_HOLD`] after a resume it follows str0m's raw estimate
//! (from the connection's stats, which restarted from the parked value) instead of the
//! events. Congestion is still seen at once by the downlink monitor (loss, queueing).
//!
//! A connection with a video paused for bandwidth is never parked: it wants media, and only
//! probing (the padding among it) finds the room to resume that video.

use std::time::{Duration, Instant};

/// No media written for this long parks the connection.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);
/// After a resume, str0m's estimate events still average the parked zero this long (its
/// 3 s window, and a margin for the event that follows).
pub const RESUME_HOLD: Duration = Duration::from_millis(3500);
/// The least estimate a connection resumes from (bit/s): audio and a little room.
pub const RESUME_FLOOR_BPS: u64 = 100_000;

#[derive(Debug, Clone, Default)]
pub struct IdleEgress {
    /// When media was last written; `None` before the first.
    last_media: Option<Instant>,
    /// While parked: the estimate to resume from.
    parked_from: Option<u64>,
    /// After a resume, until [`RESUME_HOLD`] has passed: str0m's raw estimate since.
    holding: Option<(Instant, u64)>,
}

impl IdleEgress {
    /// A media packet is about to be written. Returns the estimate (bit/s) to restart the
    /// estimator from when the connection was parked; called per packet, so only a store
    /// and a branch.
    #[inline]
    pub fn on_media(&mut self, now: Instant) -> Option<u64> {
        self.last_media = Some(now);
        let from = self.parked_from.take()?;
        self.holding = Some((now, from));
        Some(from)
    }

    /// Every stats interval: `estimate_bps` is what the allocation divides now (`None`
    /// before the first estimate: nothing to resume from), `paused_for_bandwidth` whether
    /// some video of the subscriber waits for bandwidth. Returns true when the connection
    /// is parked now (restart the estimator at zero, want nothing).
    pub fn tick(
        &mut self,
        now: Instant,
        estimate_bps: Option<u64>,
        paused_for_bandwidth: bool,
    ) -> bool {
        if self
            .holding
            .is_some_and(|(t, _)| now.saturating_duration_since(t) >= RESUME_HOLD)
        {
            self.holding = None;
        }
        let Some(estimate) = estimate_bps else {
            return false;
        };
        if self.parked_from.is_some()
            || paused_for_bandwidth
            || self
                .last_media
                .is_some_and(|t| now.saturating_duration_since(t) < IDLE_AFTER)
        {
            return false;
        }
        self.parked_from = Some(estimate.max(RESUME_FLOOR_BPS));
        self.holding = None;
        true
    }

    pub fn is_parked(&self) -> bool {
        self.parked_from.is_some()
    }

    /// str0m's raw estimate from the connection's stats.
    pub fn on_raw_estimate(&mut self, raw_bps: u64) {
        if let Some((_, r)) = self.holding.as_mut() {
            *r = raw_bps;
        }
    }

    /// What an estimate event from str0m is worth to the allocation: nothing while parked
    /// (the allocation keeps the estimate it had), the raw estimate while holding after a
    /// resume, the event's value otherwise.
    pub fn estimate_for_allocation(&self, event_bps: u64, now: Instant) -> Option<u64> {
        if self.parked_from.is_some() {
            return None;
        }
        match self.holding {
            Some((t, raw)) if now.saturating_duration_since(t) < RESUME_HOLD => Some(raw),
            _ => Some(event_bps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const STATS: Duration = Duration::from_millis(250);

    /// Ticks every stats interval from `from` for `span`; returns when it parked, if it did.
    fn run(e: &mut IdleEgress, from: Instant, span: Duration, paused: bool) -> Option<Instant> {
        let mut parked = None;
        let mut t = from;
        while t <= from + span {
            if e.tick(t, Some(800_000), paused) {
                assert!(parked.is_none(), "parked twice");
                parked = Some(t);
            }
            t += STATS;
        }
        parked
    }

    #[test]
    fn a_connection_without_media_is_parked_after_idle_after() {
        let t0 = Instant::now();
        let mut e = IdleEgress::default();
        // Media every 20 ms for 3 s: never parked.
        for i in 0..150 {
            let now = t0 + 20 * MS * i;
            assert_eq!(e.on_media(now), None);
            if i % 12 == 0 {
                assert!(!e.tick(now, Some(800_000), false));
            }
        }
        let last = t0 + 20 * MS * 149;
        let parked = run(&mut e, last, Duration::from_secs(5), false).expect("parked");
        assert!(parked >= last + IDLE_AFTER && parked < last + IDLE_AFTER + STATS);
        assert!(e.is_parked());
        // Parked: str0m's events (falling towards zero) do not reach the allocation.
        assert_eq!(e.estimate_for_allocation(1_000, parked + STATS), None);
    }

    #[test]
    fn a_connection_that_never_had_media_is_parked_at_its_first_estimate() {
        let t0 = Instant::now();
        let mut e = IdleEgress::default();
        assert!(!e.tick(t0, None, false));
        assert_eq!(
            run(&mut e, t0 + STATS, Duration::from_secs(3), false),
            Some(t0 + STATS)
        );
    }

    #[test]
    fn no_estimate_yet_or_a_video_waiting_for_bandwidth_keeps_the_padding() {
        let t0 = Instant::now();
        let mut e = IdleEgress::default();
        for i in 0..20 {
            assert!(!e.tick(t0 + STATS * i, None, false));
        }
        // A video paused for bandwidth needs probes (padding) to come back.
        assert_eq!(run(&mut e, t0, Duration::from_secs(10), true), None);
        assert!(!e.is_parked());
    }

    #[test]
    fn media_resumes_from_the_parked_estimate_and_holds_it_against_the_average() {
        let t0 = Instant::now();
        let mut e = IdleEgress::default();
        let parked = run(&mut e, t0, Duration::from_secs(3), false).expect("parked");
        // Unmute: the first packet restarts the estimator from where it was parked.
        let resume = parked + Duration::from_millis(700);
        assert_eq!(e.on_media(resume), Some(800_000));
        assert_eq!(e.on_media(resume + 20 * MS), None);
        assert!(!e.is_parked());
        // str0m's 3 s average still holds the zero: its events are not believed...
        assert_eq!(
            e.estimate_for_allocation(400_000, resume + 100 * MS),
            Some(800_000)
        );
        // ...its raw estimate is, down as well as up.
        e.on_raw_estimate(650_000);
        assert_eq!(
            e.estimate_for_allocation(400_000, resume + 500 * MS),
            Some(650_000)
        );
        e.on_raw_estimate(1_200_000);
        assert_eq!(
            e.estimate_for_allocation(900_000, resume + 1000 * MS),
            Some(1_200_000)
        );
        // After the hold, the events again.
        let after = resume + RESUME_HOLD;
        assert_eq!(e.on_media(after - 20 * MS), None);
        assert!(!e.tick(after, Some(900_000), false));
        assert_eq!(e.estimate_for_allocation(900_000, after), Some(900_000));
    }

    #[test]
    fn a_low_estimate_resumes_from_the_floor() {
        let t0 = Instant::now();
        let mut e = IdleEgress::default();
        let mut t = t0;
        while !e.tick(t, Some(30_000), false) {
            t += STATS;
        }
        assert_eq!(e.on_media(t + STATS), Some(RESUME_FLOOR_BPS));
    }
}
