//! The cursor store contract against real Redis (one server and a 3-master Cluster), and what the
//! Redis store adds: counted channels keep their serials' epoch, and racing marks keep the highest.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;

use herald_core::cursors::{self, CursorStore, Unread};
use herald_core::engine::Engine;
use herald_core::engine::conformance::{RETENTION, message};

mod support;

use support::{Cluster, Redis};

fn unread(channel: &str, cursor: u64, unread: u64) -> Unread {
    Unread { channel: channel.into(), cursor, unread }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_cursor_store_contract_holds_on_redis() {
    let redis = Redis::start();
    let engine = support::engine(&redis.url, &support::fresh_prefix("cursors")).await;
    cursors::conformance::run_all(Arc::new(engine.cursors())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_cursor_store_contract_holds_on_a_redis_cluster() {
    let cluster = Cluster::start();
    let engine = support::engine(&cluster.url(), &support::fresh_prefix("cursors")).await;
    cursors::conformance::run_all(Arc::new(engine.cursors())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_channel_keeps_its_epoch() {
    let redis = Redis::start();
    let prefix = support::fresh_prefix("kept");
    let engine = support::engine(&redis.url, &prefix).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let meta = &format!("{prefix}:{{app:news}}:meta");

    let serial = engine.publish("app", "news", message("plain"), RETENTION).await.unwrap();
    assert!(support::pttl(&mut conn, meta).await > 0, "a channel's meta expires");
    let epoch: String = redis::cmd("HGET").arg(meta).arg("epoch").query_async(&mut conn).await.unwrap();
    let store = engine.cursors();
    store.count("app", "news", &epoch, serial, 100).await.unwrap();
    assert_eq!(support::pttl(&mut conn, meta).await, -1, "counted: no expiry");
    let serial = engine.publish("app", "news", message("plain"), RETENTION).await.unwrap();
    assert_eq!(serial, 2);
    assert_eq!(support::pttl(&mut conn, meta).await, -1, "a later publish does not give it an expiry back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_forgets_serials_and_cursors() {
    let redis = Redis::start();
    let store = support::engine(&redis.url, &support::fresh_prefix("epochs")).await.cursors();
    for serial in 1..=10 {
        store.count("app", "c", "e1", serial, 100).await.unwrap();
    }
    store.mark_read("app", "u", "c", 8).await.unwrap();
    store.count("app", "c", "e2", 1, 100).await.unwrap();
    assert_eq!(store.unread("app", "u", vec!["c".into()]).await.unwrap(), [unread("c", 0, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_marks_keep_the_highest() {
    let redis = Redis::start();
    let store = Arc::new(support::engine(&redis.url, &support::fresh_prefix("race")).await.cursors());
    for serial in 1..=40 {
        store.count("app", "c", "e1", serial, 100).await.unwrap();
    }
    let marks = (1..=40u64).rev().map(|serial| {
        let store = store.clone();
        tokio::spawn(async move { store.mark_read("app", "u", "c", serial).await.unwrap() })
    });
    let mut moved = 0;
    for mark in marks.collect::<Vec<_>>() {
        let (state, did_move) = mark.await.unwrap();
        assert_eq!(state.unread, 40 - state.cursor, "the count matches the cursor it reports");
        moved += usize::from(did_move);
    }
    assert!(moved >= 1);
    assert_eq!(store.unread("app", "u", vec!["c".into()]).await.unwrap(), [unread("c", 40, 0)]);
}
