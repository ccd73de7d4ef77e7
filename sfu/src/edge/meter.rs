//! A worker's measurements before they reach the shared [`SfuStats`].
//!
//! The packet path only bumps plain fields here; [`WorkerMeter::flushed`] moves them into the
//! shared atomics once per loop iteration, so the per-packet cost is a few register adds, not
//! an atomic read-modify-write per packet per metric.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use str0m::media::Mid;
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::connection::Participant;
use crate::forward::router::DowntrackState;
use crate::forward::subscriber_budget::BudgetChanges;
use crate::forward::BandwidthTotals;
use crate::forward::{PeerKey, Router};

use crate::api::TrackKind;
use crate::histogram::LocalHistogram;
use crate::stats::{kind_index, SfuStats, HOP_LATENCY_BOUNDS};

/// Receive batches whose forwarded copies one flush can carry (the loop reads at most this
/// many before it drains and flushes).
pub const MAX_BATCHES: usize = 16;

pub struct WorkerMeter {
    stats: Arc<SfuStats>,
    index: usize,
    packets_in: [u64; 2],
    bytes_in: [u64; 2],
    packets_out: [u64; 2],
    bytes_out: [u64; 2],
    /// Receive instant of each batch read since the last flush and how many forwarded copies
    /// it produced.
    batches: [(Instant, u64); MAX_BATCHES],
    batch_count: usize,
    woke: Option<Instant>,
    /// Start of the current busy-share window and the busy time in it.
    window: (Instant, Duration),
    /// Packets from other media nodes: origin's receive → taken here.
    hop_latency: LocalHistogram,
}

/// How long the busy share placement reads is averaged over.
const BUSY_WINDOW: Duration = Duration::from_secs(1);

impl WorkerMeter {
    pub fn new(stats: Arc<SfuStats>, index: usize) -> Self {
        WorkerMeter {
            stats,
            index,
            packets_in: [0; 2],
            bytes_in: [0; 2],
            packets_out: [0; 2],
            bytes_out: [0; 2],
            batches: [(Instant::now(), 0); MAX_BATCHES],
            batch_count: 0,
            woke: None,
            window: (Instant::now(), Duration::ZERO),
            hop_latency: LocalHistogram::new(HOP_LATENCY_BOUNDS),
        }
    }

    pub fn stats(&self) -> &SfuStats {
        &self.stats
    }

    pub fn set_running(&self, running: bool) {
        if let Some(w) = self.stats.workers.get(self.index) {
            w.running.store(running, Ordering::Relaxed);
        }
    }

    /// The loop stopped waiting: busy time counts from here to the next flush.
    pub fn woke(&mut self, now: Instant) {
        self.woke = Some(now);
    }

    /// A `recvmmsg` batch returned at `now`; forwards until the next call belong to it.
    pub fn batch_received(&mut self, now: Instant) {
        if self.batch_count < MAX_BATCHES {
            self.batches[self.batch_count] = (now, 0);
            self.batch_count += 1;
        }
        // Beyond MAX_BATCHES (the loop never reads that many) later forwards are attributed
        // to the last batch: slightly shorter latencies, never a lost count.
    }

    pub fn rtp_received(&mut self, kind: TrackKind, payload: usize) {
        let k = kind_index(kind);
        self.packets_in[k] += 1;
        self.bytes_in[k] += payload as u64;
    }

    /// A packet from another media node, its hop measured from the origin's send stamp.
    pub fn cascade_hop(&mut self, latency: Duration) {
        self.hop_latency.observe(latency.as_secs_f64());
    }

    pub fn rtp_forwarded(&mut self, kind: TrackKind, payload: usize) {
        let k = kind_index(kind);
        self.packets_out[k] += 1;
        self.bytes_out[k] += payload as u64;
        if let Some(b) = self.batch_count.checked_sub(1) {
            self.batches[b].1 += 1;
        }
    }

    /// `copies` forwarded copies were sent at `now`, before the wake's last flush (see
    /// `worker::sending`): charged to the oldest batches first; `flushed` charges the rest.
    pub fn sent_early(&mut self, now: Instant, mut copies: u64) {
        let s = &*self.stats;
        for (received, forwarded) in &mut self.batches[..self.batch_count] {
            if copies == 0 {
                break;
            }
            let n = copies.min(*forwarded);
            if n > 0 {
                let latency = now.saturating_duration_since(*received).as_secs_f64();
                s.forwarding_latency.observe_n(latency, n);
                *forwarded -= n;
                copies -= n;
            }
        }
    }

    /// The send queue was flushed at `now`: record latencies and busy time, publish counts.
    pub fn flushed(&mut self, now: Instant) {
        let s = &*self.stats;
        for &(received, forwarded) in &self.batches[..self.batch_count] {
            let latency = now.saturating_duration_since(received).as_secs_f64();
            s.forwarding_latency.observe_n(latency, forwarded);
        }
        self.batch_count = 0;
        s.cascade_hop_latency.absorb(&mut self.hop_latency);
        for k in 0..2 {
            SfuStats::add(&s.rtp_packets_received[k], self.packets_in[k]);
            SfuStats::add(&s.rtp_bytes_received[k], self.bytes_in[k]);
            SfuStats::add(&s.rtp_packets_sent[k], self.packets_out[k]);
            SfuStats::add(&s.rtp_bytes_sent[k], self.bytes_out[k]);
        }
        self.packets_in = [0; 2];
        self.bytes_in = [0; 2];
        self.packets_out = [0; 2];
        self.bytes_out = [0; 2];
        if let (Some(woke), Some(w)) = (self.woke.take(), s.workers.get(self.index)) {
            let busy = now.saturating_duration_since(woke);
            SfuStats::add(&w.busy_nanos, busy.as_nanos() as u64);
            self.window.1 += busy;
            let elapsed = now.saturating_duration_since(self.window.0);
            if elapsed >= BUSY_WINDOW {
                let permille = self.window.1.as_micros() * 1000 / elapsed.as_micros().max(1);
                w.busy_recent_permille
                    .store(permille.min(1000) as u64, Ordering::Relaxed);
                self.window = (now, Duration::ZERO);
            }
        }
    }

    /// The overload guard's level (see [`crate::forward::overload::Shedding::level`]).
    pub fn set_shedding(&self, level: u64) {
        if let Some(w) = self.stats.workers.get(self.index) {
            w.shedding_level.store(level, Ordering::Relaxed);
        }
    }

    /// A video frame held back from a backlogged subscriber connection.
    pub fn egress_backlog_hold(&self) {
        SfuStats::add(&self.stats.video_frames_held_for_backlog, 1);
    }

    /// A cut let a video stream's stale send queue go unpaced (`stale_queue`).
    pub fn stale_queue_flushed(&self) {
        SfuStats::add(&self.stats.stale_video_queues_flushed, 1);
    }

    /// One bandwidth allocation round over the worker's subscribers.
    pub fn bandwidth(&self, totals: BandwidthTotals, changes: BudgetChanges) {
        let st = &*self.stats;
        SfuStats::add(
            &st.bandwidth_layer_switches,
            u64::from(changes.layer_switches),
        );
        SfuStats::add(&st.video_paused_for_bandwidth, u64::from(changes.pauses));
        if let Some(w) = st.workers.get(self.index) {
            w.bandwidth_wanted_bps
                .store(totals.wanted_bps, Ordering::Relaxed);
            w.bandwidth_allocated_bps
                .store(totals.allocated_bps, Ordering::Relaxed);
        }
    }

    /// A connection's periodic stats: RTT, loss by direction, the egress bandwidth estimate
    /// (not while `estimate_parked`: the estimator of a subscriber with nothing to receive
    /// is held at zero on purpose, see `forward::idle_egress`).
    pub fn peer_stats(&self, publisher_side: bool, estimate_parked: bool, s: &PeerStats) {
        let st = &*self.stats;
        if let Some(rtt) = s.rtt {
            st.peer_rtt.observe(rtt.as_secs_f64());
        }
        if publisher_side {
            if let Some(loss) = s.ingress_loss_fraction {
                st.ingress_loss.observe(loss as f64);
            }
        } else {
            if let Some(loss) = s.egress_loss_fraction {
                st.egress_loss.observe(loss as f64);
            }
            // Only present when str0m's send-side BWE is enabled on the connection.
            if let Some(bwe) = s.bwe_tx.filter(|_| !estimate_parked) {
                // bits/s as str0m states it; bytes/s as Prometheus wants base units.
                st.bandwidth_estimate.observe(bwe.as_f64() / 8.0);
            }
        }
    }

    /// One incoming stream's periodic stats: its interarrival jitter, in seconds.
    pub fn ingress_stats(&self, kind: TrackKind, s: &MediaIngressStats) {
        let clock_rate = match kind {
            TrackKind::Audio => 48_000.0,
            TrackKind::Video => 90_000.0,
        };
        self.stats.jitter.observe(s.jitter as f64 / clock_rate);
    }

    /// One outgoing stream's periodic stats, folded into its connection's tally.
    pub fn egress_stats(&self, tally: &mut EgressTally, s: &MediaEgressStats) {
        let (nacks, resent) = tally.on_egress_stats(s.mid, s.packets, s.nacks);
        SfuStats::add(&self.stats.nacks_received, nacks);
        SfuStats::add(&self.stats.retransmissions_sent, resent);
    }

    /// Recounts the gauges that change only with commands: connections and tracks on this
    /// worker. Called after each command, never on the packet path.
    pub fn update_census(&self, participants: &Slab<Participant>, router: &Router) {
        let Some(w) = self.stats.workers.get(self.index) else {
            return;
        };
        let (mut peers, mut published, mut subscribed) = (0, [0u64; 2], [0u64; 2]);
        for (key, p) in participants {
            peers += p.publisher.is_some() as u64 + p.subscriber.is_some() as u64;
            // A relay proxy's tracks are counted on the worker that receives them.
            for t in p.published.iter().filter(|_| p.remote.is_none()) {
                if let Some(track) = router.track(t.key) {
                    published[kind_index(track.kind)] += 1;
                }
            }
            for (_, d) in router.downtracks_of(PeerKey(key as u32)) {
                if !matches!(d.state, DowntrackState::Closing(_)) {
                    subscribed[kind_index(d.kind)] += 1;
                }
            }
        }
        w.peers.store(peers, Ordering::Relaxed);
        for k in 0..2 {
            w.published_tracks[k].store(published[k], Ordering::Relaxed);
            w.subscribed_tracks[k].store(subscribed[k], Ordering::Relaxed);
        }
    }
}

/// What one subscriber connection sent, to tell retransmissions from originals.
///
/// str0m counts packets per outgoing stream *including* RTX resends but does not expose the
/// resends alone; it reports the total in `MediaEgressStats` every stats interval. Resends
/// are that total minus the originals we wrote. Originals still queued in str0m when the stats
/// were taken make the difference briefly too small, so only increases are reported.
#[derive(Debug, Default)]
pub struct EgressTally {
    /// Original packets written to this connection's streams.
    pub written: u64,
    /// Latest str0m totals per stream: (mid, packets incl. resends, NACKs received).
    streams: Vec<(Mid, u64, u64)>,
    resent_reported: u64,
    nacks_reported: u64,
}

impl EgressTally {
    /// Takes one stream's egress stats; returns (new NACKs, new retransmissions).
    pub fn on_egress_stats(&mut self, mid: Mid, packets: u64, nacks: u64) -> (u64, u64) {
        match self.streams.iter_mut().find(|s| s.0 == mid) {
            Some(s) => {
                s.1 = s.1.max(packets);
                s.2 = s.2.max(nacks);
            }
            None => self.streams.push((mid, packets, nacks)),
        }
        let total_packets: u64 = self.streams.iter().map(|s| s.1).sum();
        let total_nacks: u64 = self.streams.iter().map(|s| s.2).sum();
        let resent = total_packets.saturating_sub(self.written);
        let new_resent = resent.saturating_sub(self.resent_reported);
        self.resent_reported = self.resent_reported.max(resent);
        let new_nacks = total_nacks.saturating_sub(self.nacks_reported);
        self.nacks_reported = self.nacks_reported.max(total_nacks);
        (new_nacks, new_resent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_sent_early_are_charged_their_own_wait_once() {
        let stats = Arc::new(SfuStats::new(1));
        let mut m = WorkerMeter::new(stats.clone(), 0);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Two batches: 3 copies from the first, 2 from the second.
        m.batch_received(t0);
        for _ in 0..3 {
            m.rtp_forwarded(TrackKind::Video, 100);
        }
        m.batch_received(t0 + ms(1));
        for _ in 0..2 {
            m.rtp_forwarded(TrackKind::Video, 100);
        }
        // 4 leave 200 us after the first batch (oldest first), the last one at the flush.
        m.sent_early(t0 + Duration::from_micros(200), 4);
        m.flushed(t0 + ms(40));
        let h = stats.forwarding_latency.snapshot().cumulative();
        let at_most = |s: f64| h.iter().find(|(b, _)| *b >= s).map(|(_, c)| *c);
        assert_eq!(
            h.last().map(|(_, c)| *c),
            Some(5),
            "every copy counted once"
        );
        assert_eq!(at_most(0.00025), Some(4), "four waited 200 us or less");
        assert_eq!(at_most(0.01), Some(4), "the fifth waited 39 ms");
    }

    #[test]
    fn resends_are_packets_beyond_the_originals() {
        let mut t = EgressTally::default();
        let (a, v) = (Mid::from("0"), Mid::from("1"));
        t.written = 100;
        // Two streams, 100 originals between them, 3 of them resent.
        assert_eq!(t.on_egress_stats(a, 40, 0), (0, 0));
        assert_eq!(t.on_egress_stats(v, 63, 2), (2, 3));
        // Originals written but not yet sent when stats were taken: no negative resends.
        t.written = 150;
        assert_eq!(t.on_egress_stats(v, 100, 2), (0, 0));
        assert_eq!(t.on_egress_stats(a, 55, 2), (2, 2));
    }

    #[test]
    fn a_parked_subscriber_adds_no_estimate_sample() {
        use str0m::bwe::Bitrate;
        let stats = Arc::new(SfuStats::new(1));
        let meter = WorkerMeter::new(stats.clone(), 0);
        let sample = |bps| PeerStats {
            peer_bytes_rx: 0,
            peer_bytes_tx: 0,
            bytes_rx: 0,
            bytes_tx: 0,
            timestamp: Instant::now(),
            bwe_tx: Some(Bitrate::bps(bps)),
            egress_loss_fraction: None,
            ingress_loss_fraction: None,
            rtt: None,
            selected_candidate_pair: None,
        };
        meter.peer_stats(false, false, &sample(800_000));
        assert_eq!(stats.bandwidth_estimate.snapshot().count(), 1);
        // Parked: its estimator sits at zero on purpose.
        meter.peer_stats(false, true, &sample(0));
        assert_eq!(stats.bandwidth_estimate.snapshot().count(), 1);
        meter.peer_stats(false, false, &sample(600_000));
        assert_eq!(stats.bandwidth_estimate.snapshot().count(), 2);
        // A publisher connection's estimate is never a subscriber's.
        meter.peer_stats(true, false, &sample(600_000));
        assert_eq!(stats.bandwidth_estimate.snapshot().count(), 2);
    }
}
