//! Synthetic media: Opus-sized audio packets and VP8 frames with correct payload descriptors,
//! and checks on what a subscriber received.

use bytes::Bytes;

use crate::peer::RecvPacket;

/// Audio: one 20 ms Opus packet every 20 ms (50 packets/s), 960 ticks of 48 kHz each.
pub const AUDIO_PACKET_INTERVAL_MS: u64 = 20;
pub const AUDIO_TICKS_PER_PACKET: u32 = 960;
/// Video: 30 frames/s, 3 packets per frame (≈ 90 packets/s), a keyframe every 30th frame.
pub const VIDEO_FRAME_INTERVAL_MS: u64 = 33;
pub const VIDEO_PACKETS_PER_FRAME: usize = 3;
pub const VIDEO_TICKS_PER_FRAME: u32 = 3000;
pub const KEYFRAME_EVERY: u64 = 30;

/// A plausible Opus payload (TOC byte for a 20 ms CELT fullband frame, then filler).
pub fn opus_payload(n: u64) -> Bytes {
    let mut v = vec![0xfc_u8];
    v.extend((0..80).map(|i| (i as u8).wrapping_add(n as u8)));
    Bytes::from(v)
}

/// The RTP payloads of VP8 frame `frame_no`: `VP8_PACKETS_PER_FRAME` packets.
///
/// First packet: payload descriptor 0x10 (S=1, PID 0), then the VP8 payload header — 3-byte
/// frame tag whose lowest bit P is 0 for a keyframe (1 for an interframe), show_frame set; a
/// keyframe continues with the start code 9d 01 2a and 640x480. Later packets: descriptor 0x00.
pub fn vp8_frame_payloads(frame_no: u64, keyframe: bool) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(VIDEO_PACKETS_PER_FRAME);
    for i in 0..VIDEO_PACKETS_PER_FRAME {
        let mut v = Vec::with_capacity(320);
        if i == 0 {
            v.push(0x10);
            // Frame tag: size0 (3 bits) | show_frame (1) | version (3) | P (1), little-endian
            // with the 19-bit first-partition size in the remaining bits.
            let p_bit = if keyframe { 0 } else { 1 };
            let tag: u32 = p_bit | (1 << 4) | (200 << 5);
            v.extend_from_slice(&tag.to_le_bytes()[..3]);
            if keyframe {
                v.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                v.extend_from_slice(&640u16.to_le_bytes());
                v.extend_from_slice(&480u16.to_le_bytes());
            }
        } else {
            v.push(0x00);
        }
        while v.len() < 300 {
            v.push((v.len() as u8) ^ (frame_no as u8));
        }
        out.push(Bytes::from(v));
    }
    out
}

/// True when `payload` (RTP payload of a VP8 stream) starts a keyframe.
pub fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&d) = payload.first() else {
        return false;
    };
    if d & 0x10 == 0 {
        return false;
    }
    // Skip the optional extension bytes of the payload descriptor.
    let mut idx = 1;
    if d & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        idx = 2;
        if x & 0x80 != 0 {
            // PictureID: 1 or 2 bytes.
            let Some(&pid) = payload.get(idx) else {
                return false;
            };
            idx += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            idx += 1;
        }
        if x & 0x30 != 0 {
            idx += 1;
        }
    }
    payload.get(idx).map(|b| b & 0x01 == 0).unwrap_or(false)
}

/// Extends 16-bit sequence numbers in arrival order to a monotonic-ish 64-bit space.
pub fn unwrap_seqs(packets: &[RecvPacket]) -> Vec<i64> {
    let mut out = Vec::with_capacity(packets.len());
    let mut last: Option<i64> = None;
    for p in packets {
        let ext = match last {
            None => i64::from(p.seq),
            Some(l) => {
                let delta = i64::from(p.seq.wrapping_sub(l as u16) as i16);
                l + delta
            }
        };
        out.push(ext);
        last = Some(last.map_or(ext, |l| l.max(ext)));
    }
    out
}

/// What a received stream's sequence numbers look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqReport {
    pub packets: usize,
    /// Distinct sequence numbers.
    pub distinct: usize,
    /// Sequence numbers missing between the lowest and the highest received.
    pub missing: usize,
    pub duplicates: usize,
    /// Packets that arrived with a lower sequence number than one before them.
    pub reordered: usize,
    /// Largest jump between consecutive arrivals (1 on a clean stream).
    pub max_jump: i64,
}

impl SeqReport {
    pub fn of(packets: &[RecvPacket]) -> SeqReport {
        let ext = unwrap_seqs(packets);
        let mut r = SeqReport {
            packets: packets.len(),
            ..Default::default()
        };
        if ext.is_empty() {
            return r;
        }
        let mut highest = ext[0];
        for w in ext.windows(2) {
            let jump = w[1] - w[0];
            r.max_jump = r.max_jump.max(jump);
            if w[1] < highest {
                r.reordered += 1;
            }
            highest = highest.max(w[1]);
        }
        let mut sorted = ext.clone();
        sorted.sort_unstable();
        let before = sorted.len();
        sorted.dedup();
        r.duplicates = before - sorted.len();
        r.distinct = sorted.len();
        let span = (sorted[sorted.len() - 1] - sorted[0] + 1) as usize;
        r.missing = span - sorted.len();
        r
    }
}
