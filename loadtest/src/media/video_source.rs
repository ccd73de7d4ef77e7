//! Synthetic VP8 at a configured bitrate, frame rate and keyframe interval, packetized the way
//! an encoder's RTP packetizer does it: a VP8 payload descriptor (with a 15-bit picture id) on
//! every packet, the frame split into packets of at most [`MAX_PAYLOAD`] bytes, the marker bit on
//! the last one. The frame itself starts with a valid VP8 frame tag (keyframe bit, show_frame,
//! first-partition size) and, on keyframes, the start code `9d 01 2a` and the dimensions.

use std::time::Duration;

use super::stamp::{write_stamp, STAMP_LEN};

pub const MAX_PAYLOAD: usize = 1200;
const DESCRIPTOR_LEN: usize = 4;
/// Keyframes are this many times larger than delta frames, like a real encoder's.
const KEYFRAME_FACTOR: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoConfig {
    pub bitrate_bps: u64,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub width: u16,
    pub height: u16,
}

impl VideoConfig {
    pub fn frame_interval(&self) -> Duration {
        Duration::from_micros(1_000_000 / u64::from(self.fps.max(1)))
    }
}

pub struct Vp8Source {
    frames_per_key: u64,
    key_bytes: usize,
    delta_bytes: usize,
    frame_no: u64,
    picture_id: u16,
    width: u16,
    height: u16,
    force_key: bool,
}

impl Vp8Source {
    pub fn new(cfg: &VideoConfig, picture_id_seed: u16) -> Self {
        let fps = u64::from(cfg.fps.max(1));
        let frames_per_key = (cfg.keyframe_interval.as_secs_f64() * fps as f64)
            .round()
            .max(1.0) as u64;
        // Average over a keyframe period equals the bitrate: (K + n - 1) * delta = bytes per period.
        let bytes_per_period = cfg.bitrate_bps / 8 * frames_per_key / fps;
        let delta = bytes_per_period / (KEYFRAME_FACTOR + frames_per_key - 1);
        let min = DESCRIPTOR_LEN + 10 + STAMP_LEN + 16;
        Vp8Source {
            frames_per_key,
            key_bytes: ((delta * KEYFRAME_FACTOR) as usize).max(min),
            delta_bytes: (delta as usize).max(min),
            frame_no: 0,
            picture_id: picture_id_seed & 0x7fff,
            width: cfg.width,
            height: cfg.height,
            force_key: false,
        }
    }

    /// The next frame is a keyframe (the SFU asked with PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Appends the RTP payloads of the next frame to `out`; returns whether it is a keyframe.
    pub fn next_frame(&mut self, sent_us: u64, out: &mut Vec<Vec<u8>>) -> bool {
        let key = self.force_key || self.frame_no % self.frames_per_key == 0;
        self.force_key = false;
        self.frame_no += 1;
        let size = if key {
            self.key_bytes
        } else {
            self.delta_bytes
        };
        let header_len = if key { 10 } else { 3 };
        let chunk_max = MAX_PAYLOAD - DESCRIPTOR_LEN;
        let packets = size.div_ceil(chunk_max);
        let chunk = size.div_ceil(packets);
        let pid = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;

        let mut left = size;
        for i in 0..packets {
            let this = chunk.min(left);
            left -= this;
            let mut p = vec![0u8; DESCRIPTOR_LEN + this];
            // X=1, S on the first packet, PartID 0; I=1; M=1 + 15-bit picture id.
            p[0] = 0x80 | if i == 0 { 0x10 } else { 0 };
            p[1] = 0x80;
            p[2] = 0x80 | (pid >> 8) as u8;
            p[3] = (pid & 0xff) as u8;
            let mut at = DESCRIPTOR_LEN;
            if i == 0 {
                let first_part = ((size - header_len) / 4).min(0x7ffff) as u32;
                let tag = u32::from(!key) | (1 << 4) | (first_part << 5);
                p[at..at + 3].copy_from_slice(&tag.to_le_bytes()[..3]);
                if key {
                    p[at + 3..at + 6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    p[at + 6..at + 8].copy_from_slice(&(self.width & 0x3fff).to_le_bytes());
                    p[at + 8..at + 10].copy_from_slice(&(self.height & 0x3fff).to_le_bytes());
                }
                at += header_len;
            }
            write_stamp(&mut p[at..], sent_us);
            // Filler that does not look like a start code or a stamp.
            for (j, b) in p[at + STAMP_LEN..].iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(31) | 0x01;
            }
            out.push(p);
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stamp::read_vp8_stamp;

    fn cfg() -> VideoConfig {
        VideoConfig {
            bitrate_bps: 800_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            width: 640,
            height: 360,
        }
    }

    #[test]
    fn frames_average_the_bitrate_and_keyframes_look_like_vp8() {
        let mut src = Vp8Source::new(&cfg(), 5);
        let mut bytes = 0usize;
        let mut keys = 0;
        for n in 0..60 {
            let mut out = Vec::new();
            let key = src.next_frame(42, &mut out);
            assert_eq!(key, n % 60 == 0);
            keys += usize::from(key);
            for (i, p) in out.iter().enumerate() {
                assert!(p.len() <= MAX_PAYLOAD);
                let (stamp, starts_key) = read_vp8_stamp(p).expect("every packet is stamped");
                assert_eq!(stamp, 42);
                assert_eq!(starts_key, key && i == 0);
            }
            if key {
                let f = &out[0][DESCRIPTOR_LEN..];
                assert_eq!(f[0] & 1, 0, "keyframe bit");
                assert_eq!(&f[3..6], &[0x9d, 0x01, 0x2a]);
                assert_eq!(u16::from_le_bytes([f[6], f[7]]), 640);
                assert_eq!(u16::from_le_bytes([f[8], f[9]]), 360);
                assert!(out.len() > 1, "a keyframe spans several packets");
            } else {
                assert_eq!(out[0][DESCRIPTOR_LEN] & 1, 1, "delta frame");
            }
            bytes += out.iter().map(|p| p.len() - DESCRIPTOR_LEN).sum::<usize>();
        }
        assert_eq!(keys, 1);
        let bps = bytes as f64 * 8.0 / 2.0;
        assert!((bps - 800_000.0).abs() / 800_000.0 < 0.05, "{bps}");
    }

    #[test]
    fn requested_keyframe_comes_next() {
        let mut src = Vp8Source::new(&cfg(), 0);
        let mut out = Vec::new();
        src.next_frame(0, &mut out);
        src.request_keyframe();
        assert!(src.next_frame(0, &mut out));
        assert!(!src.next_frame(0, &mut out));
    }
}
