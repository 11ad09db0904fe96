//! What an app counts for `/metrics`: monotonic totals, and gauges read from live state.
//!
//! Counters only ever grow (deliveries, publishes, dropped frames, closes by code, a scrape's failed
//! store reads, webhook outcomes). Gauges
//! (connections, channels, subscriptions, presence members, queued bytes) are never kept here: they
//! are computed from the hub and the connection count when someone asks ([`AppGauges`]), so they
//! cannot drift from the truth. Counters on hot paths are [`Counter`]s, sharded by thread, so that
//! connections flushing on different cores do not fight over one cache line; they are added to
//! once per flush or per publish, never once per frame. This module formats nothing: the server
//! owns the exposition format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Slots of a [`Counter`]; threads beyond this many share slots (still correct, a little slower).
const SLOTS: usize = 8;

/// A monotonic counter sharded by thread: adding touches only the calling thread's cache line;
/// reading sums every slot.
#[derive(Debug, Default)]
pub struct Counter {
    slots: Box<[Slot; SLOTS]>,
}

/// One slot on its own cache line (128 bytes: adjacent-line prefetch pairs lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.slots[thread_slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|slot| slot.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

/// This thread's slot, handed out round robin the first time a thread counts.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot)
}

/// Where a publish came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishSource {
    /// The signed HTTP API (`events`, `batch_events`).
    Api,
    /// A `client-*` event sent by a connection.
    Client,
}

/// Why a connection ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseReason {
    /// The server closed it with this code.
    Code(u16),
    /// The client closed it or vanished.
    Peer,
}

/// A store a scrape reads from (with a time limit), for counting the reads that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapeSource {
    /// The job store's per-queue counts.
    Jobs,
    /// The webhook outbox's pending counts.
    Webhooks,
}

impl ScrapeSource {
    pub const ALL: [Self; 2] = [Self::Jobs, Self::Webhooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Webhooks => "webhooks",
        }
    }
}

/// One app's counters. Every series is per app, so apps never share one.
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Frames written to connections (every transport).
    pub deliveries: Counter,
    api_publishes: Counter,
    client_publishes: Counter,
    /// Frames dropped by the close code their connection was closing with.
    dropped: Mutex<BTreeMap<u16, u64>>,
    closed: Mutex<BTreeMap<CloseReason, u64>>,
    /// Store reads of a scrape that failed or timed out, by [`ScrapeSource`] (rare: plain atomics).
    scrape_errors: [AtomicU64; 2],
}

impl AppCounters {
    /// Counts `events` events published (one per channel).
    pub fn published(&self, source: PublishSource, events: u64) {
        match source {
            PublishSource::Api => self.api_publishes.add(events),
            PublishSource::Client => self.client_publishes.add(events),
        }
    }

    pub fn publishes(&self, source: PublishSource) -> u64 {
        match source {
            PublishSource::Api => self.api_publishes.get(),
            PublishSource::Client => self.client_publishes.get(),
        }
    }

    /// Counts frames that were never written because their connection was closing with `code`.
    pub fn frames_dropped(&self, code: u16, frames: u64) {
        *self.dropped.lock().entry(code).or_default() += frames;
    }

    /// Dropped frames by close code, in code order.
    pub fn dropped(&self) -> Vec<(u16, u64)> {
        self.dropped.lock().iter().map(|(code, n)| (*code, *n)).collect()
    }

    /// Counts one connection that ended (rare next to deliveries: a lock is fine).
    pub fn connection_closed(&self, reason: CloseReason) {
        *self.closed.lock().entry(reason).or_default() += 1;
    }

    /// Ended connections by reason, in order (codes first, then the peer's).
    pub fn closed(&self) -> Vec<(CloseReason, u64)> {
        self.closed.lock().iter().map(|(reason, n)| (*reason, *n)).collect()
    }

    /// Counts one store read of a scrape that failed or ran out of time.
    pub fn scrape_failed(&self, source: ScrapeSource) {
        self.scrape_errors[source as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn scrape_errors(&self, source: ScrapeSource) -> u64 {
        self.scrape_errors[source as usize].load(Ordering::Relaxed)
    }
}

/// What became of one webhook endpoint's requests: counted by its sender task, one request at a
/// time (never on a client's path), so plain atomics are enough.
#[derive(Debug, Default)]
pub struct WebhookOutcomes {
    delivered: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

impl WebhookOutcomes {
    /// Counts `events` events delivered by one successful request.
    pub fn delivered(&self, events: u64) {
        self.delivered.fetch_add(events, Ordering::Relaxed);
    }

    /// Counts one request that failed (non-2xx, an error, or no answer in time); it is retried.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `events` events given up on and moved to the dead letters.
    pub fn dead_lettered(&self, events: u64) {
        self.dead_lettered.fetch_add(events, Ordering::Relaxed);
    }

    /// (events delivered, requests failed, events dead-lettered) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        (load(&self.delivered), load(&self.failed), load(&self.dead_lettered))
    }
}

/// An app's live state on this node, read at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppGauges {
    /// Open connections (every transport).
    pub connections: usize,
    /// Channels with at least one subscriber here (users' own streams not counted).
    pub channels: usize,
    /// Subscriptions to those channels.
    pub subscriptions: usize,
    /// Presence members of those channels that are connected to this node.
    pub presence_members: usize,
    /// Bytes waiting in the outboxes of subscribed connections.
    pub queued_bytes: usize,
    /// Frames waiting in those outboxes.
    pub queued_frames: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_sums_every_thread() {
        let counter = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add(2)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 24_000);
    }

    #[test]
    fn closes_and_drops_are_kept_by_reason() {
        let counters = AppCounters::default();
        counters.connection_closed(CloseReason::Peer);
        counters.connection_closed(CloseReason::Code(4100));
        counters.connection_closed(CloseReason::Code(4100));
        counters.frames_dropped(4100, 7);
        assert_eq!(counters.closed(), vec![(CloseReason::Code(4100), 2), (CloseReason::Peer, 1)]);
        assert_eq!(counters.dropped(), vec![(4100, 7)]);
    }
}
