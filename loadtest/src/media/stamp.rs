//! The send timestamp every media packet carries, and where it sits.
//!
//! A stamp is 12 bytes: the magic `ZvLt` and the send time in µs since the Unix epoch (u64,
//! big-endian). The SFU forwards payloads untouched, so the stamp survives to subscribers.
//!
//! - **Video (VP8):** right after the VP8 payload descriptor, and in a frame's first packet
//!   after the VP8 frame header (3-byte tag, plus start code and dimensions on keyframes), so
//!   an SFU that parses the frame header still sees a valid one.
//! - **Audio (Opus):** in Opus padding. A single-frame (code 0) packet is rewritten as a code-3
//!   packet with one frame and 12 bytes of padding (RFC 6716 §3.2.5); decoders must ignore
//!   padding, so the packet stays valid Opus. We chose this over abs-send-time because the SFU
//!   does not forward that header extension.

pub const STAMP_LEN: usize = 12;
const MAGIC: [u8; 4] = *b"ZvLt";

pub fn write_stamp(out: &mut [u8], sent_us: u64) {
    if out.len() >= STAMP_LEN {
        out[..4].copy_from_slice(&MAGIC);
        out[4..STAMP_LEN].copy_from_slice(&sent_us.to_be_bytes());
    }
}

pub fn read_stamp(buf: &[u8]) -> Option<u64> {
    let stamp = buf.get(..STAMP_LEN)?;
    if stamp[..4] != MAGIC {
        return None;
    }
    let mut us = [0u8; 8];
    us.copy_from_slice(&stamp[4..]);
    Some(u64::from_be_bytes(us))
}

/// Builds the stamped Opus packet from an encoder's single-frame packet. Packets that already
/// carry several frames (codes 1–3) are copied unstamped.
pub fn stamp_opus(packet: &[u8], sent_us: u64, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(&toc) = packet.first() else {
        return false;
    };
    if toc & 0x03 != 0 {
        out.extend_from_slice(packet);
        return false;
    }
    // Code 3, CBR, padding flag, one frame; then the padding length (12 < 255: one byte).
    out.extend_from_slice(&[toc | 0x03, 0x41, STAMP_LEN as u8]);
    out.extend_from_slice(&packet[1..]);
    let at = out.len();
    out.resize(at + STAMP_LEN, 0);
    write_stamp(&mut out[at..], sent_us);
    true
}

/// The stamp in an Opus packet's padding, if it has one.
pub fn read_opus_stamp(payload: &[u8]) -> Option<u64> {
    let (&toc, rest) = payload.split_first()?;
    if toc & 0x03 != 0x03 {
        return None;
    }
    let (&count, rest) = rest.split_first()?;
    if count & 0x40 == 0 {
        return None;
    }
    let mut padding = 0usize;
    for &b in rest.iter().take(8) {
        if b == 255 {
            padding += 254;
        } else {
            padding += b as usize;
            break;
        }
    }
    if padding < STAMP_LEN || payload.len() < padding {
        return None;
    }
    read_stamp(&payload[payload.len() - padding..])
}

/// Where the stamp sits in a VP8 RTP payload: after the payload descriptor and, in the first
/// packet of a frame, after the frame header. Also says whether this packet starts a keyframe.
pub fn vp8_stamp_offset(payload: &[u8]) -> Option<(usize, bool)> {
    let b0 = *payload.first()?;
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        idx = 2;
        if x & 0x80 != 0 {
            idx += if *payload.get(idx)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            idx += 1;
        }
        if x & 0x30 != 0 {
            idx += 1;
        }
    }
    let start_of_partition0 = b0 & 0x10 != 0 && b0 & 0x0f == 0;
    if !start_of_partition0 {
        return Some((idx, false));
    }
    let keyframe = *payload.get(idx)? & 0x01 == 0;
    Some((idx + if keyframe { 10 } else { 3 }, keyframe))
}

pub fn read_vp8_stamp(payload: &[u8]) -> Option<(u64, bool)> {
    let (at, keyframe) = vp8_stamp_offset(payload)?;
    Some((read_stamp(payload.get(at..)?)?, keyframe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_stamp_round_trips_and_the_packet_still_decodes() {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .expect("encoder");
        let pcm: Vec<i16> = (0..960)
            .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let mut buf = [0u8; 1500];
        let n = enc.encode(&pcm, &mut buf).expect("encode");
        let mut stamped = Vec::new();
        assert!(stamp_opus(&buf[..n], 1_234_567, &mut stamped));
        assert_eq!(read_opus_stamp(&stamped), Some(1_234_567));
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
        let mut out = [0i16; 960];
        let samples = dec
            .decode(&stamped, &mut out, false)
            .expect("stamped packet decodes");
        assert_eq!(samples, 960);
        assert_eq!(
            read_opus_stamp(&buf[..n]),
            None,
            "unstamped packet has no stamp"
        );
    }
}
