//! Read cursors on an app: counting events as they are published, moving cursors, and telling
//! every connection of the user (`herald:read` on the user stream, so other tabs and devices
//! follow, on every node, resumably).

use std::sync::Arc;

use herald_protocol::ChannelName;
use tokio::time::Instant;

use super::{CursorError, CursorStore, Unread};
use crate::app::App;
use crate::hub::Booked;
use crate::publish::Publish;

/// Channels one unread query may name.
pub const MAX_UNREAD_CHANNELS: usize = 100;

impl App {
    /// Keeps this app's cursors in `store`.
    pub fn attach_cursor_store(&self, store: Arc<dyn CursorStore>) {
        let _ = self.cursors.set(store);
    }

    fn cursor_store(&self) -> Result<&Arc<dyn CursorStore>, CursorError> {
        self.cursors.get().ok_or_else(|| CursorError::Unavailable("no cursor store is configured".into()))
    }

    /// Books `channel` before a counted publish (one node): its serials must outlive its state.
    pub(crate) fn book_counted(&self, channel: &str, now: Instant) {
        if self.engine.is_none() {
            self.hub.book(channel, now);
        }
    }

    /// Remembers that event `serial` of `channel` counts as unread.
    pub(crate) async fn count_unread(&self, channel: &str, serial: u64) -> Result<(), CursorError> {
        let epoch = self.hub.epoch_of(channel).unwrap_or_default();
        self.cursor_store()?.count(self.id(), channel, &epoch, serial, self.config.unread_keep).await
    }

    /// Moves `user`'s cursor on `channel` forward; when it moved, every connection of the user is
    /// told with `herald:read`.
    pub async fn mark_read(&self, user: &str, channel: &str, serial: u64) -> Result<(Unread, bool), CursorError> {
        let (unread, moved) = self.cursor_store()?.mark_read(self.id(), user, channel, serial).await?;
        if moved {
            self.announce_read(user, &unread).await;
        }
        Ok((unread, moved))
    }

    async fn announce_read(&self, user: &str, unread: &Unread) {
        let Ok(data) = serde_json::to_string(unread) else { return };
        let channels = [ChannelName::server_to_user(user)];
        let publish = Publish {
            event: "herald:read",
            channels: &channels,
            data: &data,
            exclude: None,
            idempotency_key: None,
            count_unread: false,
        };
        if let Err(error) = self.publish(&publish, Instant::now()).await {
            tracing::warn!(app = %self.id(), "read cursor change not announced: {error}");
        }
    }

    /// Cursor and unread count of each channel for `user`.
    pub async fn unread(&self, user: &str, channels: Vec<String>) -> Result<Vec<Unread>, CursorError> {
        self.cursor_store()?.unread(self.id(), user, channels).await
    }

    /// Takes back the positions of booked channels kept by an earlier process (one node).
    pub fn restore_positions(&self, kept: Vec<Booked>, clean: bool) {
        self.hub.restore_book(kept, !clean);
    }

    /// Positions of booked channels, to keep across a restart (one node).
    pub fn positions(&self) -> Vec<Booked> {
        self.hub.booked()
    }
}
