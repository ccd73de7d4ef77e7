//! Real Opus for simulated speakers: a voice-like signal (voiced syllables with pauses between
//! talk spurts) encoded once at start-up, 20 ms per frame, and shared by every publisher, each
//! starting at its own offset. Encoding once keeps the tester's CPU for the packet path.

use std::sync::Arc;

use thiserror::Error;

pub const SAMPLE_RATE: u32 = 48_000;
pub const FRAME_SAMPLES: usize = 960;
pub const FRAME_MS: u64 = 20;

#[derive(Debug, Error)]
pub enum OpusSourceError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// One encoded 20 ms frame.
pub struct OpusFrame {
    pub packet: Box<[u8]>,
    /// Level for the ssrc-audio-level extension: 0 (loudest) ..= 127 (silence), i.e. -dBov.
    pub level: u8,
    /// The frame is inside a talk spurt.
    pub voice: bool,
}

pub struct OpusClip {
    pub frames: Vec<OpusFrame>,
}

impl OpusClip {
    /// `seconds` of signal encoded at `bitrate` bit/s (mono, VoIP mode, DTX off so that a
    /// packet goes every 20 ms like a browser's).
    pub fn generate(
        seconds: u32,
        bitrate: i32,
        seed: u64,
    ) -> Result<Arc<OpusClip>, OpusSourceError> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        // Browsers send unconstrained VBR: pauses cost fewer bytes than speech.
        enc.set_vbr(true)?;
        enc.set_vbr_constraint(false)?;
        let total_frames = (seconds as u64 * 1000 / FRAME_MS) as usize;
        let mut signal = VoiceSignal::new(seed);
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut out = [0u8; 1500];
        let mut frames = Vec::with_capacity(total_frames);
        for _ in 0..total_frames {
            let voice = signal.fill(&mut pcm);
            let n = enc.encode(&pcm, &mut out)?;
            frames.push(OpusFrame {
                packet: out[..n].into(),
                level: level_of(&pcm),
                voice,
            });
        }
        Ok(Arc::new(OpusClip { frames }))
    }
}

/// -dBov of a frame, clamped to the extension's 0..=127.
fn level_of(pcm: &[i16]) -> u8 {
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / pcm.len().max(1) as f64).sqrt() / 32768.0;
    if rms <= 1e-7 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// Talk spurts of 1–3 s made of ~4 syllables/s (harmonics of a gliding 100–220 Hz pitch under
/// an envelope), separated by 0.4–1.6 s of near-silence.
struct VoiceSignal {
    rng: u64,
    t: u64,
    /// Samples left in the current spurt or pause.
    left: u64,
    talking: bool,
    pitch: f64,
    phase: f64,
}

impl VoiceSignal {
    fn new(seed: u64) -> Self {
        VoiceSignal {
            rng: seed | 1,
            t: 0,
            left: 0,
            talking: false,
            pitch: 140.0,
            phase: 0.0,
        }
    }

    fn next_rand(&mut self) -> f64 {
        // xorshift64: deterministic, no dependency, plenty for a test signal.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, pcm: &mut [i16]) -> bool {
        let sr = f64::from(SAMPLE_RATE);
        for s in pcm.iter_mut() {
            if self.left == 0 {
                self.talking = !self.talking;
                let secs = if self.talking {
                    1.0 + 2.0 * self.next_rand()
                } else {
                    0.4 + 1.2 * self.next_rand()
                };
                self.left = (secs * sr) as u64;
                self.pitch = 100.0 + 120.0 * self.next_rand();
            }
            self.left -= 1;
            self.t += 1;
            let noise = (self.next_rand() - 0.5) * 60.0;
            if !self.talking {
                *s = noise as i16;
                continue;
            }
            let secs = self.t as f64 / sr;
            let glide = 1.0 + 0.08 * (secs * 1.3 * std::f64::consts::TAU).sin();
            self.phase += self.pitch * glide / sr;
            self.phase -= self.phase.floor();
            let mut v = 0.0;
            for h in 1..=8 {
                v += (self.phase * h as f64 * std::f64::consts::TAU).sin() / h as f64;
            }
            let syllable = (secs * 4.0 * std::f64::consts::PI).sin().abs();
            *s = (v * syllable * 7000.0 + noise) as i16;
        }
        self.talking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_has_speech_and_silence_with_matching_levels() {
        let clip = OpusClip::generate(6, 32_000, 7).expect("encode");
        assert_eq!(clip.frames.len(), 300);
        let voiced: Vec<_> = clip.frames.iter().filter(|f| f.voice).collect();
        let silent: Vec<_> = clip.frames.iter().filter(|f| !f.voice).collect();
        assert!(!voiced.is_empty() && !silent.is_empty());
        let avg =
            |v: &[&OpusFrame]| v.iter().map(|f| f64::from(f.level)).sum::<f64>() / v.len() as f64;
        assert!(
            avg(&voiced) + 20.0 < avg(&silent),
            "speech is louder than pauses"
        );
        let avg_size = |v: &[&OpusFrame]| v.iter().map(|f| f.packet.len()).sum::<usize>() / v.len();
        let (v, s) = (avg_size(&voiced), avg_size(&silent));
        assert!(v > s, "speech takes more bits: {v} vs {s} bytes");
    }
}
