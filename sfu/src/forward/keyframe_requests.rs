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
