//! The driver's side of `edge::rtx_window`: a subscriber connection's RTT resizes the
//! retransmission caches of its video streams.

use super::*;

impl Worker {
    /// A subscriber connection's RTT sample (every stats interval, once receiver reports
    /// came): when its window changes, every video stream it sends gets a new cache of that
    /// age. str0m drops the old cache's packets with it, which is why the window moves
    /// rarely.
    pub(super) fn subscriber_rtt(&mut self, peer: PeerKey, rtt: Duration) {
        let Some(p) = self.participants.get_mut(peer.0 as usize) else {
            return;
        };
        let Some(age) = p.subscriber.as_mut().and_then(|c| c.rtx_window.on_rtt(rtt)) else {
            return;
        };
        let mids = self.video_mids_of(peer);
        let Some(c) = self.subscriber_conn(peer) else {
            return;
        };
        debug!(
            peer = peer.0,
            rtt_ms = rtt.as_millis() as u64,
            age_ms = age.as_millis() as u64,
            streams = mids.len(),
            "retransmission cache resized"
        );
        let mut api = c.rtc.direct_api();
        for mid in mids {
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                tx.set_rtx_cache(RTX_CACHE_PACKETS, age, Some(RTX_RATIO_CAP));
            }
        }
    }
}
