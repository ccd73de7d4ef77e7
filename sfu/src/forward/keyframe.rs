//! Recognises the first packet of a keyframe in an RTP payload, per video codec.
//!
//! A simulcast subscriber may only move to another layer where that layer's decoder can
//! start: the first packet of a keyframe. Only the payload descriptor and the first bytes
//! of the frame are read, never the whole frame, and nothing is copied. Malformed or short
//! payloads are "not a keyframe start", never a panic.

/// The video codecs whose keyframes we can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    /// Anything else (AV1, audio): never reported as a keyframe start, so a simulcast
    /// subscriber of such a track stays on the layer it started on.
    Other,
}

/// What the first packet of a keyframe tells: that it is one, and for VP8 the frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyframeStart {
    pub width: u16,
    pub height: u16,
}

/// `Some` when `payload` is the first packet of a keyframe. The size is 0x0 when the codec
/// does not carry it in the first packet's reach (VP9 and H.264 here).
pub fn keyframe_start(codec: VideoCodec, payload: &[u8]) -> Option<KeyframeStart> {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload).then_some(KeyframeStart::default()),
        VideoCodec::H264 => h264(payload).then_some(KeyframeStart::default()),
        VideoCodec::Other => None,
    }
}

/// RFC 7741: payload descriptor, then the VP8 frame whose 3-byte tag has the inverse
/// keyframe bit P in bit 0; a keyframe then has the start code and 14-bit width/height.
fn vp8(p: &[u8]) -> Option<KeyframeStart> {
    let b0 = *p.first()?;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_index = b0 & 0x07;
    if !start_of_partition || partition_index != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let m = *p.get(i)? & 0x80 != 0;
            i += if m { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    let frame = p.get(i..)?;
    if frame.len() < 3 || frame[0] & 0x01 != 0 {
        return None;
    }
    // A keyframe's start code and size follow the tag; a truncated one still is a keyframe.
    let size = match frame.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => KeyframeStart {
            width: u16::from_le_bytes([*w0, *w1]) & 0x3fff,
            height: u16::from_le_bytes([*h0, *h1]) & 0x3fff,
        },
        _ => KeyframeStart::default(),
    };
    Some(size)
}

/// draft-ietf-payload-vp9: I P L F B E V Z. A keyframe's first packet has B (begins a
/// frame) and not P (not inter-predicted), and is spatial layer 0 when layers are signalled.
fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    let inter_predicted = b0 & 0x40 != 0;
    let layer_indices = b0 & 0x20 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !layer_indices {
        return true;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&pid) = p.get(i) else {
            return false;
        };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices byte: TID(3) U(1) SID(3) D(1).
    p.get(i).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice (5) or a sequence parameter set (7, sent right before an IDR), alone,
/// inside a STAP-A, or at the start of a FU-A.
fn h264(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    let key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match b0 & 0x1f {
        24 => {
            let mut i = 1;
            // Bounded by the payload length: every step advances by at least 2.
            while let Some(len) = p.get(i..i + 2) {
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let Some(&nal) = p.get(i + 2) else {
                    return false;
                };
                if len > 0 && key(nal & 0x1f) {
                    return true;
                }
                i += 2 + len;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && key(fu & 0x1f)),
        t => key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 keyframe's first packet as Chromium sends it: X, PictureID (15 bit), TL0PICIDX,
    /// then the frame tag, start code and 1280x720.
    fn vp8_key_1280x720() -> Vec<u8> {
        vec![
            0x90, 0xe0, 0x80, 0x05, 0x11, 0x20, //
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02, 0xff,
        ]
    }

    #[test]
    fn vp8_keyframe_start_with_its_size() {
        assert_eq!(
            keyframe_start(VideoCodec::Vp8, &vp8_key_1280x720()),
            Some(KeyframeStart {
                width: 1280,
                height: 720
            })
        );
        // Minimal descriptor, no extensions: 320x180.
        let small = [
            0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
        ];
        assert_eq!(
            keyframe_start(VideoCodec::Vp8, &small),
            Some(KeyframeStart {
                width: 320,
                height: 180
            })
        );
    }

    #[test]
    fn vp8_delta_frames_and_continuation_packets_are_not_keyframe_starts() {
        let mut delta = vp8_key_1280x720();
        delta[6] |= 0x01; // P bit: inter frame
        assert_eq!(keyframe_start(VideoCodec::Vp8, &delta), None);
        let mut middle = vp8_key_1280x720();
        middle[0] &= !0x10; // not the start of a partition
        assert_eq!(keyframe_start(VideoCodec::Vp8, &middle), None);
        let mut second_partition = vp8_key_1280x720();
        second_partition[0] |= 0x01;
        assert_eq!(keyframe_start(VideoCodec::Vp8, &second_partition), None);
        for n in 0..6 {
            assert_eq!(
                keyframe_start(VideoCodec::Vp8, &vp8_key_1280x720()[..n]),
                None
            );
        }
    }

    #[test]
    fn vp9_keyframe_is_begin_and_not_inter_predicted_on_spatial_layer_0() {
        // I=1 (15-bit picture id), B=1, E=0.
        assert!(keyframe_start(VideoCodec::Vp9, &[0x88, 0x81, 0x02, 0x00]).is_some());
        // P set: inter frame.
        assert!(keyframe_start(VideoCodec::Vp9, &[0xc8, 0x81, 0x02, 0x00]).is_none());
        // Not the beginning of a frame.
        assert!(keyframe_start(VideoCodec::Vp9, &[0x80, 0x81, 0x02, 0x00]).is_none());
        // L set: spatial layer 0 starts decoding, spatial layer 1 does not.
        assert!(keyframe_start(VideoCodec::Vp9, &[0xa8, 0x05, 0x00, 0x00]).is_some());
        assert!(keyframe_start(VideoCodec::Vp9, &[0xa8, 0x05, 0x02, 0x00]).is_none());
        assert!(keyframe_start(VideoCodec::Vp9, &[]).is_none());
    }

    #[test]
    fn h264_idr_sps_in_single_stap_a_and_fu_a() {
        // An IDR slice is a keyframe, a non-IDR slice is not.
        assert!(keyframe_start(VideoCodec::H264, &[0x65, 0x88]).is_some());
        assert!(keyframe_start(VideoCodec::H264, &[0x41, 0x9a]).is_none());
        // STAP-A carrying SPS then PPS.
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(keyframe_start(VideoCodec::H264, &stap).is_some());
        // STAP-A of SEI only, and one whose length runs past the end.
        assert!(keyframe_start(VideoCodec::H264, &[0x78, 0x00, 0x01, 0x06]).is_none());
        assert!(keyframe_start(VideoCodec::H264, &[0x78, 0xff, 0xff, 0x06]).is_none());
        // FU-A: start of an IDR, then its middle.
        assert!(keyframe_start(VideoCodec::H264, &[0x7c, 0x85, 0x00]).is_some());
        assert!(keyframe_start(VideoCodec::H264, &[0x7c, 0x05, 0x00]).is_none());
        assert!(keyframe_start(VideoCodec::Other, &[0x65]).is_none());
    }
}
