//! One subscriber connection's downlink, watched from its own feedback: the fast half of
//! bandwidth allocation, beside str0m's estimate.
//!
//! str0m reports its send-side estimate averaged over 3 s (`EstimateSmoother`), so when a
//! link collapses the allocator hears of it seconds late, while the link drops most of what
//! is sent. And after a collapse str0m's loss-based controller can stay "loss limited" for
//! long: its probe controller does not probe in that state (`ProbeControl::can_probe`), so on
//! a link that came back the estimate creeps up at the rate of what is sent. This monitor
//! reads what str0m measures every stats interval — transport-wide (TWCC) loss over the last
//! second, the round-trip time of the last acknowledged packet, the raw (unsmoothed)
//! estimate, bytes sent — and says two things:
//! - **a cap**: while packets are being lost, or queued with str0m's raw estimate under half
//!   of what is sent, and for [`CAP_HOLD`] after,
//!   the budget may not exceed what the link delivered (or the raw estimate, if lower), so
//!   the allocator cuts within one stats interval instead of waiting out the average;
//! - **restart the estimator**: after the link has been clean for [`CLEAN_FOR`], an
//!   estimate short of what the subscriber wants that has not grown for [`STUCK_FOR`] is
//!   restarted from where it is, which makes str0m send its initial probes (3x and 6x the
//!   estimate, a few packets each) and leaves the loss-limited state behind. A restart that
//!   found nothing doubles the wait before the next (up to [`MAX_RESTART_BACKOFF`]), so a
//!   link that is simply thin is not probed every few seconds;
//! - **rescue a starving subscriber** ([`DownlinkMonitor::rescue`]): when the budget is about
//!   to pause a video because the estimate no longer fits even its lowest layer, but the last
//!   sample shows neither congestion nor a queue, the estimator is restarted at once from
//!   what the link delivers. After one lossy burst str0m's loss-based controller holds the
//!   estimate near what is sent, and as the allocation follows it down, it sinks further
//!   (measured on the 600 kbit/s, 1 % loss link: 560k -> 164k -> 98k while the link carried
//!   all of it); the stuck rule above waits for a clean, flat estimate and came 5 s after
//!   the starving began, so the video paused for 3-4 s.

use std::time::{Duration, Instant};

/// Transport-wide loss over the last second at or above which the link is drowning (random
/// loss on a bad mobile link is a few percent; a queue overflowing drops far more).
pub const CONGESTED_LOSS: f32 = 0.10;
/// Round-trip time this far above the lowest seen means a standing queue on the path.
pub const QUEUE_DELAY: Duration = Duration::from_millis(150);
/// Loss at or above which a standing queue of [`QUEUE_DELAY`] is congestion whatever str0m's
/// estimate says: a receiver short of CPU delays its feedback but loses nothing, and random
/// loss comes without a queue. A link that just collapsed shows this one sample (250 ms)
/// before its loss over the last second reaches [`CONGESTED_LOSS`]. Not within
/// [`JUDGE_AFTER`] of a restart of ours: its probes queue and lose a little by design, and
/// counting that as congestion would stretch the backoff before the next one.
pub const QUEUE_LOSS: f32 = 0.05;
/// Loss at or below which the link counts as clean.
pub const CLEAN_LOSS: f32 = 0.025;
/// The cap stays this long after the last congested sample: str0m's averaged estimate still
/// remembers the link before the drop for up to 3 s.
pub const CAP_HOLD: Duration = Duration::from_secs(3);
/// Consecutive congested samples that halve the cap (a lasting lossy link is capped at what
/// it delivers, not halved to nothing).
const MAX_HALVINGS: u8 = 2;
/// Share of what was delivered the cap allows (the queue must drain too).
pub const CAP_PERCENT: u64 = 90;
/// A restart needs the link to have been clean this long...
pub const CLEAN_FOR: Duration = Duration::from_millis(1500);
/// ...and the estimate to have stayed within [`GROWTH_PERCENT`] of itself this long.
pub const STUCK_FOR: Duration = Duration::from_millis(1500);
pub const GROWTH_PERCENT: u64 = 120;
/// Under half the wish, growing means doubling within [`STUCK_FOR`]: str0m's own increase
/// (additive, or 1.5x of what a low layer carries) creeps at a fifth per second or so, and
/// from 250 kbit/s that takes 10 s to reach a 720p camera on a link that came back.
pub const FAR_SHORT_GROWTH_PERCENT: u64 = 200;
/// An estimate below this share of where the stuck clock started is falling, not stuck.
pub const FALL_PERCENT: u64 = 80;
/// An estimate within this share of the wish is close enough: no restart.
pub const SHORT_PERCENT: u64 = 85;
/// The least time between restarts, doubled after each restart that did not raise the
/// estimate by [`GROWTH_PERCENT`], up to [`MAX_RESTART_BACKOFF`].
pub const RESTART_BACKOFF: Duration = Duration::from_secs(2);
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(4);
/// Congestion this soon after a restart doubles the wait, up to [`MAX_OVERSHOOT_BACKOFF`].
pub const OVERSHOOT_WINDOW: Duration = Duration::from_secs(6);
pub const MAX_OVERSHOOT_BACKOFF: Duration = Duration::from_secs(16);
/// An estimate this share of the last sample's or more, not from a restart of ours: a probe
/// (str0m's own) found room, the link may have come back ...
pub const CHASE_PERCENT: u64 = 150;
/// ... and is followed up this soon by a restart from the new value (probes at 3x and 6x),
/// rather than after [`STUCK_FOR`] and the backoff: str0m probes further by itself only
/// slowly, and not at all while its loss-based state is "loss limited".
pub const CHASE_AFTER: Duration = Duration::from_millis(500);
/// A wish this many times what str0m last probed for, on a link never congested yet, is
/// restarted for at once: str0m probes for a wish only when it rises, and a rise during its
/// initial probing is dropped (`ProbeControl::poll_probe` consumes it while blocked). A
/// subscriber's first estimate usually comes before its video's layers are measured, so
/// the initial probes were capped at twice an audio-sized wish, and the camera started at
/// the 500 kbit/s initial estimate until the stuck rule's [`CLEAN_FOR`] + [`STUCK_FOR`].
pub const WISH_ROSE_FACTOR: u64 = 2;
/// How long after a restart its probes have been answered and the estimate shows it.
const JUDGE_AFTER: Duration = Duration::from_millis(1500);
/// The lowest round-trip time is forgotten after this long (a route can change).
const BASE_RTT_WINDOW: Duration = Duration::from_secs(10);

/// What str0m measured on one subscriber connection (its `PeerStats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DownlinkSample {
    /// The raw estimate (bit/s), not the 3 s average the estimate events carry.
    pub estimate_bps: Option<u64>,
    /// Share of the packets sent in the last second that the receiver reported lost.
    pub loss: Option<f32>,
    /// From sending the last acknowledged packet to its feedback coming back.
    pub rtt: Option<Duration>,
    /// Everything sent on the connection so far (bytes).
    pub bytes_sent: u64,
}

/// What to do after a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownlinkVerdict {
    /// The most the allocator may give this subscriber (bit/s), if the link is congested.
    pub cap_bps: Option<u64>,
    /// Restart the estimator from this rate (bit/s).
    pub restart_from: Option<u64>,
    /// On a link clean for [`CLEAN_FOR`]: str0m's raw estimate, which the allocator may use
    /// when it is above the averaged one (a probe that found the link is believed now, not
    /// once it dominates a 3 s average; the upgrade hysteresis still applies).
    pub clean_estimate_bps: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DownlinkMonitor {
    last: Option<(Instant, u64)>,
    /// str0m's raw estimate in the last sample.
    last_estimate: Option<u64>,
    /// When a restart follows up an estimate that jumped (see [`CHASE_PERCENT`]).
    chase_at: Option<Instant>,
    base_rtt: Option<(Duration, Instant)>,
    congested_at: Option<Instant>,
    cap_bps: Option<u64>,
    /// Consecutive congested samples that halved the cap.
    halvings: u8,
    clean_since: Option<Instant>,
    /// The estimate the stuck clock started from, and when.
    stuck: Option<(u64, Instant)>,
    next_restart: Option<Instant>,
    backoff: Duration,
    /// When the last restart was, and the estimate it started from, until judged.
    restarted: Option<(Instant, u64)>,
    last_restart: Option<Instant>,
    /// The wish at the first sample or at the last restart, lowered when the wish falls:
    /// what str0m's probes were last capped by.
    probed_for: Option<u64>,
    /// The last sample: whether it was congested, whether it was calm enough for a rescue
    /// (see [`DownlinkMonitor::rescue`]), and what the link delivered since the one before
    /// (bit/s).
    last_congested: bool,
    last_calm: bool,
    last_delivered_bps: Option<u64>,
    /// Whether this link was ever congested: past that, a wish that rises (dynacast turning
    /// a layer off makes its cost the nominal one) is left to the stuck and chase rules, and
    /// their backoff.
    ever_congested: bool,
}

impl Default for DownlinkMonitor {
    fn default() -> Self {
        DownlinkMonitor {
            last: None,
            last_estimate: None,
            chase_at: None,
            base_rtt: None,
            congested_at: None,
            cap_bps: None,
            halvings: 0,
            clean_since: None,
            stuck: None,
            next_restart: None,
            backoff: RESTART_BACKOFF,
            restarted: None,
            last_restart: None,
            probed_for: None,
            last_congested: false,
            last_calm: false,
            last_delivered_bps: None,
            ever_congested: false,
        }
    }
}

impl DownlinkMonitor {
    /// One stats sample; `wanted_bps` is what the subscriber's wishes would take.
    pub fn on_sample(
        &mut self,
        s: DownlinkSample,
        wanted_bps: u64,
        now: Instant,
    ) -> DownlinkVerdict {
        let prev_estimate = self.last_estimate;
        if s.estimate_bps.is_some() {
            self.last_estimate = s.estimate_bps;
        }
        let sent_bps = match self.last.replace((now, s.bytes_sent)) {
            Some((t, b)) if now > t && s.bytes_sent >= b => {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                Some(((s.bytes_sent - b) as f64 * 8.0 / dt) as u64)
            }
            _ => None,
        };
        // A standing queue counts only when str0m's own estimate has fallen below half of
        // what is sent: a receiver starved of CPU for a moment delays its feedback just as a
        // queue does, and a cut on an open link for it would be worse than a late one.
        let collapsed = matches!((s.estimate_bps, sent_bps), (Some(e), Some(b)) if e * 2 < b);
        let delay = s.rtt.map(|rtt| self.queue_delay(rtt, now));
        let queued = delay.is_some_and(|d| d >= QUEUE_DELAY);
        let loss = s.loss.unwrap_or(0.0);
        let probing = self
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < JUDGE_AFTER);
        let congested =
            loss >= CONGESTED_LOSS || (queued && (collapsed || (loss >= QUEUE_LOSS && !probing)));
        self.last_congested = congested;
        self.last_calm =
            !congested && loss < QUEUE_LOSS && delay.is_none_or(|d| d < QUEUE_DELAY / 2);
        self.last_delivered_bps =
            sent_bps.map(|b| (b as f64 * f64::from(1.0 - loss.clamp(0.0, 1.0))) as u64);
        if congested {
            self.ever_congested = true;
            self.congested_at = Some(now);
            // What got through, less a margin for the queue to drain; the raw estimate if
            // str0m already knows better.
            let delivered = sent_bps
                .map(|b| (b as f64 * f64::from(1.0 - loss.min(1.0))) as u64 * CAP_PERCENT / 100);
            // The loss is over the last second, so at the start of a collapse it is far
            // below what the link drops now: the first samples of an episode also halve
            // (what was sent, then the cap), as a multiplicative decrease would. Past them
            // str0m's raw estimate, which has caught up by then, takes over: a link that
            // keeps losing (random loss) is not capped ever lower by what it delivers.
            if self.halvings < MAX_HALVINGS {
                let halved = match self.halvings {
                    0 => sent_bps.map(|b| b / 2),
                    _ => self.cap_bps.map(|c| c / 2),
                };
                let cap = [self.cap_bps, delivered, s.estimate_bps, halved]
                    .into_iter()
                    .flatten()
                    .min();
                self.cap_bps = cap;
                self.halvings += 1;
            } else if let Some(e) = s.estimate_bps {
                self.cap_bps = Some(e);
            }
            self.congested_now(now);
        } else {
            self.halvings = 0;
            if self
                .congested_at
                .is_some_and(|t| now.saturating_duration_since(t) >= CAP_HOLD)
            {
                self.congested_at = None;
                self.cap_bps = None;
            } else if let (Some(c), Some(e)) = (self.cap_bps, s.estimate_bps) {
                // Holding: str0m's raw estimate has taken over from the drop.
                self.cap_bps = Some(c.max(e));
            }
        }
        let clean = !congested && loss <= CLEAN_LOSS;
        if clean {
            self.clean_since.get_or_insert(now);
        } else {
            self.clean_since = None;
        }
        let clean_long = self
            .clean_since
            .is_some_and(|t| now.saturating_duration_since(t) >= CLEAN_FOR);
        DownlinkVerdict {
            cap_bps: self.cap_bps,
            clean_estimate_bps: s
                .estimate_bps
                .filter(|_| clean_long && self.cap_bps.is_none()),
            restart_from: s
                .estimate_bps
                .and_then(|e| self.maybe_restart(e, prev_estimate, wanted_bps, now)),
        }
    }

    /// The connection's send queue is backlogged (see `egress_backlog`): more is forwarded
    /// than str0m paces out at its raw estimate, which it knows better than the averaged
    /// one the allocator had. Caps the budget like a congested sample (held [`CAP_HOLD`]):
    /// at the first of an episode, half that estimate (it lags a collapsing link, and a
    /// second cut costs a second keyframe wait), later at the estimate less room for the
    /// queue to drain. Returns whether the cap fell.
    pub fn on_backlog(&mut self, now: Instant) -> bool {
        let Some(raw) = self.last_estimate else {
            return false;
        };
        let cap = if self.cap_bps.is_none() {
            raw / 2
        } else {
            raw * CAP_PERCENT / 100
        };
        let fell = self.cap_bps.is_none_or(|c| cap < c);
        if fell {
            self.cap_bps = Some(cap);
        }
        self.ever_congested = true;
        self.congested_at = Some(now);
        self.clean_since = None;
        self.congested_now(now);
        fell
    }

    /// The budget no longer fits some video even at its lowest layer: the estimator is
    /// restarted now from what the link delivers (or str0m's raw estimate, if higher), unless
    /// the last sample was congested, lost [`QUEUE_LOSS`] or more, or showed a queue of half
    /// [`QUEUE_DELAY`]: then the estimate is right, and the video pauses. Not within
    /// [`RESTART_BACKOFF`] of another restart, nor while one is being judged.
    pub fn rescue(&mut self, now: Instant) -> Option<u64> {
        if !self.last_calm {
            return None;
        }
        let recent = self
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < RESTART_BACKOFF);
        if recent || self.restarted.is_some() {
            return None;
        }
        let raw = self.last_estimate?;
        self.restarting(raw, now);
        Some(raw.max(self.last_delivered_bps.unwrap_or(0)))
    }

    /// Whether the last sample was congested.
    pub fn congested(&self) -> bool {
        self.last_congested
    }

    /// str0m's raw estimate in the last sample: what its pacer sends video at.
    pub fn raw_estimate(&self) -> Option<u64> {
        self.last_estimate
    }

    /// The most the allocator may give now, while congested.
    pub fn cap_bps(&self) -> Option<u64> {
        self.cap_bps
    }

    fn congested_now(&mut self, now: Instant) {
        // A drop soon after a restart means the restart's estimate overshot the link
        // (its probes were absorbed by a queue): wait longer before the next one. Any
        // other drop is another link, and the next restart may come soon.
        self.backoff = if self
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < OVERSHOOT_WINDOW)
        {
            (self.backoff * 2).min(MAX_OVERSHOOT_BACKOFF)
        } else {
            RESTART_BACKOFF
        };
        self.restarted = None;
        self.chase_at = None;
        self.next_restart = Some(now + self.backoff);
    }

    /// The round-trip time above the lowest seen lately.
    fn queue_delay(&mut self, rtt: Duration, now: Instant) -> Duration {
        let base = match self.base_rtt {
            Some((b, at)) if b <= rtt && now.saturating_duration_since(at) < BASE_RTT_WINDOW => b,
            _ => {
                self.base_rtt = Some((rtt, now));
                rtt
            }
        };
        rtt.saturating_sub(base)
    }

    fn maybe_restart(
        &mut self,
        estimate: u64,
        prev: Option<u64>,
        wanted: u64,
        now: Instant,
    ) -> Option<u64> {
        if let Some((at, from)) = self.restarted {
            // Judge the last restart once its probes had time to come back: one that raised
            // the estimate keeps the short wait, one that found nothing doubles it (and
            // never shortens a wait that overshoots stretched).
            if now.saturating_duration_since(at) >= JUDGE_AFTER {
                self.restarted = None;
                self.backoff = if estimate * 100 >= from * GROWTH_PERCENT {
                    RESTART_BACKOFF
                } else {
                    (self.backoff * 2)
                        .min(MAX_RESTART_BACKOFF)
                        .max(self.backoff)
                };
                self.next_restart = Some(at + self.backoff);
            }
        }
        // Stuck means within a band around where it was: growing by GROWTH_PERCENT is
        // finding the link, and falling below FALL_PERCENT is str0m reacting to something
        // (a busy receiver's feedback, a real drop); a restart from a value still falling
        // would only pin the estimator low (measured: restarted from 478k while it fell
        // from 1.5M on an open link, str0m went down to 135k).
        let growth = if estimate * 2 < wanted {
            FAR_SHORT_GROWTH_PERCENT
        } else {
            GROWTH_PERCENT
        };
        let stuck_since = match self.stuck {
            Some((at, since))
                if estimate * 100 < at * growth && estimate * 100 >= at * FALL_PERCENT =>
            {
                since
            }
            _ => {
                self.stuck = Some((estimate, now));
                now
            }
        };
        // A jump right after a restart of ours is that restart's doing: it is judged, not
        // chased (str0m goes on probing after a reset by itself).
        if self.restarted.is_none() && prev.is_some_and(|p| estimate * 100 >= p * CHASE_PERCENT) {
            self.chase_at.get_or_insert(now + CHASE_AFTER);
        }
        // At most one restart per RESTART_BACKOFF, chased or not.
        let chase = self.chase_at.is_some_and(|t| now >= t)
            && self
                .last_restart
                .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_BACKOFF);
        let stuck = now.saturating_duration_since(stuck_since) >= STUCK_FOR
            && self.next_restart.is_none_or(|t| now >= t);
        let short = estimate * 100 < wanted * SHORT_PERCENT;
        let probed_for = self.probed_for.map_or(wanted, |p| p.min(wanted));
        let wish_rose = self.probed_for.is_some()
            && wanted >= probed_for.max(1) * WISH_ROSE_FACTOR
            && self.clean_since.is_some()
            && !self.ever_congested;
        self.probed_for = Some(probed_for);
        let due = (self
            .clean_since
            .is_some_and(|t| now.saturating_duration_since(t) >= CLEAN_FOR)
            && (stuck || chase)
            && self.restarted.is_none()
            || wish_rose)
            && short;
        if !due {
            if self.chase_at.is_some_and(|t| now >= t) {
                // Nothing to chase (enough already, the link is not clean, or too soon).
                self.chase_at = None;
            }
            return None;
        }
        self.probed_for = Some(wanted);
        self.restarting(estimate, now);
        Some(estimate)
    }

    /// A restart of the estimator at `estimate` goes out now: judged after [`JUDGE_AFTER`],
    /// and the next one waits for the backoff.
    fn restarting(&mut self, estimate: u64, now: Instant) {
        self.chase_at = None;
        self.restarted = Some((now, estimate));
        self.last_restart = Some(now);
        self.next_restart = Some(now + self.backoff);
        self.stuck = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);
    const WANTED: u64 = 1_600_000;

    /// A connection sending at `rate` bit/s, sampled every [`TICK`].
    struct Link {
        m: DownlinkMonitor,
        now: Instant,
        bytes: u64,
    }

    impl Link {
        fn new() -> Self {
            Link {
                m: DownlinkMonitor::default(),
                now: Instant::now(),
                bytes: 0,
            }
        }

        fn tick(
            &mut self,
            sent_bps: u64,
            loss: f32,
            rtt_ms: u64,
            estimate: u64,
        ) -> DownlinkVerdict {
            self.tick_wanting(sent_bps, loss, rtt_ms, estimate, WANTED)
        }

        fn tick_wanting(
            &mut self,
            sent_bps: u64,
            loss: f32,
            rtt_ms: u64,
            estimate: u64,
            wanted: u64,
        ) -> DownlinkVerdict {
            self.now += TICK;
            self.bytes += sent_bps / 8 / 2;
            self.m.on_sample(
                DownlinkSample {
                    estimate_bps: Some(estimate),
                    loss: Some(loss),
                    rtt: Some(Duration::from_millis(rtt_ms)),
                    bytes_sent: self.bytes,
                },
                wanted,
                self.now,
            )
        }
    }

    #[test]
    fn a_collapsing_link_caps_the_budget_at_what_it_delivers_within_one_sample() {
        let mut l = Link::new();
        for _ in 0..6 {
            let v = l.tick(1_500_000, 0.0, 45, 2_000_000);
            assert_eq!((v.cap_bps, v.restart_from), (None, None));
        }
        // 2 Mbit/s -> 250 kbit/s: five sixths of what is sent is dropped at the queue.
        let v = l.tick(1_500_000, 0.83, 250, 1_900_000);
        let cap = v.cap_bps.expect("capped at once");
        assert!((200_000..=250_000).contains(&cap), "cap {cap}");
        // Sending less after the cut: the cap holds, and the raw estimate takes over when
        // str0m has caught up (it only raises the cap while holding).
        let v = l.tick(250_000, 0.3, 240, 400_000);
        assert!(v.cap_bps.unwrap() <= cap);
        let v = l.tick(200_000, 0.0, 60, 230_000);
        assert_eq!(v.cap_bps, Some(cap.max(230_000)));
        // CAP_HOLD after the last congested sample, the averaged estimate is trusted again.
        let mut last = v;
        for _ in 0..6 {
            last = l.tick(200_000, 0.0, 50, 230_000);
        }
        assert_eq!(last.cap_bps, None);
    }

    #[test]
    fn a_standing_queue_caps_even_without_loss_and_random_loss_does_not() {
        let mut l = Link::new();
        for _ in 0..4 {
            l.tick(550_000, 0.0, 80, 700_000);
        }
        // 3 % random loss on a thin link: not congestion.
        for i in 0..10 {
            let loss = if i % 2 == 0 { 0.03 } else { 0.06 };
            assert_eq!(l.tick(550_000, loss, 90, 600_000).cap_bps, None);
        }
        // Feedback late by 200 ms while str0m's estimate holds: a receiver busy for a
        // moment, not the link.
        assert_eq!(l.tick(550_000, 0.0, 290, 600_000).cap_bps, None);
        // The queue grows by 200 ms and str0m's estimate collapses: the link carries far
        // less than is sent.
        let v = l.tick(550_000, 0.0, 290, 250_000);
        assert_eq!(v.cap_bps, Some(250_000));
    }

    #[test]
    fn a_queue_that_starts_dropping_is_congestion_before_the_loss_of_a_second_says_so() {
        let mut l = Link::new();
        for _ in 0..4 {
            l.tick(800_000, 0.0, 48, 1_400_000);
        }
        // Half a second into a drop to 250 kbit/s (the shaped browser test): the queue is
        // 250 ms long, a tenth of the last second was lost, str0m's raw estimate is on
        // its way down but not yet under half of what is sent.
        let v = l.tick(800_000, 0.09, 300, 520_000);
        assert!(v.cap_bps.is_some_and(|c| c <= 400_000), "{v:?}");
        // The same loss without a queue is a lossy radio link, not a full one.
        let mut l = Link::new();
        for _ in 0..4 {
            l.tick(800_000, 0.0, 48, 1_400_000);
        }
        assert_eq!(l.tick(800_000, 0.09, 60, 900_000).cap_bps, None);
        // Nor right after a restart of ours: its probes (3x and 6x) queue and lose a little
        // on a thin link, which must not stretch the backoff before the next restart.
        let mut l = Link::new();
        l.tick(1_500_000, 0.8, 250, 1_000_000);
        let mut restarted = None;
        for _ in 0..12 {
            let v = l.tick(200_000, 0.0, 50, 280_000);
            if v.restart_from.is_some() {
                restarted = Some(v.cap_bps);
                break;
            }
        }
        let held = restarted.expect("restarted");
        // The cap of the collapse may still be held; the probes do not cut it further.
        assert_eq!(l.tick(300_000, 0.07, 230, 280_000).cap_bps, held);
    }

    #[test]
    fn a_wish_well_above_what_was_probed_for_restarts_the_estimator_at_once() {
        let mut l = Link::new();
        // The first estimates come while only audio is measured: str0m's initial probes
        // were capped at twice that.
        for _ in 0..3 {
            let v = l.tick_wanting(60_000, 0.0, 45, 500_000, 100_000);
            assert_eq!(v.restart_from, None);
        }
        // The camera's layers are measured: the wish is 1.6 Mbit/s.
        let v = l.tick_wanting(450_000, 0.0, 45, 480_000, WANTED);
        assert_eq!(v.restart_from, Some(480_000));
        // Probed for now: the next samples wait for the probes (and the stuck rule).
        for _ in 0..2 {
            let v = l.tick_wanting(450_000, 0.0, 45, 480_000, WANTED);
            assert_eq!(v.restart_from, None);
        }
        // A wish that rises while the estimate covers it probes nothing.
        let mut l = Link::new();
        l.tick_wanting(60_000, 0.0, 45, 2_000_000, 100_000);
        assert_eq!(
            l.tick_wanting(450_000, 0.0, 45, 2_000_000, WANTED)
                .restart_from,
            None
        );
        // Nor one right after congestion: the cap decides then.
        let mut l = Link::new();
        l.tick_wanting(60_000, 0.0, 45, 500_000, 100_000);
        l.tick_wanting(800_000, 0.5, 300, 300_000, 100_000);
        assert_eq!(
            l.tick_wanting(200_000, 0.0, 60, 250_000, WANTED)
                .restart_from,
            None
        );
    }

    #[test]
    fn a_stuck_estimate_on_a_clean_link_is_restarted_and_backs_off_while_the_link_is_thin() {
        let mut l = Link::new();
        // After a drop: the link is clean, the estimate sits at 280k for good.
        l.tick(1_500_000, 0.8, 250, 1_000_000);
        let mut restarts = vec![];
        for i in 0..60 {
            if let Some(from) = l.tick(200_000, 0.0, 50, 280_000).restart_from {
                assert_eq!(from, 280_000);
                restarts.push(i);
            }
        }
        // The first within CLEAN_FOR + STUCK_FOR after the link calmed (and CAP_HOLD ended
        // nothing here: a restart does not wait for the cap), then at most every 4 s.
        assert!(
            restarts[0] <= 4,
            "first restart after {} samples",
            restarts[0]
        );
        let gaps: Vec<_> = restarts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g >= 4), "restarts too close: {gaps:?}");
        assert!(gaps[1..].iter().all(|g| *g >= 8), "no backoff: {gaps:?}");
        assert!(restarts.len() <= 9, "{} restarts in 30 s", restarts.len());
    }

    #[test]
    fn no_restart_when_the_estimate_grows_covers_the_wish_or_the_link_loses() {
        let mut l = Link::new();
        // Growing by a fifth every 1.5 s close to the wish: str0m is finding the rest.
        let mut e = 1_000_000;
        for i in 0..6 {
            if i % 3 == 0 {
                e = e * 125 / 100;
            }
            assert_eq!(l.tick(e / 2, 0.0, 50, e).restart_from, None);
        }
        // Doubling every 1.5 s far below it (by less than a probe's jump per sample, which
        // is chased): the same.
        let mut l = Link::new();
        let mut e = 100_000;
        for _ in 0..9 {
            e = e * 130 / 100;
            assert_eq!(l.tick(e / 2, 0.0, 50, e).restart_from, None);
        }
        // Enough for what is wanted.
        let mut l = Link::new();
        for _ in 0..20 {
            assert_eq!(l.tick(1_000_000, 0.0, 50, WANTED).restart_from, None);
        }
        // Lossy (5 %, not congested): probing would only add to it.
        let mut l = Link::new();
        for _ in 0..20 {
            assert_eq!(l.tick(200_000, 0.05, 50, 280_000).restart_from, None);
        }
    }

    #[test]
    fn an_estimate_creeping_far_below_the_wish_is_restarted() {
        let mut l = Link::new();
        // After a drop the link came back; str0m creeps up by a fifth every 1.5 s from
        // 250 kbit/s towards a 1.6 Mbit/s wish (10 s at that pace).
        l.tick(1_500_000, 0.8, 250, 1_000_000);
        let mut e = 250_000;
        let mut restarted = None;
        for i in 1..=12 {
            if i % 3 == 0 {
                e = e * 125 / 100;
            }
            if l.tick(e / 2, 0.0, 50, e).restart_from.is_some() {
                restarted = Some(i);
                break;
            }
        }
        let at = restarted.expect("a creeping estimate is restarted");
        assert!(at <= 6, "restarted after {at} samples");
    }

    #[test]
    fn a_falling_estimate_is_not_restarted_until_it_settles() {
        let mut l = Link::new();
        for _ in 0..10 {
            assert_eq!(l.tick(1_400_000, 0.0, 50, 1_500_000).restart_from, None);
        }
        // str0m's estimate falls on a clean link (feedback of a busy receiver): no restart
        // from a value on its way down ...
        for e in [1_100_000, 800_000, 560_000, 400_000] {
            assert_eq!(l.tick(1_400_000, 0.0, 50, e).restart_from, None);
        }
        // ... only once it has stayed put for STUCK_FOR.
        let mut restarted = None;
        for i in 0..6 {
            if l.tick(400_000, 0.0, 50, 390_000).restart_from.is_some() {
                restarted = Some(i);
                break;
            }
        }
        assert!(restarted.is_some_and(|i| i >= 2), "{restarted:?}");
    }

    #[test]
    fn a_restart_that_found_the_link_keeps_the_short_backoff() {
        let mut l = Link::new();
        let mut first = None;
        for i in 0..10 {
            if l.tick(200_000, 0.0, 50, 280_000).restart_from.is_some() {
                first = Some(i);
                break;
            }
        }
        assert!(first.is_some());
        // The probes found 1.2 Mbit/s; later the estimate stalls again below the wish.
        let mut next = None;
        for i in 0..20 {
            if l.tick(900_000, 0.0, 50, 1_200_000).restart_from.is_some() {
                next = Some(i);
                break;
            }
        }
        let n = next.expect("restarted again");
        assert!(n <= 8, "next restart after {n} samples");
    }

    #[test]
    fn restarts_that_overshoot_the_link_back_off() {
        let mut l = Link::new();
        let mut restarts = 0;
        // Each restart's estimate overshoots, the allocator upgrades, the link drowns.
        let mut since_restart = None;
        for _ in 0..120 {
            let congested = since_restart.is_some_and(|n| n == 4);
            let v = if congested {
                l.tick(900_000, 0.3, 250, 900_000)
            } else {
                l.tick(300_000, 0.0, 50, 350_000)
            };
            since_restart = since_restart.map(|n| n + 1);
            if v.restart_from.is_some() {
                restarts += 1;
                since_restart = Some(0);
            }
        }
        // 60 s: without the backoff this would be one every ~4 s.
        assert!(restarts <= 7, "{restarts} restarts in a minute");
    }

    #[test]
    fn an_estimate_that_jumped_on_its_own_is_chased_by_a_restart_within_a_second() {
        let mut l = Link::new();
        // A thin link: restarts found nothing, the backoff is long.
        for _ in 0..30 {
            l.tick(200_000, 0.0, 50, 220_000);
        }
        // The link came back and one of str0m's own probes found 400k.
        let mut chased = None;
        for i in 0..6 {
            let e = if i == 0 { 400_000 } else { 397_000 };
            if let Some(from) = l.tick(200_000, 0.0, 50, e).restart_from {
                chased = Some((i, from));
                break;
            }
        }
        let (i, from) = chased.expect("chased");
        assert!(i <= 2, "restart {} ms after the jump", i * 500);
        assert_eq!(from, 397_000);
        // That restart's own jump is judged, not chased again.
        for _ in 0..3 {
            assert_eq!(l.tick(400_000, 0.0, 50, 1_200_000).restart_from, None);
        }
    }

    #[test]
    fn a_jump_that_covers_the_wish_or_comes_with_loss_is_not_chased() {
        let mut l = Link::new();
        for _ in 0..10 {
            l.tick(200_000, 0.0, 50, 700_000);
        }
        // Enough for the wish.
        for _ in 0..4 {
            assert_eq!(l.tick(200_000, 0.0, 50, 1_500_000).restart_from, None);
        }
        // A jump while the link loses 5 %: probing would only add to it.
        let mut l = Link::new();
        for _ in 0..10 {
            l.tick(200_000, 0.05, 50, 200_000);
        }
        for _ in 0..4 {
            assert_eq!(l.tick(200_000, 0.05, 50, 400_000).restart_from, None);
        }
    }

    #[test]
    fn a_backlog_caps_at_the_raw_estimate_at_once() {
        let mut l = Link::new();
        assert!(!l.m.on_backlog(l.now), "no estimate yet: nothing to cap at");
        for _ in 0..4 {
            l.tick(1_500_000, 0.0, 45, 600_000);
        }
        assert!(l.m.on_backlog(l.now));
        assert_eq!(
            l.m.cap_bps(),
            Some(300_000),
            "the first of an episode halves"
        );
        // Another at the same estimate lowers nothing; one at a lower estimate does.
        assert!(!l.m.on_backlog(l.now));
        l.tick(500_000, 0.0, 45, 300_000);
        assert!(l.m.on_backlog(l.now));
        assert_eq!(l.m.cap_bps(), Some(300_000 * CAP_PERCENT / 100));
        // Held like a congested sample, then lifted.
        let mut last = None;
        for _ in 0..8 {
            last = l.tick(500_000, 0.0, 45, 600_000).cap_bps;
        }
        assert_eq!(last, None);
    }

    #[test]
    fn the_first_samples_of_a_collapse_halve_the_cap_and_lasting_loss_does_not_starve_it() {
        let mut l = Link::new();
        for _ in 0..4 {
            l.tick(1_500_000, 0.0, 45, 2_000_000);
        }
        // The one-second loss window lags the collapse: 25 %, then 45 % of what is sent.
        let first = l.tick(1_500_000, 0.25, 200, 1_900_000).cap_bps.unwrap();
        assert_eq!(first, 750_000);
        let second = l.tick(1_200_000, 0.45, 250, 1_500_000).cap_bps.unwrap();
        assert_eq!(second, 375_000);
        // A link that keeps losing 12 % of 1 Mbit/s: capped at what it delivers, no lower.
        let mut l = Link::new();
        let mut cap = 0;
        for _ in 0..20 {
            cap = l.tick(1_000_000, 0.12, 50, 1_000_000).cap_bps.unwrap();
        }
        assert!(cap >= 200_000, "cap {cap}");
    }
}
