//! The seam between a node and the state it shares with other nodes.
//!
//! A node (one `herald serve` process) keeps its own index of sockets and subscriptions in the hub.
//! When several nodes serve one app, what must agree across them lives in an [`Engine`]: the serial
//! each event takes and the history behind it, delivery of every event to every node that has a
//! subscriber, presence membership (one member per user however many nodes they are connected to),
//! subscription counts, and control messages such as "terminate this user".
//!
//! The contract, checked for every engine by [`conformance`]:
//! - `publish` gives the channel's next serial; every listening node receives the channel's events
//!   in serial order, and a node that may have missed some is sent a new [`Snapshot`] instead of
//!   being left with a silent gap.
//! - `listen` makes this node receive a channel's events; the snapshot it installs is taken after
//!   delivery started, so snapshot + deliveries cover every serial.
//! - Presence joins and leaves are per (node, user): `member_added` goes out once, when a user's
//!   first node joins, and `member_removed` once, when the last node leaves or dies.
//! - An engine never calls back into the node from inside one of its own methods: the node may hold
//!   locks while calling, and callbacks arrive from the engine's own tasks or after the call.
//!
//! A single node without an engine is the embedded default: its hub is then the authority for
//! serials and history, with no round trip on the publish path. [`memory::MemoryCluster`] is the
//! in-process engine: several nodes in one process, the reference the Redis engine is held to.

pub mod conformance;
pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use herald_protocol::SocketId;

use crate::hub::ChannelCounts;
use crate::webhooks::WebhookEvent;

/// What an engine's asynchronous calls return.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// The shared state could not be reached or answered nonsense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    #[error("engine returned a malformed reply: {0}")]
    Malformed(String),
}

/// One event as published, before it has a serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: String,
    /// The event's `data`: a string for backend publishes, raw JSON text for client events.
    pub data: String,
    /// `data` is JSON to embed as is (client events), not a string to quote.
    pub json: bool,
    /// The presence member that sent a client event.
    pub user_id: Option<String>,
    /// The connection that sent it, which must not receive it back.
    pub exclude: Option<SocketId>,
}

/// How long a channel's events are kept, per app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events kept for resume; 0 keeps none.
    pub max_events: usize,
    pub max_age_ms: u64,
    /// For cache channels: how long the last event is kept; 0 for other channels.
    pub cache_ttl_ms: u64,
}

/// An event with its place in the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub epoch: Arc<str>,
    pub serial: u64,
    pub at_unix_ms: u64,
    pub message: Arc<Message>,
}

/// A channel's shared state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub epoch: Arc<str>,
    pub head: u64,
    /// Kept events, oldest first, all with serial ≤ `head`.
    pub events: Vec<Record>,
    /// The last event of a cache channel, while it lives.
    pub cached: Option<Record>,
    /// Presence members cluster-wide: user id and `user_info` JSON.
    pub members: Vec<(String, Option<String>)>,
}

/// What reserving an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First use: publish, then settle.
    Fresh,
    /// Used for the same target: do not publish; these serials (empty while the first is in flight).
    Repeated(Vec<u64>),
    /// Used for another target.
    Conflict,
}

/// What an engine hands a node for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Event(Record),
    /// A user's first node joined; `exclude` is the socket that caused it.
    MemberAdded {
        user_id: String,
        user_info: Option<String>,
        exclude: Option<SocketId>,
    },
    /// A user's last node left or died.
    MemberRemoved {
        user_id: String,
    },
}

/// The node side of the seam: what an engine calls.
pub trait Node: Send + Sync {
    fn deliver(&self, app: &str, channel: &str, delivery: Delivery);
    /// The channel's state, taken after delivery to this node started (or restarted).
    fn install(&self, app: &str, channel: &str, snapshot: Snapshot);
    /// Close every connection of `user_id` on this node.
    fn terminate_user(&self, app: &str, user_id: &str);
    /// Another node died and its part of `channel` was withdrawn: its subscriptions, and the
    /// membership of `user_id` when that was its last node. For webhooks, which this node then
    /// settles as if the departure had been its own.
    fn withdrawn(&self, app: &str, channel: &str, user_id: Option<&str>);
}

/// Shared state for one node. See the module docs for the contract.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Where deliveries, snapshots and control messages for this node go.
    fn attach(&self, node: Weak<dyn Node>);
    /// Gives `message` the channel's next serial, keeps it per `retention`, and delivers it to every
    /// listening node (this one included). Resolves to the serial.
    fn publish(&self, app: &str, channel: &str, message: Message, retention: Retention) -> EngineFuture<'_, u64>;
    /// Starts (or restarts) delivery of `channel` to this node; the node then gets `install`.
    fn listen(&self, app: &str, channel: &str, retention: Retention);
    /// Stops delivery of `channel` to this node.
    fn unlisten(&self, app: &str, channel: &str);
    /// The channel's state, for queries (history); `None` when it has none.
    fn snapshot(&self, app: &str, channel: &str, retention: Retention) -> EngineFuture<'_, Option<Snapshot>>;
    /// This node has a socket of `user_id` on a presence channel (its first).
    fn presence_join(&self, app: &str, channel: &str, user_id: &str, user_info: Option<&str>, socket: SocketId);
    /// This node's last socket of `user_id` left the channel.
    fn presence_leave(&self, app: &str, channel: &str, user_id: &str);
    /// This node now has `count` subscriptions on `channel`.
    fn set_count(&self, app: &str, channel: &str, count: usize);
    /// Counts of one channel across nodes.
    fn channel_counts(&self, app: &str, channel: &str) -> EngineFuture<'_, ChannelCounts>;
    /// Occupied channels whose names start with `prefix`, across nodes, sorted by name.
    fn channels(&self, app: &str, prefix: &str) -> EngineFuture<'_, Vec<(String, ChannelCounts)>>;
    /// Presence members of a channel across nodes.
    fn members(&self, app: &str, channel: &str) -> EngineFuture<'_, Vec<String>>;
    /// Closes `user_id`'s connections on every node.
    fn terminate_user(&self, app: &str, user_id: &str) -> EngineFuture<'_, ()>;
    /// Reserves an idempotency `key` for `target` (what is published) for `window_ms`, across
    /// nodes: `Fresh` means this caller publishes and then [`Engine::settle`]s (or releases) it.
    fn reserve_key(&self, app: &str, key: &str, target: &str, window_ms: u64) -> EngineFuture<'_, Reservation>;
    /// Records the serials a reserved key's publish took; `None` releases the key (it failed).
    fn settle(&self, app: &str, key: &str, target: &str, serials: Option<&[u64]>) -> EngineFuture<'_, ()>;
    /// Whether delivery works (connected, subscribed, probed).
    fn is_ready(&self) -> bool;
    /// Leaves cleanly: presence and counts of this node are withdrawn at once.
    fn close(&self) -> EngineFuture<'_, ()>;
    /// Decides, once for every node, whether a webhook about a channel's state is told: this
    /// node saw `event` (an occupancy or membership change, after the leave delay for departures;
    /// or its own subscription count). `None` when another node told it already or the channel
    /// is still occupied (the member still present) elsewhere; a `subscription_count` comes back
    /// with the count summed over nodes. Other events pass unchanged.
    ///
    /// An engine that keeps no such record tells every node's view (the default).
    fn arbitrate_webhook(&self, app: &str, event: WebhookEvent) -> EngineFuture<'_, Option<WebhookEvent>> {
        let _ = app;
        Box::pin(std::future::ready(Ok(Some(event))))
    }
}

/// Splits `<serial>` and the like, for engines that keep text.
pub(crate) fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

/// A fresh epoch, for engines outside this crate.
pub fn fresh_epoch() -> String {
    new_epoch().to_string()
}
