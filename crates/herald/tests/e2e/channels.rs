//! Channel semantics over the wire: public, private, presence, encrypted, cache, client events.

use serde_json::json;

use crate::support::{TestServer, data_of};

#[tokio::test]
async fn publish_reaches_every_subscriber_but_the_excluded_socket() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("news").await;
    b.subscribe("news").await;
    let (status, _) =
        server.publish(json!({"name": "e", "channels": ["news"], "data": "1", "socket_id": a.socket_id})).await;
    assert_eq!(status, 200);
    let frame = b.expect_event("e").await;
    assert_eq!(frame, json!({"event": "e", "channel": "news", "data": "1", "serial": 1}));
    a.expect_nothing_pending().await;
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let ok = a.subscribe_signed("private-room", None).await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-other", "auth": "app-key:00ff"}})).await;
    let refused = a.expect_event("pusher:subscription_error").await;
    assert_eq!(data_of(&refused), json!({"type": "AuthError", "error": "invalid signature", "status": 401}));
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-other", "auth": "wrong-key:00ff"}})).await;
    let refused = a.expect_event("pusher:subscription_error").await;
    assert_eq!(data_of(&refused)["status"], 401);
}

#[tokio::test]
async fn presence_members_are_users_not_sockets() {
    let server = TestServer::start().await;
    let mut ann1 = server.client().await;
    let mut ann2 = server.client().await;
    let mut bob = server.client().await;
    let ann = r#"{"user_id":"ann","user_info":{"name":"Ann"}}"#;
    let joined = ann1.subscribe_signed("presence-room", Some(ann)).await;
    assert_eq!(data_of(&joined), json!({"presence": {"ids": ["ann"], "hash": {"ann": {"name": "Ann"}}, "count": 1}}));

    let joined = bob.subscribe_signed("presence-room", Some(r#"{"user_id":7}"#)).await;
    assert_eq!(data_of(&joined)["presence"]["count"], 2);
    let added = ann1.expect_event("pusher_internal:member_added").await;
    assert_eq!(data_of(&added), json!({"user_id": "7"}));

    // A second socket of Ann: no member_added for anyone.
    ann2.subscribe_signed("presence-room", Some(ann)).await;
    bob.expect_nothing_pending().await;
    ann1.expect_nothing_pending().await;

    // Ann leaves on one socket only: still a member.
    ann1.close().await;
    bob.expect_nothing_pending().await;
    let (_, users) = server.api("GET", "/apps/1/channels/presence-room/users", &[], "").await;
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 2);

    ann2.close().await;
    let removed = bob.expect_event("pusher_internal:member_removed").await;
    assert_eq!(data_of(&removed), json!({"user_id": "ann"}));
}

#[tokio::test]
async fn presence_member_limit() {
    let config = format!("{}max_presence_members = 1\n", crate::support::default_config());
    let server = TestServer::with_config(&config).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_signed("presence-small", Some(r#"{"user_id":"a"}"#)).await;
    let refused = b.subscribe_signed("presence-small", Some(r#"{"user_id":"b"}"#)).await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(data_of(&refused)["type"], "LimitReached");
    a.expect_nothing_pending().await;
}

#[tokio::test]
async fn client_events_go_to_others_with_user_id_on_presence() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_signed("presence-chat", Some(r#"{"user_id":"a"}"#)).await;
    b.subscribe_signed("presence-chat", Some(r#"{"user_id":"b"}"#)).await;
    a.expect_event("pusher_internal:member_added").await;
    a.send(json!({"event": "client-typing", "channel": "presence-chat", "data": {"on": true}})).await;
    let frame = b.expect_event("client-typing").await;
    assert_eq!(
        frame,
        json!({"event": "client-typing", "channel": "presence-chat", "data": {"on": true}, "user_id": "a", "serial": 1})
    );
    a.expect_nothing_pending().await;
}

#[tokio::test]
async fn client_events_are_refused_where_pusher_refuses_them() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.send(json!({"event": "client-x", "channel": "private-not-joined", "data": {}})).await;
    assert!(a.expect_error(4306).await.contains("not subscribed"));
    a.subscribe_signed("private-encrypted-secret", None).await;
    a.send(json!({"event": "client-x", "channel": "private-encrypted-secret", "data": {}})).await;
    assert!(a.expect_error(4306).await.contains("encrypted"));
}

#[tokio::test]
async fn client_events_are_rate_limited_per_connection() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_signed("private-r", None).await;
    b.subscribe_signed("private-r", None).await;
    for i in 0..11 {
        a.send(json!({"event": "client-n", "channel": "private-r", "data": {"i": i}})).await;
    }
    a.expect_error(4301).await;
    for i in 0..10 {
        let frame = b.expect_event("client-n").await;
        assert_eq!(frame["data"]["i"], i);
    }
    b.expect_nothing_pending().await;
}

#[tokio::test]
async fn encrypted_channel_payloads_are_relayed_untouched() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.subscribe_signed("private-encrypted-x", None).await;
    let data = r#"{"nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}"#;
    server.publish(json!({"name": "secret", "channel": "private-encrypted-x", "data": data})).await;
    assert_eq!(a.expect_event("secret").await["data"], data);
}

#[tokio::test]
async fn unsubscribed_sockets_stop_receiving() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.subscribe("room").await;
    a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "room"}})).await;
    a.expect_nothing_pending().await;
    server.publish(json!({"name": "e", "channel": "room", "data": "x"})).await;
    a.expect_nothing_pending().await;
    let (_, body) = server.api("GET", "/apps/1/channels/room", &[], "").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), json!({"occupied": false}));
}
