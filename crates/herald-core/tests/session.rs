//! Session behaviour without any socket: frames in, outbox frames out, time as an input.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;

use herald_core::outbox::Drained;
use herald_core::{App, AppConfig, Session, SessionOpenError};
use herald_protocol::CloseCode;
use herald_protocol::signature::{Secret, channel_auth_message};
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

fn app(config: AppConfig) -> Arc<App> {
    Arc::new(App::new(config))
}

fn test_app() -> Arc<App> {
    app(AppConfig::new("1", "key", "secret"))
}

fn open(app: &Arc<App>) -> Session {
    let mut session = Session::open(app.clone(), 1 << 20, 120, Instant::now()).unwrap();
    assert_eq!(frames(&mut session)[0]["event"], "pusher:connection_established");
    session
}

/// Everything queued for the session's client, parsed.
fn frames(session: &mut Session) -> Vec<Value> {
    let mut out = Vec::new();
    session.connection().outbox.drain(&mut out);
    out.iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
}

fn error_codes(session: &mut Session) -> Vec<u64> {
    frames(session)
        .iter()
        .filter(|f| f["event"] == "pusher:error")
        .map(|f| serde_json::from_str::<Value>(f["data"].as_str().unwrap()).unwrap()["code"].as_u64().unwrap())
        .collect()
}

fn subscribe_private(session: &mut Session, channel: &str, channel_data: Option<&str>) {
    let message = channel_auth_message(session.connection().socket_id, channel, channel_data);
    let auth = format!("key:{}", Secret::new("secret").sign(message.as_bytes()));
    let mut data = json!({"channel": channel, "auth": auth});
    if let Some(cd) = channel_data {
        data["channel_data"] = json!(cd);
    }
    session.handle_text(&json!({"event": "pusher:subscribe", "data": data}).to_string(), Instant::now());
}

#[tokio::test]
async fn quota_and_disabled_apps_refuse_and_dropping_frees_the_slot() {
    let quota = app(AppConfig { max_connections: 1, ..AppConfig::new("1", "k", "s") });
    let first = Session::open(quota.clone(), 1024, 120, Instant::now()).unwrap();
    assert_eq!(Session::open(quota.clone(), 1024, 120, Instant::now()).unwrap_err(), SessionOpenError::OverQuota);
    drop(first);
    assert!(Session::open(quota.clone(), 1024, 120, Instant::now()).is_ok());
    let disabled = app(AppConfig { enabled: false, ..AppConfig::new("1", "k", "s") });
    assert_eq!(Session::open(disabled, 1024, 120, Instant::now()).unwrap_err(), SessionOpenError::AppDisabled);
}

#[tokio::test]
async fn a_dropped_session_leaves_presence_exactly_once() {
    let app = test_app();
    let mut stays = open(&app);
    let mut leaves = open(&app);
    subscribe_private(&mut stays, "presence-p", Some(r#"{"user_id":"s"}"#));
    subscribe_private(&mut leaves, "presence-p", Some(r#"{"user_id":"l"}"#));
    frames(&mut stays);
    drop(leaves);
    let seen = frames(&mut stays);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["event"], "pusher_internal:member_removed");
    assert_eq!(app.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn client_event_budget_refills_with_time() {
    let app = test_app();
    let mut sender = open(&app);
    subscribe_private(&mut sender, "private-c", None);
    frames(&mut sender);
    let event = json!({"event": "client-x", "channel": "private-c", "data": {}}).to_string();
    for _ in 0..10 {
        sender.handle_text(&event, Instant::now());
    }
    assert!(error_codes(&mut sender).is_empty());
    sender.handle_text(&event, Instant::now());
    assert_eq!(error_codes(&mut sender), vec![4301]);
    tokio::time::advance(Duration::from_secs(1)).await;
    sender.handle_text(&event, Instant::now());
    assert!(error_codes(&mut sender).is_empty());
}

#[tokio::test(start_paused = true)]
async fn auth_deadline_follows_the_app_setting() {
    let strict = app(AppConfig { require_auth_within_secs: 30, ..AppConfig::new("1", "key", "secret") });
    let mut session = open(&strict);
    assert_eq!(session.auth_deadline(), Some(Instant::now() + Duration::from_secs(30)));
    assert!(!session.is_authorized());
    subscribe_private(&mut session, "private-a", None);
    assert!(session.is_authorized());
    assert_eq!(open(&test_app()).auth_deadline(), None);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_without_delaying_others() {
    let app = test_app();
    let mut slow = Session::open(app.clone(), 256, 120, Instant::now()).unwrap();
    let mut fast = open(&app);
    frames(&mut slow);
    for s in [&mut slow, &mut fast] {
        s.handle_text(r#"{"event":"pusher:subscribe","data":{"channel":"feed"}}"#, Instant::now());
    }
    frames(&mut fast);
    let data = "x".repeat(100);
    let channels = [herald_protocol::ChannelName::parse("feed", 200).unwrap()];
    let publish = herald_core::Publish {
        event: "e",
        channels: &channels,
        data: &data,
        exclude: None,
        idempotency_key: None,
        count_unread: false,
    };
    for _ in 0..5 {
        app.publish(&publish, Instant::now()).await.unwrap();
        assert_eq!(frames(&mut fast).len(), 1);
    }
    let mut out = Vec::new();
    assert_eq!(slow.connection().outbox.drain(&mut out), Drained::Close(CloseCode::OverCapacity));
}

#[tokio::test]
async fn a_second_user_on_one_connection_is_refused() {
    let app = test_app();
    let mut session = open(&app);
    let signin = |session: &Session, id: &str| {
        let user_data = format!(r#"{{"id":"{id}"}}"#);
        let message = herald_protocol::signature::signin_message(session.connection().socket_id, &user_data);
        let auth = format!("key:{}", Secret::new("secret").sign(message.as_bytes()));
        json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}).to_string()
    };
    let first = signin(&session, "a");
    session.handle_text(&first, Instant::now());
    assert_eq!(frames(&mut session)[0]["event"], "pusher:signin_success");
    let second = signin(&session, "b");
    session.handle_text(&second, Instant::now());
    assert_eq!(error_codes(&mut session), vec![4009]);
    assert!(session.connection().outbox.is_closing());
}

#[tokio::test(start_paused = true)]
async fn history_older_than_its_window_cannot_be_resumed() {
    let app = app(AppConfig { history_max_age_secs: 300, ..AppConfig::new("1", "key", "secret") });
    let mut watcher = open(&app);
    watcher.handle_text(r#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#, Instant::now());
    let joined = frames(&mut watcher).remove(0);
    let epoch = joined["position"]["epoch"].as_str().unwrap().to_owned();
    let channels = [herald_protocol::ChannelName::parse("news", 200).unwrap()];
    let publish = herald_core::Publish {
        event: "e",
        channels: &channels,
        data: "1",
        exclude: None,
        idempotency_key: None,
        count_unread: false,
    };
    app.publish(&publish, Instant::now()).await.unwrap();
    let resume = |session: &mut Session| {
        let frame =
            json!({"event": "pusher:subscribe", "data": {"channel": "news", "resume": {"epoch": epoch, "serial": 0}}});
        session.handle_text(&frame.to_string(), Instant::now());
        frames(session)
    };
    tokio::time::advance(Duration::from_secs(299)).await;
    let within = resume(&mut open(&app));
    assert_eq!((within[0]["recovered"].as_bool(), within.len()), (Some(true), 2));
    tokio::time::advance(Duration::from_secs(2)).await;
    let after = resume(&mut open(&app));
    assert_eq!((after[0]["recovered"].as_bool(), after.len()), (Some(false), 1), "never a silent gap");
}
