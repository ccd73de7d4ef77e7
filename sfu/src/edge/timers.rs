//! When each connection next wants a timeout, ordered: a worker's wake costs O(log n) in the
//! connections whose deadline changed, not a walk over every participant.
//!
//! Entries are never removed in place. A key scheduled again leaves its old entry behind, and
//! the owner says which entries are current (for the worker: the connection still exists and
//! still waits for exactly that instant); stale ones are dropped when they reach the top, and
//! the whole heap is compacted when stale entries outnumber live ones. Sans-IO: instants in,
//! due keys out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Stale entries tolerated before a compaction, beyond twice the live count.
const COMPACT_SLACK: usize = 64;

pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> TimerQueue<K> {
    /// `key` wants a timeout at `at`; an earlier entry of the same key becomes stale as soon
    /// as the owner stops calling it current.
    pub fn schedule(&mut self, key: K, at: Instant) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest current deadline; stale entries on top are dropped on the way.
    pub fn next(&mut self, mut current: impl FnMut(K, Instant) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if current(key, at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Moves every current entry due at `now` (deadline ≤ `now`) to `due`, earliest first.
    pub fn pop_due(
        &mut self,
        now: Instant,
        mut current: impl FnMut(K, Instant) -> bool,
        due: &mut Vec<(K, Instant)>,
    ) {
        let mut last = None;
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            // A key scheduled for X, then Y, then X again has two current X entries; they
            // come out one after the other.
            if last == Some((at, key)) {
                continue;
            }
            last = Some((at, key));
            if current(key, at) {
                due.push((key, at));
            }
        }
    }

    /// Drops stale entries once they outnumber the `live` keys twice over (keys rescheduled
    /// to later instants leave their earlier entries, which `next` would otherwise pass over
    /// only when their time comes, and far-future ones never).
    pub fn compact(&mut self, live: usize, mut current: impl FnMut(K, Instant) -> bool) {
        if self.heap.len() > 2 * live + COMPACT_SLACK {
            self.heap.retain(|Reverse((at, key))| current(*key, *at));
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    /// The owner's side: which instant each key currently waits for.
    #[derive(Default)]
    struct Owner {
        waits: HashMap<u32, Instant>,
        queue: TimerQueue<u32>,
    }

    impl Owner {
        fn set(&mut self, key: u32, at: Instant) {
            self.waits.insert(key, at);
            self.queue.schedule(key, at);
        }

        fn next(&mut self) -> Option<Instant> {
            let waits = &self.waits;
            self.queue.next(|k, at| waits.get(&k) == Some(&at))
        }

        fn due(&mut self, now: Instant) -> Vec<u32> {
            let mut due = vec![];
            let waits = &self.waits;
            self.queue
                .pop_due(now, |k, at| waits.get(&k) == Some(&at), &mut due);
            // Handled: a key waits for nothing until it is scheduled again.
            for (k, _) in &due {
                self.waits.remove(k);
            }
            due.into_iter().map(|(k, _)| k).collect()
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_out_earliest_first_and_only_once() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        o.set(1, ms(t0, 30));
        o.set(2, ms(t0, 10));
        o.set(3, ms(t0, 20));
        assert_eq!(o.next(), Some(ms(t0, 10)));
        assert_eq!(o.due(ms(t0, 5)), Vec::<u32>::new());
        assert_eq!(o.due(ms(t0, 20)), vec![2, 3]);
        assert_eq!(o.next(), Some(ms(t0, 30)));
        assert_eq!(o.due(ms(t0, 20)), Vec::<u32>::new(), "not twice");
        assert_eq!(o.due(ms(t0, 100)), vec![1]);
        assert_eq!(o.next(), None);
        assert!(o.queue.is_empty());
    }

    #[test]
    fn a_rescheduled_key_fires_at_its_new_time_only() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        o.set(7, ms(t0, 10));
        // Moved later: the 10 ms entry is stale and neither wakes nor fires.
        o.set(7, ms(t0, 40));
        assert_eq!(o.next(), Some(ms(t0, 40)));
        assert_eq!(o.due(ms(t0, 20)), Vec::<u32>::new());
        // Moved earlier: fires at the earlier time, and the 40 ms entry is then stale.
        o.set(7, ms(t0, 25));
        assert_eq!(o.due(ms(t0, 30)), vec![7]);
        assert_eq!(o.due(ms(t0, 50)), Vec::<u32>::new());
        assert!(o.queue.is_empty());
    }

    #[test]
    fn a_key_gone_from_the_owner_never_fires() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        o.set(1, ms(t0, 10));
        o.set(2, ms(t0, 10));
        o.waits.remove(&1);
        assert_eq!(o.due(ms(t0, 10)), vec![2]);
    }

    #[test]
    fn the_same_instant_twice_fires_once() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        o.set(4, ms(t0, 10));
        o.set(4, ms(t0, 20));
        o.set(4, ms(t0, 10));
        o.set(5, ms(t0, 10));
        assert_eq!(o.due(ms(t0, 30)), vec![4, 5]);
    }

    #[test]
    fn stale_entries_are_compacted_away() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        // Ten keys each pushed later 100 times: 1000 entries, 10 current.
        for round in 0..100 {
            for k in 0..10 {
                o.set(k, ms(t0, 1000 + round));
            }
        }
        assert_eq!(o.queue.len(), 1000);
        let waits = &o.waits;
        o.queue.compact(10, |k, at| waits.get(&k) == Some(&at));
        assert_eq!(o.queue.len(), 10);
        // Below the threshold nothing is walked.
        o.set(0, ms(t0, 5000));
        let waits = &o.waits;
        o.queue
            .compact(10, |_, _| unreachable!("no compaction below the slack"));
        let _ = waits;
        assert_eq!(o.queue.len(), 11);
        let mut all: Vec<u32> = o.due(ms(t0, 10_000));
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
