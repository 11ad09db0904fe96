//! The feed store contract as executable checks; every store's tests run [`run_all`].
//!
//! Checks that publish get a [`Publish`] that numbers each channel's events like a hub would;
//! stores that publish themselves ignore it, and the checks look only at the positions the store
//! reports. Each check uses its own app id, so checks can share one store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Applied, FeedChange, FeedError, FeedItem, FeedLimits, FeedPosition, FeedRef, FeedStore, Place, Publish};
use crate::engine::Retention;

fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).expect("test JSON")
}

const LIMITS: FeedLimits = FeedLimits { max_items: 50, max_item_bytes: 256 };

fn feed_ref(app: &str, channel: &str) -> FeedRef {
    FeedRef {
        app: app.into(),
        channel: channel.into(),
        limits: LIMITS,
        retention: Retention { max_events: 100, max_age_ms: 300_000, cache_ttl_ms: 0 },
    }
}

/// Numbers events per (app, channel) from 1, in one epoch, as a hub does.
#[derive(Debug, Clone, Default)]
pub struct Channels(Arc<Mutex<HashMap<String, u64>>>);

impl Channels {
    pub fn publisher(&self, feed: &FeedRef) -> Publish {
        let (counters, key) = (self.0.clone(), format!("{}/{}", feed.app, feed.channel));
        Box::new(move |_event, _data| {
            let mut counters = counters.lock();
            let head = counters.entry(key).or_insert(0);
            *head += 1;
            FeedPosition { epoch: "e1".into(), serial: *head }
        })
    }
}

/// A client's copy of a feed, kept from a snapshot and events. The tests' model of what a
/// subscriber sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedCopy {
    pub items: Vec<(String, String)>,
    pub serial: u64,
}

#[derive(Deserialize)]
struct EventData {
    id: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    after: Option<String>,
}

impl FeedCopy {
    pub fn from_items(items: &[FeedItem], serial: u64) -> Self {
        Self { items: items.iter().map(|i| (i.id.clone(), i.value.get().to_owned())).collect(), serial }
    }

    /// Applies one event; events at or before the copy's serial are ignored.
    pub fn apply(&mut self, event: &str, data: &str, serial: u64) {
        if serial <= self.serial {
            return;
        }
        self.serial = serial;
        let data: EventData = serde_json::from_str(data).expect("feed event data");
        let at = |items: &Vec<(String, String)>, after: &Option<String>| match after {
            None => 0,
            Some(after) => items.iter().position(|(id, _)| id == after).map_or(items.len(), |i| i + 1),
        };
        match event {
            "herald:feed_publish" => {
                let index = at(&self.items, &data.after);
                let value = data.value.map(|v| v.get().to_owned()).unwrap_or_default();
                self.items.insert(index, (data.id, value));
            }
            "herald:feed_edit" => {
                if let Some(item) = self.items.iter_mut().find(|(id, _)| *id == data.id) {
                    item.1 = data.value.map(|v| v.get().to_owned()).unwrap_or_default();
                }
            }
            "herald:feed_retract" => self.items.retain(|(id, _)| *id != data.id),
            "herald:feed_move" => {
                if let Some(from) = self.items.iter().position(|(id, _)| *id == data.id) {
                    let item = self.items.remove(from);
                    let index = at(&self.items, &data.after);
                    self.items.insert(index, item);
                }
            }
            other => panic!("not a feed event: {other}"),
        }
    }
}

async fn apply(
    store: &dyn FeedStore,
    channels: &Channels,
    feed: &FeedRef,
    change: FeedChange,
) -> Result<Applied, FeedError> {
    store.apply(feed.clone(), change, channels.publisher(feed)).await
}

fn publish(id: &str, value: &str, place: Place) -> FeedChange {
    FeedChange::Publish { id: id.into(), value: json(value), place }
}

async fn ids(store: &dyn FeedStore, feed: &FeedRef) -> Vec<String> {
    store.snapshot(feed.clone()).await.expect("snapshot").items.into_iter().map(|i| i.id).collect()
}

/// Publish, edit (replace and merge), move and retract, with events that say where items went.
pub async fn changes_are_stored_and_published_in_order(store: &dyn FeedStore) {
    let (channels, feed) = (Channels::default(), feed_ref("basics", "feed-tasks"));
    let a = apply(store, &channels, &feed, publish("a", r#"{"t":"A","n":1}"#, Place::End)).await.expect("publish a");
    assert_eq!((a.event, a.position.serial), ("herald:feed_publish", 1));
    assert_eq!(a.data, r#"{"id":"a","value":{"t":"A","n":1},"after":null}"#);
    apply(store, &channels, &feed, publish("b", r#"{"t":"B"}"#, Place::End)).await.expect("publish b");
    let c = apply(store, &channels, &feed, publish("c", r#""C""#, Place::Index(0))).await.expect("publish c");
    assert_eq!(c.data, r#"{"id":"c","value":"C","after":null}"#);
    let d = apply(store, &channels, &feed, publish("d", "4", Place::After("a".into()))).await.expect("publish d");
    assert_eq!(d.data, r#"{"id":"d","value":4,"after":"a"}"#);
    assert_eq!(ids(store, &feed).await, ["c", "a", "d", "b"]);

    let edit = FeedChange::Edit { id: "a".into(), value: json(r#"{"n":null,"x":true}"#), merge: true };
    let edited = apply(store, &channels, &feed, edit).await.expect("merge");
    assert_eq!((edited.event, edited.data.as_str()), ("herald:feed_edit", r#"{"id":"a","value":{"t":"A","x":true}}"#));
    let replace = FeedChange::Edit { id: "b".into(), value: json("[1]"), merge: false };
    assert_eq!(apply(store, &channels, &feed, replace).await.expect("replace").data, r#"{"id":"b","value":[1]}"#);

    let moved = apply(store, &channels, &feed, FeedChange::Move { id: "c".into(), place: Place::Before("b".into()) })
        .await
        .expect("move");
    assert_eq!((moved.event, moved.data.as_str()), ("herald:feed_move", r#"{"id":"c","after":"d"}"#));
    assert_eq!(ids(store, &feed).await, ["a", "d", "c", "b"]);
    let gone = apply(store, &channels, &feed, FeedChange::Retract { id: "d".into() }).await.expect("retract");
    assert_eq!((gone.event, gone.data.as_str(), gone.position.serial), ("herald:feed_retract", r#"{"id":"d"}"#, 8));

    let snapshot = store.snapshot(feed.clone()).await.expect("snapshot");
    assert_eq!(snapshot.position.serial, 8);
    let items: Vec<(&str, &str, u64)> =
        snapshot.items.iter().map(|i| (i.id.as_str(), i.value.get(), i.serial)).collect();
    assert_eq!(items, [("a", r#"{"t":"A","x":true}"#, 5), ("c", r#""C""#, 7), ("b", "[1]", 6)]);
    let item = store.item(feed.clone(), "c".into()).await.expect("item").expect("c exists");
    assert_eq!((item.value.get(), item.serial), (r#""C""#, 7));
    assert!(store.item(feed.clone(), "d".into()).await.expect("item").is_none());
}

/// Each refusal names what was wrong and changes nothing.
pub async fn refused_changes_change_nothing(store: &dyn FeedStore) {
    let (channels, feed) = (Channels::default(), feed_ref("refusals", "private-feed-x"));
    apply(store, &channels, &feed, publish("a", "1", Place::End)).await.expect("publish");
    let refused = [
        (publish("a", "2", Place::End), FeedError::ItemExists("a".into())),
        (publish("b", "2", Place::After("zz".into())), FeedError::UnknownItem("zz".into())),
        (publish("", "2", Place::End), FeedError::InvalidId),
        (publish("c", &format!("\"{}\"", "x".repeat(300)), Place::End), FeedError::ItemTooLarge { max: 256 }),
        (FeedChange::Edit { id: "q".into(), value: json("1"), merge: false }, FeedError::UnknownItem("q".into())),
        (FeedChange::Retract { id: "q".into() }, FeedError::UnknownItem("q".into())),
        (FeedChange::Move { id: "a".into(), place: Place::After("a".into()) }, FeedError::SelfAnchor),
        (FeedChange::Move { id: "q".into(), place: Place::End }, FeedError::UnknownItem("q".into())),
    ];
    for (change, expected) in refused {
        let error = apply(store, &channels, &feed, change.clone()).await.expect_err("refused");
        assert_eq!(error, expected, "{change:?}");
    }
    let big_merge = FeedChange::Edit { id: "a".into(), value: json(&format!("\"{}\"", "y".repeat(300))), merge: true };
    assert_eq!(
        apply(store, &channels, &feed, big_merge).await.expect_err("too big"),
        FeedError::ItemTooLarge { max: 256 }
    );
    let snapshot = store.snapshot(feed.clone()).await.expect("snapshot");
    assert_eq!((snapshot.items.len(), snapshot.position.serial), (1, 1));
}

/// A full feed refuses new items but still takes edits, moves and retractions.
pub async fn a_full_feed_refuses_new_items(store: &dyn FeedStore) {
    let (channels, feed) = (Channels::default(), feed_ref("full", "feed-full"));
    for n in 0..LIMITS.max_items {
        apply(store, &channels, &feed, publish(&format!("i{n}"), "0", Place::Index(0))).await.expect("publish");
    }
    let error = apply(store, &channels, &feed, publish("one-more", "0", Place::End)).await.expect_err("full");
    assert_eq!(error, FeedError::FeedFull { max: LIMITS.max_items });
    apply(store, &channels, &feed, FeedChange::Retract { id: "i0".into() }).await.expect("retract");
    apply(store, &channels, &feed, publish("one-more", "0", Place::End)).await.expect("room again");
}

/// `changes` after a serial returns exactly what changed since, the retracted ids and the order;
/// a serial older than the remembered retractions gets the whole feed.
pub async fn changes_since_a_serial_are_exact(store: &dyn FeedStore) {
    let (channels, feed) = (Channels::default(), feed_ref("since", "feed-since"));
    for id in ["a", "b", "c", "d"] {
        apply(store, &channels, &feed, publish(id, "0", Place::End)).await.expect("publish");
    }
    let since = 4;
    apply(store, &channels, &feed, FeedChange::Edit { id: "b".into(), value: json("1"), merge: false })
        .await
        .expect("edit");
    apply(store, &channels, &feed, FeedChange::Retract { id: "c".into() }).await.expect("retract");
    apply(store, &channels, &feed, FeedChange::Move { id: "a".into(), place: Place::End }).await.expect("move");
    apply(store, &channels, &feed, publish("e", "2", Place::Index(0))).await.expect("publish e");
    let changes = store.changes(feed.clone(), since, None).await.expect("changes");
    let changed: Vec<(&str, u64)> = changes.items.iter().map(|i| (i.id.as_str(), i.serial)).collect();
    assert_eq!(changed, [("e", 8), ("b", 5), ("a", 7)]);
    assert_eq!(changes.retracted, ["c"]);
    assert_eq!(changes.order, ["e", "b", "d", "a"]);
    assert_eq!((changes.position.serial, changes.complete), (8, false));
    let none = store.changes(feed.clone(), 8, None).await.expect("changes");
    assert!(none.items.is_empty() && none.retracted.is_empty() && !none.complete);

    let other_epoch = store.changes(feed.clone(), 6, Some("not-this-epoch".into())).await.expect("changes");
    assert!(other_epoch.complete);
    assert_eq!(other_epoch.items.len(), 4);

    // Retractions are remembered up to the item limit; a serial before a forgotten one cannot be
    // answered with a difference.
    let churn = feed_ref("since", "feed-churn");
    for n in 0..=LIMITS.max_items {
        let id = format!("t{n}");
        apply(store, &channels, &churn, publish(&id, "0", Place::End)).await.expect("publish");
        apply(store, &channels, &churn, FeedChange::Retract { id }).await.expect("retract");
    }
    apply(store, &channels, &churn, publish("kept", "0", Place::End)).await.expect("publish");
    let old = store.changes(churn.clone(), 1, None).await.expect("changes");
    assert!(old.complete, "a serial before forgotten retractions gets the whole feed");
    assert_eq!(old.order, ["kept"]);
    let recent = store.changes(churn.clone(), old.position.serial - 2, None).await.expect("changes");
    assert!(!recent.complete);
    assert_eq!((recent.retracted.len(), recent.order.len()), (1, 1));
}

/// Feeds of other apps and channels are separate.
pub async fn feeds_are_separate(store: &dyn FeedStore) {
    let channels = Channels::default();
    let (one, two, three) = (feed_ref("sep-1", "feed-a"), feed_ref("sep-2", "feed-a"), feed_ref("sep-1", "feed-b"));
    apply(store, &channels, &one, publish("x", "1", Place::End)).await.expect("publish");
    apply(store, &channels, &two, publish("x", "2", Place::End)).await.expect("same id, other app");
    assert_eq!(ids(store, &three).await, Vec::<String>::new());
    let snapshot = store.snapshot(three).await.expect("snapshot");
    assert_eq!(snapshot.position.serial, 0);
    let item = store.item(two, "x".into()).await.expect("item").expect("x");
    assert_eq!(item.value.get(), "2");
}

/// Concurrent writers: replaying every accepted change in serial order gives the stored feed.
pub async fn concurrent_changes_replay_to_the_stored_feed(store: Arc<dyn FeedStore>) {
    let (channels, feed) = (Channels::default(), feed_ref("race", "feed-race"));
    let mut writers = Vec::new();
    for writer in 0..8u64 {
        let (store, channels, feed) = (store.clone(), channels.clone(), feed.clone());
        writers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut seed = writer * 7919 + 1;
            for n in 0..40u64 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let id = format!("i{}", (seed >> 33) % 12);
                let other = format!("i{}", (seed >> 40) % 12);
                let change = match (seed >> 50) % 5 {
                    0 | 1 => publish(&id, &format!("{n}"), Place::Index(((seed >> 20) % 6) as usize)),
                    2 => {
                        FeedChange::Edit { id, value: json(&format!(r#"{{"w":{writer},"n":{n}}}"#)), merge: n % 2 == 0 }
                    }
                    3 => FeedChange::Retract { id },
                    _ => FeedChange::Move { id, place: Place::After(other) },
                };
                if let Ok(applied) = store.apply(feed.clone(), change, channels.publisher(&feed)).await {
                    accepted.push(applied);
                }
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for writer in writers {
        accepted.extend(writer.await.expect("writer"));
    }
    accepted.sort_by_key(|a| a.position.serial);
    let serials: Vec<u64> = accepted.iter().map(|a| a.position.serial).collect();
    assert_eq!(serials, (1..=accepted.len() as u64).collect::<Vec<_>>(), "one serial per accepted change");
    let mut copy = FeedCopy::default();
    for applied in &accepted {
        copy.apply(applied.event, &applied.data, applied.position.serial);
    }
    let snapshot = store.snapshot(feed).await.expect("snapshot");
    assert_eq!(copy, FeedCopy::from_items(&snapshot.items, snapshot.position.serial));
}

pub async fn run_all(store: Arc<dyn FeedStore>) {
    changes_are_stored_and_published_in_order(&*store).await;
    refused_changes_change_nothing(&*store).await;
    a_full_feed_refuses_new_items(&*store).await;
    changes_since_a_serial_are_exact(&*store).await;
    feeds_are_separate(&*store).await;
    concurrent_changes_replay_to_the_stored_feed(store).await;
}
