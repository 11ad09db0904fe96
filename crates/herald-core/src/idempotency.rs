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
    seen: HashMap<Box<str>, Remembered>,
    order: VecDeque<(Instant, Box<str>)>,
}

/// What was published under a key (its channels), and the serials it took.
type Remembered = (Box<str>, Arc<[u64]>);

/// What a keyed publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// First use of the key: delivered.
    Delivered(Arc<[u64]>),
    /// The same publish again: not delivered; the first serials.
    Repeated(Arc<[u64]>),
    /// The key was used for a different publish (other channels): refused.
    Conflict,
}

impl Idempotency {
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self { inner: Mutex::default(), window, max_keys }
    }

    /// Runs `deliver` unless `key` was used within the window. `target` names what is published
    /// (its channels); a key reused for another target is a conflict, not a repeat.
    pub fn run(&self, key: &str, target: &str, now: Instant, deliver: impl FnOnce() -> Vec<u64>) -> Outcome {
        let mut inner = self.inner.lock();
        if let Some(outcome) = self.check(&mut inner, key, target, now) {
            return outcome;
        }
        let serials: Arc<[u64]> = deliver().into();
        self.remember(&mut inner, key, target, serials.clone(), now);
        Outcome::Delivered(serials)
    }

    fn check(&self, inner: &mut Inner, key: &str, target: &str, now: Instant) -> Option<Outcome> {
        self.forget_expired(inner, now);
        let (first_target, serials) = inner.seen.get(key)?;
        Some(if **first_target == *target { Outcome::Repeated(serials.clone()) } else { Outcome::Conflict })
    }

    fn remember(&self, inner: &mut Inner, key: &str, target: &str, serials: Arc<[u64]>, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        while inner.order.len() >= self.max_keys {
            if let Some((_, oldest)) = inner.order.pop_front() {
                inner.seen.remove(&oldest);
            }
        }
        inner.seen.insert(key.into(), (target.into(), serials));
        inner.order.push_back((now, key.into()));
    }

    fn forget_expired(&self, inner: &mut Inner, now: Instant) {
        while inner.order.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window) {
            if let Some((_, key)) = inner.order.pop_front() {
                inner.seen.remove(&key);
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
            let outcome = keys.run("k", "c", now, || {
                deliveries += 1;
                vec![7]
            });
            assert!(matches!(outcome, Outcome::Delivered(s) | Outcome::Repeated(s) if *s == [7]));
        }
        assert_eq!(deliveries, 1);
        assert_eq!(keys.run("k", "other", now, || vec![9]), Outcome::Conflict, "a key names one publish");
        let later = keys.run("k", "c", now + Duration::from_secs(300), || vec![8]);
        assert_eq!(later, Outcome::Delivered(Arc::from([8])), "the window is over");
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let keys = Idempotency::new(Duration::from_secs(300), 2);
        let now = Instant::now();
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            keys.run(key, "t", now, || vec![i as u64]);
        }
        assert!(matches!(keys.run("a", "t", now, || vec![9]), Outcome::Delivered(_)), "oldest key forgotten first");
        assert!(matches!(keys.run("c", "t", now, || vec![9]), Outcome::Repeated(_)));
    }
}
