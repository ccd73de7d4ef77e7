//! Per-stream receive accounting: loss from sequence gaps (duplicates excluded), RFC 3550
//! interarrival jitter, bytes for bitrate, and stalls.

use std::time::{Duration, Instant};

/// A gap between two packets of a stream this long is a freeze the user sees (a 15 fps
/// thumbnail sends a frame every 67 ms, audio a packet every 20 ms). The SFU rewrites
/// sequence numbers across pauses, so a stream the server stopped forwarding for a while
/// (load shedding) shows here and not as loss.
pub const STALL: Duration = Duration::from_millis(500);

/// How far back duplicates are recognised; older late packets count as received.
const WINDOW: u64 = 128;

#[derive(Debug, Clone)]
pub struct StreamStats {
    clock_rate: u32,
    first_seq: u64,
    highest_seq: u64,
    /// Bit i set: `highest_seq - i` arrived.
    window: u128,
    pub received: u64,
    pub duplicates: u64,
    pub bytes: u64,
    /// RFC 3550 jitter estimate in RTP clock units.
    jitter: f64,
    last_transit: Option<i64>,
    pub first_at: Instant,
    pub last_at: Instant,
    /// Gaps of at least [`STALL`] between packets, and their total length.
    pub stalls: u64,
    pub stalled: Duration,
}

impl StreamStats {
    pub fn new(clock_rate: u32, seq: u64, now: Instant) -> Self {
        StreamStats {
            clock_rate: clock_rate.max(1),
            first_seq: seq,
            highest_seq: seq,
            window: 0,
            received: 0,
            duplicates: 0,
            bytes: 0,
            jitter: 0.0,
            last_transit: None,
            first_at: now,
            last_at: now,
            stalls: 0,
            stalled: Duration::ZERO,
        }
    }

    /// `seq` is the extended sequence number, `arrival_us` a monotonic arrival time.
    pub fn on_packet(&mut self, seq: u64, rtp_ts: u32, arrival_us: u64, len: usize, now: Instant) {
        if self.received == 0 && self.duplicates == 0 {
            self.first_seq = seq;
            self.highest_seq = seq;
            self.window = 1;
        } else if seq > self.highest_seq {
            let shift = seq - self.highest_seq;
            self.window = if shift >= WINDOW {
                0
            } else {
                self.window << shift
            } | 1;
            self.highest_seq = seq;
        } else {
            let back = self.highest_seq - seq;
            if back < WINDOW {
                let bit = 1u128 << back;
                if self.window & bit != 0 {
                    self.duplicates += 1;
                    return;
                }
                self.window |= bit;
            }
            if seq < self.first_seq {
                self.first_seq = seq;
            }
        }
        let gap = now.saturating_duration_since(self.last_at);
        if self.received > 0 && gap >= STALL {
            tracing::debug!(
                gap_ms = gap.as_millis() as u64,
                after_s = self
                    .last_at
                    .saturating_duration_since(self.first_at)
                    .as_secs_f64(),
                clock = self.clock_rate,
                "stall"
            );
            self.stalls += 1;
            self.stalled += gap;
        }
        self.received += 1;
        self.bytes += len as u64;
        self.last_at = now;

        let arrival = (arrival_us as u128 * self.clock_rate as u128 / 1_000_000) as i64;
        let transit = arrival.wrapping_sub(i64::from(rtp_ts));
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            // Wrapped RTP timestamps would look like a huge jump; ignore those samples.
            if d < f64::from(self.clock_rate) * 10.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
    }

    /// Packets the sequence numbers say were sent (first to highest seen).
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        self.highest_seq - self.first_seq + 1
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_as_loss_duplicates_do_not() {
        let now = Instant::now();
        let mut s = StreamStats::new(90_000, 100, now);
        for seq in [100u64, 101, 103, 103, 104, 102, 106] {
            s.on_packet(seq, 0, 0, 10, now);
        }
        assert_eq!(s.expected(), 7);
        assert_eq!(s.received, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.lost(), 1, "105 is missing");
    }

    #[test]
    fn a_long_gap_between_packets_is_a_stall_short_ones_are_not() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(90_000, 0, t0);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for (seq, at) in [(0u64, 0u64), (1, 67), (2, 134), (3, 1_634), (4, 1_700)] {
            s.on_packet(seq, 0, at * 1000, 10, ms(at));
        }
        assert_eq!(
            s.lost(),
            0,
            "a paused stream's sequence numbers stay continuous"
        );
        assert_eq!(s.stalls, 1);
        assert_eq!(s.stalled, Duration::from_millis(1_500));
    }

    #[test]
    fn evenly_spaced_packets_have_no_jitter_and_uneven_ones_do() {
        let now = Instant::now();
        let mut even = StreamStats::new(48_000, 0, now);
        let mut uneven = StreamStats::new(48_000, 0, now);
        for i in 0..200u64 {
            even.on_packet(i, (i * 960) as u32, i * 20_000, 100, now);
            let wobble = if i % 2 == 0 { 0 } else { 8_000 };
            uneven.on_packet(i, (i * 960) as u32, i * 20_000 + wobble, 100, now);
        }
        assert!(even.jitter_ms() < 0.01, "{}", even.jitter_ms());
        assert!(uneven.jitter_ms() > 5.0, "{}", uneven.jitter_ms());
    }
}
