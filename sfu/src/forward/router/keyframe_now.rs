//! Asking a publisher for a keyframe right away, for the layer a subscriber would get
//! (a connection that just came up, a viewer switched to another source), unless the
//! publisher would drop it: then at the first packet its window allows.

use std::time::Instant;

use super::{KeyframeRequest, Track};
use crate::forward::layer_selector::Want;

impl Track {
    /// A keyframe request, sent at once, for the layer a subscriber wanting `want` would get
    /// (`None` when no layer of a simulcast track fits). It passes the throttle, so requests
    /// right after it wait as usual; but not the publisher's own window
    /// ([`super::super::keyframe_requests::PUBLISHER_KEYFRAME_GAP`]): inside it the request
    /// is left to the subscriber's next packet (simulcast), with the throttle rearmed so that
    /// one goes out as soon as the window is over.
    pub(in crate::forward) fn keyframe_request_now(
        &mut self,
        want: Want,
        now: Instant,
    ) -> Option<KeyframeRequest> {
        let layer = if self.layers.is_simulcast() {
            Some(self.layers.choose(want, now)?)
        } else {
            None
        };
        let throttle = match layer {
            Some(l) => &mut self.layer_throttles[usize::from(l)],
            None => &mut self.keyframe_throttle,
        };
        // A simulcast subscriber's pending switch asks again at every packet; a plain track
        // asks only at its resume, so its request goes out regardless.
        if layer.is_some() && !self.publisher_guard.ready(now) {
            throttle.rearm();
            return None;
        }
        let _ = throttle.should_send(now);
        self.publisher_guard.sent(now);
        Some(KeyframeRequest {
            publisher: self.publisher,
            mid: self.publisher_mid,
            layer,
        })
    }
}
