//! Fits one subscriber's video into the bandwidth its connection has.
//!
//! The send-side estimate of a subscriber connection (TWCC) is a budget. Audio is paid
//! first and is never cut here. Then every wanted video gets its lowest layer, the dominant
//! speaker's first, as long as the budget lasts; the ones that do not fit are paused (a
//! frozen tile beats choppy audio). What is left upgrades videos towards the layer they
//! want, again in priority order. The result caps the layer each downtrack may receive; the
//! layer selector still switches only at keyframes.

use super::layer_selector::{Layer, MAX_LAYERS};

/// Bitrates assumed for a layer that has not been measured yet (VP8 at 320x180, 640x360,
/// 1280x720; the browser client's own caps).
pub const NOMINAL_LAYER_BPS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];

/// What the bandwidth allocator allows a video downtrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCap {
    /// No estimate yet (or not wanted): whatever the subscriber wants.
    Unlimited,
    UpTo(Layer),
    /// Does not fit: no video until the estimate grows.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// The dominant speaker's camera and every screen share: kept sharp first.
    High,
    Normal,
}

/// One video downtrack of the subscriber.
#[derive(Debug, Clone, Copy)]
pub struct VideoDemand {
    pub priority: Priority,
    /// The layer the subscriber's rendered size asks for among every layer the publisher
    /// can send (flowing or stopped by dynacast: a stopped layer must be asked back);
    /// `None` when it is paused anyway.
    pub wanted: Option<Layer>,
    /// Measured bitrate of each layer; 0 where unknown.
    pub layer_bps: [u64; MAX_LAYERS],
}

impl VideoDemand {
    /// Measured bitrate of `layer`, or its nominal one.
    pub fn cost(&self, layer: Layer) -> u64 {
        let l = usize::from(layer).min(MAX_LAYERS - 1);
        match self.layer_bps[l] {
            0 => NOMINAL_LAYER_BPS[l],
            bps => bps,
        }
    }
}

/// What the subscriber would receive with unlimited bandwidth: the rate to probe for.
pub fn desired_bps(audio_bps: u64, videos: &[VideoDemand]) -> u64 {
    audio_bps
        + videos
            .iter()
            .filter_map(|v| v.wanted.map(|l| v.cost(l)))
            .sum::<u64>()
}

/// Allocates `budget_bps` (after `audio_bps`) over `videos`; `out[i]` is the highest layer
/// video `i` may receive, `None` = paused for lack of bandwidth (or not wanted).
pub fn allocate(
    budget_bps: u64,
    audio_bps: u64,
    videos: &[VideoDemand],
    out: &mut Vec<Option<Layer>>,
) {
    out.clear();
    out.resize(videos.len(), None);
    let mut order: Vec<usize> = (0..videos.len()).collect();
    // Stable: equal priorities keep the caller's order (oldest track first).
    order.sort_by_key(|&i| videos[i].priority);
    let mut left = budget_bps.saturating_sub(audio_bps);
    for &i in &order {
        let v = &videos[i];
        if v.wanted.is_some() && v.cost(0) <= left {
            left -= v.cost(0);
            out[i] = Some(0);
        }
    }
    for &i in &order {
        let (v, Some(have)) = (&videos[i], out[i]) else {
            continue;
        };
        let wanted = v.wanted.unwrap_or(0);
        let best = (have + 1..=wanted)
            .rev()
            .find(|&l| v.cost(l).saturating_sub(v.cost(have)) <= left);
        if let Some(l) = best {
            left -= v.cost(l).saturating_sub(v.cost(have));
            out[i] = Some(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(priority: Priority, wanted: Option<Layer>) -> VideoDemand {
        VideoDemand {
            priority,
            wanted,
            layer_bps: [200_000, 600_000, 1_800_000],
        }
    }

    fn run(budget: u64, audio: u64, videos: &[VideoDemand]) -> Vec<Option<Layer>> {
        let mut out = vec![];
        allocate(budget, audio, videos, &mut out);
        out
    }

    #[test]
    fn enough_bandwidth_gives_everyone_what_they_want() {
        let v = [
            video(Priority::Normal, Some(2)),
            video(Priority::Normal, Some(0)),
        ];
        assert_eq!(run(10_000_000, 64_000, &v), vec![Some(2), Some(0)]);
    }

    #[test]
    fn the_dominant_speaker_is_upgraded_first() {
        // 1.4 Mbit/s: both low layers (400k), then the speaker's upgrade to layer 1 (+400k)
        // and the other one's too (+400k), but nobody's to layer 2.
        let v = [
            video(Priority::Normal, Some(2)),
            video(Priority::High, Some(2)),
        ];
        assert_eq!(run(1_264_000, 64_000, &v), vec![Some(1), Some(1)]);
        // 2.2 Mbit/s: the speaker gets the top layer, the other one stays low.
        assert_eq!(run(2_264_000, 64_000, &v), vec![Some(0), Some(2)]);
    }

    #[test]
    fn videos_pause_before_audio_suffers() {
        let v = [
            video(Priority::Normal, Some(1)),
            video(Priority::High, Some(1)),
            video(Priority::Normal, Some(1)),
        ];
        // Room for audio and one low layer: the speaker's.
        assert_eq!(run(300_000, 64_000, &v), vec![None, Some(0), None]);
        // Not even audio fits: no video at all.
        assert_eq!(run(50_000, 64_000, &v), vec![None, None, None]);
    }

    #[test]
    fn unwanted_video_costs_nothing_and_unknown_layers_cost_their_nominal_rate() {
        let mut unmeasured = video(Priority::Normal, Some(2));
        unmeasured.layer_bps = [0; MAX_LAYERS];
        let v = [video(Priority::High, None), unmeasured];
        assert_eq!(run(700_000, 0, &v), vec![None, Some(1)]);
    }
}
