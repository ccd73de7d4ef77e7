//! VP8 frames from RTP (RFC 7741): the payload descriptor is stripped and the partitions of
//! one picture joined. Sans-IO: packets in, whole frames out.
//!
//! A recording wants decodable files, not every frame: a lost or late packet drops the frame
//! it belongs to, and everything after it until the next keyframe (an inter frame whose
//! reference is missing decodes to garbage). The recorder reads the forwarded stream, which
//! str0m has already repaired with NACKs where it could.

/// The descriptor's length and whether the packet starts a frame (S bit on partition 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub len: usize,
    pub starts_frame: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated VP8 payload descriptor")]
pub struct Truncated;

/// Parses the payload descriptor at the start of a VP8 RTP payload.
pub fn parse_descriptor(payload: &[u8]) -> Result<Descriptor, Truncated> {
    let first = *payload.first().ok_or(Truncated)?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut len = 1;
    if extended {
        let x = *payload.get(1).ok_or(Truncated)?;
        len = 2;
        if x & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7.
            let pid = *payload.get(len).ok_or(Truncated)?;
            len += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // TID / Y / KEYIDX
        }
    }
    if payload.len() <= len {
        return Err(Truncated);
    }
    Ok(Descriptor {
        len,
        starts_frame: start && partition == 0,
    })
}

/// One whole VP8 frame, borrowed from the depacketizer until the next push.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub rtp_ts: u32,
    pub keyframe: bool,
    /// Width and height from a keyframe's header.
    pub size: Option<(u16, u16)>,
    pub data: &'a [u8],
}

/// How far behind a packet may be and still count as late (retransmitted, reordered) rather
/// than the start of another stream: far more than any retransmission window holds.
const LATE_WINDOW: i16 = 1000;

/// Joins the packets of each frame; see the module docs for what is dropped.
#[derive(Debug)]
pub struct Vp8Depacketizer {
    frame: Vec<u8>,
    frame_ts: u32,
    in_frame: bool,
    next_seq: Option<u16>,
    need_keyframe: bool,
    /// Frames dropped (incomplete, or waiting for a keyframe).
    pub dropped_frames: u64,
}

impl Default for Vp8Depacketizer {
    fn default() -> Self {
        Vp8Depacketizer {
            frame: Vec::with_capacity(64 * 1024),
            frame_ts: 0,
            in_frame: false,
            next_seq: None,
            // A file starts at a keyframe.
            need_keyframe: true,
            dropped_frames: 0,
        }
    }
}

impl Vp8Depacketizer {
    /// Takes one RTP packet; returns a frame when this packet completes one.
    pub fn push(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<Frame<'_>> {
        if let Some(expected) = self.next_seq {
            let ahead = seq.wrapping_sub(expected) as i16;
            if (-LATE_WINDOW..0).contains(&ahead) {
                // A duplicate or a packet that came too late: its frame is gone already.
                return None;
            }
            if ahead != 0 {
                // A gap, or another stream altogether (a recording moved to another
                // simulcast layer, whose sequence numbers start anywhere).
                self.lose_frame();
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let Ok(d) = parse_descriptor(payload) else {
            self.lose_frame();
            return None;
        };
        if d.starts_frame {
            if self.in_frame {
                // The previous frame never saw its marker.
                self.lose_frame();
            }
            self.frame.clear();
            self.frame_ts = rtp_ts;
            self.in_frame = true;
        } else if !self.in_frame || rtp_ts != self.frame_ts {
            return None;
        }
        self.frame.extend_from_slice(&payload[d.len..]);
        if !marker {
            return None;
        }
        self.in_frame = false;
        let keyframe = self.frame.first().is_some_and(|b| b & 0x01 == 0);
        if self.need_keyframe && !keyframe {
            self.dropped_frames += 1;
            return None;
        }
        self.need_keyframe = false;
        let size = keyframe.then(|| keyframe_size(&self.frame)).flatten();
        Some(Frame {
            rtp_ts: self.frame_ts,
            keyframe,
            size,
            data: &self.frame,
        })
    }

    /// Whether frames are being dropped until a keyframe comes (at the start, or since a
    /// packet went missing).
    pub fn waiting_for_keyframe(&self) -> bool {
        self.need_keyframe
    }

    fn lose_frame(&mut self) {
        if self.in_frame {
            self.dropped_frames += 1;
        }
        self.in_frame = false;
        self.need_keyframe = true;
    }
}

/// A keyframe's width and height (the frame header: 3 bytes tag, start code 9d 01 2a,
/// 14-bit width and height, little endian, each with 2 bits of scaling).
fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with a 15-bit picture id, S set on the first packet.
    fn packet(start: bool, body: &[u8]) -> Vec<u8> {
        let mut p = vec![if start { 0x90 } else { 0x80 }, 0x80, 0x80 | 0x12, 0x34];
        p.extend_from_slice(body);
        p
    }

    fn keyframe_start(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f
    }

    #[test]
    fn descriptor_lengths() {
        assert_eq!(
            parse_descriptor(&[0x10, 0xaa]),
            Ok(Descriptor {
                len: 1,
                starts_frame: true
            })
        );
        // X, I with a 7-bit picture id, L, T: 1 + 1 + 1 + 1 + 1.
        assert_eq!(
            parse_descriptor(&[0x90, 0xe0, 0x05, 0x01, 0x20, 0xaa]),
            Ok(Descriptor {
                len: 5,
                starts_frame: true
            })
        );
        // Partition 1 does not start a frame.
        assert!(!parse_descriptor(&[0x11, 0xaa]).unwrap().starts_frame);
        assert_eq!(parse_descriptor(&[0x90, 0x80, 0x80]), Err(Truncated));
        assert_eq!(parse_descriptor(&[]), Err(Truncated));
    }

    #[test]
    fn joins_a_keyframe_from_three_packets_and_reads_its_size() {
        let mut d = Vp8Depacketizer::default();
        let first = keyframe_start(640, 480);
        assert!(d.push(10, 900, false, &packet(true, &first)).is_none());
        assert!(d.push(11, 900, false, &packet(false, &[1, 2])).is_none());
        let f = d.push(12, 900, true, &packet(false, &[3])).expect("frame");
        assert!(f.keyframe);
        assert_eq!(f.size, Some((640, 480)));
        assert_eq!(f.rtp_ts, 900);
        assert_eq!(f.data.len(), first.len() + 3);
        assert_eq!(&f.data[f.data.len() - 3..], &[1, 2, 3]);
    }

    #[test]
    fn waits_for_a_keyframe_and_drops_frames_after_a_loss_until_the_next_one() {
        let mut d = Vp8Depacketizer::default();
        // An inter frame first: nothing to decode it against.
        assert!(d.push(1, 0, true, &packet(true, &[0x01, 0, 0])).is_none());
        assert!(d
            .push(2, 3000, true, &packet(true, &keyframe_start(320, 240)))
            .is_some());
        assert!(d
            .push(3, 6000, true, &packet(true, &[0x01, 0, 0]))
            .is_some());
        // Packet 4 lost: the frame of 5/6 misses its start, and the inter frame after it
        // refers to what was lost.
        assert!(d.push(5, 9000, false, &packet(false, &[0x01])).is_none());
        assert!(d.push(6, 9000, true, &packet(false, &[0x01])).is_none());
        assert!(d
            .push(7, 12000, true, &packet(true, &[0x01, 0, 0]))
            .is_none());
        let f = d.push(8, 15000, true, &packet(true, &keyframe_start(320, 240)));
        assert!(f.is_some_and(|f| f.keyframe));
        assert!(d
            .push(9, 18000, true, &packet(true, &[0x01, 0, 0]))
            .is_some());
        assert_eq!(d.dropped_frames, 2);
    }

    #[test]
    fn a_late_duplicate_is_ignored_and_a_frame_without_marker_is_dropped() {
        let mut d = Vp8Depacketizer::default();
        assert!(d
            .push(100, 0, true, &packet(true, &keyframe_start(2, 2)))
            .is_some());
        assert!(d
            .push(100, 0, true, &packet(true, &keyframe_start(2, 2)))
            .is_none());
        assert!(d
            .push(101, 3000, false, &packet(true, &[0x01, 0, 0]))
            .is_none());
        // A new frame starts while the last one waits for its marker (it never came).
        assert!(d
            .push(102, 6000, true, &packet(true, &[0x01, 0, 0]))
            .is_none());
        let k = d.push(103, 9000, true, &packet(true, &keyframe_start(2, 2)));
        assert!(k.is_some());
        // Sequence numbers wrap.
        let mut w = Vp8Depacketizer::default();
        assert!(w
            .push(65535, 0, true, &packet(true, &keyframe_start(2, 2)))
            .is_some());
        assert!(w
            .push(0, 3000, true, &packet(true, &[0x01, 0, 0]))
            .is_some());
    }
}
