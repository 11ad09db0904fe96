//! A token bucket for rate limits: client events per second (inside a session, so it needs no
//! atomics and no map) and the server's new connections per second (behind one lock, taken once per
//! connection). Time is passed in, which keeps it testable without a clock.

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that allows `per_second` events per second, bursting up to the same number.
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self::with_burst(per_second, per_second, now)
    }

    /// A bucket that refills at `per_second` and holds at most `burst` tokens (starting full).
    pub fn with_burst(per_second: u32, burst: u32, now: Instant) -> Self {
        let (rate, capacity) = (f64::from(per_second), f64::from(burst));
        Self { capacity, per_second: rate, tokens: capacity, last: now }
    }

    /// Takes one token if there is one.
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[test]
    fn refills_at_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        assert_eq!((0..15).filter(|_| bucket.try_take(start)).count(), 10);
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..15).filter(|_| bucket.try_take(later)).count(), 10);
    }

    #[test]
    fn a_burst_larger_than_the_rate_is_spent_once_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::with_burst(2, 20, start);
        assert_eq!((0..30).filter(|_| bucket.try_take(start)).count(), 20);
        let later = start + Duration::from_secs(1);
        assert_eq!((0..30).filter(|_| bucket.try_take(later)).count(), 2);
    }
}
