//! Read cursors and unread counts through the real binary: counted and uncounted publishes, cursors
//! moved from a client and from the backend, the counts over HTTP and on subscribe, and
//! `herald:read` reaching a user's other tabs (and nobody else) quickly.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::engines::{Engine, on_both_engines};
use crate::support::{APP_ID, TestClient, TestServer, data_of, default_config};

on_both_engines!(
    unread_counts_are_exact_per_user_over_http_and_on_subscribe,
    a_mark_read_in_one_tab_reaches_the_other_tab_within_100ms_and_nobody_else,
);

async fn api(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let (status, answer) = server.api("POST", &format!("/apps/{APP_ID}{path}"), &[], &body.to_string()).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
}

async fn signed_in(server: &TestServer, user: &str) -> TestClient {
    let mut client = server.client().await;
    client.signin(&format!(r#"{{"id":"{user}"}}"#)).await;
    client.expect_event("pusher:signin_success").await;
    client
}

/// Publishes one event through `/events`; the serial it took.
async fn publish(server: &TestServer, channel: &str, n: usize, counted: bool) -> u64 {
    let body = json!({"name": "message", "channel": channel, "data": n.to_string(), "count_unread": counted});
    let (status, answer) = server.publish(body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    answer["serials"][channel].as_u64().unwrap()
}

/// `{"cursor", "unread"}` of one channel for `user`, over HTTP.
async fn unread(server: &TestServer, user: &str, channel: &str) -> Value {
    let (status, answer) = api(server, &format!("/users/{user}/unread"), json!({"channels": [channel]})).await;
    assert_eq!(status, 200, "{answer}");
    answer["channels"][channel].clone()
}

/// The next `herald:read` on `client`: it comes on the user's stream.
async fn expect_read(client: &mut TestClient, user: &str) -> Value {
    let frame = client.expect_event("herald:read").await;
    assert_eq!(frame["channel"], format!("#server-to-user-{user}"), "{frame}");
    assert!(frame["serial"].is_u64(), "a user stream event has a serial: {frame}");
    data_of(&frame)
}

async fn unread_counts_are_exact_per_user_over_http_and_on_subscribe(engine: Engine) {
    let server = engine.serve(&default_config()).await;
    let room = "room-7";
    let users = ["ann", "bob", "cy"];
    let mut clients = Vec::new();
    for user in users {
        clients.push(signed_in(&server, user).await);
    }
    // 70 events, 20 of them not counted, interleaved: n % 7 in {2, 5}.
    let mut counted = Vec::new();
    let mut serials = Vec::new();
    for n in 0..70 {
        let counts = n % 7 != 2 && n % 7 != 5;
        let serial = publish(&server, room, n, counts).await;
        serials.push(serial);
        if counts {
            counted.push(serial);
        }
    }
    assert_eq!(counted.len(), 50);
    let expected = |cursor: u64| counted.iter().filter(|s| **s > cursor).count() as u64;

    // ann reads up to the 25th event from her connection, bob up to the 61st through the backend,
    // cy reads nothing.
    let (ann_cursor, bob_cursor) = (serials[24], serials[60]);
    clients[0].send(json!({"event": "herald:mark_read", "data": {"channel": room, "serial": ann_cursor}})).await;
    let read = expect_read(&mut clients[0], "ann").await;
    assert_eq!(read, json!({"channel": room, "cursor": ann_cursor, "unread": expected(ann_cursor)}));
    let (status, answer) = api(&server, "/users/bob/read", json!({"channel": room, "serial": bob_cursor})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"channel": room, "cursor": bob_cursor, "unread": expected(bob_cursor), "moved": true}));
    let read = expect_read(&mut clients[1], "bob").await;
    assert_eq!(read, json!({"channel": room, "cursor": bob_cursor, "unread": expected(bob_cursor)}));
    // A cursor never moves back, and a call that does not move it tells nobody.
    let (_, answer) = api(&server, "/users/bob/read", json!({"channel": room, "serial": 3})).await;
    assert_eq!((&answer["cursor"], &answer["moved"]), (&json!(bob_cursor), &json!(false)), "{answer}");
    for client in &mut clients {
        client.expect_nothing_pending().await;
    }

    let cursors = [ann_cursor, bob_cursor, 0];
    assert!(expected(ann_cursor) != expected(bob_cursor) && expected(bob_cursor) != 50, "three different counts");
    for (user, cursor) in users.iter().zip(cursors) {
        let (status, answer) =
            api(&server, &format!("/users/{user}/unread"), json!({"channels": [room, "quiet-room"]})).await;
        assert_eq!(status, 200, "{answer}");
        let expected = json!({"channels": {room: {"cursor": cursor, "unread": expected(cursor)}, "quiet-room": {"cursor": 0, "unread": 0}}});
        assert_eq!(answer, expected, "{user}");
    }
    for ((client, cursor), user) in clients.iter_mut().zip(cursors).zip(users) {
        client.send(json!({"event": "pusher:subscribe", "data": {"channel": room, "unread": true}})).await;
        let frames = [client.recv().await, client.recv().await];
        let count = frames.iter().find(|f| f["event"] == "herald:unread").unwrap_or_else(|| panic!("{frames:?}"));
        assert_eq!(count["channel"], room);
        assert_eq!(data_of(count), json!({"cursor": cursor, "unread": expected(cursor)}), "{user}");
        let order = frames.map(|f| f["event"].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            order,
            ["pusher_internal:subscription_succeeded", "herald:unread"],
            "{user}: the count follows the confirmation"
        );
    }

    // Without a sign-in there is no count to send and no cursor to move.
    let mut anonymous = server.client().await;
    anonymous.send(json!({"event": "pusher:subscribe", "data": {"channel": room, "unread": true}})).await;
    anonymous.expect_event("pusher_internal:subscription_succeeded").await;
    anonymous.expect_nothing_pending().await;
    anonymous.send(json!({"event": "herald:mark_read", "data": {"channel": room, "serial": 5}})).await;
    anonymous.expect_error(4306).await;
}

async fn a_mark_read_in_one_tab_reaches_the_other_tab_within_100ms_and_nobody_else(engine: Engine) {
    let server = engine.serve(&default_config()).await;
    let room = "room-9";
    let mut tab1 = signed_in(&server, "ann").await;
    let mut tab2 = signed_in(&server, "ann").await;
    let mut bob = signed_in(&server, "bob").await;
    let mut last = 0;
    for n in 0..5 {
        last = publish(&server, room, n, true).await;
    }
    assert_eq!(unread(&server, "bob", room).await, json!({"cursor": 0, "unread": 5}));

    let sent = Instant::now();
    tab1.send(json!({"event": "herald:mark_read", "data": {"channel": room, "serial": last}})).await;
    let read = expect_read(&mut tab2, "ann").await;
    let took = sent.elapsed();
    let expected = json!({"channel": room, "cursor": last, "unread": 0});
    assert_eq!(read, expected);
    assert!(took < Duration::from_millis(100), "the other tab heard after {took:?} ({})", engine.name());
    assert_eq!(expect_read(&mut tab1, "ann").await, expected, "the tab that read hears it too");

    bob.expect_nothing_pending().await;
    assert_eq!(unread(&server, "bob", room).await, json!({"cursor": 0, "unread": 5}), "bob's count is his own");
    assert_eq!(unread(&server, "ann", room).await, json!({"cursor": last, "unread": 0}));
}
