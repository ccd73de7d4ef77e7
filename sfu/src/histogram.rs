//! A fixed-bucket histogram that threads can observe into without a lock.
//!
//! Bucket bounds are fixed at construction (Prometheus `le` semantics: a value lands in the
//! first bucket whose bound is ≥ it, or in the overflow bucket). Buckets hold plain counts,
//! not cumulative ones, so one observation touches one bucket; readers accumulate.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` counts; the last is the overflow (`+Inf`) bucket.
    buckets: Box<[AtomicU64]>,
    /// The sum of observed values as `f64` bits, updated by compare-and-swap.
    sum: AtomicU64,
}

/// One thread's observations of values that differ per packet, kept in plain integers and
/// added to an [`AtomicHistogram`] once per loop iteration ([`AtomicHistogram::absorb`]):
/// on the packet path an observation is a binary search and two additions, no atomic.
#[derive(Debug)]
pub struct LocalHistogram {
    bounds: &'static [f64],
    counts: Box<[u64]>,
    sum: f64,
    any: bool,
}

impl LocalHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        LocalHistogram {
            bounds,
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum: 0.0,
            any: false,
        }
    }

    /// As [`AtomicHistogram::observe`]: non-finite and negative values are ignored.
    pub fn observe(&mut self, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
        self.any = true;
    }
}

/// A copy of an [`AtomicHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); one more than `bounds`, the last for `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl AtomicHistogram {
    /// `bounds` must be strictly increasing and finite.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        self.observe_n(value, 1);
    }

    /// Records `n` observations of the same value (a batch of packets that shared a fate).
    /// Non-finite and negative values are ignored: they are measurement errors, not data.
    pub fn observe_n(&self, value: f64, n: u64) {
        if n == 0 || !value.is_finite() || value < 0.0 {
            return;
        }
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        let add = value * n as f64;
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + add).to_bits())
            });
    }

    /// Adds what `local` observed (same bounds) and empties it.
    pub fn absorb(&self, local: &mut LocalHistogram) {
        if !local.any {
            return;
        }
        debug_assert_eq!(local.bounds, self.bounds);
        for (bucket, n) in self.buckets.iter().zip(local.counts.iter_mut()) {
            if *n > 0 {
                bucket.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        let add = std::mem::take(&mut local.sum);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + add).to_bits())
            });
        local.any = false;
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

impl HistogramSnapshot {
    /// Observations in all buckets. Derived from the buckets rather than kept separately so
    /// that a reader racing writers still sees `count` equal to the `+Inf` bucket, as the
    /// exposition format demands.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                total += c;
                (self.bounds.get(i).copied().unwrap_or(f64::INFINITY), total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    #[test]
    fn values_land_in_the_first_bucket_not_below_them() {
        let h = AtomicHistogram::new(BOUNDS);
        h.observe(0.0005);
        h.observe(0.001); // on the bound: `le` is inclusive
        h.observe(0.002);
        h.observe(0.05);
        h.observe(7.0);
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 1, 1, 1]);
        assert_eq!(s.count(), 5);
        assert!((s.sum - 7.0535).abs() < 1e-9, "sum {}", s.sum);
        assert_eq!(
            s.cumulative(),
            vec![(0.001, 2), (0.01, 3), (0.1, 4), (f64::INFINITY, 5)]
        );
    }

    #[test]
    fn batch_observation_counts_every_packet() {
        let h = AtomicHistogram::new(BOUNDS);
        h.observe_n(0.005, 30);
        h.observe_n(0.005, 0);
        let s = h.snapshot();
        assert_eq!(s.counts, vec![0, 30, 0, 0]);
        assert!((s.sum - 0.15).abs() < 1e-9);
    }

    #[test]
    fn local_observations_land_where_atomic_ones_would() {
        let direct = AtomicHistogram::new(BOUNDS);
        let absorbed = AtomicHistogram::new(BOUNDS);
        let mut local = LocalHistogram::new(BOUNDS);
        for v in [0.0, 0.0005, 0.001, 0.002, 0.05, 7.0, -1.0, f64::NAN] {
            direct.observe(v);
            local.observe(v);
        }
        absorbed.absorb(&mut local);
        assert_eq!(absorbed.snapshot(), direct.snapshot());
        // Emptied: absorbing again adds nothing.
        absorbed.absorb(&mut local);
        assert_eq!(absorbed.snapshot().count(), 6);
    }

    #[test]
    fn garbage_values_are_not_recorded() {
        let h = AtomicHistogram::new(BOUNDS);
        h.observe(f64::NAN);
        h.observe(f64::INFINITY);
        h.observe(-1.0);
        let s = h.snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(s.sum, 0.0);
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let h = std::sync::Arc::new(AtomicHistogram::new(BOUNDS));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(((i + t) % 4) as f64 * 0.004);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread");
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 40_000);
        // 0, 0.004, 0.008, 0.012 equally often: 10k each.
        assert_eq!(s.counts, vec![10_000, 20_000, 10_000, 0]);
        assert!((s.sum - 10_000.0 * 0.024).abs() < 1e-6, "sum {}", s.sum);
    }
}
