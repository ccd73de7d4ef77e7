//! The driver's side of bandwidth allocation: str0m's estimates and stats of each subscriber
//! connection go to the router, and what the router wants comes back as probe targets,
//! estimator restarts and "video paused" notices.

use super::*;

impl Worker {
    /// `peer`'s subscriber connection, if it has one.
    pub(super) fn subscriber_conn(&mut self, peer: PeerKey) -> Option<&mut Connection> {
        self.participants
            .get_mut(peer.0 as usize)
            .and_then(|p| p.subscriber.as_deref_mut())
    }

    /// Bandwidth allocation: re-divides each subscriber's estimate (a few times a second),
    /// points its estimator at what it wants, and tells clients about paused videos.
    pub(super) fn report_bandwidth(&mut self, now: Instant) {
        let wanted = self.router.reallocate(now);
        if wanted.is_empty() {
            return;
        }
        for (peer, bps, estimate, paused) in wanted {
            self.set_probe_target(peer, bps, Some((estimate, paused)), now);
        }
        for p in self.router.take_bandwidth_pauses() {
            let (Some(s), Some(track_id)) = (
                self.participants.get(p.subscriber.0 as usize),
                self.track_ids.get(&p.track),
            ) else {
                continue;
            };
            debug!(
                subscriber = p.subscriber.0,
                paused = p.paused,
                estimate = self.router.egress_estimate(p.subscriber),
                "video paused for bandwidth"
            );
            let _ = self.events.send(SfuEvent::VideoPausedForBandwidth {
                participant: s.id.clone(),
                track_id: track_id.clone(),
                paused: p.paused,
            });
        }
        self.meter.bandwidth(
            self.router.bandwidth_totals(),
            self.router.take_budget_changes(),
        );
    }

    /// Probe towards what the subscriber wants, so that layers cut or never started for
    /// lack of bandwidth come back once the link carries them. str0m sends an allocation
    /// probe only when the desired rate *rises* above its estimate; a subscriber paused or
    /// held low wants the same rate for minutes, and with only audio flowing its estimate
    /// creeps up at ~1.5x what it carries. So while the estimate (when known) is short of
    /// the wish, the desired rate is raised a little every [`PROBE_NUDGE_INTERVAL`]: each
    /// nudge is a probe (at most twice the estimate, str0m's cap), and a link that came
    /// back is found in a few seconds instead of tens.
    pub(super) fn set_probe_target(
        &mut self,
        peer: PeerKey,
        wanted_bps: u64,
        estimate: Option<(u64, bool)>,
        now: Instant,
    ) {
        let estimate_bps = estimate.map(|(e, _)| e);
        let Some(c) = self.subscriber_conn(peer) else {
            return;
        };
        // Parked (nothing to send): no probes either.
        if c.idle.is_parked() {
            return;
        }
        let mut desired = wanted_bps.max(MIN_PROBE_TARGET_BPS);
        // After heavy loss str0m's probe controller stops probing while its loss-based
        // state is "loss limited" (`ProbeControl::can_probe`), and a subscriber whose video
        // is paused carries too little traffic for that state to end soon: its estimate
        // can sit at the audio rate for tens of seconds after the link came back. While a
        // video is paused, an estimate that has not grown by a fifth in
        // ESTIMATE_STUCK_RESET restarts the estimator from where it is, which probes at 3x
        // and 6x of it (short bursts of a few packets; only while paused, so a link that
        // carries some video is never probed this hard).
        if let Some((e, paused)) = estimate {
            c.estimate_stuck_since = match c.estimate_stuck_since {
                _ if e >= desired || !paused => None,
                Some((_, at)) if e > at + at / 5 => Some((now, e)),
                Some((t, _)) if now.saturating_duration_since(t) >= ESTIMATE_STUCK_RESET => {
                    c.rtc
                        .bwe()
                        .reset(Bitrate::bps(e.max(MIN_PROBE_TARGET_BPS / 2)));
                    Some((now, e))
                }
                None => Some((now, e)),
                kept => kept,
            };
        }
        if estimate_bps.is_some_and(|e| e < desired)
            && c.probe_nudged_at
                .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_NUDGE_INTERVAL)
        {
            c.probe_nudged_at = Some(now);
            desired += desired / 50;
        }
        c.rtc
            .bwe()
            .set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
    }

    /// A subscriber connection's own feedback, every stats interval: a drowning link is cut
    /// at once (str0m's estimate events are a 3 s average), and an estimate stuck short of
    /// the wish on a clean link is restarted so that str0m probes again (see
    /// `forward::downlink_monitor`).
    pub(super) fn downlink_feedback(
        &mut self,
        peer: PeerKey,
        s: &str0m::stats::PeerStats,
        now: Instant,
    ) {
        let sample = DownlinkSample {
            estimate_bps: s.bwe_tx.map(|b| b.as_u64()),
            loss: s.egress_loss_fraction,
            rtt: s.rtt,
            bytes_sent: s.peer_bytes_tx,
        };
        debug!(
            peer = peer.0,
            raw = sample.estimate_bps,
            loss = sample.loss,
            rtt_ms = sample.rtt.map(|r| r.as_millis() as u64),
            "subscriber feedback"
        );
        // Nothing sent for a while: str0m's estimator is parked at zero so that it does not
        // pad, and what it reports means nothing until media resumes it (`idle_egress`).
        let allocated_on = self.router.egress_estimate(peer);
        let paused = self.router.paused_for_bandwidth(peer);
        if let Some(c) = self.subscriber_conn(peer) {
            if let Some(raw) = sample.estimate_bps {
                c.idle.on_raw_estimate(raw);
            }
            if c.idle.tick(now, allocated_on, paused) {
                debug!(peer = peer.0, "subscriber receives nothing: padding parked");
                c.rtc.bwe().reset(Bitrate::ZERO);
                c.rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::ZERO);
            }
            if c.idle.is_parked() {
                return;
            }
        }
        let before = self.router.egress_estimate(peer);
        let restart = self.router.downlink_sample(peer, sample, now);
        let allocated_on = self.router.egress_estimate(peer);
        if let (Some(b), Some(a), Some(raw)) = (before, allocated_on, sample.estimate_bps) {
            if a < b {
                self.flush_stale_video(peer, raw, now);
            }
        }
        if let Some(c) = self.subscriber_conn(peer) {
            c.egress_limit_bytes = egress_backlog::limit_bytes(allocated_on);
        }
        let Some(from) = restart else {
            return;
        };
        if let Some(c) = self.subscriber_conn(peer) {
            debug!(
                peer = peer.0,
                from, "subscriber estimate short on a clean link: restarting the estimator"
            );
            c.rtc
                .bwe()
                .reset(Bitrate::bps(from.max(MIN_PROBE_TARGET_BPS / 2)));
        }
    }
}
