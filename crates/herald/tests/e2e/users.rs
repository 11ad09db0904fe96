//! Sign-in, the user stream, watchlists and terminate_connections.

use serde_json::json;

use crate::support::{Closed, TestServer, data_of};

#[tokio::test]
async fn signed_in_users_receive_server_to_user_events_on_every_connection() {
    let server = TestServer::start().await;
    let mut tab1 = server.client().await;
    let mut tab2 = server.client().await;
    let mut other = server.client().await;
    for (client, id) in [(&mut tab1, "u1"), (&mut tab2, "u1"), (&mut other, "u2")] {
        let user_data = format!(r#"{{"id":"{id}","user_info":{{"name":"N"}}}}"#);
        client.signin(&user_data).await;
        let success = client.expect_event("pusher:signin_success").await;
        assert_eq!(data_of(&success)["user_data"], user_data);
    }
    let stream = tab1.subscribe("#server-to-user-u1").await;
    assert_eq!(stream["event"], "pusher_internal:subscription_succeeded");
    let refused = tab1.subscribe("#server-to-user-u2").await;
    assert_eq!(refused["event"], "pusher:subscription_error");

    server.publish(json!({"name": "note", "channel": "#server-to-user-u1", "data": "hi"})).await;
    assert_eq!(tab1.expect_event("note").await["channel"], "#server-to-user-u1");
    tab2.expect_event("note").await;
    other.expect_nothing_pending().await;
}

#[tokio::test]
async fn bad_signin_closes_with_4009() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.send(json!({"event": "pusher:signin", "data": {"auth": "app-key:deadbeef", "user_data": "{\"id\":\"x\"}"}}))
        .await;
    a.expect_error(4009).await;
    assert_eq!(a.expect_close().await, Closed::Code(4009));
    let mut b = server.client().await;
    b.signin(r#"{"name":"no id"}"#).await;
    assert!(b.expect_error(4009).await.contains("id"));
}

#[tokio::test]
async fn terminate_connections_closes_only_that_user() {
    let server = TestServer::start().await;
    let mut target = server.client().await;
    let mut bystander = server.client().await;
    target.signin(r#"{"id":"bad"}"#).await;
    target.expect_event("pusher:signin_success").await;
    bystander.signin(r#"{"id":"good"}"#).await;
    bystander.expect_event("pusher:signin_success").await;
    let (status, body) = server.api("POST", "/apps/1/users/bad/terminate_connections", &[], "{}").await;
    assert_eq!((status, body.trim()), (200, "{}"));
    assert_eq!(target.expect_close().await, Closed::Code(4009));
    bystander.expect_nothing_pending().await;
}

#[tokio::test]
async fn watchlists_report_online_and_offline() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    watcher.signin(r#"{"id":"w","watchlist":["friend","stranger"]}"#).await;
    watcher.expect_event("pusher:signin_success").await;
    let initial = watcher.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&initial), json!({"events": [{"name": "offline", "user_ids": ["friend", "stranger"]}]}));

    let mut friend = server.client().await;
    friend.signin(r#"{"id":"friend"}"#).await;
    let online = watcher.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&online), json!({"events": [{"name": "online", "user_ids": ["friend"]}]}));
    friend.close().await;
    let offline = watcher.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&offline), json!({"events": [{"name": "offline", "user_ids": ["friend"]}]}));
}

#[tokio::test]
async fn watchlists_over_the_limit_are_truncated_with_4302() {
    let server = TestServer::start().await;
    let ids: Vec<String> = (0..101).map(|i| format!("\"u{i}\"")).collect();
    let mut a = server.client().await;
    a.signin(&format!(r#"{{"id":"me","watchlist":[{}]}}"#, ids.join(","))).await;
    a.expect_error(4302).await;
    a.expect_event("pusher:signin_success").await;
    let initial = a.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&initial)["events"][0]["user_ids"].as_array().unwrap().len(), 100);
}
