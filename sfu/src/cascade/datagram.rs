//! One relayed RTP packet in one QUIC DATAGRAM: a QUIC varint flow id, then the RTP packet
//! as its origin received it (decrypted: QUIC already encrypts the link, so there is no SRTP).
//!
//! The RTP header carries the publisher's SSRC, sequence number, timestamp, payload type and
//! marker unchanged. What the origin learnt about the packet travels as RFC 8285 one-byte
//! header extensions with ids private to the link (the link is ours; nothing else reads them):
//!
//! | id | bytes | what |
//! |---|---|---|
//! | 1 | 1 | audio level, RFC 6464 layout: voice-activity bit, then −dBov (0–127) |
//! | 2 | 1 | video orientation (CVO rotation bits) |
//! | 3 | 4 | the packet starts a keyframe: width, height (big-endian `u16`, 0 when unknown) |
//! | 4 | 1 | the payload is VP8 with a picture ID (value 1): receivers keep its IDs continuous |
//! | 5 | 4 | send stamp: when the origin's worker received the packet, the low 32 bits of its wall-clock microseconds (big-endian; [`super::stamp`]) |
//!
//! Unknown ids are skipped, so either side may be older: a node that does not know id 5
//! ignores it, and a datagram without it is relayed as before, only not measured.
//! Receivers parse no payload but a flagged VP8 descriptor: keyframes are found once, by the origin, which knows the
//! codec. Sans-IO: bytes in, bytes out.

use str0m::rtp::VideoOrientation;

use crate::forward::keyframe::KeyframeStart;
use crate::relay::{FlowId, RelayPacket};

const EXT_AUDIO_LEVEL: u8 = 1;
const EXT_VIDEO_ORIENTATION: u8 = 2;
const EXT_KEYFRAME: u8 = 3;
const EXT_VP8: u8 = 4;
const EXT_SENT: u8 = 5;
/// RFC 8285 one-byte header extension profile.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
const RTP_HEADER: usize = 12;

/// Extension elements of every id, each with its one-byte header: 2 + 2 + 5 + 2 + 5.
const MAX_EXTENSIONS: usize = 16;
/// The largest header [`encode`] writes: an 8-byte varint, the RTP header and every extension.
pub const MAX_OVERHEAD: usize = 8 + RTP_HEADER + 4 + MAX_EXTENSIONS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram too short")]
    Truncated,
    #[error("not RTP version 2")]
    NotRtp,
    #[error("bad header extension")]
    BadExtension,
    #[error("bad padding")]
    BadPadding,
}

/// A relayed packet read from a datagram; the payload borrows the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRtp<'a> {
    pub flow: FlowId,
    pub source: u32,
    /// The RTP sequence number; [`extend_seq`] unrolls it per flow.
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<VideoOrientation>,
    pub keyframe: Option<KeyframeStart>,
    /// The origin found VP8 picture IDs in the payload.
    pub vp8: bool,
    /// The send stamp ([`super::stamp`]); `None` from a sender that does not stamp.
    pub sent: Option<u32>,
    pub payload: &'a [u8],
}

fn write_varint(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & ((1 << 62) - 1)) | (0xC0 << 56)).to_be_bytes());
    }
}

fn read_varint(b: &[u8]) -> Result<(u64, usize), DatagramError> {
    let first = *b.first().ok_or(DatagramError::Truncated)?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len).ok_or(DatagramError::Truncated)?;
    let v = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3F), |acc, x| (acc << 8) | u64::from(*x));
    Ok((v, len))
}

/// Writes `packet` as the datagram of `flow` into `out` (cleared first), without a send
/// stamp. On the packet path: `out` is reused, nothing else is allocated.
pub fn encode(flow: FlowId, packet: &RelayPacket, out: &mut Vec<u8>) {
    encode_stamped(flow, packet, None, out);
}

/// [`encode`] with the send stamp `sent` ([`super::stamp::LinkClock::stamp`]).
pub fn encode_stamped(flow: FlowId, packet: &RelayPacket, sent: Option<u32>, out: &mut Vec<u8>) {
    out.clear();
    write_varint(u64::from(flow.0), out);
    let mut ext = [0u8; MAX_EXTENSIONS];
    let mut n = 0;
    if let Some(level) = packet.audio_level {
        let v = u8::from(packet.voice_activity.unwrap_or(false)) << 7;
        ext[n] = EXT_AUDIO_LEVEL << 4;
        ext[n + 1] = v | (level.unsigned_abs().min(127));
        n += 2;
    }
    if let Some(o) = packet.video_orientation {
        ext[n] = EXT_VIDEO_ORIENTATION << 4;
        ext[n + 1] = o as u8;
        n += 2;
    }
    if let Some(k) = packet.keyframe {
        ext[n] = (EXT_KEYFRAME << 4) | 3;
        ext[n + 1..n + 3].copy_from_slice(&k.width.to_be_bytes());
        ext[n + 3..n + 5].copy_from_slice(&k.height.to_be_bytes());
        n += 5;
    }
    if packet.vp8.is_some() {
        ext[n] = EXT_VP8 << 4;
        ext[n + 1] = 1;
        n += 2;
    }
    if let Some(sent) = sent {
        ext[n] = (EXT_SENT << 4) | 3;
        ext[n + 1..n + 5].copy_from_slice(&sent.to_be_bytes());
        n += 5;
    }
    let words = n.div_ceil(4);
    out.push(0x80 | if n > 0 { 0x10 } else { 0 });
    out.push((u8::from(packet.marker) << 7) | (packet.pt & 0x7F));
    out.extend_from_slice(&(packet.seq as u16).to_be_bytes());
    out.extend_from_slice(&packet.ts.to_be_bytes());
    out.extend_from_slice(&packet.source.to_be_bytes());
    if n > 0 {
        out.extend_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        out.extend_from_slice(&(words as u16).to_be_bytes());
        // Unused bytes stay 0: padding in RFC 8285.
        out.extend_from_slice(&ext[..words * 4]);
    }
    out.extend_from_slice(&packet.payload);
}

/// Reads a datagram. Anything malformed is refused; the peer is authenticated, but a bug
/// must not become a panic.
pub fn decode(datagram: &[u8]) -> Result<LinkRtp<'_>, DatagramError> {
    let (flow, at) = read_varint(datagram)?;
    let rtp = &datagram[at..];
    if rtp.len() < RTP_HEADER {
        return Err(DatagramError::Truncated);
    }
    if rtp[0] >> 6 != 2 {
        return Err(DatagramError::NotRtp);
    }
    let csrcs = usize::from(rtp[0] & 0x0F);
    let mut at = RTP_HEADER + 4 * csrcs;
    let mut packet = LinkRtp {
        flow: FlowId(u32::try_from(flow).map_err(|_| DatagramError::Truncated)?),
        source: u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]),
        seq: u16::from_be_bytes([rtp[2], rtp[3]]),
        ts: u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]),
        pt: rtp[1] & 0x7F,
        marker: rtp[1] & 0x80 != 0,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        keyframe: None,
        vp8: false,
        sent: None,
        payload: &[],
    };
    if rtp[0] & 0x10 != 0 {
        let head = rtp.get(at..at + 4).ok_or(DatagramError::Truncated)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let len = 4 * usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = rtp
            .get(at + 4..at + 4 + len)
            .ok_or(DatagramError::Truncated)?;
        if profile == ONE_BYTE_PROFILE {
            read_extensions(body, &mut packet)?;
        }
        at += 4 + len;
    }
    let mut end = rtp.len();
    if rtp[0] & 0x20 != 0 {
        let pad = usize::from(*rtp.last().ok_or(DatagramError::BadPadding)?);
        if pad == 0 || at + pad > end {
            return Err(DatagramError::BadPadding);
        }
        end -= pad;
    }
    packet.payload = rtp.get(at..end).ok_or(DatagramError::Truncated)?;
    Ok(packet)
}

fn read_extensions(mut body: &[u8], packet: &mut LinkRtp<'_>) -> Result<(), DatagramError> {
    while let Some(&b) = body.first() {
        if b == 0 {
            body = &body[1..];
            continue;
        }
        let (id, len) = (b >> 4, usize::from(b & 0x0F) + 1);
        if id == 15 {
            break;
        }
        let data = body.get(1..1 + len).ok_or(DatagramError::BadExtension)?;
        match (id, len) {
            (EXT_AUDIO_LEVEL, 1) => {
                packet.audio_level = Some(-((data[0] & 0x7F) as i8));
                packet.voice_activity = Some(data[0] & 0x80 != 0);
            }
            (EXT_VIDEO_ORIENTATION, 1) => {
                packet.video_orientation = Some(VideoOrientation::from(data[0] & 0x03));
            }
            (EXT_VP8, 1) => packet.vp8 = data[0] == 1,
            (EXT_SENT, 4) => {
                packet.sent = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]));
            }
            (EXT_KEYFRAME, 4) => {
                packet.keyframe = Some(KeyframeStart {
                    width: u16::from_be_bytes([data[0], data[1]]),
                    height: u16::from_be_bytes([data[2], data[3]]),
                });
            }
            _ => {}
        }
        body = &body[1 + len..];
    }
    Ok(())
}

/// Unrolls a 16-bit sequence number against the last extended one of its flow (`None`: the
/// flow's first packet), accepting reordering of up to half the number space either way.
pub fn extend_seq(last: Option<u64>, seq: u16) -> u64 {
    let Some(last) = last else {
        // Far from 0, so that an early packet reordered before the first still fits.
        return (1 << 16) + u64::from(seq);
    };
    let base = last & !0xFFFF;
    let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
    candidates
        .iter()
        .map(|b| b.wrapping_add(u64::from(seq)))
        .filter(|c| *c < 1 << 63)
        .min_by_key(|c| c.abs_diff(last))
        .unwrap_or(base + u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn packet(seq: u64, payload: &[u8]) -> RelayPacket {
        RelayPacket {
            marker: true,
            ..RelayPacket::plain(
                FlowId(0),
                0xDEAD_BEEF,
                seq,
                0x0102_0304,
                111,
                Arc::from(payload),
            )
        }
    }

    #[test]
    fn a_plain_packet_is_a_varint_and_an_unmodified_rtp_header() {
        let mut out = vec![];
        encode(FlowId(5), &packet(0x1_2345, b"opus"), &mut out);
        // Flow 5 fits one varint byte; then V=2, no extension, M + PT, seq, ts, SSRC.
        assert_eq!(
            out,
            [
                &[
                    5u8,
                    0x80,
                    0x80 | 111,
                    0x23,
                    0x45,
                    1,
                    2,
                    3,
                    4,
                    0xDE,
                    0xAD,
                    0xBE,
                    0xEF
                ][..],
                b"opus"
            ]
            .concat()
        );
        let got = decode(&out).unwrap();
        assert_eq!(got.flow, FlowId(5));
        assert_eq!(got.seq, 0x2345);
        assert_eq!((got.ts, got.pt, got.marker), (0x0102_0304, 111, true));
        assert_eq!(got.source, 0xDEAD_BEEF);
        assert_eq!(got.payload, b"opus");
        assert_eq!(got.audio_level, None);
    }

    #[test]
    fn what_the_origin_found_travels_in_header_extensions() {
        let mut p = packet(7, &[0xAB; 1200]);
        p.audio_level = Some(-42);
        p.voice_activity = Some(true);
        p.video_orientation = Some(VideoOrientation::Deg90);
        p.keyframe = Some(KeyframeStart {
            width: 1280,
            height: 720,
        });
        p.vp8 = Some(crate::forward::vp8_munger::Vp8Ids {
            picture_id: 300,
            tl0_pic_idx: Some(4),
        });
        let mut out = vec![];
        for flow in [0u32, 63, 64, 16_383, 16_384, 1 << 30, u32::MAX] {
            encode_stamped(FlowId(flow), &p, Some(0xFEDC_BA98), &mut out);
            assert!(out.len() <= p.payload.len() + MAX_OVERHEAD);
            let got = decode(&out).unwrap();
            assert_eq!(got.flow, FlowId(flow));
            assert_eq!(got.sent, Some(0xFEDC_BA98));
            assert_eq!(got.audio_level, Some(-42));
            assert_eq!(got.voice_activity, Some(true));
            assert_eq!(got.video_orientation, Some(VideoOrientation::Deg90));
            assert_eq!(
                got.keyframe,
                Some(KeyframeStart {
                    width: 1280,
                    height: 720
                })
            );
            assert!(got.vp8, "the VP8 flag travels");
            assert_eq!(got.payload, &p.payload[..]);
        }
        // Without IDs found at the origin, no flag: the receiver parses nothing.
        let plain = packet(8, b"opus");
        encode(FlowId(1), &plain, &mut out);
        assert!(!decode(&out).unwrap().vp8);
    }

    #[test]
    fn the_send_stamp_is_optional_both_ways() {
        let p = packet(9, b"opus");
        let mut out = vec![];
        // A stamp alone: one 5-byte element padded to two words.
        encode_stamped(FlowId(2), &p, Some(7), &mut out);
        assert_eq!(&out[13..17], &[0xBE, 0xDE, 0, 2]);
        assert_eq!(&out[17..25], &[0x53, 0, 0, 0, 7, 0, 0, 0]);
        let got = decode(&out).unwrap();
        assert_eq!((got.sent, got.seq, got.payload), (Some(7), 9, &b"opus"[..]));
        // An older sender's datagram has none: relayed, not measured.
        encode(FlowId(2), &p, &mut out);
        let got = decode(&out).unwrap();
        assert_eq!((got.sent, got.payload), (None, &b"opus"[..]));
        // A newer sender's unknown element is skipped (and an old receiver skips id 5 alike).
        let newer = [
            &[2u8, 0x90, 111, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0xBE, 0xDE, 0, 3],
            &[0x61, 0xAA, 0xBB, 0x53, 0, 0, 1, 0, 0, 0, 0, 0],
            b"opus",
        ]
        .concat();
        let got = decode(&newer).unwrap();
        assert_eq!((got.sent, got.payload), (Some(256), &b"opus"[..]));
    }

    #[test]
    fn garbage_is_refused_never_a_panic() {
        assert_eq!(decode(&[]), Err(DatagramError::Truncated));
        assert_eq!(decode(&[0x40]), Err(DatagramError::Truncated));
        assert_eq!(decode(&[1, 0x40, 0, 0]), Err(DatagramError::Truncated));
        assert_eq!(decode(&[1; 13]), Err(DatagramError::NotRtp));
        // An extension longer than the packet.
        let mut bad = vec![1, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0, 9];
        assert_eq!(decode(&bad), Err(DatagramError::Truncated));
        // An element running past its block.
        bad.truncate(15);
        bad.extend_from_slice(&[0, 1, 0x3F, 0, 0, 0]);
        assert_eq!(decode(&bad), Err(DatagramError::BadExtension));
        // Padding longer than the packet.
        let pad = [1u8, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200];
        assert_eq!(decode(&pad), Err(DatagramError::BadPadding));
        for len in 0..40 {
            let noise: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode(&noise);
        }
    }

    #[test]
    fn sequence_numbers_unroll_across_wraps_and_reordering() {
        let first = extend_seq(None, 65_534);
        assert_eq!(first & 0xFFFF, 65_534);
        let wrapped = extend_seq(Some(first), 1);
        assert_eq!(wrapped, first + 3);
        // A late packet from before the wrap lands before it.
        assert_eq!(extend_seq(Some(wrapped), 65_535), first + 1);
        // An early first packet's predecessor does not underflow.
        let start = extend_seq(None, 0);
        assert_eq!(extend_seq(Some(start), 65_535), start - 1);
    }
}
