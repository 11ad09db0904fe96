//! The signed HTTP API: signatures, statuses, queries.

use serde_json::{Value, json};

use crate::support::{APP_ID, KEY, SECRET, TestServer, unix_now};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn signature_failures_are_401_with_a_reason() {
    let server = TestServer::start().await;
    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name": "e", "channel": "c", "data": "1"}).to_string();
    let now = unix_now();
    let (status, reason) = server.api_signed("POST", &path, &[], &body, KEY, "wrong-secret", now).await;
    assert_eq!(status, 401);
    assert!(reason.contains("invalid signature"), "{reason}");
    let (status, reason) = server.api_signed("POST", &path, &[], &body, KEY, SECRET, now - 601).await;
    assert_eq!(status, 401);
    assert!(reason.contains("auth_timestamp expired"), "{reason}");
    let (status, _) = server.api_signed("POST", &path, &[], &body, "other-key", SECRET, now).await;
    assert_eq!(status, 401);
    let (status, _) = server.http("POST", &path, &body).await;
    assert_eq!(status, 401);
    // The body is covered by body_md5: a tampered body is refused.
    let query = crate::support::signed_query("POST", &path, &[], &body, KEY, SECRET, now);
    let (status, reason) = server.http("POST", &format!("{path}?{query}"), &body.replace('1', "2")).await;
    assert_eq!(status, 401);
    assert!(reason.contains("body_md5"), "{reason}");
    let (status, _) = server.api("POST", "/apps/999/events", &[], &body).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn publish_validation_statuses() {
    let server = TestServer::start().await;
    let big = "x".repeat(10 * 1024 + 1);
    let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases = [
        (json!({"name": "e", "channel": "c", "data": big}), 413),
        (json!({"name": "e", "channels": too_many, "data": "1"}), 400),
        (json!({"name": "e", "channel": "bad name", "data": "1"}), 400),
        (json!({"name": "pusher_internal:member_added", "channel": "c", "data": "1"}), 400),
        (json!({"name": "e", "channel": "c", "data": "1", "socket_id": "nope"}), 400),
        (json!({"name": "", "channel": "c", "data": "1"}), 400),
        (json!({"channel": "c", "data": "1"}), 400),
        (json!({"name": "e", "channel": "c", "data": "1"}), 200),
    ];
    for (body, expected) in cases {
        let (status, reason) = server.publish(body.clone()).await;
        assert_eq!(status, expected, "{body}: {reason}");
    }
    let (status, _) = server.api("POST", "/apps/1/events", &[], "{not json").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn publish_and_batch_report_info() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.subscribe_signed("presence-p", Some(r#"{"user_id":"1"}"#)).await;
    let (status, body) = server
        .publish(json!({"name": "e", "channels": ["presence-p", "empty"], "data": "1", "info": "user_count,subscription_count"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body),
        json!({"channels": {"presence-p": {"user_count": 1, "subscription_count": 1}, "empty": {"subscription_count": 0}},
               "serials": {"presence-p": 1, "empty": 1}})
    );
    let batch = json!({"batch": [
        {"name": "a", "channel": "presence-p", "data": "1", "info": "user_count"},
        {"name": "b", "channel": "presence-p", "data": "2"}
    ]});
    let (status, body) = server.api("POST", "/apps/1/batch_events", &[], &batch.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body),
        json!({"batch": [{"user_count": 1}, {}], "serials": [{"presence-p": 2}, {"presence-p": 3}]})
    );
    a.expect_event("e").await;
    a.expect_event("a").await;
    a.expect_event("b").await;

    let eleven: Vec<Value> = (0..11).map(|i| json!({"name": "e", "channel": "c", "data": i.to_string()})).collect();
    let (status, _) = server.api("POST", "/apps/1/batch_events", &[], &json!({"batch": eleven}).to_string()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn channel_queries() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe_signed("presence-room", Some(r#"{"user_id":"u1"}"#)).await;
    b.subscribe_signed("presence-room", Some(r#"{"user_id":"u2"}"#)).await;
    a.expect_event("pusher_internal:member_added").await;
    a.subscribe("public-1").await;
    b.subscribe("cache-last").await;
    server.publish(json!({"name": "e", "channel": "cache-last", "data": "v"})).await;

    let (_, body) = server.api("GET", "/apps/1/channels", &[], "").await;
    assert_eq!(parse(&body), json!({"channels": {"cache-last": {}, "presence-room": {}, "public-1": {}}}));
    let (_, body) =
        server.api("GET", "/apps/1/channels", &[("filter_by_prefix", "presence-"), ("info", "user_count")], "").await;
    assert_eq!(parse(&body), json!({"channels": {"presence-room": {"user_count": 2}}}));
    let (status, _) = server.api("GET", "/apps/1/channels", &[("info", "user_count")], "").await;
    assert_eq!(status, 400);

    let (_, body) = server.api("GET", "/apps/1/channels/presence-room", &[("info", "user_count")], "").await;
    assert_eq!(parse(&body), json!({"occupied": true, "user_count": 2}));
    let (status, _) = server.api("GET", "/apps/1/channels/presence-room", &[("info", "subscription_count")], "").await;
    assert_eq!(status, 400, "Pusher offers subscription_count for non-presence channels only");
    let (_, body) = server.api("GET", "/apps/1/channels/public-1", &[("info", "subscription_count")], "").await;
    assert_eq!(parse(&body), json!({"occupied": true, "subscription_count": 1}));
    let (status, _) = server.api("GET", "/apps/1/channels/public-1", &[("info", "user_count")], "").await;
    assert_eq!(status, 400);
    let (_, body) = server.api("GET", "/apps/1/channels/cache-last", &[("info", "cache")], "").await;
    let body = parse(&body);
    assert_eq!((body["cache"]["event"].as_str(), body["cache"]["data"].as_str()), (Some("e"), Some("v")));

    let (_, body) = server.api("GET", "/apps/1/channels/presence-room/users", &[], "").await;
    assert_eq!(parse(&body), json!({"users": [{"id": "u1"}, {"id": "u2"}]}));
    let (status, _) = server.api("GET", "/apps/1/channels/public-1/users", &[], "").await;
    assert_eq!(status, 400);
}
