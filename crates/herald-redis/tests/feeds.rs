//! The feed store contract against real Redis (one server and a 3-master Cluster), and what only
//! the Redis store promises: a change is an ordinary event of the feed's channel, with the
//! channel's serial, in its history, delivered to every listening node.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::conformance::{RETENTION, Seen, TestNode};
use herald_core::engine::{Delivery, Record};
use herald_core::feeds::{self, FeedChange, FeedLimits, FeedRef, FeedStore, Place, Publish};
use serde_json::value::RawValue;

mod support;

use support::{Cluster, OnRedis, Redis};

fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

fn feed_ref(app: &str, channel: &str) -> FeedRef {
    FeedRef {
        app: app.into(),
        channel: channel.into(),
        limits: FeedLimits { max_items: 100, max_item_bytes: 1024 },
        retention: RETENTION,
    }
}

/// The in-process publish path, which a store that publishes itself must not take.
fn not_called() -> Publish {
    Box::new(|event, _| panic!("the Redis store publishes {event} itself"))
}

fn publish(id: &str, value: &str, place: Place) -> FeedChange {
    FeedChange::Publish { id: id.into(), value: json(value), place }
}

async fn next_event(node: &mut TestNode, channel: &str) -> Record {
    node.wait_for(Duration::from_secs(10), "a feed event", |seen| match seen {
        Seen::Delivered { channel: c, delivery: Delivery::Event(record), .. } if c == channel => Some(record),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_feed_store_contract_holds_on_redis() {
    let redis = Redis::start();
    let engine = support::engine(&redis.url, &support::fresh_prefix("feeds")).await;
    feeds::conformance::run_all(Arc::new(engine.feeds())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_feed_store_contract_holds_on_a_redis_cluster() {
    let cluster = Cluster::start();
    let engine = support::engine(&cluster.url(), &support::fresh_prefix("feeds")).await;
    feeds::conformance::run_all(Arc::new(engine.feeds())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_changes_are_channel_events_with_the_channels_serials() {
    let redis = Redis::start();
    let prefix = support::fresh_prefix("live");
    let mut node = TestNode::new(&OnRedis { url: redis.url.clone() }, &prefix).await;
    let installed = node.listen("app", "feed-live").await;
    let writer = support::engine(&redis.url, &prefix).await;
    let (store, feed) = (writer.feeds(), feed_ref("app", "feed-live"));

    let changes = [
        publish("a", r#"{"n":1,"big":12345678901234567890,"f":1.50}"#, Place::End),
        FeedChange::Edit { id: "a".into(), value: json(r#"{"n":2}"#), merge: true },
        publish("b", "true", Place::Index(0)),
        FeedChange::Move { id: "b".into(), place: Place::After("a".into()) },
        FeedChange::Retract { id: "a".into() },
    ];
    let mut serials = Vec::new();
    for change in changes {
        let applied = store.apply(feed.clone(), change, not_called()).await.unwrap();
        let record = next_event(&mut node, "feed-live").await;
        assert_eq!((record.serial, &*record.epoch), (applied.position.serial, applied.position.epoch.as_str()));
        assert_eq!(
            (record.message.event.as_str(), record.message.data.as_str()),
            (applied.event, applied.data.as_str())
        );
        assert!(!record.message.json && record.message.user_id.is_none() && record.message.exclude.is_none());
        serials.push(applied.position.serial);
    }
    assert_eq!(serials, [1, 2, 3, 4, 5]);
    assert_eq!(store.snapshot(feed.clone()).await.unwrap().position.epoch, *installed.epoch, "the listen's epoch");
    let history = node.engine.snapshot("app", "feed-live", RETENTION).await.unwrap().unwrap();
    let kept: Vec<u64> = history.events.iter().map(|r| r.serial).collect();
    assert_eq!((kept, history.head), (serials.clone(), 5), "every change is in the channel's history");
    let item = store.item(feed.clone(), "b".into()).await.unwrap().unwrap();
    assert_eq!((item.value.get(), item.serial), ("true", 4));

    // Numbers pass through untouched (no Lua JSON round trip).
    let edited = store
        .apply(
            feed.clone(),
            FeedChange::Edit { id: "b".into(), value: json("[1.50, 1e400]"), merge: false },
            not_called(),
        )
        .await
        .unwrap();
    assert_eq!(edited.data, r#"{"id":"b","value":[1.50, 1e400]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeds_channel_meta_never_expires() {
    let redis = Redis::start();
    let prefix = support::fresh_prefix("ttl");
    let mut node = TestNode::new(&OnRedis { url: redis.url.clone() }, &prefix).await;
    node.listen("app", "feed-kept").await;
    let meta = &format!("{prefix}:{{app:feed-kept}}:meta");
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    assert!(support::pttl(&mut conn, meta).await > 0, "a plain channel's meta expires");

    let writer = support::engine(&redis.url, &prefix).await;
    let feed = feed_ref("app", "feed-kept");
    writer.feeds().apply(feed.clone(), publish("a", "1", Place::End), not_called()).await.unwrap();
    assert_eq!(support::pttl(&mut conn, meta).await, -1, "a feed's meta is persistent");
    node.engine.unlisten("app", "feed-kept");
    node.listen("app", "feed-kept").await;
    assert_eq!(support::pttl(&mut conn, meta).await, -1, "listening again does not give it an expiry back");
}

/// Ids and anchors with characters JSON escapes, and values with whitespace: the script writes the
/// same bytes as `event_data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_is_exactly_what_event_data_writes() {
    let redis = Redis::start();
    let writer = support::engine(&redis.url, &support::fresh_prefix("bytes")).await;
    let (store, feed) = (writer.feeds(), feed_ref("app", "private-feed-bytes"));
    let odd = r#"q"uo\te/ü 😀 <&>"#;
    let cases = [
        (publish(odd, "{ \"a\" :\n\t[1, 2] }", Place::End), None),
        (publish("plain", "\"\\u00e9\\n\"", Place::After(odd.into())), Some(odd)),
        (publish("first", "null", Place::Index(0)), None),
        (FeedChange::Move { id: odd.into(), place: Place::Before("first".into()) }, None),
        (FeedChange::Move { id: "first".into(), place: Place::End }, Some("plain")),
        (FeedChange::Edit { id: odd.into(), value: json(" 7 "), merge: false }, None),
        (FeedChange::Retract { id: odd.into() }, None),
    ];
    for (change, after) in cases {
        let value = match &change {
            FeedChange::Publish { value, .. } | FeedChange::Edit { value, .. } => Some(value.clone()),
            _ => None,
        };
        let applied = store.apply(feed.clone(), change.clone(), not_called()).await.unwrap();
        assert_eq!(applied.data, feeds::event_data(&change, value.as_deref(), after), "{change:?}");
    }
    let ids: Vec<String> = store.snapshot(feed).await.unwrap().items.into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["plain", "first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_feed_channels_are_feeds() {
    let redis = Redis::start();
    let writer = support::engine(&redis.url, &support::fresh_prefix("notfeed")).await;
    let feed = feed_ref("app", "presence-room");
    let error = writer.feeds().apply(feed.clone(), publish("a", "1", Place::End), not_called()).await.unwrap_err();
    assert_eq!(error, feeds::FeedError::NotAFeed("presence-room".into()));
    assert!(writer.feeds().snapshot(feed).await.is_err());
}

/// Merge edits racing on one item: each is read, merged and stored only if the item did not change
/// meanwhile, so no edit's field is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_merge_edits_lose_no_field() {
    let redis = Redis::start();
    let store = Arc::new(support::engine(&redis.url, &support::fresh_prefix("merge")).await.feeds());
    let feed = feed_ref("app", "feed-merge");
    store.apply(feed.clone(), publish("a", "{}", Place::End), not_called()).await.unwrap();
    let edits = (0..16).map(|n| {
        let (store, feed) = (store.clone(), feed.clone());
        tokio::spawn(async move {
            let patch = json(&format!(r#"{{"f{n}":{n}}}"#));
            store.apply(feed, FeedChange::Edit { id: "a".into(), value: patch, merge: true }, not_called()).await
        })
    });
    for edit in edits.collect::<Vec<_>>() {
        edit.await.unwrap().unwrap();
    }
    let item = store.item(feed, "a".into()).await.unwrap().unwrap();
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(item.value.get()).unwrap();
    assert_eq!((value.len(), item.serial), (16, 17));
}
