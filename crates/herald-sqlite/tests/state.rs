//! The feed and cursor store contracts on SQLite, and what the file keeps across a reopen.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;

use herald_core::cursors::{CursorStore, Unread};
use herald_core::engine::Retention;
use herald_core::feeds::{FeedChange, FeedLimits, FeedPosition, FeedRef, FeedStore, Place};
use herald_sqlite::{Booked, SqliteState};
use serde_json::value::RawValue;

/// A fresh file path; removed (with its WAL files) when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("herald-state-{:x}.sqlite3", rand::random::<u64>())))
    }

    fn open(&self) -> SqliteState {
        SqliteState::open(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn feed(channel: &str, max_items: usize) -> FeedRef {
    FeedRef {
        app: "app".into(),
        channel: channel.into(),
        limits: FeedLimits { max_items, max_item_bytes: 1024 },
        retention: Retention { max_events: 100, max_age_ms: 300_000, cache_ttl_ms: 0 },
    }
}

fn publish(id: &str, place: Place) -> FeedChange {
    FeedChange::Publish { id: id.into(), value: RawValue::from_string("0".into()).unwrap(), place }
}

/// Applies `change` as if the hub gave it (`epoch`, `serial`).
async fn apply_at(store: &SqliteState, feed: &FeedRef, change: FeedChange, epoch: &str, serial: u64) {
    let epoch = epoch.to_owned();
    store.apply(feed.clone(), change, Box::new(move |_, _| FeedPosition { epoch, serial })).await.unwrap();
}

async fn ids(store: &SqliteState, feed: &FeedRef) -> Vec<String> {
    store.snapshot(feed.clone()).await.unwrap().items.into_iter().map(|item| item.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_feed_store_contract_holds_on_sqlite() {
    let file = TempFile::new();
    herald_core::feeds::conformance::run_all(Arc::new(file.open())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_cursor_store_contract_holds_on_sqlite() {
    let file = TempFile::new();
    herald_core::cursors::conformance::run_all(Arc::new(file.open())).await;
}

#[tokio::test]
async fn feeds_positions_and_cursors_survive_a_reopen() {
    let file = TempFile::new();
    let tasks = feed("feed-tasks", 100);
    {
        let store = file.open();
        apply_at(&store, &tasks, publish("a", Place::End), "e1", 1).await;
        apply_at(&store, &tasks, publish("b", Place::Index(0)), "e1", 2).await;
        store.count("app", "topic", "e2", 7, 100).await.unwrap();
        store.count("app", "topic", "e2", 9, 100).await.unwrap();
        store.mark_read("app", "ann", "topic", 7).await.unwrap();
        let saved = vec![
            Booked { channel: "chat".into(), epoch: "e3".into(), head: 40 },
            Booked { channel: "topic".into(), epoch: "e2".into(), head: 12 },
        ];
        store.save_positions("app", saved);
        store.save_positions("app", vec![Booked { channel: "chat".into(), epoch: "e3".into(), head: 30 }]);
        store.close();
    }
    let store = file.open();
    assert!(store.was_clean());
    let booked = store.booked("app").unwrap();
    let expected = [("chat", "e3", 40), ("feed-tasks", "e1", 2), ("topic", "e2", 12)];
    let found: Vec<(&str, &str, u64)> = booked.iter().map(|b| (b.channel.as_str(), b.epoch.as_str(), b.head)).collect();
    assert_eq!(found, expected, "a head only grows within its epoch");
    assert!(store.booked("other").unwrap().is_empty(), "apps never see each other's positions");
    assert_eq!(ids(&store, &tasks).await, ["b", "a"]);
    let unread = store.unread("app", "ann", vec!["topic".into()]).await.unwrap();
    assert_eq!(unread, [Unread { channel: "topic".into(), cursor: 7, unread: 1 }]);
}

#[test]
fn a_file_is_clean_only_after_close() {
    let file = TempFile::new();
    assert!(file.open().was_clean(), "a new file holds nothing to distrust");
    assert!(!file.open().was_clean(), "dropped without close");
    let store = file.open();
    assert!(!store.was_clean());
    store.close();
    drop(store);
    assert!(file.open().was_clean());
}

#[tokio::test]
async fn counted_serials_and_cursors_carry_over_into_a_new_epoch() {
    // After an unclean stop the hub continues a booked channel's serials in a new epoch.
    let file = TempFile::new();
    let store = file.open();
    for serial in 1..=5 {
        store.count("app", "c", "old", serial, 100).await.unwrap();
    }
    store.mark_read("app", "u", "c", 4).await.unwrap();
    store.count("app", "c", "new", 6, 100).await.unwrap();
    let unread = store.unread("app", "u", vec!["c".into()]).await.unwrap();
    assert_eq!(unread, [Unread { channel: "c".into(), cursor: 4, unread: 2 }]);
    let booked = store.booked("app").unwrap();
    assert_eq!(booked, [Booked { channel: "c".into(), epoch: "new".into(), head: 6 }]);
}

#[tokio::test]
async fn a_feed_in_a_new_epoch_answers_older_serials_with_the_whole_feed() {
    let file = TempFile::new();
    let store = file.open();
    let tasks = feed("feed-tasks", 100);
    apply_at(&store, &tasks, publish("a", Place::End), "e1", 1).await;
    apply_at(&store, &tasks, FeedChange::Retract { id: "a".into() }, "e1", 2).await;
    apply_at(&store, &tasks, publish("b", Place::End), "e1", 3).await;
    apply_at(&store, &tasks, publish("c", Place::End), "e2", 1).await;
    let old = store.changes(tasks.clone(), 3, None).await.unwrap();
    assert!(old.complete, "a serial past the head is from another epoch");
    assert_eq!(old.order, ["b", "c"]);
    assert_eq!(old.position, FeedPosition { epoch: "e2".into(), serial: 1 });
    let current = store.changes(tasks.clone(), 1, Some("e2".into())).await.unwrap();
    assert!(!current.complete && current.items.is_empty() && current.retracted.is_empty());
}

#[tokio::test]
async fn order_holds_when_neighbours_get_too_close() {
    let file = TempFile::new();
    let store = file.open();
    let tasks = feed("feed-tight", 200);
    apply_at(&store, &tasks, publish("first", Place::End), "e", 1).await;
    apply_at(&store, &tasks, publish("last", Place::End), "e", 2).await;
    // Each new item goes right after "first": the gap halves every time, so the feed is renumbered.
    let mut expected = vec!["first".to_owned()];
    for n in 0..100u64 {
        let id = format!("i{n}");
        apply_at(&store, &tasks, publish(&id, Place::After("first".into())), "e", n + 3).await;
        expected.insert(1, id);
    }
    expected.push("last".into());
    assert_eq!(ids(&store, &tasks).await, expected);
}
