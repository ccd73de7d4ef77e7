//! The send stamp of a cascade datagram: when the origin node's worker received the packet
//! from its publisher, as wall-clock microseconds, so that the receiving node can measure
//! what the hop added (worker → relay pipe → gateway → QUIC → gateway → relay pipe →
//! worker; `zvon_cascade_hop_latency_seconds`).
//!
//! Only the low 32 bits of the wall clock travel (4 bytes; they wrap every ~71.6 minutes):
//! the receiver reads the difference to its own clock as a signed 32-bit number, which is
//! right as long as the hop and the nodes' clock offset together stay under ~35 minutes.
//!
//! On one machine every node reads the same clock and the figure is exact to a few
//! microseconds. Across hosts it is only as good as their clock synchronisation (NTP: often
//! within a millisecond on a LAN, worse across the internet): an offset adds to every
//! sample. A stamp from the receiver's future (a clock behind the sender's) counts as a hop
//! of zero, never negative.
//!
//! Packets carry `Instant`s; the wall clock is read only when the [`LinkClock`] is made
//! (the gateway remakes it every few milliseconds), never per packet. Sans-IO: both clocks
//! come in as arguments.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of both clocks: maps `Instant`s to wall-clock stamps and back.
#[derive(Debug, Clone, Copy)]
pub struct LinkClock {
    instant: Instant,
    /// Microseconds since the Unix epoch at `instant`.
    wall_us: u64,
}

impl LinkClock {
    /// The clocks as read at the same moment.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        LinkClock {
            instant,
            wall_us: wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    pub fn now() -> Self {
        Self::new(Instant::now(), SystemTime::now())
    }

    /// The stamp of `at` (the low 32 bits of its wall-clock microseconds).
    pub fn stamp(&self, at: Instant) -> u32 {
        let us = if at >= self.instant {
            self.wall_us
                .wrapping_add(at.duration_since(self.instant).as_micros() as u64)
        } else {
            self.wall_us
                .wrapping_sub(self.instant.duration_since(at).as_micros() as u64)
        };
        us as u32
    }

    /// How long before `now` the stamp was taken (zero for a stamp from the future).
    pub fn age(&self, stamp: u32, now: Instant) -> Duration {
        let diff = self.stamp(now).wrapping_sub(stamp) as i32;
        Duration::from_micros(diff.max(0) as u64)
    }

    /// The local instant of a stamp read at `now`.
    pub fn instant_of(&self, stamp: u32, now: Instant) -> Instant {
        now.checked_sub(self.age(stamp, now)).unwrap_or(now)
    }
}

impl Default for LinkClock {
    fn default() -> Self {
        Self::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn two_nodes_on_one_clock_measure_the_hop_exactly() {
        let t0 = Instant::now();
        // Two processes read the clocks at different moments; both map to the same wall time.
        let origin = LinkClock::new(t0, at(1_800_000_000));
        let edge = LinkClock::new(
            t0 + Duration::from_millis(3),
            at(1_800_000_000) + Duration::from_millis(3),
        );
        let received = t0 + Duration::from_millis(10);
        let stamp = origin.stamp(received);
        let now = received + Duration::from_micros(1234);
        assert_eq!(edge.age(stamp, now), Duration::from_micros(1234));
        assert_eq!(edge.instant_of(stamp, now), received);
        // An instant before the clock was read stamps as well.
        let earlier = t0 + Duration::from_millis(1);
        assert_eq!(
            edge.age(origin.stamp(earlier), now),
            Duration::from_micros(10_234)
        );
    }

    #[test]
    fn the_32_bit_stamp_wraps_without_a_jump() {
        let t0 = Instant::now();
        // The wall clock 100 µs before the low 32 bits wrap.
        let wall = UNIX_EPOCH + Duration::from_micros((7u64 << 32) - 100);
        let clock = LinkClock::new(t0, wall);
        let stamp = clock.stamp(t0);
        assert_eq!(stamp, u32::MAX - 99);
        let now = t0 + Duration::from_micros(250);
        assert!(clock.stamp(now) < 200, "wrapped");
        assert_eq!(clock.age(stamp, now), Duration::from_micros(250));
    }

    #[test]
    fn a_stamp_from_the_future_is_a_hop_of_zero() {
        let t0 = Instant::now();
        // The sender's clock runs 5 ms ahead of the receiver's.
        let sender = LinkClock::new(t0, at(1_800_000_000) + Duration::from_millis(5));
        let receiver = LinkClock::new(t0, at(1_800_000_000));
        let now = t0 + Duration::from_millis(1);
        let stamp = sender.stamp(t0);
        assert_eq!(receiver.age(stamp, now), Duration::ZERO);
        assert_eq!(receiver.instant_of(stamp, now), now);
        // Running 5 ms behind instead, the same hop reads 6 ms: the offset adds.
        let sender = LinkClock::new(t0, at(1_800_000_000) - Duration::from_millis(5));
        assert_eq!(
            receiver.age(sender.stamp(t0), now),
            Duration::from_millis(6)
        );
    }
}
