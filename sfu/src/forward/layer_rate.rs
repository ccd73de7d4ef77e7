//! What each layer of a track costs on the wire, as bandwidth allocation counts it: its
//! bitrate over the last window, with the keyframes asked for beyond the first of a window
//! counted at the size of the frame they stood in for.
//!
//! Every subscriber that starts or resumes a video asks its publisher for a keyframe. While
//! people join, a publisher therefore sends keyframes several times a second (a browser at
//! most one per 300 ms, the load tester's publisher one per request), each several times a
//! delta frame, and over one second the layer looked two to three times what it costs in
//! steady state: an 800 kbit/s camera measured 2.5 Mbit/s through the 50-viewer join ramp of
//! `scripts/bench/run.sh`. The allocator held that against each viewer's estimate and paused
//! the video for every viewer under it: new viewers started paused, earlier ones froze for
//! 1.3–1.8 s once `PAUSE_AFTER` ran out, and each resume asked for one more keyframe.
//! mediasoup, which allocates nothing, showed none of it in the same run (BENCHMARKS.md,
//! issue 11). A storm of keyframes lasts as long as the joins; what the layer costs is its
//! delta frames and its regular keyframes. So in each window the first keyframe counts
//! whole and any later one as the window's average delta frame.
//!
//! Frames are told apart by RTP timestamp (all packets of a frame share it); a keyframe by
//! its first packet ([`super::keyframe::keyframe_start`]). Audio is all "delta frames" and
//! is counted byte for byte, as before.

use std::time::{Duration, Instant};

use super::layer_selector::MAX_LAYERS;

/// The window a layer's bitrate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What a forwarded packet costs on the subscriber's link beyond its payload: RTP header
/// and extensions, SRTP tag, UDP and IPv4 headers. Counted into the layer bitrates so the
/// allocator sees what the link carries (for 50-packet/s audio this is a third of it).
pub const PACKET_OVERHEAD_BYTES: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Delta,
    /// The window's first keyframe: counted whole.
    Keyframe,
    /// A later keyframe of the same window: counted as an average delta frame.
    ExtraKeyframe,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    delta_bytes: u64,
    delta_frames: u64,
    keyframe_bytes: u64,
    keyframe_counted: bool,
    extra_keyframes: u64,
}

impl Window {
    fn bytes(&self) -> u64 {
        let avg_delta = self
            .delta_bytes
            .checked_div(self.delta_frames)
            .unwrap_or_default();
        self.delta_bytes + self.keyframe_bytes + self.extra_keyframes * avg_delta
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerMeter {
    window: Window,
    /// The frame being received: its RTP timestamp and how it is counted.
    frame: Option<(u32, Frame)>,
}

/// Bitrate per layer over the last full [`RATE_WINDOW`] (bit/s, packet overhead included).
#[derive(Debug, Clone, Default)]
pub struct LayerRates {
    layers: [LayerMeter; MAX_LAYERS],
    bps: [u64; MAX_LAYERS],
    window_start: Option<Instant>,
}

impl LayerRates {
    /// Measured bitrate of each layer (0 until a window has passed).
    pub fn bitrates(&self) -> [u64; MAX_LAYERS] {
        self.bps
    }

    /// One media packet of `layer` (its RTP timestamp `ts`; `keyframe_start` on the first
    /// packet of a keyframe) with `payload_len` bytes of payload.
    pub fn on_packet(
        &mut self,
        layer: usize,
        keyframe_start: bool,
        ts: u32,
        payload_len: usize,
        now: Instant,
    ) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let ms = elapsed.as_millis().max(1) as u64;
            for (bps, meter) in self.bps.iter_mut().zip(&mut self.layers) {
                *bps = meter.window.bytes() * 8 * 1000 / ms;
                meter.window = Window::default();
            }
            self.window_start = Some(now);
        }
        let Some(meter) = self.layers.get_mut(layer) else {
            return;
        };
        let w = &mut meter.window;
        let frame = match meter.frame {
            _ if keyframe_start => {
                let f = if w.keyframe_counted {
                    w.extra_keyframes += 1;
                    Frame::ExtraKeyframe
                } else {
                    w.keyframe_counted = true;
                    Frame::Keyframe
                };
                meter.frame = Some((ts, f));
                f
            }
            Some((frame_ts, f)) if frame_ts == ts => f,
            _ => {
                w.delta_frames += 1;
                meter.frame = Some((ts, Frame::Delta));
                Frame::Delta
            }
        };
        let bytes = payload_len as u64 + PACKET_OVERHEAD_BYTES;
        match frame {
            Frame::Delta => w.delta_bytes += bytes,
            Frame::Keyframe => w.keyframe_bytes += bytes,
            Frame::ExtraKeyframe => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_micros(33_333);
    /// 800 kbit/s at 30 fps with a keyframe five times a delta frame, as the load tester
    /// sends it: delta frames of 3 packets, keyframes of 12.
    const DELTA: [usize; 3] = [1100, 1100, 1000];
    const KEY: [usize; 12] = [1250; 12];

    /// `seconds` of video at 30 fps; `key(frame)` says which frames are keyframes.
    fn video(seconds: u32, key: impl Fn(u32) -> bool) -> LayerRates {
        let t0 = Instant::now();
        let mut r = LayerRates::default();
        for f in 0..seconds * 30 {
            let now = t0 + FRAME * f;
            let ts = f * 3000;
            let sizes: &[usize] = if key(f) { &KEY } else { &DELTA };
            for (i, len) in sizes.iter().enumerate() {
                r.on_packet(0, key(f) && i == 0, ts, *len, now);
            }
        }
        r
    }

    fn kbps(r: &LayerRates) -> u64 {
        r.bitrates()[0] / 1000
    }

    #[test]
    fn a_keyframe_per_join_does_not_make_a_layer_look_several_times_its_cost() {
        // Steady: a keyframe every 3 s.
        let steady = kbps(&video(6, |f| f % 90 == 0));
        assert!((800..=1000).contains(&steady), "steady {steady} kbit/s");
        // Viewers joining 15 a second, each keyframe request obeyed: every other frame is a
        // keyframe. Counted byte for byte this is ~2.4 Mbit/s.
        let storm = kbps(&video(6, |f| f % 2 == 0));
        assert!(
            storm <= steady * 115 / 100,
            "join storm {storm} kbit/s against steady {steady}"
        );
        // Browsers obey one request per 300 ms: a keyframe every 9 frames.
        let browser = kbps(&video(6, |f| f % 9 == 0));
        assert!(browser <= steady * 115 / 100, "{browser} against {steady}");
    }

    #[test]
    fn a_regular_keyframe_counts_whole() {
        // One keyframe a second: each window holds one, counted at its size, so the layer
        // costs more than its delta frames alone.
        let keyed = kbps(&video(6, |f| f % 30 == 0));
        let deltas_only = kbps(&video(6, |_| false));
        // 12 * 1310 bytes instead of 3 * 1127: ~100 kbit/s more.
        assert!(keyed >= deltas_only + 80, "{keyed} vs {deltas_only}");
    }

    #[test]
    fn audio_is_counted_byte_for_byte() {
        let t0 = Instant::now();
        let mut r = LayerRates::default();
        // 50 packets a second of 100 bytes (+60 overhead), each its own timestamp.
        for i in 0..150u32 {
            r.on_packet(0, false, i * 960, 100, t0 + Duration::from_millis(20) * i);
        }
        assert_eq!(r.bitrates()[0], 64_000);
    }
}
