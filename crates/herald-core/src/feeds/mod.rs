//! Feeds: channels with state. A feed holds items keyed by id, in an order, and every change to it
//! (publish, edit, retract, move) is an event on the feed's channel with a serial.
//!
//! The one rule every store keeps: a change is stored and published as one step, so the order of
//! the stored changes is the order of their serials. Then a snapshot read at position P plus the
//! channel's events after P is exactly the feed, which is what makes subscribe-with-snapshot and
//! `modified_since` race-free. On one node the store calls back into the hub to publish from inside
//! its transaction ([`Publish`]); on Redis one script changes the items and publishes.
//!
//! Item order is a list: a change places an item at the end, at an index, or before/after another
//! item, and the events say where an item went as the id it now follows (`after`), so a client's
//! copy can follow without indexes drifting.

pub mod conformance;
pub mod merge;
pub mod service;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest item id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Whether `channel` is a feed channel: `feed-<name>` or `private-feed-<name>`.
pub fn is_feed_channel(channel: &str) -> bool {
    let rest = channel.strip_prefix("private-").unwrap_or(channel);
    rest.strip_prefix("feed-").is_some_and(|name| !name.is_empty())
}

/// Limits on one feed, from the app's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    pub max_items: usize,
    /// Largest item value, as JSON text.
    pub max_item_bytes: usize,
}

/// Where a published or moved item goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Place {
    #[default]
    End,
    /// 0 is the head; past the end means the end.
    Index(usize),
    Before(String),
    After(String),
}

/// A change asked of a feed.
#[derive(Debug, Clone)]
pub enum FeedChange {
    Publish {
        id: String,
        value: Box<RawValue>,
        place: Place,
    },
    /// `merge`: apply `value` as a JSON merge patch (RFC 7386) instead of replacing.
    Edit {
        id: String,
        value: Box<RawValue>,
        merge: bool,
    },
    Retract {
        id: String,
    },
    Move {
        id: String,
        place: Place,
    },
}

impl FeedChange {
    pub fn id(&self) -> &str {
        match self {
            Self::Publish { id, .. } | Self::Edit { id, .. } | Self::Retract { id } | Self::Move { id, .. } => id,
        }
    }

    /// The event this change is published as.
    pub fn event(&self) -> &'static str {
        match self {
            Self::Publish { .. } => "herald:feed_publish",
            Self::Edit { .. } => "herald:feed_edit",
            Self::Retract { .. } => "herald:feed_retract",
            Self::Move { .. } => "herald:feed_move",
        }
    }
}

/// A feed's position: the serial of its last change in the channel's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FeedPosition {
    pub epoch: String,
    pub serial: u64,
}

/// One item as stored: `serial` is the serial of its last change (publish, edit or move).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedItem {
    pub id: String,
    pub value: Box<RawValue>,
    pub serial: u64,
}

impl PartialEq for FeedItem {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.value.get() == other.value.get() && self.serial == other.serial
    }
}

/// A change that was stored and published.
#[derive(Debug, Clone)]
pub struct Applied {
    pub event: &'static str,
    /// The event's data (JSON text), as subscribers got it.
    pub data: String,
    pub position: FeedPosition,
}

/// The whole feed at a position.
#[derive(Debug, Clone, Serialize)]
pub struct FeedSnapshot {
    pub items: Vec<FeedItem>,
    pub position: FeedPosition,
}

/// What changed after a serial.
#[derive(Debug, Clone, Serialize)]
pub struct FeedChanges {
    /// Items changed after the serial, in feed order (every item when `complete`).
    pub items: Vec<FeedItem>,
    /// Ids retracted after the serial (and not published again).
    pub retracted: Vec<String>,
    /// Every item id, in feed order.
    pub order: Vec<String>,
    pub position: FeedPosition,
    /// The serial was too old to tell (retractions before it were forgotten): `items` is the whole
    /// feed and the caller should replace its copy.
    pub complete: bool,
}

/// Why a feed change or read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("no item {0:?} in this feed")]
    UnknownItem(String),
    #[error("item {0:?} already exists (edit it, or retract it first)")]
    ItemExists(String),
    #[error("an item id must be 1 to {MAX_ID_LEN} bytes without control characters")]
    InvalidId,
    #[error("an item cannot be placed relative to itself")]
    SelfAnchor,
    #[error("the feed is full ({max} items)")]
    FeedFull { max: usize },
    #[error("item value is larger than {max} bytes")]
    ItemTooLarge { max: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("{0:?} is not a feed channel (feed-<name> or private-feed-<name>)")]
    NotAFeed(String),
    #[error("feed store unavailable: {0}")]
    Unavailable(String),
}

/// A made-up item id for a publish without one: time-ordered, so such items sort by creation.
pub fn new_item_id() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("i{ms:012x}{:08x}", rand::random::<u32>())
}

/// Checks an item id.
pub fn check_id(id: &str) -> Result<(), FeedError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(FeedError::InvalidId);
    }
    Ok(())
}

/// Checks what a change brings before any store sees it: ids, sizes, anchors.
pub fn check_change(change: &FeedChange, limits: FeedLimits) -> Result<(), FeedError> {
    check_id(change.id())?;
    let place = match change {
        FeedChange::Publish { value, place, .. } => {
            check_size(value, limits)?;
            Some(place)
        }
        FeedChange::Edit { value, .. } => {
            check_size(value, limits)?;
            None
        }
        FeedChange::Move { place, .. } => Some(place),
        FeedChange::Retract { .. } => None,
    };
    if let Some(Place::Before(anchor) | Place::After(anchor)) = place {
        check_id(anchor)?;
        if anchor == change.id() {
            return Err(FeedError::SelfAnchor);
        }
    }
    Ok(())
}

/// Checks an item's value against the size limit (also after a merge).
pub fn check_size(value: &RawValue, limits: FeedLimits) -> Result<(), FeedError> {
    if value.get().len() > limits.max_item_bytes {
        return Err(FeedError::ItemTooLarge { max: limits.max_item_bytes });
    }
    Ok(())
}

/// The data of a change's event. `after` is the id the item now follows (`None`: the head), for
/// publish and move; `value` the item's whole value after the change, for publish and edit.
pub fn event_data(change: &FeedChange, value: Option<&RawValue>, after: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<Option<&'a str>>,
    }
    let after = matches!(change, FeedChange::Publish { .. } | FeedChange::Move { .. }).then_some(after);
    serde_json::to_string(&Data { id: change.id(), value, after }).unwrap_or_default()
}

/// Where `place` puts an item in `order` (ids without the item itself): the index to insert at.
pub fn resolve_place(order: &[&str], place: &Place) -> Result<usize, FeedError> {
    let find = |anchor: &str| {
        order.iter().position(|id| *id == anchor).ok_or_else(|| FeedError::UnknownItem(anchor.to_owned()))
    };
    match place {
        Place::End => Ok(order.len()),
        Place::Index(index) => Ok((*index).min(order.len())),
        Place::Before(anchor) => find(anchor),
        Place::After(anchor) => find(anchor).map(|i| i + 1),
    }
}

/// Publishes a change's event on the feed's channel and returns the position it took. A store
/// calls it once per change, inside the step that stores the change.
pub type Publish = Box<dyn FnOnce(&str, &str) -> FeedPosition + Send>;

pub type FeedFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FeedError>> + Send + 'a>>;

/// Where feeds are kept. Every implementation passes [`conformance`].
pub trait FeedStore: Send + Sync + std::fmt::Debug {
    /// Validates `change` against the feed, stores it and publishes its event as one step. Stores
    /// that publish themselves (Redis) do not call `publish`.
    fn apply(&self, feed: FeedRef, change: FeedChange, publish: Publish) -> FeedFuture<'_, Applied>;
    /// Every item, in order, with the position they are current at.
    fn snapshot(&self, feed: FeedRef) -> FeedFuture<'_, FeedSnapshot>;
    /// What changed after `since` (in `epoch`, when given: another epoch gets the whole feed).
    fn changes(&self, feed: FeedRef, since: u64, epoch: Option<String>) -> FeedFuture<'_, FeedChanges>;
    fn item(&self, feed: FeedRef, id: String) -> FeedFuture<'_, Option<FeedItem>>;
}

/// Which feed, and what the app allows it.
#[derive(Debug, Clone)]
pub struct FeedRef {
    pub app: String,
    pub channel: String,
    pub limits: FeedLimits,
    /// How the channel keeps events (stores that publish themselves need it).
    pub retention: crate::engine::Retention,
}
