//! The cursor store contract as executable checks; every store's tests run [`run_all`].

use std::sync::Arc;

use super::{CursorStore, Unread};

fn unread(channel: &str, cursor: u64, unread: u64) -> Unread {
    Unread { channel: channel.into(), cursor, unread }
}

/// 3 users, 50 counted and 20 uncounted events, cursors at different serials: exact counts.
pub async fn counts_are_counted_events_after_the_cursor(store: &dyn CursorStore) {
    let app = "counts";
    // Serials 1..=70: every 7th of the first 70 is uncounted until 20 are, the rest counted.
    let mut counted = Vec::new();
    for serial in 1..=70u64 {
        if serial % 7 == 0 || (serial > 56 && serial % 2 == 0) {
            continue;
        }
        counted.push(serial);
    }
    counted.truncate(50);
    for serial in &counted {
        store.count(app, "topic", "e1", *serial, 1000).await.expect("count");
    }
    let after = |cursor: u64| counted.iter().filter(|s| **s > cursor).count() as u64;
    let cursors = [("ann", 0u64), ("bob", 30), ("cid", 69)];
    for (user, cursor) in cursors {
        if cursor > 0 {
            let (state, moved) = store.mark_read(app, user, "topic", cursor).await.expect("mark");
            assert_eq!((state, moved), (unread("topic", cursor, after(cursor)), true));
        }
    }
    for (user, cursor) in cursors {
        let found = store.unread(app, user, vec!["topic".into(), "quiet".into()]).await.expect("unread");
        assert_eq!(found, [unread("topic", cursor, after(cursor)), unread("quiet", 0, 0)], "{user}");
    }
    assert_eq!(after(0), 50);
}

/// A cursor never moves back; marking the same serial again is not a move.
pub async fn cursors_only_move_forward(store: &dyn CursorStore) {
    let app = "forward";
    for serial in 1..=5 {
        store.count(app, "c", "e1", serial, 1000).await.expect("count");
    }
    assert_eq!(store.mark_read(app, "u", "c", 3).await.expect("mark"), (unread("c", 3, 2), true));
    assert_eq!(store.mark_read(app, "u", "c", 2).await.expect("mark"), (unread("c", 3, 2), false));
    assert_eq!(store.mark_read(app, "u", "c", 3).await.expect("mark"), (unread("c", 3, 2), false));
    assert_eq!(store.mark_read(app, "u", "c", 5).await.expect("mark"), (unread("c", 5, 0), true));
    store.count(app, "c", "e1", 6, 1000).await.expect("count");
    assert_eq!(store.unread(app, "u", vec!["c".into()]).await.expect("unread"), [unread("c", 5, 1)]);
}

/// Only the newest `keep` counted serials are kept, so a count is at most `keep`.
pub async fn counts_are_capped_by_what_is_kept(store: &dyn CursorStore) {
    let app = "capped";
    for serial in 1..=30 {
        store.count(app, "c", "e1", serial, 10).await.expect("count");
    }
    assert_eq!(store.unread(app, "u", vec!["c".into()]).await.expect("unread"), [unread("c", 0, 10)]);
    store.mark_read(app, "u", "c", 25).await.expect("mark");
    assert_eq!(store.unread(app, "u", vec!["c".into()]).await.expect("unread"), [unread("c", 25, 5)]);
}

/// Users, channels and apps do not share cursors.
pub async fn cursors_are_separate(store: &dyn CursorStore) {
    store.count("sep-1", "c", "e1", 1, 100).await.expect("count");
    store.count("sep-1", "c", "e1", 2, 100).await.expect("count");
    store.count("sep-2", "c", "e1", 1, 100).await.expect("count");
    store.mark_read("sep-1", "u", "c", 2).await.expect("mark");
    assert_eq!(store.unread("sep-1", "v", vec!["c".into()]).await.expect("unread"), [unread("c", 0, 2)]);
    assert_eq!(store.unread("sep-2", "u", vec!["c".into()]).await.expect("unread"), [unread("c", 0, 1)]);
    assert_eq!(store.unread("sep-1", "u", vec!["d".into()]).await.expect("unread"), [unread("d", 0, 0)]);
}

pub async fn run_all(store: Arc<dyn CursorStore>) {
    counts_are_counted_events_after_the_cursor(&*store).await;
    cursors_only_move_forward(&*store).await;
    counts_are_capped_by_what_is_kept(&*store).await;
    cursors_are_separate(&*store).await;
}
