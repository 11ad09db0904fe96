//! The engine contract on the in-process engine, and replica hubs (several nodes in one process)
//! serving real sessions through it.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::Engine;
use herald_core::engine::conformance::{self, Factory};
use herald_core::engine::memory::MemoryCluster;
use herald_core::{AppConfig, Publish, Registry, Session};
use herald_protocol::ChannelName;
use herald_protocol::signature::{Secret, channel_auth_message};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::time::Instant;

#[derive(Default)]
struct Clusters {
    by_prefix: Mutex<HashMap<String, MemoryCluster>>,
}

impl Factory for Clusters {
    fn node<'a>(&'a self, prefix: &'a str) -> Pin<Box<dyn Future<Output = Arc<dyn Engine>> + Send + 'a>> {
        let cluster = self.by_prefix.lock().entry(prefix.to_owned()).or_default().clone();
        Box::pin(async move { cluster.node() as Arc<dyn Engine> })
    }
    fn lease(&self) -> Duration {
        Duration::from_millis(10)
    }
}

#[tokio::test]
async fn serials_in_order_on_every_node() {
    conformance::serials_in_order_on_every_node(&Clusters::default()).await;
}
#[tokio::test]
async fn snapshot_covers_history() {
    conformance::snapshot_covers_history(&Clusters::default()).await;
}
#[tokio::test]
async fn presence_is_one_member_per_user() {
    conformance::presence_is_one_member_per_user(&Clusters::default()).await;
}
#[tokio::test]
async fn dead_node_members_leave() {
    conformance::dead_node_members_leave(&Clusters::default()).await;
}
#[tokio::test]
async fn counts_add_up_across_nodes() {
    conformance::counts_add_up_across_nodes(&Clusters::default()).await;
}
#[tokio::test]
async fn apps_and_prefixes_are_isolated() {
    conformance::apps_and_prefixes_are_isolated(&Clusters::default()).await;
}
#[tokio::test]
async fn terminate_reaches_every_node() {
    conformance::terminate_reaches_every_node(&Clusters::default()).await;
}

fn node(cluster: &MemoryCluster) -> Arc<Registry> {
    let registry = Arc::new(Registry::with_engine(vec![AppConfig::new("1", "key", "secret")], cluster.node()).unwrap());
    herald_core::cluster::attach(&registry);
    registry
}

fn open(node: &Registry) -> Session {
    Session::open(node.by_id("1").unwrap().clone(), 1 << 20, 120, Instant::now()).unwrap()
}

struct Client {
    session: Session,
    pending: std::collections::VecDeque<Value>,
}

fn client(node: &Registry) -> Client {
    Client { session: open(node), pending: Default::default() }
}

/// Waits for the next frame with `event`, dropping the frames before it.
async fn next(client: &mut Client, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Some(frame) = client.pending.pop_front() {
            if frame["event"] == event {
                return frame;
            }
        }
        let mut out: Vec<bytes::Bytes> = Vec::new();
        client.session.connection().outbox.drain(&mut out);
        if out.is_empty() {
            tokio::time::timeout_at(deadline, client.session.connection().outbox.ready())
                .await
                .unwrap_or_else(|_| panic!("no {event}"));
        }
        client.pending.extend(out.iter().map(|f| serde_json::from_slice::<Value>(f).unwrap()));
    }
}

fn subscribe(client: &mut Client, channel: &str, user: Option<&str>, resume: Option<Value>) {
    let channel_data = user.map(|id| json!({"user_id": id}).to_string());
    let session = &mut client.session;
    let message = channel_auth_message(session.connection().socket_id, channel, channel_data.as_deref());
    let auth = format!("key:{}", Secret::new("secret").sign(message.as_bytes()));
    let mut data = json!({"channel": channel, "auth": auth, "channel_data": channel_data});
    if let Some(resume) = resume {
        data["resume"] = resume;
    }
    session.handle_text(&json!({"event": "pusher:subscribe", "data": data}).to_string(), Instant::now());
}

async fn publish(node: &Registry, channel: &str, data: &str) -> u64 {
    let channels = [ChannelName::parse(channel, 200).unwrap()];
    let publish =
        Publish { event: "e", channels: &channels, data, exclude: None, idempotency_key: None, count_unread: false };
    node.by_id("1").unwrap().publish(&publish, Instant::now()).await.unwrap().serials[0]
}

#[tokio::test]
async fn sessions_on_two_nodes_share_serials_presence_and_resume() {
    let cluster = MemoryCluster::new();
    let (a, b) = (node(&cluster), node(&cluster));
    let mut on_a = client(&a);
    let mut on_b = client(&b);
    subscribe(&mut on_a, "private-news", None, None);
    subscribe(&mut on_b, "private-news", None, None);
    let joined = next(&mut on_b, "pusher_internal:subscription_succeeded").await;
    let epoch = joined["position"]["epoch"].clone();
    next(&mut on_a, "pusher_internal:subscription_succeeded").await;
    for i in 0..4 {
        let serial = publish(if i % 2 == 0 { &a } else { &b }, "private-news", &format!("m{i}")).await;
        assert_eq!(serial, i + 1);
    }
    for session in [&mut on_a, &mut on_b] {
        for i in 0..4u64 {
            let event = next(session, "e").await;
            assert_eq!((event["serial"].as_u64(), event["data"].as_str()), (Some(i + 1), Some(&*format!("m{i}"))));
        }
    }
    // A third socket on node b resumes from serial 1 out of b's mirror.
    let mut late = client(&b);
    subscribe(&mut late, "private-news", None, Some(json!({"epoch": epoch, "serial": 1})));
    let resumed = next(&mut late, "pusher_internal:subscription_succeeded").await;
    assert_eq!(resumed["recovered"], true);
    assert_eq!(next(&mut late, "e").await["serial"], 2);

    // Presence: one member across nodes, announced once to the other node's sockets.
    subscribe(&mut on_a, "presence-room", Some("ann"), None);
    next(&mut on_a, "pusher_internal:subscription_succeeded").await;
    subscribe(&mut on_b, "presence-room", Some("bob"), None);
    let seen = next(&mut on_b, "pusher_internal:subscription_succeeded").await;
    let presence: Value = serde_json::from_str(seen["data"].as_str().unwrap()).unwrap();
    assert_eq!(presence["presence"]["count"], 2, "bob sees ann, who is on the other node: {presence}");
    let added = next(&mut on_a, "pusher_internal:member_added").await;
    assert_eq!(added["data"].as_str().map(|d| d.contains("bob")), Some(true));
    drop(on_b);
    let removed = next(&mut on_a, "pusher_internal:member_removed").await;
    assert_eq!(removed["data"].as_str().map(|d| d.contains("bob")), Some(true));
    let app = a.by_id("1").unwrap();
    let users = app.presence_users(&ChannelName::parse("presence-room", 200).unwrap()).await.unwrap();
    assert_eq!(users, vec!["ann".to_owned()]);
}
#[tokio::test]
async fn idempotency_keys_hold_across_nodes() {
    conformance::idempotency_keys_hold_across_nodes(&Clusters::default()).await;
}

#[tokio::test]
async fn a_channel_left_and_joined_again_at_once_keeps_receiving() {
    // A page reload: the old socket's leave and the new socket's join race to the engine.
    let cluster = MemoryCluster::new();
    let (a, b) = (node(&cluster), node(&cluster));
    for round in 0..20u64 {
        let mut old = client(&b);
        subscribe(&mut old, "private-room", None, None);
        next(&mut old, "pusher_internal:subscription_succeeded").await;
        drop(old);
        let mut new = client(&b);
        subscribe(&mut new, "private-room", None, None);
        next(&mut new, "pusher_internal:subscription_succeeded").await;
        let serial = publish(&a, "private-room", "after the reload").await;
        assert_eq!(serial, round + 1);
        assert_eq!(next(&mut new, "e").await["serial"], serial, "round {round}: the new socket hears the channel");
    }
}
