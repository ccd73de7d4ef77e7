//! A subscriber connection's first seconds, before its estimate means anything. str0m paces
//! video at 1.1× its estimate, and that estimate starts at a guess
//! (`INITIAL_SUBSCRIBER_ESTIMATE`, 500 kbit/s) that its probes take 1–1.5 s to leave. A video
//! the allocator lets flow above the guess meanwhile (a single-layer camera, which it sends
//! rather than pause at the start, `downtrack_layers::apply_budget`) waited in the pacer: the
//! load test's 1 → 50 video had a p99 end-to-end latency of 844 ms where mediasoup, which does
//! not pace, had 15 ms (BENCHMARKS.md, "why Zvon's video stalled"). So a subscriber
//! connection's video leaves unpaced, as audio always does, until [`UNPACED_START`] after the
//! connection was made; from a frame start after that it is paced again (the stream is kept
//! in `Connection::unpaced_video`, whose re-pacing `edge/worker/stale_queue.rs` describes).
//! A link that cannot carry what is sent then drops it instead of queueing it here, as
//! behind mediasoup; the allocator's start (the lowest layer at the guess) bounds how much.

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::connection::Connection;
use super::rtx_window::{RTX_CACHE_PACKETS, RTX_RATIO_CAP};

/// How long after a subscriber connection is made its video is sent unpaced: the time str0m
/// took here to probe its estimate up from the guess on an open link (1–1.5 s), plus the
/// answer → connected time (0.15–0.6 s).
pub const UNPACED_START: Duration = Duration::from_millis(2500);

impl Connection {
    /// Sets up the send stream of an m-line that starts forwarding at `now`: its
    /// retransmission cache, and for a video in the connection's first seconds no pacing.
    pub fn start_send_stream(&mut self, mid: Mid, video: bool, now: Instant) {
        let age = self.rtx_window.age();
        let unpaced = video && !self.pacing_settled(now);
        self.sends_video |= video;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        // Answer NACKs for as long as this subscriber's RTT needs (at most 1.5 s), not
        // str0m's default 3 s: the cache is per subscriber and dominates its memory
        // (`edge::rtx_window`).
        tx.set_rtx_cache(RTX_CACHE_PACKETS, age, Some(RTX_RATIO_CAP));
        if unpaced {
            tx.set_unpaced(true);
            if !self.unpaced_video.contains(&mid) {
                self.unpaced_video.push(mid);
            }
        }
    }

    /// Whether the connection is past its unpaced start: a video unpaced for it (or by a
    /// cut) may be paced again.
    pub fn pacing_settled(&self, now: Instant) -> bool {
        now >= self.paced_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::{Direction, MediaKind};
    use str0m::Rtc;

    /// A subscriber connection with one sending video m-line, negotiated with a str0m client.
    fn subscriber_with_video(now: Instant) -> (Connection, Mid) {
        let candidate = "127.0.0.1:50000".parse().expect("address");
        let mut conn = Connection::new_subscriber(candidate, None, now).expect("connection");
        let mut api = conn.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let mut client = Rtc::new(now);
        let answer = client.sdp_api().accept_offer(offer).expect("an answer");
        conn.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accepted");
        (conn, mid)
    }

    #[test]
    fn video_starting_in_the_first_seconds_leaves_unpaced_until_the_estimate_can_be_trusted() {
        let t0 = Instant::now();
        let (mut conn, mid) = subscriber_with_video(t0);
        conn.start_send_stream(mid, true, t0 + Duration::from_millis(300));
        assert_eq!(
            conn.unpaced_video,
            [mid],
            "unpaced, to be paced again later"
        );
        assert!(conn.sends_video, "its pacer steps are never deferred");
        assert!(!conn.pacing_settled(t0 + UNPACED_START - Duration::from_millis(1)));
        assert!(conn.pacing_settled(t0 + UNPACED_START));
    }

    #[test]
    fn video_starting_later_and_audio_are_paced_as_str0m_does() {
        let t0 = Instant::now();
        let (mut conn, mid) = subscriber_with_video(t0);
        conn.start_send_stream(mid, false, t0);
        assert!(conn.unpaced_video.is_empty(), "audio is str0m's business");
        assert!(
            !conn.sends_video,
            "audio alone may defer its pacer's empty steps"
        );
        conn.start_send_stream(mid, true, t0 + UNPACED_START);
        assert!(
            conn.unpaced_video.is_empty(),
            "the estimate has had its time"
        );
        // A publisher connection estimates nothing: nothing to wait for.
        let candidate = "127.0.0.1:50000".parse().expect("address");
        let publisher = Connection::new(candidate, None, t0).expect("connection");
        assert!(publisher.pacing_settled(t0));
    }
}
