//! Token buckets: per socket for messages, per remote IP for WebSocket upgrades.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Allows `per_second` on average with bursts up to `capacity`.
    pub fn new(per_second: u32, capacity: u32, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            tokens: f64::from(capacity),
            last: now,
        }
    }

    /// Like [`TokenBucket::new`] for rates below one per second.
    pub fn new_fractional(per_second: f64, capacity: u32, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            per_second,
            tokens: f64::from(capacity),
            last: now,
        }
    }

    /// Adds the tokens earned since the last call.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One bucket per remote IP; forgets idle IPs so a scan of addresses cannot grow it forever.
pub struct PerIpLimiter {
    per_second: u32,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

const MAX_TRACKED_IPS: usize = 100_000;

impl PerIpLimiter {
    pub fn new(per_second: u32) -> Self {
        Self::with_max_tracked(per_second, MAX_TRACKED_IPS)
    }

    /// Like [`PerIpLimiter::new`], pruning once `max_tracked` IPs are known (tests use a small one).
    pub fn with_max_tracked(per_second: u32, max_tracked: usize) -> Self {
        PerIpLimiter {
            per_second,
            max_tracked,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How many IPs have a bucket.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        // Pruning only when a new IP needs a bucket: known IPs never pay for the scan.
        if buckets.len() >= self.max_tracked && !buckets.contains_key(&ip) {
            // A bucket that has refilled to capacity behaves exactly like the fresh one a
            // returning IP would get, so forgetting it changes nothing; every other bucket is
            // still limiting its IP and must be kept. Tokens are refilled first: the stored
            // count is as old as the IP's last upgrade.
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < b.capacity
            });
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.per_second, self.per_second, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10, t0);
        assert!((0..10).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn ips_are_limited_separately() {
        let t0 = Instant::now();
        let l = PerIpLimiter::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.allow(a, t0) && l.allow(a, t0));
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
    }

    /// Pruning runs when the map is full. An IP that used up its bucket must stay refused
    /// through it: forgetting it would hand a flooding client a fresh burst.
    #[test]
    fn pruning_keeps_a_throttled_ip_throttled() {
        let t0 = Instant::now();
        let l = PerIpLimiter::with_max_tracked(2, 3);
        let flooder: IpAddr = [10, 0, 0, 1].into();
        assert!(l.allow(flooder, t0) && l.allow(flooder, t0));
        assert!(!l.allow(flooder, t0));
        assert!(l.allow([10, 0, 0, 2].into(), t0));
        assert!(l.allow([10, 0, 0, 3].into(), t0));
        // A fourth IP fills the map and prunes it 10 ms later: the flooder has 0.02 tokens.
        let t1 = t0 + Duration::from_millis(10);
        assert!(l.allow([10, 0, 0, 4].into(), t1));
        assert!(
            !l.allow(flooder, t1),
            "pruning reset the bucket of an IP that was being refused"
        );
    }

    /// IPs that have been quiet long enough to have a full bucket again are forgotten, whatever
    /// they did before: a scan of addresses must not grow the map forever.
    #[test]
    fn pruning_forgets_idle_ips() {
        let t0 = Instant::now();
        let l = PerIpLimiter::with_max_tracked(2, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.allow(a, t0) && l.allow(a, t0));
        assert!(l.allow(b, t0) && l.allow(b, t0));
        assert_eq!(l.tracked(), 2);
        let later = t0 + Duration::from_secs(60);
        assert!(l.allow([10, 0, 0, 3].into(), later));
        assert_eq!(l.tracked(), 1, "idle IPs were kept after pruning");
        // Forgetting changed nothing for them: a fresh bucket is what they had refilled to.
        assert!(l.allow(a, later) && l.allow(a, later));
        assert!(!l.allow(a, later));
    }
}
