//! The engine contract as executable checks; every engine's test suite runs all of them.
//!
//! Each check builds its own nodes from a [`Factory`], observes them through a recording node and
//! panics with a message saying which promise broke. They wait for events with deadlines, never
//! with sleeps, so a slow machine makes them slower but not flaky. Nodes are created under a prefix
//! the factory isolates (a key prefix for Redis, a separate cluster in memory).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use herald_protocol::SocketId;
use tokio::sync::mpsc;

use super::{Delivery, Engine, Message, Node, Reservation, Retention, Snapshot};
use crate::hub::ChannelCounts;

/// Builds nodes for the checks.
pub trait Factory: Sync {
    /// A new node; nodes made with the same `prefix` share state, others never see it.
    fn node<'a>(&'a self, prefix: &'a str) -> Pin<Box<dyn Future<Output = Arc<dyn Engine>> + Send + 'a>>;
    /// The longest a dead node's presence may outlive it.
    fn lease(&self) -> Duration;
    /// A prefix no other check of this run uses.
    fn fresh_prefix(&self) -> String {
        format!("t{:x}", rand::random::<u64>())
    }
}

/// What a recording node saw.
#[derive(Debug, Clone)]
pub enum Seen {
    Delivered { app: String, channel: String, delivery: Delivery },
    Installed { app: String, channel: String, snapshot: Snapshot },
    Terminated { app: String, user_id: String },
    Withdrawn { app: String, channel: String, user_id: Option<String> },
}

struct Recorder {
    tx: mpsc::UnboundedSender<Seen>,
}

impl Node for Recorder {
    fn deliver(&self, app: &str, channel: &str, delivery: Delivery) {
        let _ = self.tx.send(Seen::Delivered { app: app.into(), channel: channel.into(), delivery });
    }
    fn install(&self, app: &str, channel: &str, snapshot: Snapshot) {
        let _ = self.tx.send(Seen::Installed { app: app.into(), channel: channel.into(), snapshot });
    }
    fn terminate_user(&self, app: &str, user_id: &str) {
        let _ = self.tx.send(Seen::Terminated { app: app.into(), user_id: user_id.into() });
    }
    fn withdrawn(&self, app: &str, channel: &str, user_id: Option<&str>) {
        let _ = self.tx.send(Seen::Withdrawn {
            app: app.into(),
            channel: channel.into(),
            user_id: user_id.map(Into::into),
        });
    }
}

/// A node under test and what it saw.
pub struct TestNode {
    pub engine: Arc<dyn Engine>,
    seen: mpsc::UnboundedReceiver<Seen>,
    _recorder: Arc<dyn Node>,
}

const WAIT: Duration = Duration::from_secs(10);
pub const RETENTION: Retention = Retention { max_events: 100, max_age_ms: 300_000, cache_ttl_ms: 0 };

impl TestNode {
    pub async fn new(factory: &dyn Factory, prefix: &str) -> Self {
        let engine = factory.node(prefix).await;
        let (tx, seen) = mpsc::unbounded_channel();
        let recorder: Arc<dyn Node> = Arc::new(Recorder { tx });
        engine.attach(Arc::downgrade(&recorder) as Weak<dyn Node>);
        Self { engine, seen, _recorder: recorder }
    }

    /// The next thing seen that `pick` accepts, skipping others; panics after `within`.
    pub async fn wait_for<T>(&mut self, within: Duration, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => {
                    if let Some(found) = pick(seen) {
                        return found;
                    }
                }
                Ok(None) => panic!("node stopped while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Starts listening and waits for the snapshot.
    pub async fn listen(&mut self, app: &str, channel: &str) -> Snapshot {
        self.engine.listen(app, channel, RETENTION);
        let (app, channel) = (app.to_owned(), channel.to_owned());
        self.wait_for(WAIT, "a snapshot", |seen| match seen {
            Seen::Installed { app: a, channel: c, snapshot } if a == app && c == channel => Some(snapshot),
            _ => None,
        })
        .await
    }

    /// Serials of the next `n` events delivered on `channel`.
    pub async fn serials(&mut self, channel: &str, n: usize) -> Vec<u64> {
        let mut serials = Vec::with_capacity(n);
        while serials.len() < n {
            let serial = self
                .wait_for(WAIT, &format!("event {} of {n} on {channel}", serials.len() + 1), |seen| match seen {
                    Seen::Delivered { channel: c, delivery: Delivery::Event(record), .. } if c == channel => {
                        Some(record.serial)
                    }
                    _ => None,
                })
                .await;
            serials.push(serial);
        }
        serials
    }

    /// Presence deliveries on `channel` until `until` is seen (inclusive).
    async fn presence(&mut self, channel: &str, within: Duration, what: &str) -> Delivery {
        self.wait_for(within, what, |seen| match seen {
            Seen::Delivered { channel: c, delivery, .. } if c == channel && !matches!(delivery, Delivery::Event(_)) => {
                Some(delivery)
            }
            _ => None,
        })
        .await
    }

    /// Nothing on `channel` arrives while a probe event is published and delivered.
    async fn quiet(&mut self, app: &str, channel: &str) -> Vec<Seen> {
        let probe = message("probe");
        self.engine.publish(app, channel, probe, RETENTION).await.expect("probe publish");
        let mut before = Vec::new();
        self.wait_for(WAIT, "the probe", |seen| match &seen {
            Seen::Delivered { delivery: Delivery::Event(r), .. } if r.message.event == "probe" => Some(()),
            _ => {
                before.push(seen);
                None
            }
        })
        .await;
        before
    }
}

pub fn message(event: &str) -> Message {
    Message { event: event.into(), data: "{}".into(), json: false, user_id: None, exclude: None }
}

fn socket() -> SocketId {
    crate::Connection::new(1).socket_id
}

/// Serials are 1, 2, 3… across nodes, and every listening node gets each once, in order.
pub async fn serials_in_order_on_every_node(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let mut a = TestNode::new(factory, &prefix).await;
    let mut b = TestNode::new(factory, &prefix).await;
    a.listen("app", "news").await;
    b.listen("app", "news").await;
    let mut given = Vec::new();
    for i in 0..60 {
        let publisher = if i % 2 == 0 { &a } else { &b };
        given.push(publisher.engine.publish("app", "news", message("e"), RETENTION).await.expect("publish"));
    }
    let expected: Vec<u64> = (1..=60).collect();
    assert_eq!(given, expected, "publish returns the next serial each time");
    assert_eq!(a.serials("news", 60).await, expected, "node a gets every serial once, in order");
    assert_eq!(b.serials("news", 60).await, expected, "node b gets every serial once, in order");
}

/// A node that starts listening later gets the kept events and the position in its snapshot.
pub async fn snapshot_covers_history(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let a = TestNode::new(factory, &prefix).await;
    for _ in 0..3 {
        a.engine.publish("app", "feed", message("e"), RETENTION).await.expect("publish");
    }
    let mut b = TestNode::new(factory, &prefix).await;
    let snapshot = b.listen("app", "feed").await;
    assert_eq!(snapshot.head, 3);
    assert_eq!(snapshot.events.iter().map(|r| r.serial).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(snapshot.events.iter().all(|r| r.epoch == snapshot.epoch), "one epoch");
    let serial = a.engine.publish("app", "feed", message("e"), RETENTION).await.expect("publish");
    assert_eq!(serial, 4);
    assert_eq!(b.serials("feed", 1).await, vec![4], "delivery continues right after the snapshot");
    let queried = a.engine.snapshot("app", "feed", RETENTION).await.expect("snapshot").expect("state");
    assert_eq!((queried.epoch, queried.head), (snapshot.epoch, 4));
}

/// A user on two nodes is one member: one `member_added`, one `member_removed`.
pub async fn presence_is_one_member_per_user(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let mut a = TestNode::new(factory, &prefix).await;
    let mut b = TestNode::new(factory, &prefix).await;
    let channel = "presence-room";
    a.listen("app", channel).await;
    b.listen("app", channel).await;
    a.engine.presence_join("app", channel, "u1", Some(r#"{"n":1}"#), socket());
    let added = b.presence(channel, WAIT, "member_added").await;
    assert!(
        matches!(&added, Delivery::MemberAdded { user_id, user_info, .. } if user_id == "u1" && user_info.as_deref() == Some(r#"{"n":1}"#))
    );
    a.presence(channel, WAIT, "member_added on the joining node too").await;
    b.engine.presence_join("app", channel, "u1", None, socket());
    let members = b.engine.members("app", channel).await.expect("members");
    assert_eq!(members, vec!["u1".to_owned()]);
    a.engine.presence_leave("app", channel, "u1");
    let snapshot = a.engine.snapshot("app", channel, RETENTION).await.expect("snapshot").expect("state");
    assert_eq!(snapshot.members.len(), 1, "still a member through node b");
    let before = a.quiet("app", channel).await;
    assert!(
        before.iter().all(|s| !matches!(
            s,
            Seen::Delivered { delivery: Delivery::MemberAdded { .. } | Delivery::MemberRemoved { .. }, .. }
        )),
        "the second node's join and the first node's leave change nothing: {before:?}"
    );
    b.engine.presence_leave("app", channel, "u1");
    let removed = a.presence(channel, WAIT, "member_removed").await;
    assert_eq!(removed, Delivery::MemberRemoved { user_id: "u1".into() });
    let again = a.quiet("app", channel).await;
    assert!(
        again.iter().all(|s| !matches!(s, Seen::Delivered { delivery: Delivery::MemberRemoved { .. }, .. })),
        "member_removed once: {again:?}"
    );
    assert!(a.engine.members("app", channel).await.expect("members").is_empty());
}

/// A node that dies without leaving loses its members within the lease, once.
pub async fn dead_node_members_leave(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let a = TestNode::new(factory, &prefix).await;
    let mut b = TestNode::new(factory, &prefix).await;
    let channel = "presence-lobby";
    b.listen("app", channel).await;
    a.engine.presence_join("app", channel, "ghost", None, socket());
    b.presence(channel, WAIT, "member_added").await;
    drop(a);
    let removed = b.presence(channel, factory.lease() * 3 + WAIT, "member_removed after the node died").await;
    assert_eq!(removed, Delivery::MemberRemoved { user_id: "ghost".into() });
    let after = b.quiet("app", channel).await;
    assert!(after.iter().all(|s| !matches!(s, Seen::Delivered { delivery: Delivery::MemberRemoved { .. }, .. })));
    assert!(b.engine.members("app", channel).await.expect("members").is_empty());
}

/// Counts add up across nodes, and a node's withdrawal removes its share.
pub async fn counts_add_up_across_nodes(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let a = TestNode::new(factory, &prefix).await;
    let b = TestNode::new(factory, &prefix).await;
    a.engine.set_count("app", "busy", 2);
    b.engine.set_count("app", "busy", 3);
    b.engine.set_count("app", "other", 1);
    let want = ChannelCounts { subscription_count: 5, user_count: 0 };
    eventually("counts across nodes", || async { a.engine.channel_counts("app", "busy").await == Ok(want.clone()) })
        .await;
    let listed = b.engine.channels("app", "bu").await.expect("channels");
    assert_eq!(listed, vec![("busy".to_owned(), want)]);
    b.engine.close().await.expect("close");
    let left = ChannelCounts { subscription_count: 2, user_count: 0 };
    eventually("a closed node's counts withdrawn", || async {
        a.engine.channel_counts("app", "busy").await == Ok(left.clone())
            && a.engine.channels("app", "").await.map(|l| l.len()) == Ok(1)
    })
    .await;
    a.engine.set_count("app", "busy", 0);
    eventually("an emptied channel is not listed", || async {
        a.engine.channels("app", "").await.map(|l| l.is_empty()) == Ok(true)
    })
    .await;
}

/// Apps, and deployments with different prefixes, never see each other.
pub async fn apps_and_prefixes_are_isolated(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let other_prefix = factory.fresh_prefix();
    let mut a = TestNode::new(factory, &prefix).await;
    let mut same_prefix = TestNode::new(factory, &prefix).await;
    let mut other = TestNode::new(factory, &other_prefix).await;
    a.listen("app1", "shared").await;
    same_prefix.listen("app2", "shared").await;
    other.listen("app1", "shared").await;
    a.engine.publish("app1", "shared", message("mine"), RETENTION).await.expect("publish");
    a.engine.set_count("app1", "shared", 1);
    let serial = other.engine.publish("app1", "shared", message("theirs"), RETENTION).await.expect("publish");
    assert_eq!(serial, 1, "another prefix has its own serials");
    let seen = same_prefix.quiet("app2", "shared").await;
    assert!(seen.iter().all(|s| !matches!(s, Seen::Delivered { .. })), "another app saw: {seen:?}");
    let seen = other.quiet("app1", "shared").await;
    assert!(
        seen.iter()
            .all(|s| !matches!(s, Seen::Delivered { delivery: Delivery::Event(r), .. } if r.message.event == "mine")),
        "another prefix saw: {seen:?}"
    );
    assert!(other.engine.channels("app1", "").await.expect("channels").is_empty());
    assert!(same_prefix.engine.channels("app2", "").await.expect("channels").is_empty());
}

/// `terminate_user` reaches every node.
pub async fn terminate_reaches_every_node(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let mut a = TestNode::new(factory, &prefix).await;
    let mut b = TestNode::new(factory, &prefix).await;
    a.engine.terminate_user("app", "u9").await.expect("terminate");
    for node in [&mut a, &mut b] {
        node.wait_for(WAIT, "terminate", |seen| match seen {
            Seen::Terminated { app, user_id } if app == "app" && user_id == "u9" => Some(()),
            _ => None,
        })
        .await;
    }
}

/// An idempotency key is one publish across nodes: repeats see its serials, other targets conflict.
pub async fn idempotency_keys_hold_across_nodes(factory: &dyn Factory) {
    let prefix = factory.fresh_prefix();
    let a = TestNode::new(factory, &prefix).await;
    let b = TestNode::new(factory, &prefix).await;
    let reserve = |node: &TestNode, key: &'static str, target: &'static str| {
        let engine = node.engine.clone();
        async move { engine.reserve_key("app", key, target, 60_000).await.expect("reserve") }
    };
    assert_eq!(reserve(&a, "k1", "news").await, Reservation::Fresh);
    assert_eq!(reserve(&b, "k1", "news").await, Reservation::Repeated(Vec::new()), "in flight on the other node");
    assert_eq!(reserve(&b, "k1", "sport").await, Reservation::Conflict);
    a.engine.settle("app", "k1", "news", Some(&[7])).await.expect("settle");
    assert_eq!(reserve(&b, "k1", "news").await, Reservation::Repeated(vec![7]));
    assert_eq!(reserve(&a, "k2", "news").await, Reservation::Fresh);
    a.engine.settle("app", "k2", "news", None).await.expect("release");
    assert_eq!(reserve(&b, "k2", "news").await, Reservation::Fresh, "a released key can be used again");
    let other_app = b.engine.reserve_key("other", "k1", "news", 60_000).await.expect("reserve");
    assert_eq!(other_app, Reservation::Fresh, "apps have their own keys");
}

/// Polls `check` until it holds, for at most ten seconds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every check in order.
pub async fn run_all(factory: &dyn Factory) {
    serials_in_order_on_every_node(factory).await;
    snapshot_covers_history(factory).await;
    presence_is_one_member_per_user(factory).await;
    dead_node_members_leave(factory).await;
    counts_add_up_across_nodes(factory).await;
    apps_and_prefixes_are_isolated(factory).await;
    terminate_reaches_every_node(factory).await;
    idempotency_keys_hold_across_nodes(factory).await;
}
