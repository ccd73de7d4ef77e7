//! What str0m's pacer still holds for a subscriber when its link collapses is worth nothing
//! and is in the way: str0m paces a video stream at its raw estimate and sends its queue in
//! order, so the lower layer's keyframe that the cut asks for waits behind the old layer's
//! backlog, which drains at the collapsed rate. Measured on the shaped browser link (2 Mbit/s
//! to 250 kbit/s): 28–47 kB queued at the switch, and the first lower-layer frame decoded
//! 1.7–2.5 s after the drop. A queued packet cannot be taken back, so the cut lets it go at
//! once: the connection's backlogged video streams are unpaced, and the link drops what it
//! cannot carry (as it would behind an SFU without a pacer, mediasoup's way). Each stream is
//! paced again at the keyframe it starts over at, or at a frame start with its queue empty;
//! the keyframe then leaves paced, behind at most the link's own queue.

use super::*;

/// Queued video this long at str0m's raw estimate, at a cut, is flushed; less drains soon
/// enough by itself (a frame interval or two).
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(150);
/// A collapse cuts two or three times in a row (`downlink_monitor` halves the cap on its
/// first samples); once a video started over at the lower layer, its queue holds that
/// layer's keyframe and is not flushed for this long.
pub(super) const KEEP_NEW_LAYER: Duration = Duration::from_secs(1);

/// Whether `queued` bytes would take more than [`FLUSH_AFTER`] at `raw_bps` (and are more
/// than a small layer's keyframe, which must not be let go for a dip of the estimate).
fn stale(queued: usize, raw_bps: u64) -> bool {
    let drains_in_time = (raw_bps as f64 / 8.0 * FLUSH_AFTER.as_secs_f64()) as usize;
    queued > drains_in_time.max(egress_backlog::MIN_LIMIT_BYTES)
}

impl Worker {
    /// The allocator just cut `peer` (its budget fell): unpace its video streams whose
    /// queue would take more than [`FLUSH_AFTER`] at the raw estimate `raw_bps`.
    pub(super) fn flush_stale_video(&mut self, peer: PeerKey, raw_bps: u64, now: Instant) {
        let mids = self.video_mids_of(peer);
        let Some(c) = self.subscriber_conn(peer) else {
            return;
        };
        if c.video_started_over_at
            .is_some_and(|t| now.saturating_duration_since(t) < KEEP_NEW_LAYER)
        {
            return;
        }
        let mut flushed = 0;
        let mut api = c.rtc.direct_api();
        for mid in mids {
            if c.unpaced_video.contains(&mid) {
                continue;
            }
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            let queued = tx.queue_info().map_or(0, |q| q.byte_size());
            if !stale(queued, raw_bps) {
                continue;
            }
            debug!(
                peer = peer.0,
                %mid,
                queued,
                raw_bps,
                "cut: the old layer's queue is let go unpaced"
            );
            tx.set_unpaced(true);
            c.unpaced_video.push(mid);
            flushed += 1;
        }
        for _ in 0..flushed {
            self.meter.stale_queue_flushed();
        }
    }

    /// The active video m-lines `peer` receives on (downtracks and viewer slots).
    pub(super) fn video_mids_of(&self, peer: PeerKey) -> Vec<Mid> {
        let Some(p) = self.participants.get(peer.0 as usize) else {
            return Vec::new();
        };
        let mut mids: Vec<Mid> = Vec::new();
        let slots = p
            .viewer_slots
            .iter()
            .filter_map(|k| self.router.downtrack(*k).map(|d| (*k, d)));
        for (_, d) in self.router.downtracks_of(peer).into_iter().chain(slots) {
            if d.kind != TrackKind::Video {
                continue;
            }
            // A viewer slot may also be listed among the downtracks.
            if let DowntrackState::Active { mid, .. } = d.state {
                if !mids.contains(&mid) {
                    mids.push(mid);
                }
            }
        }
        mids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_stale_when_the_collapsed_rate_needs_more_than_a_few_frames_for_it() {
        // Measured at the shaped drop to 250 kbit/s: 28 kB queued, raw estimate 450 kbit/s
        // and falling (half a second to drain at best).
        assert!(stale(28_000, 450_000));
        // The same queue on an open link is a keyframe on its way.
        assert!(!stale(28_000, 2_500_000));
        // A 180p keyframe is never let go, however low the estimate.
        assert!(!stale(5_000, 100_000));
        // Nothing queued, nothing to let go; no estimate, everything is late.
        assert!(!stale(0, 0));
        assert!(stale(10_000, 0));
    }
}
