//! Loss repair on one cascade hop. QUIC never retransmits a DATAGRAM, so each hop repairs its
//! own losses: the sending node keeps the datagrams it sent per flow for a short while
//! ([`PacketCache`]); the receiving node watches each flow's sequence numbers
//! ([`GapTracker`]), asks for what is missing with a NACK on the control stream, forwards a
//! repaired packet when it comes, and drops what it already forwarded (a late original after
//! its retransmission, or two answers to two NACKs).
//!
//! Why per hop and not end to end: a subscriber's NACK ends at its own node (str0m answers
//! from that connection's send cache), which never had the packet the link lost; and the
//! link's round trip (a data centre's, ~1 ms) is what bounds how fast a hole is filled, so
//! a repaired packet reaches the far subscriber long before its jitter buffer gives up.
//!
//! Sans-IO: sequence numbers, bytes and `now` in; verdicts and sequence numbers to ask for
//! out. Nothing here allocates per packet: rings and lists are sized once per flow.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// Datagrams kept per video flow (~1–2 s of a camera layer; bounded by age too).
pub const VIDEO_CACHE: usize = 512;
/// Datagrams kept per audio flow (Opus at 50 packets/s: ~1.3 s).
pub const AUDIO_CACHE: usize = 64;
/// A datagram older than this is not re-sent: the far jitter buffers have moved on.
pub const CACHE_AGE: Duration = Duration::from_millis(1000);
/// A jump of more sequence numbers than this is a restart of the stream (a layer turned
/// back on, a new source), not a loss: nothing is asked for.
pub const MAX_GAP: u64 = 128;
/// Sequence numbers remembered behind the highest, to drop duplicates.
const WINDOW: u64 = 1024;
/// Missing sequence numbers tracked at once per flow; more are not asked for.
const MAX_MISSING: usize = 128;
/// How many times one sequence number is asked for.
pub const MAX_TRIES: u8 = 3;

/// What the repair on a node counted (plain integers; the driver publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairCounts {
    /// NACK messages sent (each may ask for several packets).
    pub nacks_sent: u64,
    /// Sequence numbers asked for (retries included).
    pub requested: u64,
    /// Packets re-sent from the cache in answer to a NACK.
    pub resent: u64,
    /// Asked-for packets the cache no longer (or never) had.
    pub cache_misses: u64,
    /// Missing packets that arrived after all (after a NACK, or late).
    pub repaired: u64,
    /// Missing packets given up on (every try spent, or too old).
    pub unrepaired: u64,
    /// Packets dropped because they were forwarded already (or are older than the window).
    pub duplicates: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    seq: u16,
    at: Instant,
    datagram: Bytes,
}

/// The datagrams of one flow sent lately, by RTP sequence number: a ring indexed by
/// `seq % len`, so an entry is found, or overwritten, in one step.
#[derive(Debug)]
pub struct PacketCache {
    ring: Box<[Option<Cached>]>,
    max_age: Duration,
}

impl PacketCache {
    pub fn new(len: usize, max_age: Duration) -> Self {
        PacketCache {
            ring: (0..len.max(1)).map(|_| None).collect(),
            max_age,
        }
    }

    /// Keeps `datagram` (the bytes sent, shared: no copy) as sequence number `seq`.
    pub fn insert(&mut self, seq: u16, datagram: &Bytes, now: Instant) {
        let i = usize::from(seq) % self.ring.len();
        self.ring[i] = Some(Cached {
            seq,
            at: now,
            datagram: datagram.clone(),
        });
    }

    /// The datagram sent as `seq`, if still kept and young enough.
    pub fn get(&self, seq: u16, now: Instant) -> Option<&Bytes> {
        let c = self.ring[usize::from(seq) % self.ring.len()].as_ref()?;
        (c.seq == seq && now.saturating_duration_since(c.at) <= self.max_age).then_some(&c.datagram)
    }

    pub fn capacity(&self) -> usize {
        self.ring.len()
    }
}

/// What to do with a packet the link delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: forward it.
    Forward,
    /// A missing packet that arrived (a repair, or a late original): forward it.
    Repaired,
    /// Forwarded already, or too old to place: drop it.
    Duplicate,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u64,
    since: Instant,
    next_ask: Instant,
    tries: u8,
}

/// One flow's sequence numbers as the receiving node sees them.
#[derive(Debug)]
pub struct GapTracker {
    highest: Option<u64>,
    /// Bit `i` of the window: `highest - i` arrived.
    seen: [u64; (WINDOW / 64) as usize],
    missing: Vec<Missing>,
}

impl Default for GapTracker {
    fn default() -> Self {
        GapTracker {
            highest: None,
            seen: [0; (WINDOW / 64) as usize],
            missing: Vec::with_capacity(MAX_MISSING),
        }
    }
}

impl GapTracker {
    /// The highest extended sequence number seen (to unroll the next 16-bit one against).
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets the flow's history: its next packet starts it afresh (the layer was turned
    /// off and on, the source muted, the stream restarted). Returns how many missing packets
    /// were abandoned.
    pub fn reset(&mut self) -> usize {
        let abandoned = self.missing.len();
        self.highest = None;
        self.seen = [0; (WINDOW / 64) as usize];
        self.missing.clear();
        abandoned
    }

    fn bit(&self, back: u64) -> bool {
        back < WINDOW && self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set_bit(&mut self, back: u64) {
        if back < WINDOW {
            self.seen[(back / 64) as usize] |= 1 << (back % 64);
        }
    }

    /// Moves the window forward by `by` (the new highest is `by` past the old).
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.seen[s] << bits);
            let lo = match (src.and_then(|s| s.checked_sub(1)), bits) {
                (Some(s), b) if b > 0 => self.seen[s] >> (64 - b),
                _ => 0,
            };
            self.seen[i] = hi | lo;
        }
    }

    /// A packet of extended sequence number `seq` arrived. A gap it opens is noted and the
    /// missing numbers are asked for at the next [`GapTracker::due`].
    pub fn on_packet(&mut self, seq: u64, now: Instant, counts: &mut RepairCounts) -> Verdict {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.set_bit(0);
            return Verdict::Forward;
        };
        if seq > highest {
            let gap = seq - highest - 1;
            if gap > MAX_GAP {
                counts.unrepaired += self.reset() as u64;
                self.highest = Some(seq);
                self.set_bit(0);
                return Verdict::Forward;
            }
            for s in highest + 1..seq {
                if self.missing.len() == MAX_MISSING {
                    // The oldest hole is the least likely to be useful when repaired.
                    self.missing.remove(0);
                    counts.unrepaired += 1;
                }
                self.missing.push(Missing {
                    seq: s,
                    since: now,
                    next_ask: now,
                    tries: 0,
                });
            }
            self.shift(seq - highest);
            self.highest = Some(seq);
            self.set_bit(0);
            return Verdict::Forward;
        }
        let back = highest - seq;
        if back >= WINDOW || self.bit(back) {
            counts.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.set_bit(back);
        if let Some(i) = self.missing.iter().position(|m| m.seq == seq) {
            self.missing.remove(i);
            counts.repaired += 1;
        }
        // Not missing and not seen: reordered within the window, or a hole given up on.
        Verdict::Repaired
    }

    /// The sequence numbers to ask for now (appended to `out`, 16-bit as on the wire):
    /// those never asked for, and those whose last ask went unanswered for `retry`.
    /// Numbers asked [`MAX_TRIES`] times, or missing for longer than `give_up`, are dropped.
    pub fn due(
        &mut self,
        now: Instant,
        retry: Duration,
        give_up: Duration,
        out: &mut Vec<u16>,
        counts: &mut RepairCounts,
    ) {
        let before = self.missing.len();
        // A number asked for the last time is given up once that ask had its time.
        self.missing.retain(|m| {
            !(m.tries >= MAX_TRIES && m.next_ask <= now)
                && now.saturating_duration_since(m.since) <= give_up
        });
        counts.unrepaired += (before - self.missing.len()) as u64;
        for m in self.missing.iter_mut().filter(|m| m.next_ask <= now) {
            m.tries += 1;
            m.next_ask = now + retry;
            out.push(m.seq as u16);
        }
    }

    /// Packets missing and still being asked for.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    const RETRY: Duration = Duration::from_millis(20);
    const GIVE_UP: Duration = Duration::from_millis(500);

    #[test]
    fn a_gap_is_asked_for_once_then_retried_and_its_repair_forwarded() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        assert_eq!(g.on_packet(100, now, &mut c), Verdict::Forward);
        assert_eq!(g.on_packet(103, now, &mut c), Verdict::Forward);
        let mut ask = vec![];
        g.due(now, RETRY, GIVE_UP, &mut ask, &mut c);
        assert_eq!(ask, vec![101, 102]);
        // Asked already: nothing more until the retry interval has passed.
        ask.clear();
        g.due(now + RETRY / 2, RETRY, GIVE_UP, &mut ask, &mut c);
        assert!(ask.is_empty());
        // 101 is repaired; 102 is asked again.
        assert_eq!(g.on_packet(101, now, &mut c), Verdict::Repaired);
        g.due(now + RETRY, RETRY, GIVE_UP, &mut ask, &mut c);
        assert_eq!(ask, vec![102]);
        assert_eq!(c.repaired, 1);
        assert_eq!(g.missing(), 1);
    }

    #[test]
    fn duplicates_and_too_old_packets_are_dropped() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        for s in 2000..2010 {
            assert_eq!(g.on_packet(s, now, &mut c), Verdict::Forward);
        }
        assert_eq!(g.on_packet(2005, now, &mut c), Verdict::Duplicate);
        assert_eq!(g.on_packet(2009, now, &mut c), Verdict::Duplicate);
        // A hole repaired twice (two NACKs, two answers): the second copy goes.
        assert_eq!(g.on_packet(2012, now, &mut c), Verdict::Forward);
        assert_eq!(g.on_packet(2010, now, &mut c), Verdict::Repaired);
        assert_eq!(g.on_packet(2010, now, &mut c), Verdict::Duplicate);
        // Older than the window: cannot be placed, never forwarded.
        assert_eq!(g.on_packet(2012 - WINDOW, now, &mut c), Verdict::Duplicate);
        assert_eq!(c.duplicates, 4);
        assert_eq!(c.repaired, 1);
        assert_eq!(g.missing(), 1, "2011 is still missing");
    }

    #[test]
    fn the_window_slides_across_word_boundaries() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        // Every seventh packet lost (jumps of 1 and 2 move the window by uneven steps).
        let last = 70_000 + 3000;
        for s in 70_000..=last {
            if s % 7 != 0 {
                assert_eq!(g.on_packet(s, now, &mut c), Verdict::Forward);
            }
        }
        // Inside the window, what arrived is a duplicate and what was lost is not.
        for s in last + 1 - WINDOW..=last {
            let v = g.on_packet(s, now, &mut c);
            if s % 7 == 0 {
                assert_eq!(v, Verdict::Repaired, "{s}");
            } else {
                assert_eq!(v, Verdict::Duplicate, "{s}");
            }
        }
    }

    #[test]
    fn a_big_jump_is_a_restart_not_a_loss() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        g.on_packet(10, now, &mut c);
        assert_eq!(g.on_packet(10 + MAX_GAP + 2, now, &mut c), Verdict::Forward);
        let mut ask = vec![];
        g.due(now, RETRY, GIVE_UP, &mut ask, &mut c);
        assert!(ask.is_empty(), "{ask:?}");
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_hole_is_given_up_after_its_tries_or_its_age() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        g.on_packet(1, now, &mut c);
        g.on_packet(3, now, &mut c);
        let mut asks = 0;
        let mut at = now;
        for _ in 0..10 {
            let mut ask = vec![];
            g.due(at, RETRY, GIVE_UP, &mut ask, &mut c);
            asks += ask.len();
            at += RETRY;
        }
        assert_eq!(asks, usize::from(MAX_TRIES));
        assert_eq!(g.missing(), 0);
        assert_eq!(c.unrepaired, 1);
        // Too old before its tries are spent.
        g.on_packet(5, at, &mut c);
        let mut ask = vec![];
        g.due(at + GIVE_UP * 2, RETRY, GIVE_UP, &mut ask, &mut c);
        assert!(ask.is_empty());
        assert_eq!(c.unrepaired, 2);
        // Arriving after being given up on is still not a duplicate: it was never forwarded.
        assert_eq!(g.on_packet(4, at, &mut c), Verdict::Repaired);
    }

    #[test]
    fn the_missing_list_is_bounded() {
        let (now, mut c) = (t0(), RepairCounts::default());
        let mut g = GapTracker::default();
        let mut s = 0;
        g.on_packet(s, now, &mut c);
        // Many gaps of 2: more holes than the list keeps.
        for _ in 0..MAX_MISSING {
            s += 3;
            g.on_packet(s, now, &mut c);
        }
        assert_eq!(g.missing(), MAX_MISSING);
        assert_eq!(c.unrepaired, MAX_MISSING as u64);
        let mut ask = vec![];
        g.due(now, RETRY, GIVE_UP, &mut ask, &mut c);
        // The newest holes are the ones asked for.
        assert_eq!(*ask.last().unwrap(), (s - 1) as u16);
    }

    #[test]
    fn the_cache_answers_by_sequence_number_within_its_bounds() {
        let now = t0();
        let mut cache = PacketCache::new(8, Duration::from_millis(100));
        for seq in 0..20u16 {
            cache.insert(seq, &Bytes::from(vec![seq as u8; 3]), now);
        }
        // Only the last 8 are kept (count bound) ...
        assert!(cache.get(11, now).is_none());
        assert_eq!(cache.get(12, now).map(|b| b[0]), Some(12));
        assert_eq!(cache.get(19, now).map(|b| b[0]), Some(19));
        // ... a slot reused by another number does not answer for the old one ...
        assert!(cache.get(4, now).is_none());
        // ... and nothing older than the age bound.
        assert!(cache.get(19, now + Duration::from_millis(101)).is_none());
        // Sequence numbers wrap.
        cache.insert(u16::MAX, &Bytes::from_static(b"w"), now);
        cache.insert(0, &Bytes::from_static(b"z"), now);
        assert_eq!(cache.get(u16::MAX, now).map(|b| b[0]), Some(b'w'));
        assert_eq!(cache.get(0, now).map(|b| b[0]), Some(b'z'));
        assert_eq!(cache.capacity(), 8);
    }
}
