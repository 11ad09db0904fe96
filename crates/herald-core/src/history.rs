//! A channel's recent events, kept so that a client that dropped can resume without a gap.
//!
//! Entries are the already-encoded frames, so a replay writes exactly the bytes that live
//! subscribers got. The buffer is bounded by count and by age; an age of zero or a count of zero
//! turns history off. Whether a resume is possible is decided here and nowhere else: either every
//! event after the client's serial is still held, or the answer is "no" — never a partial replay.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::time::{Duration, Instant};

/// How much history one channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_events: usize,
    pub max_age: Duration,
}

impl HistoryLimits {
    pub fn enabled(&self) -> bool {
        self.max_events > 0 && !self.max_age.is_zero()
    }
}

#[derive(Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub serial: u64,
    pub frame: Bytes,
    at: Instant,
}

impl History {
    /// Appends the frame of event `serial` (which must follow the last one) and trims.
    pub fn push(&mut self, serial: u64, frame: Bytes, now: Instant, limits: HistoryLimits) {
        if !limits.enabled() {
            self.entries.clear();
            return;
        }
        self.entries.push_back(Entry { serial, frame, at: now });
        while self.entries.len() > limits.max_events {
            self.entries.pop_front();
        }
        self.expire(now, limits);
    }

    /// Drops entries older than the age limit.
    pub fn expire(&mut self, now: Instant, limits: HistoryLimits) {
        while self.entries.front().is_some_and(|e| now.saturating_duration_since(e.at) > limits.max_age) {
            self.entries.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Puts back an entry loaded from a store, keeping the limits.
    pub fn restore(&mut self, serial: u64, frame: Bytes, at: Instant, now: Instant, limits: HistoryLimits) {
        if !limits.enabled() {
            return;
        }
        self.entries.push_back(Entry { serial, frame, at });
        while self.entries.len() > limits.max_events {
            self.entries.pop_front();
        }
        self.expire(now, limits);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every event after `after`, up to `head`, if all of them are still held.
    pub fn after(&self, after: u64, head: u64) -> Option<impl Iterator<Item = &Entry>> {
        if after > head {
            return None;
        }
        if after == head {
            return Some(self.entries.range(self.entries.len()..));
        }
        let first = self.entries.front()?.serial;
        let next = after.checked_add(1)?;
        if first > next {
            return None;
        }
        // Entries are contiguous by construction; check it anyway, so that a history restored
        // from a damaged store can never produce a replay with a hole in it.
        let skip = self.entries.binary_search_by_key(&next, |e| e.serial).ok()?;
        let ends_right = self.entries.back().is_some_and(|e| e.serial == head);
        let contiguous = self.entries.len() - skip == usize::try_from(head - after).ok()?;
        (ends_right && contiguous).then(|| self.entries.range(skip..))
    }

    /// Bytes a replay of every event after `after` would queue.
    pub fn replay_bytes(&self, after: u64) -> usize {
        self.entries.iter().filter(|e| e.serial > after).map(|e| e.frame.len()).sum()
    }

    /// Up to `limit` events after `after`, and whether some were already gone.
    pub fn page(&self, after: u64, limit: usize) -> (Vec<&Entry>, bool) {
        let truncated = self.entries.front().is_some_and(|e| e.serial > after.saturating_add(1));
        let events = self.entries.iter().filter(|e| e.serial > after).take(limit).collect();
        (events, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits { max_events: 3, max_age: Duration::from_secs(60) };

    fn serials(history: &History, after: u64, head: u64) -> Option<Vec<u64>> {
        history.after(after, head).map(|it| it.map(|e| e.serial).collect())
    }

    #[test]
    fn resumes_only_without_a_gap() {
        let now = Instant::now();
        let mut history = History::default();
        for serial in 1..=5 {
            history.push(serial, Bytes::new(), now, LIMITS);
        }
        assert_eq!(serials(&history, 2, 5), Some(vec![3, 4, 5]));
        assert_eq!(serials(&history, 4, 5), Some(vec![5]));
        assert_eq!(serials(&history, 5, 5), Some(vec![]));
        assert_eq!(serials(&history, 1, 5), None, "event 2 fell out of history");
        assert_eq!(serials(&history, 6, 5), None, "a serial from the future");
        assert_eq!(serials(&history, u64::MAX, 5), None);
        let mut holed = History::default();
        for serial in [1, 2, 4, 5] {
            holed.push(serial, Bytes::new(), now, HistoryLimits { max_events: 10, ..LIMITS });
        }
        assert_eq!(serials(&holed, 1, 5), None, "a hole (serial 3) is never replayed as complete");
        assert_eq!(serials(&holed, 3, 5), Some(vec![4, 5]));
    }

    #[test]
    fn age_and_zero_limits_turn_history_off() {
        let now = Instant::now();
        let mut history = History::default();
        history.push(1, Bytes::new(), now, LIMITS);
        history.expire(now + Duration::from_secs(61), LIMITS);
        assert_eq!(serials(&history, 0, 1), None);
        assert_eq!(serials(&history, 1, 1), Some(vec![]), "nothing missed, nothing needed");
        let off = HistoryLimits { max_events: 0, ..LIMITS };
        history.push(2, Bytes::new(), now, off);
        assert!(history.is_empty());
    }

    #[test]
    fn pages_report_truncation() {
        let now = Instant::now();
        let mut history = History::default();
        for serial in 1..=5 {
            history.push(serial, Bytes::new(), now, LIMITS);
        }
        let (events, truncated) = history.page(0, 2);
        assert_eq!((events.iter().map(|e| e.serial).collect::<Vec<_>>(), truncated), (vec![3, 4], true));
        let (events, truncated) = history.page(3, 10);
        assert_eq!((events.iter().map(|e| e.serial).collect::<Vec<_>>(), truncated), (vec![4, 5], false));
    }
}
