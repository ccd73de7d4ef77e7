//! Simulcast: which layer of a track each subscriber receives, and when it may change.
//!
//! A simulcast publisher sends the same video several times at different sizes (layers,
//! lowest first). Each subscriber receives one layer: the smallest that covers the size it
//! renders the video at. A decoder can only start on a keyframe, so a subscriber keeps
//! receiving its current layer until the first packet of a keyframe of the target layer
//! arrives, and only then switches; meanwhile the publisher is asked for that keyframe.
//! [`TrackLayers`] is the publisher side (which layers flow, and their sizes);
//! [`LayerSelector`] is one subscriber's side.

use std::time::{Duration, Instant};

use super::keyframe::KeyframeStart;
use super::layer_rate::LayerRates;

/// A simulcast layer index, 0 = lowest resolution.
pub type Layer = u8;

/// Layers a track may have (rids q, h, f in the browser client).
pub const MAX_LAYERS: usize = 3;

/// A layer without a packet for this long is taken as stopped by the publisher (its
/// encoder drops top layers when bandwidth or CPU run short).
const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// A layer not seen yet counts as coming for this long after the track's first packet: the
/// layers of one frame arrive within a few packets of each other, so one missing after this
/// is not being sent (its encoder is off until the publisher's bandwidth estimate allows it,
/// or dynacast stopped it). Waiting longer for it kept a subscriber that joined right after
/// the publisher without a picture until [`LAYER_TIMEOUT`] ran out: a keyframe request for a
/// layer that does not flow goes nowhere.
const STARTUP_GRACE: Duration = Duration::from_millis(200);

/// Assumed size of the top layer until a keyframe tells the real one.
const NOMINAL_TOP: (u16, u16) = (1280, 720);

/// What a subscriber wants of one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing: the video is hidden or disabled.
    Paused,
    /// The best layer there is; for subscribers that never reported a size.
    Highest,
    /// Rendered at this size in device pixels: the smallest layer covering it.
    Size { width: u16, height: u16 },
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerStatus {
    last_packet: Option<Instant>,
    /// From the last keyframe; 0x0 until one was seen (or for codecs that do not tell).
    width: u16,
    height: u16,
}

/// The publisher's side of a simulcast track.
#[derive(Debug, Clone)]
pub struct TrackLayers {
    count: u8,
    layers: [LayerStatus; MAX_LAYERS],
    /// The track's first packet: layers not seen yet count as coming for a while after it,
    /// since the layers of one frame arrive one after the other.
    first_packet: Option<Instant>,
    /// What each layer costs on the wire, for the allocator (see [`LayerRates`]).
    rates: LayerRates,
}

impl TrackLayers {
    /// `count` is clamped to 1..=[`MAX_LAYERS`]; 1 is a track without simulcast.
    pub fn new(count: usize) -> Self {
        TrackLayers {
            count: count.clamp(1, MAX_LAYERS) as u8,
            layers: [LayerStatus::default(); MAX_LAYERS],
            first_packet: None,
            rates: LayerRates::default(),
        }
    }

    pub fn count(&self) -> u8 {
        self.count
    }

    pub fn is_simulcast(&self) -> bool {
        self.count > 1
    }

    /// Measured bitrate of each layer (0 until a window has passed).
    pub fn bitrates(&self) -> [u64; MAX_LAYERS] {
        self.rates.bitrates()
    }

    pub fn on_packet(
        &mut self,
        layer: Layer,
        keyframe: Option<KeyframeStart>,
        ts: u32,
        payload_len: usize,
        now: Instant,
    ) {
        let Some(status) = self.layers.get_mut(usize::from(layer)) else {
            return;
        };
        // Padding (bandwidth probes) may still arrive on a layer the encoder stopped: only
        // media shows that a layer flows.
        if payload_len == 0 {
            return;
        }
        self.rates
            .on_packet(usize::from(layer), keyframe.is_some(), ts, payload_len, now);
        status.last_packet = Some(now);
        self.first_packet.get_or_insert(now);
        if let Some(k) = keyframe.filter(|k| k.width > 0 && k.height > 0) {
            status.width = k.width;
            status.height = k.height;
        }
    }

    /// The highest layer whose packets arrived within the last second (a recording takes
    /// the best picture the publisher sends).
    pub fn top_flowing(&self, now: Instant) -> Option<Layer> {
        (0..self.count).rev().find(|l| self.flowing(*l, now))
    }

    /// Whether packets of `layer` arrived within the last second.
    pub fn flowing(&self, layer: Layer, now: Instant) -> bool {
        self.layers
            .get(usize::from(layer))
            .and_then(|l| l.last_packet)
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
    }

    /// Flowing, or not seen yet while the track is starting.
    fn is_active(&self, layer: Layer, now: Instant) -> bool {
        let within = |t: Instant, d: Duration| now.saturating_duration_since(t) < d;
        match self.layers[usize::from(layer)].last_packet {
            Some(t) => within(t, LAYER_TIMEOUT),
            None => self.first_packet.is_some_and(|t| within(t, STARTUP_GRACE)),
        }
    }

    /// The layer's size as last seen, else estimated from a known layer (each layer
    /// doubles the one below), else from the nominal top layer.
    fn size(&self, layer: Layer) -> (u32, u32) {
        let own = self.layers[usize::from(layer)];
        if own.width > 0 {
            return (u32::from(own.width), u32::from(own.height));
        }
        let (known, w, h) = (0..self.count)
            .find_map(|l| {
                let s = self.layers[usize::from(l)];
                (s.width > 0).then_some((l, s.width, s.height))
            })
            .unwrap_or((self.count - 1, NOMINAL_TOP.0, NOMINAL_TOP.1));
        let scale = |v: u16| {
            if layer >= known {
                u32::from(v) << (layer - known)
            } else {
                u32::from(v) >> (known - layer)
            }
        };
        (scale(w), scale(h))
    }

    /// The layer a subscriber wanting `want` should receive, among the layers that flow
    /// (all of them before any packet arrived); `None` when paused.
    pub fn choose(&self, want: Want, now: Instant) -> Option<Layer> {
        self.choose_at_most(want, Layer::MAX, now)
    }

    /// [`TrackLayers::choose`] among layers up to `max` (the bandwidth allocator's cap).
    pub fn choose_at_most(&self, want: Want, max: Layer, now: Instant) -> Option<Layer> {
        self.pick(want, max, Some(now))
    }

    /// The layer `want` would pick if every layer flowed: what to ask the publisher for.
    pub fn choose_among_all(&self, want: Want, max: Layer) -> Option<Layer> {
        self.pick(want, max, None)
    }

    /// Among layers up to `max` that flow at `now` (all of them when `now` is `None`).
    fn pick(&self, want: Want, max: Layer, now: Option<Instant>) -> Option<Layer> {
        let top = (self.count - 1).min(max);
        // What it should get if every layer flowed.
        let ideal = match want {
            Want::Paused => return None,
            Want::Highest => top,
            Want::Size { width, height } => (0..=top)
                .find(|l| {
                    let (w, h) = self.size(*l);
                    w >= u32::from(width) && h >= u32::from(height)
                })
                .unwrap_or(top),
        };
        let Some(now) = now else {
            return Some(ideal);
        };
        let active = |l: Layer| self.is_active(l, now);
        if active(ideal) || !(0..self.count).any(active) {
            return Some(ideal);
        }
        // The ideal layer does not flow (stopped by the encoder, or by dynacast until it
        // hears of this subscriber): rather a smaller layer for a moment than a larger one,
        // which would cost a second switch and bandwidth nobody asked for.
        (0..ideal)
            .rev()
            .find(|l| active(*l))
            .or_else(|| (ideal + 1..=top).find(|l| active(*l)))
    }
}

/// One subscriber's layer of one track.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    current: Option<Layer>,
    target: Option<Layer>,
}

/// What to do with a packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Forward,
    /// Forward: it starts a keyframe of the target layer, which is current from now on.
    /// The rewriter must continue the stream from here rather than from this source's
    /// last packet, which may be long ago or never.
    SwitchAndForward,
}

impl LayerSelector {
    /// What the subscriber should be receiving; `None` pauses at once.
    pub fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Stop forwarding until the next keyframe of the target layer (the subscriber's send
    /// queue is backlogged: what it already has is stale).
    pub fn resync(&mut self) {
        self.current = None;
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer a keyframe is awaited on, while a switch is pending.
    pub fn pending_switch(&self) -> Option<Layer> {
        self.target.filter(|t| self.current != Some(*t))
    }

    /// `keyframe`: the packet is the first one of a keyframe of `layer`.
    pub fn on_packet(&mut self, layer: Layer, keyframe: bool) -> Verdict {
        match self.target {
            None => Verdict::Drop,
            Some(t) if layer == t && self.current != Some(t) && keyframe => {
                self.current = Some(t);
                Verdict::SwitchAndForward
            }
            _ if self.current == Some(layer) => Verdict::Forward,
            _ => Verdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_320: KeyframeStart = KeyframeStart {
        width: 320,
        height: 180,
    };

    fn flowing(count: usize, now: Instant) -> TrackLayers {
        let mut t = TrackLayers::new(count);
        for l in 0..count as u8 {
            t.on_packet(l, None, 0, 1000, now);
        }
        t
    }

    #[test]
    fn smallest_layer_covering_the_rendered_size() {
        let now = Instant::now();
        let t = flowing(3, now);
        let size = |width, height| Want::Size { width, height };
        // Nominal 320x180, 640x360, 1280x720 until keyframes tell otherwise.
        assert_eq!(t.choose(size(160, 120), now), Some(0));
        assert_eq!(t.choose(size(320, 180), now), Some(0));
        assert_eq!(t.choose(size(321, 180), now), Some(1));
        assert_eq!(t.choose(size(640, 480), now), Some(2));
        assert_eq!(
            t.choose(size(3840, 2160), now),
            Some(2),
            "nothing covers: best"
        );
        assert_eq!(t.choose(Want::Highest, now), Some(2));
        assert_eq!(t.choose(Want::Paused, now), None);
    }

    #[test]
    fn real_sizes_from_keyframes_replace_the_nominal_ones() {
        let now = Instant::now();
        let mut t = flowing(3, now);
        // A 640x480 camera: layers 160x120, 320x240, 640x480. One keyframe of layer 0 tells.
        t.on_packet(
            0,
            Some(KeyframeStart {
                width: 160,
                height: 120,
            }),
            0,
            1000,
            now,
        );
        let want = Want::Size {
            width: 300,
            height: 200,
        };
        assert_eq!(t.choose(want, now), Some(1));
        t.on_packet(1, Some(KEY_320), 0, 1000, now);
        assert_eq!(
            t.choose(want, now),
            Some(2),
            "320x180 does not cover 300x200"
        );
    }

    #[test]
    fn stopped_layers_are_not_chosen() {
        let t0 = Instant::now();
        let mut t = flowing(3, t0);
        let later = t0 + Duration::from_millis(1500);
        // The publisher stopped sending its top layer.
        t.on_packet(0, None, 0, 1000, later);
        t.on_packet(1, None, 0, 1000, later);
        assert_eq!(t.choose(Want::Highest, later), Some(1));
        assert_eq!(
            t.choose(
                Want::Size {
                    width: 1280,
                    height: 720
                },
                later
            ),
            Some(1)
        );
    }

    #[test]
    fn layers_not_seen_yet_count_while_the_track_starts() {
        let t0 = Instant::now();
        let mut t = TrackLayers::new(3);
        // The first frame's layer 0 packet arrives before layers 1 and 2.
        t.on_packet(0, None, 0, 1000, t0);
        assert_eq!(t.choose(Want::Highest, t0), Some(2));
        // The other layers of that frame follow within a few packets.
        let soon = t0 + Duration::from_millis(5);
        t.on_packet(1, None, 0, 1000, soon);
        assert_eq!(t.choose(Want::Highest, soon), Some(2));
        // A moment on, layer 2 never came: the publisher sends two layers only (for now).
        let later = t0 + Duration::from_millis(250);
        t.on_packet(0, None, 0, 1000, later);
        t.on_packet(1, None, 0, 1000, later);
        assert_eq!(t.choose(Want::Highest, later), Some(1));
    }

    #[test]
    fn a_subscriber_joining_a_starting_publisher_gets_what_flows() {
        // The publisher's encoder sends its lowest layer only until its bandwidth estimate
        // grows; a subscriber that wants more arrives half a second after the first packet.
        let t0 = Instant::now();
        let mut t = TrackLayers::new(3);
        let mut now = t0;
        while now < t0 + Duration::from_millis(500) {
            t.on_packet(0, None, 0, 1000, now);
            now += Duration::from_millis(33);
        }
        let want = Want::Size {
            width: 640,
            height: 360,
        };
        assert_eq!(t.choose(want, now), Some(0), "not a layer nobody sends");
        assert_eq!(
            t.choose_among_all(want, Layer::MAX),
            Some(1),
            "still wanted"
        );
        // Layer 1 starts: it is chosen from its first packet on.
        t.on_packet(1, None, 0, 1000, now);
        assert_eq!(t.choose(want, now), Some(1));
    }

    #[test]
    fn padding_does_not_keep_a_stopped_layer_alive() {
        let t0 = Instant::now();
        let mut t = flowing(3, t0);
        let later = t0 + Duration::from_millis(1500);
        t.on_packet(0, None, 0, 1000, later);
        t.on_packet(1, None, 0, 1000, later);
        t.on_packet(2, None, 0, 0, later);
        assert_eq!(t.choose(Want::Highest, later), Some(1));
    }

    #[test]
    fn a_layer_not_flowing_yet_is_awaited_on_a_smaller_one() {
        let t0 = Instant::now();
        let mut t = TrackLayers::new(3);
        // Dynacast stopped the middle layer; a subscriber now wants 640x360.
        let later = t0 + Duration::from_millis(1500);
        for l in [0, 1, 2] {
            t.on_packet(l, None, 0, 1000, t0);
        }
        t.on_packet(0, None, 0, 1000, later);
        t.on_packet(2, None, 0, 1000, later);
        let want = Want::Size {
            width: 640,
            height: 360,
        };
        assert_eq!(t.choose(want, later), Some(0), "not the larger layer 2");
        assert_eq!(t.choose_among_all(want, Layer::MAX), Some(1), "ask for 1");
        // Only larger layers flow: the smallest of them.
        let mut only_top = TrackLayers::new(3);
        for l in [0, 1, 2] {
            only_top.on_packet(l, None, 0, 1000, t0);
        }
        only_top.on_packet(2, None, 0, 1000, later);
        assert_eq!(only_top.choose(want, later), Some(2));
    }

    #[test]
    fn switches_only_at_a_keyframe_of_the_target_layer() {
        let mut s = LayerSelector::default();
        s.set_target(Some(0));
        assert_eq!(s.pending_switch(), Some(0));
        assert_eq!(s.on_packet(0, false), Verdict::Drop, "no keyframe yet");
        assert_eq!(s.on_packet(1, true), Verdict::Drop, "not the target");
        assert_eq!(s.on_packet(0, true), Verdict::SwitchAndForward);
        assert_eq!(s.pending_switch(), None);
        assert_eq!(s.on_packet(0, false), Verdict::Forward);
        assert_eq!(s.on_packet(1, false), Verdict::Drop);

        // Up: layer 0 keeps flowing until layer 2 has a keyframe.
        s.set_target(Some(2));
        assert_eq!(s.pending_switch(), Some(2));
        assert_eq!(s.on_packet(0, false), Verdict::Forward);
        assert_eq!(s.on_packet(2, false), Verdict::Drop);
        assert_eq!(s.on_packet(0, true), Verdict::Forward);
        assert_eq!(s.on_packet(2, true), Verdict::SwitchAndForward);
        assert_eq!(s.on_packet(0, false), Verdict::Drop);
        assert_eq!(s.current(), Some(2));
    }

    #[test]
    fn a_resync_waits_for_the_next_keyframe_of_the_target() {
        let mut s = LayerSelector::default();
        s.set_target(Some(2));
        assert_eq!(s.on_packet(2, true), Verdict::SwitchAndForward);
        s.set_target(Some(0));
        s.resync();
        assert_eq!(s.pending_switch(), Some(0));
        assert_eq!(
            s.on_packet(2, false),
            Verdict::Drop,
            "the old layer stops at once"
        );
        assert_eq!(s.on_packet(0, false), Verdict::Drop);
        assert_eq!(s.on_packet(0, true), Verdict::SwitchAndForward);
    }

    #[test]
    fn paused_forwards_nothing_and_resumes_at_a_keyframe() {
        let mut s = LayerSelector::default();
        s.set_target(Some(1));
        assert_eq!(s.on_packet(1, true), Verdict::SwitchAndForward);
        s.set_target(None);
        assert_eq!(s.on_packet(1, true), Verdict::Drop);
        assert_eq!(s.pending_switch(), None, "paused wants no keyframe");
        s.set_target(Some(1));
        assert_eq!(s.on_packet(1, false), Verdict::Drop);
        assert_eq!(s.on_packet(1, true), Verdict::SwitchAndForward);
    }
}
