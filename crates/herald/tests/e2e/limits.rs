//! Limits and failure paths: each gets its exact code, and nobody else is affected.

use serde_json::json;

use crate::support::{Closed, KEY, TestServer, default_config};

#[tokio::test]
async fn oversized_frames_are_refused_and_others_keep_working() {
    let server = TestServer::start().await;
    let mut bystander = server.client().await;
    bystander.subscribe("room").await;
    let mut a = server.client().await;
    a.subscribe_signed("private-a", None).await;

    // Over the app's 10 KB limit but under the WebSocket cap: pusher:error 4305, still connected.
    let big = "x".repeat(13 * 1024);
    a.send(json!({"event": "client-big", "channel": "private-a", "data": big})).await;
    a.expect_error(4305).await;
    a.expect_nothing_pending().await;

    // Client event data over 10 KB inside a frame that fits: also 4305.
    let data = "y".repeat(10 * 1024 + 1);
    a.send(json!({"event": "client-big", "channel": "private-a", "data": data})).await;
    a.expect_error(4305).await;

    // Far over the WebSocket cap: the connection is closed with 1009.
    a.send_text(&"z".repeat(200 * 1024)).await;
    assert_eq!(a.expect_close().await, Closed::Code(1009));

    server.publish(json!({"name": "still-here", "channel": "room", "data": "1"})).await;
    bystander.expect_event("still-here").await;
}

#[tokio::test]
async fn malformed_frames_do_not_disturb_others() {
    let server = TestServer::start().await;
    let mut bystander = server.client().await;
    bystander.subscribe("room").await;
    let mut a = server.client().await;
    for junk in ["", "{", "[]", "null", "{\"event\":42}", "{\"event\":\"pusher:subscribe\",\"data\":\"{oops\"}"] {
        a.send_text(junk).await;
        a.expect_error(4303).await;
    }
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-x"}})).await;
    assert_eq!(a.expect_event("pusher:subscription_error").await["channel"], "#server-to-user-x");
    server.publish(json!({"name": "ok", "channel": "room", "data": "1"})).await;
    bystander.expect_event("ok").await;
}

#[tokio::test]
async fn connection_quota_closes_with_4004() {
    let config = format!("{}max_connections = 1\n", default_config());
    let server = TestServer::with_config(&config).await;
    let first = server.client().await;
    let mut second = server.connect(KEY, "protocol=7").await;
    second.expect_error(4004).await;
    assert_eq!(second.expect_close().await, Closed::Code(4004));
    first.close().await;
}

#[tokio::test]
async fn disabled_app_closes_with_4003_and_api_answers_403() {
    let config = format!("{}enabled = false\n", default_config());
    let server = TestServer::with_config(&config).await;
    let mut client = server.connect(KEY, "protocol=7").await;
    client.expect_error(4003).await;
    assert_eq!(client.expect_close().await, Closed::Code(4003));
    let (status, _) = server.publish(json!({"name": "e", "channel": "c", "data": "1"})).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn channels_per_connection_limit() {
    let config = format!("{}max_channels_per_connection = 2\n", default_config());
    let server = TestServer::with_config(&config).await;
    let mut a = server.client().await;
    a.subscribe("one").await;
    a.subscribe("two").await;
    let refused = a.subscribe("three").await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(crate::support::data_of(&refused)["status"], 429);
    // Re-subscribing to a channel already held is not a new channel.
    assert_eq!(a.subscribe("one").await["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn unauthorized_connections_are_closed_when_the_app_requires_it() {
    let config = format!("{}require_auth_within_secs = 1\n", default_config());
    let server = TestServer::with_config(&config).await;
    let mut idle = server.client().await;
    let mut signed = server.client().await;
    signed.subscribe_signed("private-ok", None).await;
    idle.expect_error(4009).await;
    assert_eq!(idle.expect_close().await, Closed::Code(4009));
    signed.expect_nothing_pending().await;
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed_with_4201() {
    let config = format!("[server]\nactivity_timeout_secs = 1\npong_timeout_secs = 1\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    let mut a = server.connect(KEY, "protocol=7").await;
    let established = a.expect_event("pusher:connection_established").await;
    assert_eq!(crate::support::data_of(&established)["activity_timeout"], 1);
    a.expect_event("pusher:ping").await;
    assert_eq!(a.expect_close().await, Closed::Code(4201));
}

#[tokio::test]
async fn sigterm_asks_clients_to_reconnect_with_4200() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let status = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    a.expect_error(4200).await;
    assert_eq!(a.expect_close().await, Closed::Code(4200));
}

#[tokio::test]
async fn unsupported_and_malformed_protocol_versions() {
    let server = TestServer::start().await;
    let mut bad = server.connect(KEY, "protocol=abc").await;
    bad.expect_error(4006).await;
    assert_eq!(bad.expect_close().await, Closed::Code(4006));
    let mut old = server.connect(KEY, "protocol=4").await;
    assert_eq!(old.expect_close().await, Closed::Code(4007));
    // A missing protocol is treated as 7.
    let mut lenient = server.connect(KEY, "").await;
    lenient.expect_event("pusher:connection_established").await;
}

#[tokio::test]
async fn a_client_that_trickles_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut slow = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    slow.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Meanwhile the server answers everyone else.
    let (status, _) = server.http("GET", "/up", "").await;
    assert_eq!(status, 200);
    // The header deadline (10 s) ends the trickling connection: the read sees EOF or a 408.
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(15), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server kept a header-trickling connection open");
}

#[tokio::test]
async fn an_api_request_whose_body_never_comes_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = format!("[server]\nrequest_timeout_secs = 1\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    let mut slow = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let head =
        "POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut response)).await;
    let n = read.expect("the server kept waiting for the body").unwrap();
    assert!(
        String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&response[..n])
    );
    let (status, _) = server.publish(json!({"name": "e", "channel": "c", "data": "1"})).await;
    assert_eq!(status, 200, "others are served meanwhile");
}
