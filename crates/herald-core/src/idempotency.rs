//! Idempotent publishing: a publish repeated with the same key inside the app's window is answered
//! with the serials of the first one and not delivered again.
//!
//! Keys are remembered for the window and at most `max_keys` at a time (oldest forgotten first), so
//! memory is bounded whatever publishers send. A keyed publish runs while holding this app's key
//! table, which makes "check, deliver, remember" one step: two racing repeats cannot both deliver.
//! Publishes without a key never touch it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 200;

#[derive(Debug)]
pub(crate) struct Idempotency {
    inner: Mutex<Inner>,
    window: Duration,
    max_keys: usize,
}

#[derive(Debug, Default)]
struct Inner {
    serials: HashMap<Box<str>, Arc<[u64]>>,
    order: VecDeque<(Instant, Box<str>)>,
}

impl Idempotency {
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self { inner: Mutex::default(), window, max_keys }
    }

    /// Runs `deliver` unless `key` was used within the window. Returns the serials (of the first
    /// delivery when repeated) and whether this was a repeat.
    pub fn run(&self, key: &str, now: Instant, deliver: impl FnOnce() -> Vec<u64>) -> (Arc<[u64]>, bool) {
        let mut inner = self.inner.lock();
        self.forget_expired(&mut inner, now);
        if let Some(serials) = inner.serials.get(key) {
            return (serials.clone(), true);
        }
        let serials: Arc<[u64]> = deliver().into();
        if self.window.is_zero() {
            return (serials, false);
        }
        while inner.order.len() >= self.max_keys {
            if let Some((_, oldest)) = inner.order.pop_front() {
                inner.serials.remove(&oldest);
            }
        }
        inner.serials.insert(key.into(), serials.clone());
        inner.order.push_back((now, key.into()));
        (serials, false)
    }

    fn forget_expired(&self, inner: &mut Inner, now: Instant) {
        while inner.order.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window) {
            if let Some((_, key)) = inner.order.pop_front() {
                inner.serials.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_not_delivered() {
        let keys = Idempotency::new(Duration::from_secs(300), 2);
        let now = Instant::now();
        let mut deliveries = 0;
        for _ in 0..3 {
            let (serials, _) = keys.run("k", now, || {
                deliveries += 1;
                vec![7]
            });
            assert_eq!(&*serials, &[7]);
        }
        assert_eq!(deliveries, 1);
        let (_, repeat) = keys.run("k", now + Duration::from_secs(300), || vec![8]);
        assert!(!repeat, "the window is over");
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let keys = Idempotency::new(Duration::from_secs(300), 2);
        let now = Instant::now();
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            keys.run(key, now, || vec![i as u64]);
        }
        assert!(!keys.run("a", now, || vec![9]).1, "oldest key forgotten first");
        assert!(keys.run("c", now, || vec![9]).1);
    }
}
