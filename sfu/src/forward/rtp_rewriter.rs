//! Rewrites sequence numbers and timestamps so a subscriber sees one continuous stream.
//!
//! A downtrack's source can change (a publisher reconnects, a layer switch, a track
//! replaced); the receiver's jitter buffer and decoder must not see a jump backwards or a
//! gap that never fills. Each source gets an offset that continues where the previous one
//! stopped. Which source is current is the caller's decision (the layer selector drops
//! packets of layers it is not forwarding): a packet of another source is a switch.

use std::time::Instant;

/// Identifies one upstream stream (a track's SSRC generation, a simulcast layer, ...).
pub type SourceId = u32;

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source: SourceId,
    /// First input sequence number of this source: older ones belong to nobody any more.
    first_in_seq: u64,
    seq_offset: u64,
    ts_offset: u32,
}

#[derive(Debug, Clone)]
pub struct RtpRewriter {
    clock_rate: u32,
    mapping: Option<Mapping>,
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
    /// A straggler from a source we switched away from.
    StaleSource,
}

impl RtpRewriter {
    /// `first_out_seq` should be random below 2^15 so the stream starts with ROC 0 and leaves room.
    pub fn new(clock_rate: u32, first_out_seq: u16, first_out_ts: u32) -> Self {
        RtpRewriter {
            clock_rate,
            mapping: None,
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
                m
            }
            _ => self.switch_to(source, in_seq, in_ts, now),
        };
        let seq = in_seq.wrapping_add(mapping.seq_offset);
        let ts = in_ts.wrapping_add(mapping.ts_offset);
        if seq > self.highest_out_seq || self.highest_out_seq == u64::MAX {
            self.highest_out_seq = seq;
            self.last_out_ts = ts;
            self.last_out_at = Some(now);
        }
        Rewritten::Send { seq, ts }
    }

    /// The next packet continues the stream whatever its source and number: after a pause,
    /// or when a layer becomes current again, the packets in between were never sent and
    /// must not show as a gap the receiver would ask to be retransmitted.
    pub fn restart(&mut self) {
        self.mapping = None;
    }

    fn switch_to(&mut self, source: SourceId, in_seq: u64, in_ts: u32, now: Instant) -> Mapping {
        let next_seq = self.highest_out_seq.wrapping_add(1);
        let next_ts = match self.last_out_at {
            // Advance the clock by the wall time that passed, at least one tick, so the
            // receiver never sees time stand still or run backwards across a switch.
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let ticks = ((elapsed * f64::from(self.clock_rate)) as u32).max(1);
                self.last_out_ts.wrapping_add(ticks)
            }
            None => self.last_out_ts,
        };
        let mapping = Mapping {
            source,
            first_in_seq: in_seq,
            seq_offset: next_seq.wrapping_sub(in_seq),
            ts_offset: next_ts.wrapping_sub(in_ts),
        };
        self.mapping = Some(mapping);
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
    fn restart_closes_the_gap_of_a_pause() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 500, 0);
        assert_eq!(send(r.rewrite(3, 10, 0, t0)), (500, 0));
        // Packets 11..=99 were not forwarded (paused); the stream goes on without a hole.
        r.restart();
        let (seq, ts) = send(r.rewrite(3, 100, 270_000, t0 + Duration::from_secs(1)));
        assert_eq!(seq, 501);
        assert_eq!(ts, 90_000);
    }

    #[test]
    fn timestamp_wraps() {
        let t0 = Instant::now();
        let mut r = RtpRewriter::new(90_000, 1, u32::MAX - 10);
        assert_eq!(send(r.rewrite(1, 1, 0, t0)).1, u32::MAX - 10);
        assert_eq!(send(r.rewrite(1, 2, 3000, t0)).1, 2989);
    }
}
