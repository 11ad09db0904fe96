//! The seam for keeping channel history across restarts.
//!
//! The hub reports what happens to a channel's durable state (created with an epoch, an event
//! appended, removed) through [`HistoryStore::record`], which must not block: the hub calls it under
//! a shard lock, so an implementation queues the change for its own writer. On start the registry
//! loads what was kept and the hub resumes each channel with its old epoch and serials. The core
//! ships no implementation; `herald-sqlite` is one, and without a store history lives in memory.

use std::sync::Arc;

use bytes::Bytes;

/// A change to a channel's durable state.
#[derive(Debug, Clone)]
pub enum HistoryChange {
    /// The channel's state was created with this epoch (head 0).
    Created { app: Arc<str>, channel: Arc<str>, epoch: Arc<str> },
    /// Event `serial` was published; keep at most `keep` events of this channel.
    Event { app: Arc<str>, channel: Arc<str>, serial: u64, frame: Bytes, at_unix_ms: u64, keep: usize },
    /// The channel's state was dropped; forget it.
    Removed { app: Arc<str>, channel: Arc<str> },
}

/// A channel as it was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChannel {
    pub name: String,
    pub epoch: String,
    pub head: u64,
    /// Oldest first.
    pub events: Vec<StoredEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub serial: u64,
    pub frame: Bytes,
    pub at_unix_ms: u64,
}

/// A store that could not load or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(pub String);

pub trait HistoryStore: Send + Sync + std::fmt::Debug {
    /// Queues a change; never blocks.
    fn record(&self, change: HistoryChange);
    /// The channels kept for `app_id`.
    fn load(&self, app_id: &str) -> Result<Vec<StoredChannel>, StoreError>;
    /// Returns once every change recorded so far is written.
    fn flush(&self);
    /// Writes everything and marks the store as cleanly stopped (graceful shutdown).
    fn close(&self);
}
