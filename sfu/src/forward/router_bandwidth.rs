//! The router's bandwidth side: each subscriber connection's estimate goes in, the layer caps
//! of its video downtracks, pause changes for its client and the rate to probe for come out.

use std::time::{Duration, Instant};

use super::downlink_monitor::DownlinkSample;
use super::downtrack_layers::{
    apply_budget, hold_for_lower_layer, resync_after_backlog, BandwidthPause, BACKLOG_GRACE,
};
use super::router::Router;
use super::subscriber_budget::{BudgetChanges, SubscriberBudget};
use super::{Forward, PeerKey};

/// How often every subscriber's allocation is re-run without a new estimate: wishes and
/// layer bitrates change between estimates, and the hysteresis timers run out.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// Over all subscribers with an estimate, for metrics (bits per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthTotals {
    pub subscribers: u64,
    pub estimate_bps: u64,
    pub wanted_bps: u64,
    pub allocated_bps: u64,
}

impl Router {
    /// The subscriber connection's send-side bandwidth estimate: caps the layers of its
    /// video downtracks so that audio, then the dominant speaker, then the others fit.
    /// Returns the rate everything it wants would take, for the estimator to probe towards.
    pub fn set_egress_budget(&mut self, subscriber: PeerKey, bps: u64, now: Instant) -> u64 {
        let Some(member) = self.members.get_mut(&subscriber) else {
            return 0;
        };
        member
            .budget
            .get_or_insert_with(|| SubscriberBudget::new(bps))
            .set_estimate(bps);
        self.allocate_for(subscriber, now)
    }

    /// What the subscriber connection's own feedback says (loss, queueing, the raw
    /// estimate; see `downlink_monitor`): a congested link is cut at once, without waiting
    /// for str0m's averaged estimate. Returns the rate to restart its estimator from when
    /// the estimate is stuck short on a clean link.
    pub fn downlink_sample(
        &mut self,
        subscriber: PeerKey,
        sample: DownlinkSample,
        now: Instant,
    ) -> Option<u64> {
        let budget = self.members.get_mut(&subscriber)?.budget.as_mut()?;
        let (fell, restart) = budget.on_downlink_sample(sample, now);
        if fell {
            self.allocate_for(subscriber, now);
            self.hold_cut_downtracks(subscriber, now);
        }
        restart
    }

    /// The driver found the subscriber connection's send queue backlogged at `f` (a
    /// frame's first packet; see `egress_backlog`): the subscriber is capped at str0m's raw
    /// estimate and re-allocated at once. Returns whether to hold the frame back: when the
    /// cut moves its downtrack to a lower layer, which then waits for that layer's keyframe
    /// (see `downtrack_layers::resync_after_backlog`). Nothing happens when the allocation
    /// is within str0m's raw estimate, nor within a grace after the downtrack resumed from
    /// the last hold (`downtrack_layers::BACKLOG_GRACE`).
    pub fn egress_backlogged(&mut self, f: &Forward, now: Instant) -> bool {
        let resumed_lately = self
            .downtracks
            .get(f.downtrack.0 as usize)
            .is_some_and(|dt| {
                dt.backlog_hold
                    .is_some_and(|t| now.saturating_duration_since(t) < BACKLOG_GRACE)
                    && dt.current_layer().is_some()
            });
        let budget = self
            .members
            .get_mut(&f.subscriber)
            .and_then(|m| m.budget.as_mut());
        // A queue the allocation does not feed (a probe's padding, a keyframe burst while
        // str0m's estimate dipped) drains by itself.
        if resumed_lately || budget.as_ref().is_some_and(|b| !b.over_allocated()) {
            return false;
        }
        let fell = budget.is_some_and(|b| b.on_egress_backlog(now));
        tracing::debug!(subscriber = f.subscriber.0, fell, "send queue backlogged");
        if fell {
            self.allocate_for(f.subscriber, now);
        }
        let Some(dt) = self.downtracks.get_mut(f.downtrack.0 as usize) else {
            return false;
        };
        let Some(track) = dt.track.and_then(|t| self.tracks.get_mut(t.0 as usize)) else {
            return false;
        };
        resync_after_backlog(track, dt, f.seq, now, &mut self.keyframe_out)
    }

    /// After a cut of the downlink monitor: each video of `subscriber` now capped below the
    /// layer it forwards stops until its lower layer's keyframe (`hold_for_lower_layer`);
    /// one held lately by a backlog is left to its grace.
    fn hold_cut_downtracks(&mut self, subscriber: PeerKey, now: Instant) {
        let Some(member) = self.members.get(&subscriber) else {
            return;
        };
        for key in &member.downtracks {
            let Some(dt) = self.downtracks.get_mut(key.0 as usize) else {
                continue;
            };
            if dt
                .backlog_hold
                .is_some_and(|t| now.saturating_duration_since(t) < BACKLOG_GRACE)
            {
                continue;
            }
            let Some(track) = dt.track.and_then(|t| self.tracks.get_mut(t.0 as usize)) else {
                continue;
            };
            hold_for_lower_layer(track, dt, now, &mut self.keyframe_out);
        }
    }

    /// What the allocator divides for `subscriber` now (its estimate, capped while the link
    /// is congested); `None` before its first estimate.
    pub fn egress_estimate(&self, subscriber: PeerKey) -> Option<u64> {
        self.members
            .get(&subscriber)?
            .budget
            .as_ref()
            .map(|b| b.estimate_bps())
    }

    /// str0m's raw estimate in the subscriber connection's last stats sample (what its
    /// pacer sends video at).
    pub fn raw_egress_estimate(&self, subscriber: PeerKey) -> Option<u64> {
        self.members
            .get(&subscriber)?
            .budget
            .as_ref()?
            .raw_estimate()
    }

    /// Whether some video of `subscriber` is paused for bandwidth (see `idle_egress`: such
    /// a connection keeps probing).
    pub fn paused_for_bandwidth(&self, subscriber: PeerKey) -> bool {
        self.members
            .get(&subscriber)
            .and_then(|m| m.budget.as_ref())
            .is_some_and(|b| b.paused_videos > 0)
    }

    /// Re-runs the allocation of every subscriber with an estimate, at most every
    /// [`ALLOCATION_INTERVAL`]. Returns each one's wanted rate (to probe towards), its
    /// estimate, and whether some video of it is paused for bandwidth.
    pub fn reallocate(&mut self, now: Instant) -> Vec<(PeerKey, u64, u64, bool)> {
        if self.next_allocation.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.next_allocation = Some(now + ALLOCATION_INTERVAL);
        let peers: Vec<PeerKey> = self
            .members
            .iter()
            .filter(|(_, m)| m.budget.is_some())
            .map(|(k, _)| *k)
            .collect();
        peers
            .into_iter()
            .map(|p| {
                let wanted = self.allocate_for(p, now);
                let budget = self.members.get(&p).and_then(|m| m.budget.as_ref());
                let estimate = budget.map_or(0, |b| b.estimate_bps());
                let paused = budget.is_some_and(|b| b.paused_videos > 0);
                (p, wanted, estimate, paused)
            })
            .collect()
    }

    fn allocate_for(&mut self, subscriber: PeerKey, now: Instant) -> u64 {
        let Some(member) = self.members.get_mut(&subscriber) else {
            return 0;
        };
        let Some(budget) = member.budget.as_mut() else {
            return 0;
        };
        let dominant = self
            .reported_speakers
            .get(&member.room)
            .and_then(|s| s.first())
            .map(|s| s.peer);
        let changes = apply_budget(
            subscriber,
            &member.downtracks,
            &mut self.downtracks,
            &self.tracks,
            dominant,
            budget,
            now,
            &mut self.bandwidth_pauses,
        );
        self.budget_changes.layer_switches += changes.layer_switches;
        self.budget_changes.pauses += changes.pauses;
        budget.wanted_bps
    }

    /// Video downtracks paused for bandwidth or resumed since the last call, for the
    /// subscribers' clients.
    pub fn take_bandwidth_pauses(&mut self) -> Vec<BandwidthPause> {
        std::mem::take(&mut self.bandwidth_pauses)
    }

    /// Layer switches and pauses the allocator made since the last call.
    pub fn take_budget_changes(&mut self) -> BudgetChanges {
        std::mem::take(&mut self.budget_changes)
    }

    pub fn bandwidth_totals(&self) -> BandwidthTotals {
        let mut t = BandwidthTotals::default();
        for b in self.members.values().filter_map(|m| m.budget.as_ref()) {
            t.subscribers += 1;
            t.estimate_bps += b.estimate_bps();
            t.wanted_bps += b.wanted_bps;
            t.allocated_bps += b.allocated_bps;
        }
        t
    }
}
