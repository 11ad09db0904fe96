//! `subscription_count` webhooks, throttled: at most one per channel per [`COUNT_THROTTLE`], each
//! carrying the latest count, and none when the count is back where it was last told (so a page
//! refresh says nothing). Only endpoints that list `subscription_count` get them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::WebhookEvent;

/// Least time between two `subscription_count` events of one channel.
pub const COUNT_THROTTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct CountThrottle {
    channels: HashMap<Arc<str>, Told>,
    /// When each channel's quiet time ends, oldest first (the throttle is the same for all).
    due: VecDeque<(Instant, Arc<str>)>,
}

#[derive(Debug)]
struct Told {
    at: Instant,
    count: usize,
    /// A newer count, told when the quiet time ends.
    pending: Option<usize>,
}

impl CountThrottle {
    /// Takes a channel's new count; tells it at once unless the channel is in its quiet time.
    pub fn offer(&mut self, channel: Arc<str>, count: usize, now: Instant, ready: &mut Vec<WebhookEvent>) {
        match self.channels.get_mut(&channel) {
            Some(told) => told.pending = Some(count),
            None => {
                ready.push(WebhookEvent::SubscriptionCount { channel: channel.clone(), subscription_count: count });
                self.due.push_back((now + COUNT_THROTTLE, channel.clone()));
                self.channels.insert(channel, Told { at: now, count, pending: None });
            }
        }
    }

    /// Ends the quiet times that are over: a changed count is told (and starts a new quiet time),
    /// an unchanged channel is forgotten.
    pub fn release_due(&mut self, now: Instant, ready: &mut Vec<WebhookEvent>) {
        while self.due.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, channel)) = self.due.pop_front() else { break };
            let Some(told) = self.channels.get_mut(&channel) else { continue };
            match told.pending.take().filter(|count| *count != told.count) {
                Some(count) => {
                    *told = Told { at: now, count, pending: None };
                    ready.push(WebhookEvent::SubscriptionCount { channel: channel.clone(), subscription_count: count });
                    self.due.push_back((now + COUNT_THROTTLE, channel));
                }
                None => {
                    self.channels.remove(&channel);
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// Tells every pending changed count now (at a graceful stop).
    pub fn release_all(&mut self, ready: &mut Vec<WebhookEvent>) {
        let later = self.channels.values().map(|told| told.at).max().map(|at| at + COUNT_THROTTLE);
        if let Some(later) = later {
            self.release_due(later, ready);
        }
        self.channels.clear();
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: usize) -> WebhookEvent {
        WebhookEvent::SubscriptionCount { channel: "a".into(), subscription_count: n }
    }

    #[test]
    fn counts_are_told_at_most_once_per_throttle_with_the_latest_value() {
        let mut throttle = CountThrottle::default();
        let start = Instant::now();
        let mut ready = Vec::new();
        throttle.offer("a".into(), 1, start, &mut ready);
        throttle.offer("a".into(), 2, start + Duration::from_secs(1), &mut ready);
        throttle.offer("a".into(), 3, start + Duration::from_secs(2), &mut ready);
        assert_eq!(ready, [count(1)]);
        throttle.release_due(start + Duration::from_secs(4), &mut ready);
        assert_eq!(ready, [count(1)], "still quiet");
        assert_eq!(throttle.next_deadline(), Some(start + COUNT_THROTTLE));
        throttle.release_due(start + COUNT_THROTTLE, &mut ready);
        assert_eq!(ready, [count(1), count(3)]);
        // A refresh (3 → 2 → 3) within the next quiet time says nothing; then the channel is forgotten.
        throttle.offer("a".into(), 2, start + Duration::from_secs(6), &mut ready);
        throttle.offer("a".into(), 3, start + Duration::from_secs(7), &mut ready);
        throttle.release_due(start + COUNT_THROTTLE * 2, &mut ready);
        assert_eq!(ready.len(), 2);
        assert_eq!(throttle.next_deadline(), None);
        throttle.offer("a".into(), 4, start + Duration::from_secs(11), &mut ready);
        assert_eq!(ready, [count(1), count(3), count(4)], "told at once after a quiet time");
    }
}
