//! Who is speaking, from the `ssrc-audio-level` header extension (RFC 6464) of each
//! publisher's audio packets.
//!
//! The publisher's encoder already measured the level, so detection costs a table update per
//! audio packet and never touches the payload (which the SFU could not decode anyway without
//! an Opus decoder per track). Every [`SPEAKER_TICK`] the levels of the last window are folded
//! into a smoothed score per participant; a room's ranking is reported only when it changes,
//! so clients get at most four updates a second and none while the same people keep talking.

use std::time::{Duration, Instant};

use super::router::PeerKey;

/// How often rankings are recomputed and may be reported.
pub const SPEAKER_TICK: Duration = Duration::from_millis(250);

/// Levels quieter than this are treated as silence: background noise on a typical laptop
/// microphone sits around -50..-70 dBov, speech around -15..-35.
const SILENCE_DBOV: i8 = -55;

/// Weight of the newest window in the smoothed score; with 250 ms windows a speaker rises
/// within about half a second and fades about a second after they stop.
const SMOOTHING: f32 = 0.45;

/// Smoothed linear amplitude above which a participant counts as speaking (≈ -48 dBov).
const ACTIVE_THRESHOLD: f32 = 0.004;

/// A challenger takes the top place only when this much louder than the current dominant
/// speaker, so two people talking at once don't swap the big tile four times a second.
const DOMINANCE_MARGIN: f32 = 1.5;

#[derive(Debug, Default, Clone, Copy)]
struct Meter {
    window_sum: f32,
    window_packets: u32,
    smoothed: f32,
}

/// One participant in a room's ranking, loudest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speaker {
    pub peer: PeerKey,
    /// Smoothed linear amplitude, 0..1 (1 = full scale).
    pub level: f32,
}

/// Audio levels of one worker's publishers, indexed by [`PeerKey`] so the packet path does a
/// vector index, not a hash.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    meters: Vec<Meter>,
    next_tick: Option<Instant>,
}

impl SpeakerDetector {
    /// One audio packet's level in dBov as str0m reports the extension: 0 is the loudest,
    /// -127 silence.
    pub fn observe(&mut self, peer: PeerKey, level_dbov: i8) {
        let index = peer.0 as usize;
        if index >= self.meters.len() {
            // Grows once per new peer slot, never per packet in steady state.
            self.meters.resize(index + 1, Meter::default());
        }
        let meter = &mut self.meters[index];
        meter.window_packets += 1;
        if level_dbov > SILENCE_DBOV {
            meter.window_sum += amplitude(level_dbov);
        }
    }

    /// Clears a departed peer's slot so whoever reuses it starts silent.
    pub fn forget(&mut self, peer: PeerKey) {
        if let Some(meter) = self.meters.get_mut(peer.0 as usize) {
            *meter = Meter::default();
        }
    }

    /// Whether a tick is due; the first call schedules the first tick.
    pub fn tick_due(&mut self, now: Instant) -> bool {
        match self.next_tick {
            Some(t) if now >= t => {
                self.next_tick = Some(now + SPEAKER_TICK);
                true
            }
            Some(_) => false,
            None => {
                self.next_tick = Some(now + SPEAKER_TICK);
                false
            }
        }
    }

    /// When the next tick is due, for the driver's timer.
    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Folds every meter's window into its smoothed score. Call once per tick, before ranking.
    pub fn close_window(&mut self) {
        for meter in &mut self.meters {
            let window = if meter.window_packets == 0 {
                // No packets at all (DTX or muted): the speaker fades out.
                0.0
            } else {
                meter.window_sum / meter.window_packets as f32
            };
            meter.smoothed = SMOOTHING * window + (1.0 - SMOOTHING) * meter.smoothed;
            meter.window_sum = 0.0;
            meter.window_packets = 0;
        }
    }

    /// The room's active speakers, loudest first, keeping `previous_dominant` on top unless a
    /// challenger is clearly louder. Writes into `out` (cleared first).
    pub fn rank(
        &self,
        members: &[PeerKey],
        previous_dominant: Option<PeerKey>,
        out: &mut Vec<Speaker>,
    ) {
        out.clear();
        for &peer in members {
            let level = self.meters.get(peer.0 as usize).map_or(0.0, |m| m.smoothed);
            if level >= ACTIVE_THRESHOLD {
                out.push(Speaker { peer, level });
            }
        }
        out.sort_by(|a, b| b.level.total_cmp(&a.level).then(a.peer.cmp(&b.peer)));
        if let Some(previous) = previous_dominant {
            if let Some(pos) = out.iter().position(|s| s.peer == previous) {
                if pos > 0 && out[0].level < out[pos].level * DOMINANCE_MARGIN {
                    let kept = out.remove(pos);
                    out.insert(0, kept);
                }
            }
        }
    }
}

/// Linear amplitude of a level in dBov.
fn amplitude(level_dbov: i8) -> f32 {
    10f32.powf(level_dbov.min(0) as f32 / 20.0)
}

/// Whether two rankings would look different to a user: other people, or another order.
pub fn same_order(a: &[Speaker], b: &[Speaker]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.peer == y.peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerKey = PeerKey(0);
    const B: PeerKey = PeerKey(1);
    const C: PeerKey = PeerKey(2);

    /// One 250 ms window: 12 packets per peer at the given level.
    fn window(d: &mut SpeakerDetector, levels: &[(PeerKey, i8)]) -> Vec<Speaker> {
        for _ in 0..12 {
            for &(peer, level) in levels {
                d.observe(peer, level);
            }
        }
        d.close_window();
        let mut out = vec![];
        d.rank(&[A, B, C], None, &mut out);
        out
    }

    #[test]
    fn loud_speaker_ranks_first_and_noise_is_not_a_speaker() {
        let mut d = SpeakerDetector::default();
        let mut ranking = vec![];
        for _ in 0..3 {
            ranking = window(&mut d, &[(A, -20), (B, -35), (C, -70)]);
        }
        let peers: Vec<_> = ranking.iter().map(|s| s.peer).collect();
        assert_eq!(peers, vec![A, B], "C only sends background noise");
        assert!(ranking[0].level > ranking[1].level);
    }

    #[test]
    fn a_speaker_who_stops_fades_out_within_about_a_second() {
        let mut d = SpeakerDetector::default();
        for _ in 0..4 {
            window(&mut d, &[(A, -20)]);
        }
        let mut windows_until_gone = 0;
        for _ in 0..10 {
            windows_until_gone += 1;
            // Opus DTX: the silent speaker sends (almost) nothing.
            if window(&mut d, &[(A, -127)]).is_empty() {
                break;
            }
        }
        assert!(
            (2..=6).contains(&windows_until_gone),
            "faded after {windows_until_gone} windows"
        );
    }

    #[test]
    fn dominant_speaker_keeps_the_top_unless_clearly_outvoiced() {
        let mut d = SpeakerDetector::default();
        for _ in 0..4 {
            window(&mut d, &[(A, -30), (B, -29)]);
        }
        let mut out = vec![];
        d.rank(&[A, B], Some(A), &mut out);
        assert_eq!(out[0].peer, A, "B is only 1 dB louder: A stays dominant");
        for _ in 0..4 {
            window(&mut d, &[(A, -30), (B, -15)]);
        }
        d.rank(&[A, B], Some(A), &mut out);
        assert_eq!(out[0].peer, B, "B is 15 dB louder: B takes over");
    }

    #[test]
    fn ticks_come_every_250ms_and_not_before() {
        let mut d = SpeakerDetector::default();
        let t0 = Instant::now();
        assert!(!d.tick_due(t0));
        assert!(!d.tick_due(t0 + Duration::from_millis(249)));
        assert!(d.tick_due(t0 + Duration::from_millis(250)));
        assert!(!d.tick_due(t0 + Duration::from_millis(300)));
        assert!(d.tick_due(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_reused_peer_slot_starts_silent() {
        let mut d = SpeakerDetector::default();
        for _ in 0..3 {
            window(&mut d, &[(A, -10)]);
        }
        d.forget(A);
        assert!(window(&mut d, &[]).is_empty());
    }
}
