//! Asking a publisher for a keyframe right away, for the layer a subscriber would get
//! (a connection that just came up, a viewer switched to another source).

use std::time::Instant;

use super::{KeyframeRequest, Track};
use crate::forward::layer_selector::Want;

impl Track {
    /// A keyframe request, sent at once, for the layer a subscriber wanting `want` would get
    /// (`None` when no layer of a simulcast track fits). It still passes the throttle, so
    /// requests right after it wait as usual.
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
        let _ = throttle.should_send(now);
        Some(KeyframeRequest {
            publisher: self.publisher,
            mid: self.publisher_mid,
            layer,
        })
    }
}
