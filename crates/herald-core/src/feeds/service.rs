//! Feeds on an app: which channels are feeds, the limits, and how a change reaches subscribers.
//!
//! On one node a change is published into this node's hub from inside the store's step (the
//! [`Publish`](super::Publish) it is given), and the channel is booked so that its serials survive
//! its subscribers leaving. With an engine, the store publishes through the engine itself.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::{ChannelName, FrameData, server_frame};
use tokio::time::{Duration, Instant};

use crate::connection::Connection;

/// Largest snapshot page: big enough to send most feeds in one frame.
const MAX_PAGE_BYTES: usize = 256 * 1024;
/// How long a snapshot waits for a reader to make room before giving up (the reader will be
/// closed for being slow anyway).
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

use super::{
    Applied, FeedChange, FeedChanges, FeedError, FeedItem, FeedLimits, FeedPosition, FeedRef, FeedSnapshot, FeedStore,
    Publish, check_change, is_feed_channel,
};
use crate::app::App;

impl App {
    /// Keeps this app's feeds in `store`.
    pub fn attach_feed_store(&self, store: Arc<dyn FeedStore>) {
        let _ = self.feeds.set(store);
    }

    fn feed_store(&self) -> Result<&Arc<dyn FeedStore>, FeedError> {
        self.feeds.get().ok_or_else(|| FeedError::Unavailable("no feed store is configured".into()))
    }

    /// The feed behind `channel`, if it names one.
    pub fn feed_ref(&self, channel: &str) -> Result<FeedRef, FeedError> {
        let name = ChannelName::parse(channel, self.config.max_channel_name_len)
            .map_err(|e| FeedError::Invalid(e.to_string()))?;
        if !is_feed_channel(name.as_str()) {
            return Err(FeedError::NotAFeed(channel.to_owned()));
        }
        Ok(FeedRef {
            app: self.id().to_owned(),
            channel: name.as_str().to_owned(),
            limits: FeedLimits {
                max_items: self.config.feed_max_items,
                max_item_bytes: self.config.feed_max_item_bytes,
            },
            retention: self.retention(false),
        })
    }

    /// Stores `change` and publishes its event, as one step.
    pub async fn feed_apply(self: &Arc<Self>, channel: &str, change: FeedChange) -> Result<Applied, FeedError> {
        let feed = self.feed_ref(channel)?;
        check_change(&change, feed.limits)?;
        let publish = self.feed_publisher(&feed.channel);
        self.feed_store()?.apply(feed, change, publish).await
    }

    /// Publishes into this node's hub (one node; an engine's store publishes itself).
    fn feed_publisher(self: &Arc<Self>, channel: &str) -> Publish {
        let (app, channel) = (self.clone(), channel.to_owned());
        Box::new(move |event, data| {
            let now = Instant::now();
            app.hub.book(&channel, now);
            let encode = |serial| server_frame::channel_event(event, &channel, FrameData::Text(data), None, serial);
            let (epoch, serial) = app.hub.publish_at(&channel, encode, None, None, now);
            FeedPosition { epoch: epoch.to_string(), serial }
        })
    }

    /// Sends `channel`'s snapshot to `connection` in pages that fit its queue: a page waits until
    /// the queue has room, so a large feed reaches a slow reader instead of closing it (4100).
    pub(crate) async fn send_feed_snapshot(&self, connection: &Connection, channel: &str) {
        let snapshot = match self.feed_snapshot(channel).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(app = %self.id(), %channel, "feed snapshot failed: {error}");
                let message = format!("feed snapshot failed: {error}");
                connection.outbox.push(server_frame::error(ErrorCode::ClientEventRejected.code(), &message));
                return;
            }
        };
        let room = connection.outbox.max_bytes() / 2;
        let pages = snapshot_pages(&snapshot, (room / 2).clamp(1024, MAX_PAGE_BYTES));
        let deadline = Instant::now() + SNAPSHOT_PATIENCE;
        for page in pages {
            let frame = server_frame::channel_notice("herald:feed_snapshot", channel, &page);
            while connection.outbox.queued_bytes() + frame.len() > room && connection.outbox.queued_bytes() > 0 {
                if connection.outbox.is_closing() || Instant::now() > deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !connection.outbox.push(frame) {
                return;
            }
        }
    }

    pub async fn feed_snapshot(&self, channel: &str) -> Result<FeedSnapshot, FeedError> {
        let feed = self.feed_ref(channel)?;
        self.feed_store()?.snapshot(feed).await
    }

    pub async fn feed_changes(
        &self,
        channel: &str,
        since: u64,
        epoch: Option<String>,
    ) -> Result<FeedChanges, FeedError> {
        let feed = self.feed_ref(channel)?;
        self.feed_store()?.changes(feed, since, epoch).await
    }

    pub async fn feed_item(&self, channel: &str, id: &str) -> Result<Option<FeedItem>, FeedError> {
        let feed = self.feed_ref(channel)?;
        self.feed_store()?.item(feed, id.to_owned()).await
    }
}

/// A snapshot as `herald:feed_snapshot` data pages of about `page_bytes` each: `{"items", "position"}`,
/// with `"more": true` on every page but the last. A feed that fits is one page without `more`.
fn snapshot_pages(snapshot: &FeedSnapshot, page_bytes: usize) -> Vec<String> {
    let position = serde_json::to_string(&snapshot.position).unwrap_or_default();
    let mut pages = Vec::new();
    let mut items = String::new();
    for item in &snapshot.items {
        let encoded = serde_json::to_string(item).unwrap_or_default();
        if !items.is_empty() && items.len() + encoded.len() > page_bytes {
            pages.push(format!(r#"{{"items":[{items}],"position":{position},"more":true}}"#));
            items.clear();
        }
        if !items.is_empty() {
            items.push(',');
        }
        items.push_str(&encoded);
    }
    pages.push(format!(r#"{{"items":[{items}],"position":{position}}}"#));
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::FeedItem;

    fn snapshot(n: usize) -> FeedSnapshot {
        let items = (0..n)
            .map(|i| FeedItem {
                id: format!("i{i}"),
                value: serde_json::value::RawValue::from_string(format!("\"{}\"", "x".repeat(100))).expect("json"),
                serial: i as u64 + 1,
            })
            .collect();
        FeedSnapshot { items, position: FeedPosition { epoch: "e".into(), serial: n as u64 } }
    }

    #[test]
    fn a_small_feed_is_one_page_and_a_large_one_is_split_without_losing_items() {
        assert_eq!(snapshot_pages(&snapshot(0), 1024), [r#"{"items":[],"position":{"epoch":"e","serial":0}}"#]);
        let pages = snapshot_pages(&snapshot(50), 1024);
        assert!(pages.len() > 5, "{} pages", pages.len());
        let mut ids = Vec::new();
        for (n, page) in pages.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(page).expect("page is JSON");
            assert_eq!(value["more"].as_bool().unwrap_or(false), n + 1 < pages.len());
            assert_eq!(value["position"]["serial"], 50);
            ids.extend(
                value["items"].as_array().expect("items").iter().map(|i| i["id"].as_str().unwrap_or("").to_owned()),
            );
            assert!(page.len() <= 1024 + 200, "page of {} bytes", page.len());
        }
        assert_eq!(ids, (0..50).map(|i| format!("i{i}")).collect::<Vec<_>>());
    }
}
