//! The webhook outbox contract as executable checks; every outbox's tests run [`run_all`].
//!
//! Each check uses its own app ids, so one store can run them all in turn.

use super::{Replay, WebhookOutbox};

const A: &str = "http://a.test/hook";
const B: &str = "http://b.test/hook";

fn events(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"name":"{prefix}{i}"}}"#)).collect()
}

async fn pending_events(store: &dyn WebhookOutbox, app: &str, url: &str) -> Vec<String> {
    store.pending(app, url, 1000).await.expect("pending").into_iter().map(|q| q.event).collect()
}

/// Events come back in the order appended, per endpoint, never another endpoint's or app's.
pub async fn queues_are_ordered_and_separate(store: &dyn WebhookOutbox) {
    store.append("order", A, events("a", 3)).await.expect("append");
    store.append("order", B, events("b", 2)).await.expect("append");
    store.append("order-other", A, events("x", 1)).await.expect("append");
    store.append("order", A, events("c", 2)).await.expect("append");
    let expected: Vec<String> = events("a", 3).into_iter().chain(events("c", 2)).collect();
    assert_eq!(pending_events(store, "order", A).await, expected);
    assert_eq!(pending_events(store, "order", B).await, events("b", 2));
    assert_eq!(pending_events(store, "order-other", A).await, events("x", 1));
    let first_two = store.pending("order", A, 2).await.expect("pending");
    assert_eq!(first_two.len(), 2);
    assert!(first_two[0].id < first_two[1].id, "ids increase");
}

/// Delivered events are gone; the rest stay in order; another endpoint's ids are not touched.
pub async fn delivered_events_leave_the_queue(store: &dyn WebhookOutbox) {
    store.append("delivered", A, events("a", 4)).await.expect("append");
    store.append("delivered", B, events("b", 1)).await.expect("append");
    let queued = store.pending("delivered", A, 2).await.expect("pending");
    let ids: Vec<u64> = queued.iter().map(|q| q.id).collect();
    store.delivered("delivered", A, ids).await.expect("delivered");
    let other = store.pending("delivered", B, 10).await.expect("pending");
    store.delivered("delivered", A, other.iter().map(|q| q.id).collect()).await.expect("delivered");
    assert_eq!(pending_events(store, "delivered", A).await, events("a", 4)[2..]);
    assert_eq!(pending_events(store, "delivered", B).await, events("b", 1), "not A's to remove");
}

/// Buried events leave the queue for the dead letters, which a replay queues again at the end.
pub async fn dead_letters_are_kept_and_replayed(store: &dyn WebhookOutbox) {
    let app = "dead";
    store.append(app, A, events("a", 3)).await.expect("append");
    let queued = store.pending(app, A, 2).await.expect("pending");
    store.bury(app, A, queued.iter().map(|q| q.id).collect(), "HTTP 500", 1234).await.expect("bury");
    assert_eq!(pending_events(store, app, A).await, events("a", 3)[2..]);
    let dead = store.dead_letters(app, 100).await.expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].event, events("a", 3)[0]);
    assert_eq!((dead[0].url.as_str(), dead[0].reason.as_str(), dead[0].failed_at_ms), (A, "HTTP 500", 1234));
    assert!(store.dead_letters("dead-other", 100).await.expect("dead letters").is_empty());
    assert!(store.dead_letters(app, 1).await.expect("dead letters").len() == 1, "limit");

    assert_eq!(store.replay(app, Replay::Ids(vec![dead[1].id, 999_999])).await.expect("replay"), 1);
    let expected = vec![events("a", 3)[2].clone(), events("a", 3)[1].clone()];
    assert_eq!(pending_events(store, app, A).await, expected, "replayed at the end");
    assert_eq!(store.replay(app, Replay::All).await.expect("replay"), 1);
    assert!(store.dead_letters(app, 100).await.expect("dead letters").is_empty());
    assert_eq!(pending_events(store, app, A).await.len(), 3);
    assert_eq!(store.replay(app, Replay::All).await.expect("replay"), 0);
}

/// A replay of another app's dead letters replays nothing.
pub async fn replays_stay_within_the_app(store: &dyn WebhookOutbox) {
    store.append("replay-a", A, events("a", 1)).await.expect("append");
    let queued = store.pending("replay-a", A, 1).await.expect("pending");
    let id = queued[0].id;
    store.bury("replay-a", A, vec![id], "timed out", 1).await.expect("bury");
    assert_eq!(store.replay("replay-b", Replay::Ids(vec![id])).await.expect("replay"), 0);
    assert_eq!(store.replay("replay-b", Replay::All).await.expect("replay"), 0);
    assert_eq!(store.dead_letters("replay-a", 10).await.expect("dead").len(), 1);
}

/// The pending count is the number of queued events of that endpoint and app, whatever happened
/// to the others: delivered and buried events leave it, replayed ones come back.
pub async fn pending_counts_follow_the_queue(store: &dyn WebhookOutbox) {
    let app = "count";
    let count = |url| async move { store.pending_count(app, url).await.expect("pending count") };
    assert_eq!(count(A).await, 0);
    store.append(app, A, events("a", 4)).await.expect("append");
    store.append(app, B, events("b", 1)).await.expect("append");
    store.append("count-other", A, events("x", 2)).await.expect("append");
    assert_eq!((count(A).await, count(B).await), (4, 1));
    let queued = store.pending(app, A, 2).await.expect("pending");
    store.delivered(app, A, vec![queued[0].id]).await.expect("delivered");
    store.bury(app, A, vec![queued[1].id], "HTTP 500", 1).await.expect("bury");
    assert_eq!(count(A).await, 2, "delivered and buried events are not pending");
    store.replay(app, Replay::All).await.expect("replay");
    assert_eq!((count(A).await, count(B).await), (3, 1), "a replayed event is pending again");
    assert_eq!(store.pending_count("count-other", A).await.expect("pending count"), 2);
}

pub async fn run_all(store: &dyn WebhookOutbox) {
    queues_are_ordered_and_separate(store).await;
    pending_counts_follow_the_queue(store).await;
    delivered_events_leave_the_queue(store).await;
    dead_letters_are_kept_and_replayed(store).await;
    replays_stay_within_the_app(store).await;
}
