//! Rewrites sequence numbers and timestamps so a subscriber sees one continuous stream.
//!
//! A downtrack's source can change (a publisher reconnects, a layer switch, a track
//! replaced); the receiver's jitter buffer and decoder must not see a jump backwards or a
//! gap that never fills. Each source gets an offset that continues where the previous one
//! stopped. Which source is current is the caller's decision (the layer selector drops
//! packets of layers it is not forwarding): a packet of another source is a switch.
//!
//! Two kinds of holes in one source's numbering look alike here and must be told apart:
//! packets lost on the publisher's network must stay a gap (the subscriber NACKs it and the
//! retransmission we receive fills it), while packets *we* chose not to send (muted,
//! paused, a payload type the subscriber lacks) must not, since nothing will ever fill
//! them and a receiver that waits for missing packets (aiortc) freezes for seconds. The
//! caller tells which are ours with [`RtpRewriter::withhold`].

use std::time::Instant;

/// Identifies one upstream stream (a track's SSRC generation, a simulcast layer, ...).
pub type SourceId = u32;

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source: SourceId,
    /// First input sequence number of this mapping: older ones belong to nobody any more.
    first_in_seq: u64,
    /// Highest input sequence number sent with this mapping.
    highest_in_seq: u64,
    seq_offset: u64,
    ts_offset: u32,
}

#[derive(Debug, Clone)]
pub struct RtpRewriter {
    clock_rate: u32,
    mapping: Option<Mapping>,
    /// Set when packets were withheld: the first packet sent from this input sequence
    /// number on (of the current source) continues right after the last one sent.
    rebase_from: Option<u64>,
    /// Highest sequence number sent so far (extended, ROC stays 0 at start).
    highest_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
}

/// Sequence number and timestamp to send, or why a packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewritten {
    Send {
        seq: u64,
        ts: u32,
    },
    /// A straggler from a source we switched away from, or from before a withheld stretch.
    StaleSource,
}

impl RtpRewriter {
    /// `first_out_seq` should be random below 2^15 so the stream starts with ROC 0 and leaves room.
    pub fn new(clock_rate: u32, first_out_seq: u16, first_out_ts: u32) -> Self {
        RtpRewriter {
            clock_rate,
            mapping: None,
            rebase_from: None,
            // The first packet is sent as highest + 1.
            highest_out_seq: u64::from(first_out_seq).wrapping_sub(1),
            last_out_ts: first_out_ts,
            last_out_at: None,
        }
    }

    pub fn rewrite(
        &mut self,
        source: SourceId,
        in_seq: u64,
        in_ts: u32,
        now: Instant,
    ) -> Rewritten {
        let mapping = match self.mapping {
            Some(m) if m.source == source => {
                if in_seq < m.first_in_seq {
                    return Rewritten::StaleSource;
                }
                match self.rebase_from {
                    Some(from) if in_seq >= from => self.start_mapping(source, in_seq, in_ts, now),
                    _ => m,
                }
            }
            _ => self.start_mapping(source, in_seq, in_ts, now),
        };
        let seq = in_seq.wrapping_add(mapping.seq_offset);
        let ts = in_ts.wrapping_add(mapping.ts_offset);
        if let Some(m) = self.mapping.as_mut() {
            m.highest_in_seq = m.highest_in_seq.max(in_seq);
        }
        if seq > self.highest_out_seq || self.highest_out_seq == u64::MAX {
            self.highest_out_seq = seq;
            self.last_out_ts = ts;
            self.last_out_at = Some(now);
        }
        Rewritten::Send { seq, ts }
    }

    /// The caller did not send this packet to the subscriber (muted, paused, not its
    /// layer, no payload type for it). If it belongs to the current source, the next packet
    /// sent after it continues the stream instead of leaving the hole.
    pub fn withhold(&mut self, source: SourceId, in_seq: u64) {
        let Some(m) = self.mapping.filter(|m| m.source == source) else {
            // Another source's packet: it never had a place in this stream.
            return;
        };
        // A straggler older than what was sent already cannot be undone: its number stays
        // a hole, as if lost (rare: it takes reordering across a mute).
        if in_seq > m.highest_in_seq {
            self.rebase_from = Some(self.rebase_from.map_or(in_seq, |f| f.min(in_seq)));
        }
    }

    /// The next packet continues the stream whatever its source and number: after a pause,
    /// or when a layer becomes current again, the packets in between were never sent and
    /// must not show as a gap the receiver would ask to be retransmitted.
    pub fn restart(&mut self) {
        self.rebase_from = Some(0);
    }

    /// The timestamp of the last packet sent (a packet with another one starts a frame).
    pub fn last_out_ts(&self) -> u32 {
        self.last_out_ts
    }

    /// The packet just rewritten to `seq` was not sent after all (the subscriber's send
    /// queue is backlogged): its number is given back, and the next packet sent, whatever
    /// its source and number, continues right after the last one really sent.
    pub fn unsend(&mut self, seq: u64) {
        if seq == self.highest_out_seq {
            self.highest_out_seq = seq.wrapping_sub(1);
        }
        self.restart();
    }

    /// Maps `in_seq` to the number after the last one sent, and its timestamp to a moment
    /// that follows the last one sent.
    fn start_mapping(
        &mut self,
        source: SourceId,
        in_seq: u64,
        in_ts: u32,
        now: Instant,
    ) -> Mapping {
        let next_seq = self.highest_out_seq.wrapping_add(1);
        // The same source again (after a mute or pause): its own clock tells how much time
        // passed, exactly, and packets of one frame keep sharing one timestamp. Unless that
        // clock went back (the sender restarted it).
        let same_clock = self
            .mapping
            .filter(|m| m.source == source)
            .map(|m| m.ts_offset)
            .filter(|off| (in_ts.wrapping_add(*off).wrapping_sub(self.last_out_ts) as i32) >= 0);
        let ts_offset = match (same_clock, self.last_out_at) {
            (Some(off), _) => off,
            // Another source: advance the clock by the wall time that passed, at least one
            // tick, so the receiver never sees time stand still or run backwards.
            (None, Some(at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let ticks = ((elapsed * f64::from(self.clock_rate)) as u32).max(1);
                self.last_out_ts.wrapping_add(ticks).wrapping_sub(in_ts)
            }
            (None, None) => self.last_out_ts.wrapping_sub(in_ts),
        };
        let mapping = Mapping {
            source,
            first_in_seq: in_seq,
            highest_in_seq: in_seq,
            seq_offset: next_seq.wrapping_sub(in_seq),
            ts_offset,
        };
        self.mapping = Some(mapping);
        self.rebase_from = None;
        mapping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn send(r: Rewritten) -> (u64, u32) {
        match r {
            Rewritten::Send { seq, ts } => (seq, ts),
            Rewritten::StaleSource => panic!("dropped"),
        }
    }

    #[test]
    fn continuous_across_source_change() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 1000, 5000);
        assert_eq!(send(r.rewrite(1, 70_000, 123_456, t0)), (1000, 5000));
        assert_eq!(send(r.rewrite(1, 70_001, 126_456, t0)), (1001, 8000));
        // New source with unrelated numbering 100 ms later.
        let t1 = t0 + Duration::from_millis(100);
        let (seq, ts) = send(r.rewrite(2, 5, 9, t1));
        assert_eq!(seq, 1002);
        assert_eq!(ts, 8000 + 9000);
        // A packet of the new source from before the switch point would rewind the stream.
        assert_eq!(r.rewrite(2, 4, 0, t1), Rewritten::StaleSource);
        assert_eq!(send(r.rewrite(2, 6, 3009, t1)), (1003, 20_000));
    }

    #[test]
    fn keeps_gaps_and_reordering_of_one_source() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(48_000, 10, 0);
        assert_eq!(send(r.rewrite(7, 100, 0, t0)).0, 10);
        // A loss upstream stays a gap downstream so the receiver can NACK it.
        assert_eq!(send(r.rewrite(7, 102, 1920, t0)).0, 12);
        // The retransmission arrives late and fills it.
        assert_eq!(send(r.rewrite(7, 101, 960, t0)).0, 11);
        assert_eq!(send(r.rewrite(7, 103, 2880, t0)).0, 13);
    }

    #[test]
    fn a_packet_not_sent_after_all_leaves_no_gap() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 100, 0);
        assert_eq!(send(r.rewrite(4, 10, 0, t0)), (100, 0));
        assert_eq!(r.last_out_ts(), 0);
        // The first packet of the next frame is held back, and so is everything until the
        // next keyframe (packets 12..=40): the keyframe follows 100 directly.
        let (seq, ts) = send(r.rewrite(4, 11, 3000, t0));
        assert_eq!((seq, ts), (101, 3000));
        r.unsend(seq);
        let (seq, _) = send(r.rewrite(4, 41, 90_000, t0 + Duration::from_secs(1)));
        assert_eq!(seq, 101);
        assert_eq!(send(r.rewrite(4, 42, 90_000, t0)).0, 102);
    }

    #[test]
    fn restart_closes_the_gap_of_a_pause() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 500, 0);
        assert_eq!(send(r.rewrite(3, 10, 0, t0)), (500, 0));
        // Packets 11..=99 were not forwarded (paused); the stream goes on without a hole,
        // and the source's own clock tells the time that passed.
        r.restart();
        let (seq, ts) = send(r.rewrite(3, 100, 90_500, t0 + Duration::from_secs(1)));
        assert_eq!(seq, 501);
        assert_eq!(ts, 90_500);
    }

    #[test]
    fn a_source_whose_clock_went_back_continues_on_wall_time() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 500, 1_000_000);
        assert_eq!(send(r.rewrite(3, 10, 5_000_000, t0)), (500, 1_000_000));
        r.restart();
        // The sender restarted its clock while paused: time must not run backwards.
        let (seq, ts) = send(r.rewrite(3, 11, 0, t0 + Duration::from_secs(2)));
        assert_eq!((seq, ts), (501, 1_180_000));
    }

    #[test]
    fn withheld_packets_leave_no_hole_but_losses_do() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 100, 0);
        assert_eq!(send(r.rewrite(5, 1000, 0, t0)).0, 100);
        // 1001 is lost upstream: a gap the receiver NACKs.
        assert_eq!(send(r.rewrite(5, 1002, 3000, t0)).0, 102);
        // 1003..=1099 are withheld (muted): no hole for them.
        for seq in 1003..1100 {
            r.withhold(5, seq);
        }
        // The retransmission of 1001 still fills its gap.
        assert_eq!(send(r.rewrite(5, 1001, 0, t0)).0, 101);
        let (seq, ts) = send(r.rewrite(5, 1100, 300_000, t0 + Duration::from_secs(3)));
        assert_eq!((seq, ts), (103, 300_000));
        // Older numbers now belong to nobody; newer losses are gaps again.
        assert_eq!(r.rewrite(5, 1050, 150_000, t0), Rewritten::StaleSource);
        assert_eq!(send(r.rewrite(5, 1102, 303_000, t0)).0, 105);
    }

    #[test]
    fn a_withheld_packet_inside_a_frame_keeps_the_frame_on_one_timestamp() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 10, 0);
        assert_eq!(send(r.rewrite(1, 50, 3000, t0)), (10, 0));
        // A payload type this subscriber cannot take, in the middle of the frame.
        r.withhold(1, 51);
        let later = t0 + Duration::from_millis(2);
        assert_eq!(send(r.rewrite(1, 52, 3000, later)), (11, 0));
        assert_eq!(send(r.rewrite(1, 53, 6000, later)), (12, 3000));
    }

    #[test]
    fn packets_of_other_sources_are_not_ours_to_withhold() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 10, 0);
        assert_eq!(send(r.rewrite(1, 50, 0, t0)).0, 10);
        // Another simulcast layer's packets, not forwarded to this subscriber.
        r.withhold(2, 900);
        r.withhold(2, 901);
        // A loss on the current layer is still a gap.
        assert_eq!(send(r.rewrite(1, 52, 0, t0)).0, 12);
    }

    #[test]
    fn timestamp_wraps() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 1, u32::MAX - 10);
        assert_eq!(send(r.rewrite(1, 1, 0, t0)).1, u32::MAX - 10);
        assert_eq!(send(r.rewrite(1, 2, 3000, t0)).1, 2989);
    }
}
