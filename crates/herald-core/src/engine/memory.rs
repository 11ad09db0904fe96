//! The in-process engine: several nodes in one process sharing one state.
//!
//! It is the reference implementation of the engine contract (the conformance suite runs against
//! it first) and lets the core's multi-node logic (replica hubs, presence across nodes, resync) be
//! exercised without Redis. Deliveries go out under one lock so every node sees a channel's events in
//! serial order; a node whose handle is dropped is treated as crashed: its presence members leave
//! and its counts vanish at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use herald_protocol::SocketId;
use parking_lot::Mutex;

use super::{Delivery, Engine, EngineFuture, Message, Node, Record, Reservation, Retention, Snapshot, new_epoch};
use crate::hub::ChannelCounts;

type NodeId = u64;
type Key = (String, String);

/// The shared state; hand each node its own [`MemoryCluster::node`].
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Held while delivering, so deliveries leave in the order their serials were taken.
    delivering: Mutex<()>,
}

#[derive(Default)]
struct State {
    channels: HashMap<Key, ChannelState>,
    /// (app, key) → (target, serials, expires at unix ms).
    keys: HashMap<Key, (String, Vec<u64>, u64)>,
    nodes: HashMap<NodeId, NodeEntry>,
    next_node: NodeId,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("channels", &self.channels.len()).field("nodes", &self.nodes.len()).finish()
    }
}

struct NodeEntry {
    node: Option<Weak<dyn Node>>,
    listening: HashSet<Key>,
}

#[derive(Debug)]
struct ChannelState {
    epoch: Arc<str>,
    head: u64,
    events: VecDeque<Record>,
    cached: Option<(Record, u64)>,
    counts: HashMap<NodeId, usize>,
    /// user id → (user_info, nodes holding a socket of the user)
    members: HashMap<String, (Option<String>, HashSet<NodeId>)>,
    order: Vec<String>,
}

impl ChannelState {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            head: 0,
            events: VecDeque::new(),
            cached: None,
            counts: HashMap::new(),
            members: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn snapshot(&self, now_ms: u64, retention: Retention) -> Snapshot {
        let oldest = now_ms.saturating_sub(retention.max_age_ms);
        let members = self.order.iter().map(|id| (id.clone(), self.members[id].0.clone())).collect();
        Snapshot {
            epoch: self.epoch.clone(),
            head: self.head,
            events: self.events.iter().filter(|r| r.at_unix_ms >= oldest).cloned().collect(),
            cached: self.cached.as_ref().filter(|(_, expires)| *expires > now_ms).map(|(r, _)| r.clone()),
            members,
        }
    }

    fn is_idle(&self) -> bool {
        self.counts.is_empty() && self.members.is_empty() && self.events.is_empty() && self.cached.is_none()
    }
}

/// One node's handle on a [`MemoryCluster`].
#[derive(Debug)]
pub struct MemoryEngine {
    id: NodeId,
    shared: Arc<Shared>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn key(app: &str, channel: &str) -> Key {
    (app.to_owned(), channel.to_owned())
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new node on this cluster.
    pub fn node(&self) -> Arc<MemoryEngine> {
        let mut state = self.shared.state.lock();
        state.next_node += 1;
        let id = state.next_node;
        state.nodes.insert(id, NodeEntry { node: None, listening: HashSet::new() });
        Arc::new(MemoryEngine { id, shared: self.shared.clone() })
    }
}

impl Shared {
    /// Sends `delivery` to every node listening to `key`. Call with `delivering` held.
    fn deliver(&self, key: &Key, delivery: &Delivery) {
        let targets: Vec<Arc<dyn Node>> = {
            let state = self.state.lock();
            state
                .nodes
                .values()
                .filter(|n| n.listening.contains(key))
                .filter_map(|n| n.node.as_ref().and_then(Weak::upgrade))
                .collect()
        };
        for node in targets {
            node.deliver(&key.0, &key.1, delivery.clone());
        }
    }

    /// Removes `node`'s socket of `user_id`; returns the delivery when the user left everywhere.
    fn leave(&self, key: &Key, user_id: &str, node: NodeId) -> Option<Delivery> {
        let mut state = self.state.lock();
        let channel = state.channels.get_mut(key)?;
        let (_, nodes) = channel.members.get_mut(user_id)?;
        if !nodes.remove(&node) || !nodes.is_empty() {
            return None;
        }
        channel.members.remove(user_id);
        channel.order.retain(|id| id != user_id);
        Some(Delivery::MemberRemoved { user_id: user_id.to_owned() })
    }

    /// Everything a node held, withdrawn (on close or crash).
    fn withdraw(&self, node: NodeId) {
        let _order = self.delivering.lock();
        let held: Vec<(Key, Vec<String>)> = {
            let mut state = self.state.lock();
            state.nodes.remove(&node);
            state
                .channels
                .iter_mut()
                .map(|(key, channel)| {
                    channel.counts.remove(&node);
                    let users = channel
                        .members
                        .iter()
                        .filter(|(_, (_, nodes))| nodes.contains(&node))
                        .map(|(id, _)| id.clone())
                        .collect();
                    (key.clone(), users)
                })
                .collect()
        };
        for (key, users) in held {
            for user_id in users {
                if let Some(delivery) = self.leave(&key, &user_id, node) {
                    self.deliver(&key, &delivery);
                }
            }
        }
        self.state.lock().channels.retain(|_, channel| !channel.is_idle() || channel.head > 0);
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        self.shared.withdraw(self.id);
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> EngineFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Engine for MemoryEngine {
    fn attach(&self, node: Weak<dyn Node>) {
        if let Some(entry) = self.shared.state.lock().nodes.get_mut(&self.id) {
            entry.node = Some(node);
        }
    }

    fn publish(&self, app: &str, channel: &str, message: Message, retention: Retention) -> EngineFuture<'_, u64> {
        let key = key(app, channel);
        let _order = self.shared.delivering.lock();
        let record = {
            let mut state = self.shared.state.lock();
            let now_ms = unix_ms();
            let channel = state.channels.entry(key.clone()).or_insert_with(ChannelState::new);
            channel.head += 1;
            let record = Record {
                epoch: channel.epoch.clone(),
                serial: channel.head,
                at_unix_ms: now_ms,
                message: Arc::new(message),
            };
            if retention.max_events > 0 {
                channel.events.push_back(record.clone());
                while channel.events.len() > retention.max_events {
                    channel.events.pop_front();
                }
            }
            if retention.cache_ttl_ms > 0 {
                channel.cached = Some((record.clone(), now_ms + retention.cache_ttl_ms));
            }
            record
        };
        let serial = record.serial;
        self.shared.deliver(&key, &Delivery::Event(record));
        ready(serial)
    }

    fn listen(&self, app: &str, channel: &str, retention: Retention) {
        let key = key(app, channel);
        // Registered now, so listen and unlisten take effect in the order they were called; the
        // snapshot is taken after, and handed over from a task: the caller may hold locks.
        let (node, snapshot) = {
            let mut state = self.shared.state.lock();
            let Some(entry) = state.nodes.get_mut(&self.id) else { return };
            entry.listening.insert(key.clone());
            let node = entry.node.as_ref().and_then(Weak::upgrade);
            let channel = state.channels.entry(key.clone()).or_insert_with(ChannelState::new);
            (node, channel.snapshot(unix_ms(), retention))
        };
        if let Some(node) = node {
            tokio::spawn(async move { node.install(&key.0, &key.1, snapshot) });
        }
    }

    fn unlisten(&self, app: &str, channel: &str) {
        if let Some(entry) = self.shared.state.lock().nodes.get_mut(&self.id) {
            entry.listening.remove(&key(app, channel));
        }
    }

    fn snapshot(&self, app: &str, channel: &str, retention: Retention) -> EngineFuture<'_, Option<Snapshot>> {
        let state = self.shared.state.lock();
        ready(state.channels.get(&key(app, channel)).map(|c| c.snapshot(unix_ms(), retention)))
    }

    fn presence_join(&self, app: &str, channel: &str, user_id: &str, user_info: Option<&str>, socket: SocketId) {
        let key = key(app, channel);
        let _order = self.shared.delivering.lock();
        let first = {
            let mut state = self.shared.state.lock();
            let channel = state.channels.entry(key.clone()).or_insert_with(ChannelState::new);
            let (_, nodes) = channel
                .members
                .entry(user_id.to_owned())
                .or_insert_with(|| (user_info.map(str::to_owned), HashSet::new()));
            let first = nodes.is_empty();
            nodes.insert(self.id);
            if first {
                channel.order.push(user_id.to_owned());
            }
            first
        };
        if first {
            let delivery = Delivery::MemberAdded {
                user_id: user_id.to_owned(),
                user_info: user_info.map(str::to_owned),
                exclude: Some(socket),
            };
            self.shared.deliver(&key, &delivery);
        }
    }

    fn presence_leave(&self, app: &str, channel: &str, user_id: &str) {
        let key = key(app, channel);
        let _order = self.shared.delivering.lock();
        if let Some(delivery) = self.shared.leave(&key, user_id, self.id) {
            self.shared.deliver(&key, &delivery);
        }
    }

    fn set_count(&self, app: &str, channel: &str, count: usize) {
        let mut state = self.shared.state.lock();
        let channel = state.channels.entry(key(app, channel)).or_insert_with(ChannelState::new);
        if count == 0 {
            channel.counts.remove(&self.id);
        } else {
            channel.counts.insert(self.id, count);
        }
    }

    fn channel_counts(&self, app: &str, channel: &str) -> EngineFuture<'_, ChannelCounts> {
        let state = self.shared.state.lock();
        let counts = state.channels.get(&key(app, channel)).map(counts_of).unwrap_or_default();
        ready(counts)
    }

    fn channels(&self, app: &str, prefix: &str) -> EngineFuture<'_, Vec<(String, ChannelCounts)>> {
        let state = self.shared.state.lock();
        let mut found: Vec<(String, ChannelCounts)> = state
            .channels
            .iter()
            .filter(|((a, name), channel)| a == app && name.starts_with(prefix) && !channel.counts.is_empty())
            .filter(|((_, name), _)| !name.starts_with('#'))
            .map(|((_, name), channel)| (name.clone(), counts_of(channel)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        ready(found)
    }

    fn members(&self, app: &str, channel: &str) -> EngineFuture<'_, Vec<String>> {
        let state = self.shared.state.lock();
        ready(state.channels.get(&key(app, channel)).map(|c| c.order.clone()).unwrap_or_default())
    }

    fn terminate_user(&self, app: &str, user_id: &str) -> EngineFuture<'_, ()> {
        let nodes: Vec<Arc<dyn Node>> = {
            let state = self.shared.state.lock();
            state.nodes.values().filter_map(|n| n.node.as_ref().and_then(Weak::upgrade)).collect()
        };
        for node in nodes {
            node.terminate_user(app, user_id);
        }
        ready(())
    }

    fn reserve_key(&self, app: &str, key: &str, target: &str, window_ms: u64) -> EngineFuture<'_, Reservation> {
        let mut state = self.shared.state.lock();
        let now = unix_ms();
        state.keys.retain(|_, (_, _, expires)| *expires > now);
        let reservation = match state.keys.get(&(app.to_owned(), key.to_owned())) {
            Some((first, serials, _)) if first == target => Reservation::Repeated(serials.clone()),
            Some(_) => Reservation::Conflict,
            None => {
                state.keys.insert((app.to_owned(), key.to_owned()), (target.to_owned(), Vec::new(), now + window_ms));
                Reservation::Fresh
            }
        };
        ready(reservation)
    }

    fn settle(&self, app: &str, key: &str, target: &str, serials: Option<&[u64]>) -> EngineFuture<'_, ()> {
        let mut state = self.shared.state.lock();
        let slot = (app.to_owned(), key.to_owned());
        match serials {
            None => {
                state.keys.remove(&slot);
            }
            Some(serials) => {
                if let Some(entry) = state.keys.get_mut(&slot).filter(|(first, _, _)| first == target) {
                    entry.1 = serials.to_vec();
                }
            }
        }
        ready(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        self.shared.withdraw(self.id);
        ready(())
    }
}

fn counts_of(channel: &ChannelState) -> ChannelCounts {
    ChannelCounts { subscription_count: channel.counts.values().sum(), user_count: channel.members.len() }
}
