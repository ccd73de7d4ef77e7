//! The publisher side: paces Opus frames every 20 ms and VP8 frames at the configured rate into
//! str0m's send streams, stamping each packet with its send time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::Rtc;

use crate::measure::latency::now_micros;
use crate::media::opus_source::{OpusClip, FRAME_MS, FRAME_SAMPLES};
use crate::media::stamp::stamp_opus;
use crate::media::video_source::{VideoConfig, Vp8Source};

/// A sender this far behind its schedule (an overloaded tester) skips ahead instead of
/// bursting, so the load it offers stays what was asked.
const MAX_BEHIND: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone, Copy)]
pub struct SentCounts {
    pub audio_packets: u64,
    pub video_packets: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    pub bytes: u64,
}

impl SentCounts {
    pub fn packets(&self) -> u64 {
        self.audio_packets + self.video_packets
    }
}

pub struct AudioSend {
    pub mid: Mid,
    pub pt: Pt,
    pub muted: bool,
    seq: u64,
    ts: u32,
    pos: usize,
    clip: Arc<OpusClip>,
    next_at: Instant,
    buf: Vec<u8>,
}

impl AudioSend {
    pub fn new(
        mid: Mid,
        pt: Pt,
        muted: bool,
        clip: Arc<OpusClip>,
        seed: u64,
        now: Instant,
    ) -> Self {
        AudioSend {
            mid,
            pt,
            muted,
            seq: seed & 0x3fff,
            ts: (seed >> 16) as u32,
            pos: (seed >> 8) as usize % clip.frames.len().max(1),
            clip,
            next_at: now,
            buf: Vec::with_capacity(256),
        }
    }

    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    pub fn tick(&mut self, rtc: &mut Rtc, now: Instant, sent: &mut SentCounts) {
        while self.next_at <= now {
            if now - self.next_at > MAX_BEHIND {
                self.next_at = now;
            }
            self.next_at += Duration::from_millis(FRAME_MS);
            let Some(frame) = self.clip.frames.get(self.pos) else {
                return;
            };
            self.pos = (self.pos + 1) % self.clip.frames.len();
            self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
            if self.muted {
                continue;
            }
            stamp_opus(&frame.packet, now_micros(), &mut self.buf);
            let ext = ExtensionValues {
                audio_level: Some(-(frame.level.min(127) as i8)),
                voice_activity: Some(frame.voice),
                ..Default::default()
            };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return;
            };
            let write = RtpWrite::new(
                self.pt,
                SeqNo::from(self.seq),
                self.ts,
                now,
                self.buf.as_slice(),
            )
            .ext_vals(ext);
            tx.write_rtp(write);
            self.seq += 1;
            sent.audio_packets += 1;
            sent.bytes += self.buf.len() as u64;
        }
    }
}

pub struct VideoSend {
    pub mid: Mid,
    pub pt: Pt,
    seq: u64,
    ts: u32,
    ts_step: u32,
    interval: Duration,
    source: Vp8Source,
    next_at: Instant,
    payloads: Vec<Vec<u8>>,
}

impl VideoSend {
    pub fn new(mid: Mid, pt: Pt, cfg: &VideoConfig, seed: u64, now: Instant) -> Self {
        let fps = cfg.fps.max(1);
        VideoSend {
            mid,
            pt,
            seq: (seed >> 20) & 0x3fff,
            ts: (seed >> 32) as u32,
            ts_step: 90_000 / fps,
            interval: cfg.frame_interval(),
            source: Vp8Source::new(cfg, seed as u16),
            next_at: now,
            payloads: Vec::new(),
        }
    }

    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    pub fn request_keyframe(&mut self) {
        self.source.request_keyframe();
    }

    pub fn tick(&mut self, rtc: &mut Rtc, now: Instant, sent: &mut SentCounts) {
        while self.next_at <= now {
            if now - self.next_at > MAX_BEHIND {
                self.next_at = now;
            }
            self.next_at += self.interval;
            self.ts = self.ts.wrapping_add(self.ts_step);
            self.payloads.clear();
            let key = self.source.next_frame(now_micros(), &mut self.payloads);
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return;
            };
            let last = self.payloads.len().saturating_sub(1);
            for (i, p) in self.payloads.drain(..).enumerate() {
                sent.bytes += p.len() as u64;
                let write = RtpWrite::new(self.pt, SeqNo::from(self.seq), self.ts, now, p)
                    .marker(i == last)
                    .nackable(true);
                tx.write_rtp(write);
                self.seq += 1;
                sent.video_packets += 1;
            }
            sent.video_frames += 1;
            sent.keyframes += u64::from(key);
        }
    }
}
