//! Read cursors and unread counts: how far each user has read each channel.
//!
//! A cursor is one serial per (user, channel) and only moves forward. A channel remembers the
//! serials of its events published with `count_unread` (the newest `keep` of them), so an unread
//! count is "counted serials after the cursor": storage grows with channels and users, never with
//! messages times users. Counts above `keep` are reported as `keep`.

pub mod conformance;
pub mod service;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// Why a cursor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor store unavailable: {0}")]
    Unavailable(String),
}

/// One channel's read state for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    pub channel: String,
    /// The serial read up to (0: nothing read).
    pub cursor: u64,
    /// Counted events after the cursor (at most the kept number).
    pub unread: u64,
}

pub type CursorFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CursorError>> + Send + 'a>>;

/// Where cursors and counted serials are kept. Every implementation passes [`conformance`].
pub trait CursorStore: Send + Sync + std::fmt::Debug {
    /// Remembers that event `serial` of `channel` (in `epoch`) counts as unread; keeps the newest
    /// `keep` such serials of the channel.
    fn count(&self, app: &str, channel: &str, epoch: &str, serial: u64, keep: usize) -> CursorFuture<'_, ()>;
    /// Moves `user`'s cursor on `channel` forward to `serial` (never back). Returns the cursor and
    /// the unread count after the call, and whether it moved.
    fn mark_read(&self, app: &str, user: &str, channel: &str, serial: u64) -> CursorFuture<'_, (Unread, bool)>;
    /// Cursor and unread count of each channel, in the order asked.
    fn unread(&self, app: &str, user: &str, channels: Vec<String>) -> CursorFuture<'_, Vec<Unread>>;
}
