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

    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
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
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

const MAX_TRACKED_IPS: usize = 100_000;

impl PerIpLimiter {
    pub fn new(per_second: u32) -> Self {
        PerIpLimiter {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= MAX_TRACKED_IPS {
            buckets.retain(|_, b| b.clone().try_take(now) && b.tokens + 1.0 < b.capacity);
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
}
