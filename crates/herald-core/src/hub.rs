//! This node's index of channels and their subscribers, sharded by channel name.
//!
//! A publish takes one shard's read lock, pushes the same `Bytes` into each subscriber's outbox, and
//! lets go; no lock is held across an await (there are none here). Subscribing takes the write lock
//! and queues the joiner's `subscription_succeeded` (and cache replay) inside it, so that no live
//! event can reach the joiner before its subscription is confirmed. A channel with no subscribers and
//! no cached event is removed, so idle names cost nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::{ChannelName, SocketId, server_frame};
use parking_lot::RwLock;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::presence::{MemberJoin, Members, MembersFull};

const SHARDS: usize = 16;

/// One shard: channel name → channel state.
type Shard = RwLock<HashMap<Arc<str>, Channel>>;

#[derive(Debug)]
pub(crate) struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<SocketId, Subscriber>,
    members: Members,
    cache: Option<CachedEvent>,
}

#[derive(Debug)]
struct Subscriber {
    connection: Arc<Connection>,
    /// For presence channels: the user this socket joined as.
    user_id: Option<Arc<str>>,
}

/// The last event of a cache channel.
#[derive(Debug, Clone)]
pub struct CachedEvent {
    pub event: Box<str>,
    pub data: Box<str>,
    pub frame: Bytes,
    pub expires_at: Instant,
}

/// Why the hub refused a subscription.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinRefused {
    PresenceFull,
}

/// Counts answered for the HTTP API.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub subscription_count: usize,
    pub user_count: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::default()).collect(), hasher: RandomState::new() }
    }
}

impl Channel {
    fn is_idle(&self, now: Instant) -> bool {
        self.subscribers.is_empty() && self.cache.as_ref().is_none_or(|c| c.expires_at <= now)
    }

    fn broadcast(&self, frame: &Bytes, exclude: Option<SocketId>) -> usize {
        let mut delivered = 0;
        for (socket_id, subscriber) in &self.subscribers {
            if Some(*socket_id) != exclude && subscriber.connection.outbox.push(frame.clone()) {
                delivered += 1;
            }
        }
        delivered
    }

    fn counts(&self) -> ChannelCounts {
        ChannelCounts { subscription_count: self.subscribers.len(), user_count: self.members.len() }
    }
}

impl Hub {
    fn shard(&self, name: &str) -> &Shard {
        let index = self.hasher.hash_one(name) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds `connection` to `channel` and queues its confirmation frames. `member` is required for
    /// presence channels. Subscribing twice re-sends the confirmation without a second membership.
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        connection: &Arc<Connection>,
        member: Option<&MemberJoin>,
        max_members: usize,
        now: Instant,
    ) -> Result<(), JoinRefused> {
        let mut shard = self.shard(channel.as_str()).write();
        let state = shard.entry(Arc::from(channel.as_str())).or_default();
        let socket_id = connection.socket_id;
        if !state.subscribers.contains_key(&socket_id) {
            if let Some(join) = member {
                let new_member = state.members.join(join, max_members).map_err(|MembersFull| JoinRefused::PresenceFull);
                let new_member = match new_member {
                    Ok(new_member) => new_member,
                    Err(refused) => {
                        if state.is_idle(now) {
                            shard.remove(channel.as_str());
                        }
                        return Err(refused);
                    }
                };
                if new_member {
                    let info = state.members.user_info(&join.user_id);
                    state.broadcast(&server_frame::member_added(channel.as_str(), &join.user_id, info), None);
                }
            }
            let user_id = member.map(|m| m.user_id.clone());
            state.subscribers.insert(socket_id, Subscriber { connection: connection.clone(), user_id });
        }
        let presence = member.map(|_| server_frame::presence_data(state.members.iter()));
        connection.outbox.push(server_frame::subscription_succeeded(channel.as_str(), presence.as_deref()));
        if channel.is_cache() {
            let frame = match &state.cache {
                Some(cached) if cached.expires_at > now => cached.frame.clone(),
                _ => server_frame::cache_miss(channel.as_str()),
            };
            connection.outbox.push(frame);
        }
        Ok(())
    }

    /// Removes `socket_id` from `channel`; tells the others when a presence member left.
    pub fn unsubscribe(&self, channel: &str, socket_id: SocketId, now: Instant) {
        let mut shard = self.shard(channel).write();
        let Some(state) = shard.get_mut(channel) else {
            return;
        };
        let left = state.subscribers.remove(&socket_id).and_then(|s| s.user_id);
        if let Some(user_id) = left.filter(|id| state.members.leave(id)) {
            state.broadcast(&server_frame::member_removed(channel, &user_id), None);
        }
        if state.is_idle(now) {
            shard.remove(channel);
        }
    }

    /// Queues `frame` for every subscriber but `exclude`; stores it first when `cache` is given.
    /// Returns how many subscribers it was queued for.
    pub fn publish(
        &self,
        channel: &str,
        frame: &Bytes,
        exclude: Option<SocketId>,
        cache: Option<CachedEvent>,
    ) -> usize {
        match cache {
            None => self.shard(channel).read().get(channel).map_or(0, |state| state.broadcast(frame, exclude)),
            Some(cached) => {
                let mut shard = self.shard(channel).write();
                let state = shard.entry(Arc::from(channel)).or_default();
                state.cache = Some(cached);
                state.broadcast(frame, exclude)
            }
        }
    }

    /// Counts for one channel; `None` when nobody is subscribed.
    pub fn counts(&self, channel: &str) -> Option<ChannelCounts> {
        let shard = self.shard(channel).read();
        shard.get(channel).filter(|s| !s.subscribers.is_empty()).map(Channel::counts)
    }

    /// The cached event of a cache channel, if it has not expired.
    pub fn cached(&self, channel: &str, now: Instant) -> Option<CachedEvent> {
        let shard = self.shard(channel).read();
        shard.get(channel).and_then(|s| s.cache.clone()).filter(|c| c.expires_at > now)
    }

    /// Occupied channels whose name starts with `prefix`, with their counts.
    pub fn occupied(&self, prefix: &str) -> Vec<(Arc<str>, ChannelCounts)> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            found.extend(
                shard
                    .iter()
                    .filter(|(name, state)| name.starts_with(prefix) && !state.subscribers.is_empty())
                    .map(|(name, state)| (name.clone(), state.counts())),
            );
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// User ids of a presence channel's members.
    pub fn member_ids(&self, channel: &str) -> Vec<String> {
        let shard = self.shard(channel).read();
        shard.get(channel).map(|s| s.members.iter().map(|(id, _)| id.to_owned()).collect()).unwrap_or_default()
    }

    pub fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard.write().retain(|_, state| !state.is_idle(now));
        }
    }
}
