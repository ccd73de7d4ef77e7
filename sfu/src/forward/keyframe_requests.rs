//! Collapses keyframe requests from many subscribers into few requests to the publisher.
//!
//! Every subscriber that loses a frame asks for a keyframe; a publisher that obeyed each
//! request would send nothing but keyframes in a big room. Within one interval only the
//! first request goes upstream; a FIR (a decoder that must restart) is never weakened to a
//! PLI.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeRequestThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
}

impl KeyframeRequestThrottle {
    pub fn new(interval: Duration) -> Self {
        KeyframeRequestThrottle {
            interval,
            last_sent: None,
        }
    }

    /// Forgets the last request: the next one is sent whenever it comes (one that was held
    /// back rather than sent must not wait out a whole interval).
    pub fn rearm(&mut self) {
        self.last_sent = None;
    }

    /// True when a request arriving at `now` should be sent upstream.
    pub fn should_send(&mut self, now: Instant) -> bool {
        let due = match self.last_sent {
            None => true,
            Some(t) => now.saturating_duration_since(t) >= self.interval,
        };
        if due {
            self.last_sent = Some(now);
        }
        due
    }
}

/// A WebRTC publisher (libwebrtc: `EncoderRtcpFeedback`, `kMinKeyframeSendIntervalMs`) obeys
/// at most one keyframe request per 300 ms per video sender, whatever layer it names; a
/// later one is dropped without a trace. A request for another layer (a new subscriber's
/// layer known a moment after the first request went out) sent inside that window cost a
/// whole throttle interval before its retry: the slow half of the first-frame benchmark.
/// Such a request is held back until the window is over; a keyframe answering the earlier
/// request (libvpx encodes one on every layer) may make it unnecessary by then.
pub const PUBLISHER_KEYFRAME_GAP: Duration = Duration::from_millis(320);

/// When the last keyframe request went to one publisher's track, any layer.
#[derive(Debug, Clone, Default)]
pub struct PublisherKeyframeGuard {
    last_sent: Option<Instant>,
}

impl PublisherKeyframeGuard {
    /// True when a request sent at `now` would not be dropped by the publisher.
    pub fn ready(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= PUBLISHER_KEYFRAME_GAP)
    }

    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequestThrottle::new(Duration::from_millis(500));
        assert!(k.should_send(t0));
        assert!(!k.should_send(t0 + Duration::from_millis(1)));
        assert!(!k.should_send(t0 + Duration::from_millis(499)));
        assert!(k.should_send(t0 + Duration::from_millis(500)));
        assert!(!k.should_send(t0 + Duration::from_millis(900)));
        assert!(k.should_send(t0 + Duration::from_millis(1000)));
    }
}
