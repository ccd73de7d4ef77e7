//! Dynacast: which simulcast layers of a track anybody needs, so that the publisher can stop
//! encoding and sending the others (CPU and uplink saved where nobody watches large).
//!
//! The lowest layer always stays on: a subscriber joining gets video at once, without a
//! round trip to the publisher, and it costs 1/16 of the pixels.
//!
//! A layer is needed when some subscriber's wish, capped by its bandwidth, picks it among
//! all layers the publisher could send (not only those flowing now: a stopped layer must be
//! asked back). Turning a layer on is reported at once; turning it off only after it was
//! unneeded for [`OFF_DELAY`], so a subscriber resizing back and forth does not make the
//! publisher restart an encoder each time.

use std::time::{Duration, Instant};

use super::layer_selector::{Layer, MAX_LAYERS};

pub const OFF_DELAY: Duration = Duration::from_secs(3);

/// One track's reported demand.
#[derive(Debug, Clone)]
pub struct LayerDemand {
    /// What the publisher was last told; everything is on at first.
    reported: [bool; MAX_LAYERS],
    /// Since when each reported-on layer has not been needed.
    unneeded_since: [Option<Instant>; MAX_LAYERS],
}

impl Default for LayerDemand {
    fn default() -> Self {
        LayerDemand {
            reported: [true; MAX_LAYERS],
            unneeded_since: [None; MAX_LAYERS],
        }
    }
}

impl LayerDemand {
    /// `needed` is the set of layers some subscriber would receive now. Returns the new
    /// on/off set for the publisher when it changed.
    pub fn update(
        &mut self,
        needed: [bool; MAX_LAYERS],
        count: Layer,
        now: Instant,
    ) -> Option<[bool; MAX_LAYERS]> {
        let mut next = self.reported;
        for l in 0..usize::from(count).min(MAX_LAYERS) {
            if needed[l] || l == 0 {
                self.unneeded_since[l] = None;
                next[l] = true;
            } else if self.reported[l] {
                let since = *self.unneeded_since[l].get_or_insert(now);
                if now.saturating_duration_since(since) >= OFF_DELAY {
                    next[l] = false;
                    self.unneeded_since[l] = None;
                }
            }
        }
        (next != self.reported).then(|| {
            self.reported = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_at_once_off_after_a_delay() {
        let t0 = Instant::now();
        let mut d = LayerDemand::default();
        // Only the low layer is watched: the others go off, but not before the delay.
        assert_eq!(d.update([true, false, false], 3, t0), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(d.update([true, false, false], 3, t1), None);
        let t2 = t0 + OFF_DELAY;
        assert_eq!(
            d.update([true, false, false], 3, t2),
            Some([true, false, false])
        );
        assert_eq!(d.update([true, false, false], 3, t2), None, "only changes");
        // Someone enlarges a video: the top layer comes back immediately.
        assert_eq!(
            d.update([true, false, true], 3, t2 + Duration::from_millis(1)),
            Some([true, false, true])
        );
    }

    #[test]
    fn a_layer_needed_again_within_the_delay_never_goes_off() {
        let t0 = Instant::now();
        let mut d = LayerDemand::default();
        assert_eq!(d.update([true, true, false], 3, t0), None);
        assert_eq!(
            d.update([true, true, true], 3, t0 + Duration::from_secs(2)),
            None
        );
        assert_eq!(
            d.update([true, true, false], 3, t0 + Duration::from_secs(4)),
            None
        );
        assert_eq!(
            d.update([true, true, false], 3, t0 + Duration::from_secs(7)),
            Some([true, true, false])
        );
    }

    #[test]
    fn nobody_watching_leaves_only_the_lowest_layer() {
        let t0 = Instant::now();
        let mut d = LayerDemand::default();
        d.update([false; MAX_LAYERS], 3, t0);
        assert_eq!(
            d.update([false; MAX_LAYERS], 3, t0 + OFF_DELAY),
            Some([true, false, false])
        );
    }
}
