//! Webhooks decided once for the cluster (`Engine::arbitrate_webhook`) against real Redis: two
//! engines are two nodes. The record is the engine's own, so a departure is judged right however
//! late the nodes' subscription counts are flushed (here: never, the nodes have no subscribers).
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use herald_core::engine::Engine;
use herald_core::webhooks::WebhookEvent;

mod support;

use support::Redis;

fn occupied() -> WebhookEvent {
    WebhookEvent::ChannelOccupied { channel: "room".into() }
}

fn vacated() -> WebhookEvent {
    WebhookEvent::ChannelVacated { channel: "room".into() }
}

fn added(user: &str) -> WebhookEvent {
    WebhookEvent::MemberAdded { channel: "presence-room".into(), user_id: user.into() }
}

fn removed(user: &str) -> WebhookEvent {
    WebhookEvent::MemberRemoved { channel: "presence-room".into(), user_id: user.into() }
}

async fn told(node: &impl Engine, event: WebhookEvent) -> bool {
    node.arbitrate_webhook("app", event).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_told_once_and_a_departure_only_by_the_last_node() {
    let redis = Redis::start();
    let prefix = support::fresh_prefix("webhooks");
    let (a, b) = (support::engine(&redis.url, &prefix).await, support::engine(&redis.url, &prefix).await);

    // Both nodes have the channel, then both leave at once (no count ever flushed).
    assert!(told(&a, occupied()).await, "the first node tells occupied");
    assert!(!told(&b, occupied()).await, "the second finds it told");
    assert!(!told(&a, vacated()).await, "b still holds it");
    assert!(told(&b, vacated()).await, "the last node tells vacated");
    assert!(!told(&b, vacated()).await, "and only once");
    assert!(told(&b, occupied()).await, "a new occupancy is told again");
    assert!(told(&b, vacated()).await);

    // One user on both nodes: added once, removed once, by the last node.
    assert!(told(&a, added("u1")).await);
    assert!(!told(&b, added("u1")).await);
    assert!(!told(&b, added("u1")).await, "a node reporting twice is one holder");
    assert!(!told(&b, removed("u1")).await, "a still holds u1");
    assert!(told(&a, removed("u1")).await);
    assert!(!told(&a, removed("u1")).await);
    assert!(told(&a, added("u2")).await, "another user is its own record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_counts_are_summed_over_nodes() {
    let redis = Redis::start();
    let prefix = support::fresh_prefix("webhook-counts");
    let node = support::engine(&redis.url, &prefix).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let subscriptions = format!("{prefix}:{{app:room}}:subs");
    redis::cmd("HSET").arg(&subscriptions).arg("other-node").arg(4).query_async::<()>(&mut conn).await.unwrap();
    redis::cmd("HSET").arg(&subscriptions).arg(node.node_id()).arg(99).query_async::<()>(&mut conn).await.unwrap();
    let count = WebhookEvent::SubscriptionCount { channel: "room".into(), subscription_count: 3 };
    let answer = node.arbitrate_webhook("app", count).await.unwrap();
    let expected = WebhookEvent::SubscriptionCount { channel: "room".into(), subscription_count: 7 };
    assert_eq!(answer, Some(expected), "this node's own count (3) replaces its flushed one (99)");
}
