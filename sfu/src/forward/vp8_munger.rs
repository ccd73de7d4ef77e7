//! VP8 picture ID and TL0PICIDX continuity for one subscriber across layer switches.
//!
//! Each simulcast layer is its own VP8 stream with its own picture ID and TL0PICIDX counters.
//! The RTP rewriter makes sequence numbers and timestamps continuous when a subscriber moves
//! to another layer, but the VP8 payload descriptor would still jump to the new layer's
//! counters: the receiver's frame buffer orders frames by picture ID, and a keyframe whose ID
//! is *behind* the last decoded one can be dropped as old, a stall until the next keyframe
//! request. So after each switch (and each resume) the new layer's IDs are offset to continue
//! from the last ones sent. Nothing is rewritten before the first switch.

/// The VP8 payload descriptor fields that must stay continuous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Ids {
    /// 15-bit picture ID (a 7-bit one is kept as it comes).
    pub picture_id: u16,
    pub tl0_pic_idx: Option<u8>,
}

const PICTURE_ID_MASK: u16 = 0x7FFF;

impl Vp8Ids {
    /// The IDs of a parsed descriptor; `None` without a picture ID (nothing to keep going).
    pub fn of(d: &str0m::rtp::Vp8Descriptor) -> Option<Vp8Ids> {
        Some(Vp8Ids {
            picture_id: d.picture_id()?,
            tl0_pic_idx: d.tl0_pic_idx(),
        })
    }

    /// Parses `payload`'s VP8 descriptor: for a receiver that knows the payload is VP8.
    pub fn parse(payload: &[u8]) -> Option<Vp8Ids> {
        Vp8Ids::of(&str0m::rtp::Vp8Descriptor::parse(payload).ok()?)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Vp8Munger {
    /// The newest IDs sent.
    last_out: Option<Vp8Ids>,
    picture_id_offset: u16,
    tl0_offset: u8,
    /// The next packet starts a new layer (a keyframe): re-anchor the offsets on it.
    resync: bool,
}

impl Vp8Munger {
    /// The next packet is the first of another layer (or of the stream after a pause).
    pub fn restart(&mut self) {
        self.resync = true;
    }

    /// The IDs `ids` of an incoming packet as this subscriber must see them.
    pub fn munge(&mut self, ids: Vp8Ids) -> Vp8Ids {
        if std::mem::take(&mut self.resync) {
            if let Some(last) = self.last_out {
                self.picture_id_offset =
                    last.picture_id.wrapping_add(1).wrapping_sub(ids.picture_id) & PICTURE_ID_MASK;
                if let (Some(out), Some(inc)) = (last.tl0_pic_idx, ids.tl0_pic_idx) {
                    self.tl0_offset = out.wrapping_add(1).wrapping_sub(inc);
                }
            }
        }
        let out = Vp8Ids {
            picture_id: ids.picture_id.wrapping_add(self.picture_id_offset) & PICTURE_ID_MASK,
            tl0_pic_idx: ids.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset)),
        };
        // Retransmissions and reordered packets of older pictures do not move the anchor.
        let newer = self.last_out.is_none_or(|l| {
            let ahead = out.picture_id.wrapping_sub(l.picture_id) & PICTURE_ID_MASK;
            ahead != 0 && ahead < 0x4000
        });
        if newer {
            self.last_out = Some(out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(picture_id: u16, tl0: u8) -> Vp8Ids {
        Vp8Ids {
            picture_id,
            tl0_pic_idx: Some(tl0),
        }
    }

    #[test]
    fn untouched_until_a_switch_then_continuous_across_it() {
        let mut m = Vp8Munger::default();
        assert_eq!(m.munge(ids(5000, 10)), ids(5000, 10));
        assert_eq!(m.munge(ids(5001, 11)), ids(5001, 11));
        // Packets of the same picture keep its ID.
        assert_eq!(m.munge(ids(5001, 11)), ids(5001, 11));
        // Switch to a layer whose counters are far behind: continues at 5002 / 12.
        m.restart();
        assert_eq!(m.munge(ids(120, 200)), ids(5002, 12));
        assert_eq!(m.munge(ids(121, 201)), ids(5003, 13));
        // A retransmission of the switch keyframe keeps its ID and does not re-anchor.
        assert_eq!(m.munge(ids(120, 200)), ids(5002, 12));
        assert_eq!(m.munge(ids(122, 202)), ids(5004, 14));
    }

    #[test]
    fn wraps_the_15_bit_picture_id_and_the_8_bit_tl0() {
        let mut m = Vp8Munger::default();
        m.munge(ids(0x7FFF, 255));
        m.restart();
        assert_eq!(m.munge(ids(42, 7)), ids(0, 0));
        assert_eq!(m.munge(ids(43, 8)), ids(1, 1));
    }
}
