//! This node's index of channels: subscribers, presence members, position, history, cache.
//!
//! Channels are sharded by name. Everything that must be ordered with respect to a channel's events
//! happens under its shard's write lock: a publish takes the next serial, encodes the frame, appends
//! it to history and queues it for every subscriber; a subscribe queues the joiner's confirmation,
//! any replayed history and any cached event, and only then adds the joiner. So a resuming client
//! gets every missed event exactly once and before any newer one, however publishes race with it.
//! No lock is held across an await (there are none here).
//!
//! A channel's state outlives its last subscriber by the history window, so that a client that
//! dropped can still resume from the position it was given; after that it is removed and a later
//! subscriber starts a new epoch.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use herald_protocol::server_frame::{self, Position};
use herald_protocol::{ChannelName, Resume, SocketId};
use parking_lot::RwLock;
use tokio::time::{Duration, Instant};

use crate::connection::Connection;
use crate::history::{History, HistoryLimits};
use crate::presence::{MemberJoin, Members, MembersFull};
use crate::store::{HistoryChange, HistoryStore, StoredChannel};

mod replica;

pub(crate) use replica::{Installed, Joined, Left, page_of};

const SHARDS: usize = 16;
/// Channels that never had an event, with no subscriber left, kept so that a client that saw
/// nothing can still resume from its position. Past this many per app, such a channel is dropped
/// at once (a client resuming it is then told `recovered: false`), so subscribe/unsubscribe churn
/// cannot grow memory.
const MAX_RETAINED_EMPTY: usize = 10_000;

/// One shard: channel name → channel state.
type Shard = RwLock<HashMap<Arc<str>, Channel>>;

/// Per-app limits the hub applies to every channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubLimits {
    pub max_members: usize,
    pub history: HistoryLimits,
    pub cache_ttl: Duration,
}

#[derive(Debug)]
pub(crate) struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
    limits: HubLimits,
    /// Where channel state is kept across restarts, if anywhere.
    store: Option<Durable>,
    /// Channels kept with no event and no subscriber (see [`MAX_RETAINED_EMPTY`]).
    retained_empty: AtomicUsize,
    /// Serials come from an engine shared with other nodes; this hub mirrors each channel it has
    /// subscribers for (see `replica`).
    replica: bool,
    /// The engine a replica hub mirrors, and the app it serves. Listen and unlisten are sent while
    /// the channel's shard lock is held, so they reach the engine in the order the hub decided them.
    link: Option<replica::Link>,
    /// Positions of booked channels whose state was removed: a new state continues them.
    book: parking_lot::Mutex<HashMap<Arc<str>, Booked>>,
}

/// A booked channel's position: its epoch and the serial of its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booked {
    pub channel: Arc<str>,
    pub epoch: Arc<str>,
    pub head: u64,
}

/// A store and the app id its records are filed under.
#[derive(Debug)]
struct Durable {
    store: Arc<dyn HistoryStore>,
    app: Arc<str>,
}

#[derive(Debug)]
struct Channel {
    /// Names this unbroken history; a new state (after removal) gets a new epoch.
    epoch: Arc<str>,
    /// Serial of the last event; 0 before the first.
    head: u64,
    subscribers: HashMap<SocketId, Subscriber>,
    members: Members,
    history: History,
    cache: Option<CachedEvent>,
    /// Last publish, or when the last subscriber left.
    touched: Instant,
    /// Counted in `Hub::retained_empty`.
    retained_empty: bool,
    /// Replica hubs only: waiting for the engine's snapshot (None when live).
    syncing: Option<Box<replica::Syncing>>,
    /// Replica hubs only: presence members on every node, as the engine reports them.
    roster: Members,
    /// Its position outlives its state (see [`Hub::book`]).
    booked: bool,
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

/// How a subscriber is told it joined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Confirmation<'a> {
    SubscriptionSucceeded,
    /// The user stream is joined by signing in; `then` (the watchlist's first state) follows the
    /// confirmation.
    SigninSuccess {
        user_data: &'a str,
        then: Option<&'a Bytes>,
    },
}

/// Everything a subscriber brings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Join<'a> {
    pub member: Option<&'a MemberJoin>,
    pub resume: Option<&'a Resume>,
    pub confirmation: Confirmation<'a>,
    /// Notified once the confirmation is queued (at once on one node; after the engine's snapshot
    /// on a replica hub), so that answers which must follow it (a feed snapshot) can wait for it.
    pub confirmed: Option<&'a Arc<tokio::sync::Notify>>,
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

/// A page of history for the HTTP API.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: Arc<str>,
    pub head: u64,
    /// `(serial, frame)` in order.
    pub events: Vec<(u64, Bytes)>,
    /// Some events after the requested serial are no longer held.
    pub truncated: bool,
}

impl Channel {
    fn new(epoch: Arc<str>, now: Instant) -> Self {
        Self {
            epoch,
            head: 0,
            subscribers: HashMap::new(),
            members: Members::default(),
            history: History::default(),
            cache: None,
            touched: now,
            retained_empty: false,
            syncing: None,
            roster: Members::default(),
            booked: false,
        }
    }

    fn position(&self) -> Position<'_> {
        Position { epoch: &self.epoch, serial: self.head }
    }

    /// Nobody listens, nothing is held, and the window in which a client could resume is over.
    fn is_removable(&self, now: Instant, limits: &HubLimits) -> bool {
        self.subscribers.is_empty()
            && self.syncing.is_none()
            && self.history.is_empty()
            && self.cache.as_ref().is_none_or(|c| c.expires_at <= now)
            && now.saturating_duration_since(self.touched) >= limits.history.max_age
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

    /// Queues the joiner's confirmation, then what it missed or the cached event. Returns whether
    /// that was a `cache_miss`.
    fn confirm(
        &self,
        name: &ChannelName,
        connection: &Connection,
        join: Join<'_>,
        presence: Option<&str>,
        now: Instant,
    ) -> bool {
        // A replay must fit in the joiner's queue with room to spare, or it would be closed (4100)
        // on every retry; then the honest answer is "refetch".
        let budget = connection.outbox.max_bytes() / 2;
        let recovered = join.resume.map(|resume| {
            *resume.epoch == *self.epoch
                && self.history.after(resume.serial, self.head).is_some()
                && self.history.replay_bytes(resume.serial) <= budget
        });
        let frame = match join.confirmation {
            Confirmation::SubscriptionSucceeded => {
                server_frame::subscription_succeeded(name.as_str(), presence, self.position(), recovered)
            }
            Confirmation::SigninSuccess { user_data, .. } => {
                server_frame::signin_success(user_data, self.position(), recovered)
            }
        };
        connection.outbox.push(frame);
        if let Some(confirmed) = join.confirmed {
            confirmed.notify_one();
        }
        if let Confirmation::SigninSuccess { then: Some(then), .. } = join.confirmation {
            connection.outbox.push(then.clone());
        }
        if let (Some(true), Some(resume)) = (recovered, join.resume) {
            for entry in self.history.after(resume.serial, self.head).into_iter().flatten() {
                connection.outbox.push(entry.frame.clone());
            }
        } else if name.is_cache() {
            let (frame, miss) = match &self.cache {
                Some(cached) if cached.expires_at > now => (cached.frame.clone(), false),
                _ => (server_frame::cache_miss(name.as_str()), true),
            };
            connection.outbox.push(frame);
            return miss;
        }
        false
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

impl Hub {
    pub fn new(limits: HubLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            limits,
            store: None,
            retained_empty: AtomicUsize::new(0),
            replica: false,
            link: None,
            book: parking_lot::Mutex::default(),
        }
    }

    /// A hub whose channels mirror `engine`'s (several nodes share serials and history).
    pub fn replica(limits: HubLimits, engine: Arc<dyn crate::engine::Engine>, app: &str) -> Self {
        Self { replica: true, link: Some(replica::Link::new(engine, app)), ..Self::new(limits) }
    }

    /// Keeps channel state in `store` (only when history is on) and takes back what it kept.
    pub fn with_store(
        mut self,
        store: Arc<dyn HistoryStore>,
        app: &str,
        kept: Vec<StoredChannel>,
        now: Instant,
    ) -> Self {
        if !self.limits.history.enabled() {
            return self;
        }
        let unix_now = unix_ms();
        for stored in kept {
            let mut channel = Channel::new(Arc::from(stored.epoch), now);
            channel.head = stored.head;
            for event in stored.events {
                let age = Duration::from_millis(unix_now.saturating_sub(event.at_unix_ms));
                let at = now.checked_sub(age).unwrap_or(now);
                channel.history.restore(event.serial, event.frame, at, now, self.limits.history);
            }
            self.shard(&stored.name).write().insert(Arc::from(stored.name), channel);
        }
        self.store = Some(Durable { store, app: Arc::from(app) });
        self
    }

    /// A new channel state, recorded in the store: a booked channel continues its position, any
    /// other starts a new epoch.
    fn create(&self, name: &str, now: Instant) -> Channel {
        let channel = match self.book.lock().remove(name) {
            Some(booked) => Channel { head: booked.head, booked: true, ..Channel::new(booked.epoch, now) },
            None => Channel::new(new_epoch(), now),
        };
        if let Some(durable) = &self.store {
            let change = HistoryChange::Created {
                app: durable.app.clone(),
                channel: Arc::from(name),
                epoch: channel.epoch.clone(),
            };
            durable.store.record(change);
        }
        channel
    }

    /// Stops counting `state` as a retained empty channel (it got a subscriber or an event, or is
    /// being removed).
    fn release_empty(&self, state: &mut Channel) {
        if std::mem::take(&mut state.retained_empty) {
            self.retained_empty.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether an empty channel that just lost its last subscriber may be kept; counts it if so.
    fn retain_empty(&self, state: &mut Channel) -> bool {
        if state.head > 0 || state.retained_empty {
            return true;
        }
        let kept = self
            .retained_empty
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_RETAINED_EMPTY).then_some(n + 1))
            .is_ok();
        state.retained_empty = kept;
        kept
    }

    /// The state of `name`, created if absent. The key is allocated only when it is new: a publish
    /// to an existing channel allocates nothing here.
    fn state_mut<'s>(&self, shard: &'s mut HashMap<Arc<str>, Channel>, name: &str, now: Instant) -> &'s mut Channel {
        let key = shard.get_key_value(name).map_or_else(|| Arc::from(name), |(key, _)| key.clone());
        shard.entry(key).or_insert_with(|| self.create(name, now))
    }

    /// Removes a channel's state; the one way out, so the accounting below cannot be skipped.
    fn remove(&self, shard: &mut HashMap<Arc<str>, Channel>, name: &str) {
        if let Some(mut state) = shard.remove(name) {
            self.discard(name, &mut state);
        }
    }

    /// Uncounts a channel being dropped and forgets it in the store; a booked channel's position
    /// goes to the book.
    fn discard(&self, name: &str, state: &mut Channel) {
        self.release_empty(state);
        self.forget(name);
        if state.booked {
            let booked = Booked { channel: Arc::from(name), epoch: state.epoch.clone(), head: state.head };
            self.book.lock().insert(booked.channel.clone(), booked);
        }
    }

    /// Keeps `channel`'s position (epoch and serials) for as long as this hub lives, also when
    /// nobody listens and its history has expired: feeds and channels with unread counts compare
    /// serials across time. Not for replica hubs, whose positions the engine keeps.
    pub fn book(&self, channel: &str, now: Instant) {
        let mut shard = self.shard(channel).write();
        self.state_mut(&mut shard, channel, now).booked = true;
    }

    /// Takes back positions kept by an earlier process. `fresh_epochs`: the process did not stop
    /// cleanly, so events after the kept head may have been sent: continue the serials in a new
    /// epoch, so no client resumes across the gap.
    /// A channel already restored from durable history keeps that state and is only marked booked.
    pub fn restore_book(&self, kept: Vec<Booked>, fresh_epochs: bool) {
        for mut booked in kept {
            if let Some(state) = self.shard(&booked.channel).write().get_mut(&*booked.channel) {
                state.booked = true;
                continue;
            }
            if fresh_epochs {
                booked.epoch = new_epoch();
            }
            self.book.lock().insert(booked.channel.clone(), booked);
        }
    }

    /// The epoch of `channel`'s state, live or booked.
    pub fn epoch_of(&self, channel: &str) -> Option<Arc<str>> {
        if let Some(state) = self.shard(channel).read().get(channel) {
            return Some(state.epoch.clone());
        }
        self.book.lock().get(channel).map(|b| b.epoch.clone())
    }

    /// Every booked channel's position, live or not (to keep across a restart).
    pub fn booked(&self) -> Vec<Booked> {
        let mut all: Vec<Booked> = self.book.lock().values().cloned().collect();
        for shard in self.shards.iter() {
            let shard = shard.read();
            all.extend(shard.iter().filter(|(_, state)| state.booked).map(|(name, state)| Booked {
                channel: name.clone(),
                epoch: state.epoch.clone(),
                head: state.head,
            }));
        }
        all
    }

    fn forget(&self, name: &str) {
        if let Some(durable) = &self.store {
            durable.store.record(HistoryChange::Removed { app: durable.app.clone(), channel: Arc::from(name) });
        }
    }

    fn shard(&self, name: &str) -> &Shard {
        let index = self.hasher.hash_one(name) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds `connection` to `channel` and queues its confirmation (and replay). Subscribing twice
    /// re-sends the confirmation without a second membership or a replay.
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        connection: &Arc<Connection>,
        join: Join<'_>,
        now: Instant,
    ) -> Result<Joined, JoinRefused> {
        if self.replica {
            return self.subscribe_replica(channel, connection, join, now);
        }
        let mut shard = self.shard(channel.as_str()).write();
        let state = self.state_mut(&mut shard, channel.as_str(), now);
        state.history.expire(now, self.limits.history);
        let socket_id = connection.socket_id;
        if state.subscribers.contains_key(&socket_id) {
            let presence = join.member.map(|_| server_frame::presence_data(state.members.iter()));
            let again = Join { resume: None, ..join };
            state.confirm(channel, connection, again, presence.as_deref(), now);
            return Ok(Joined::default());
        }
        let mut joined = Joined::default();
        if let Some(member) = join.member {
            match state.members.join(member, self.limits.max_members) {
                Ok(true) => {
                    let info = state.members.user_info(&member.user_id);
                    state.broadcast(&server_frame::member_added(channel.as_str(), &member.user_id, info), None);
                    joined.member_added = Some(member.user_id.clone());
                }
                Ok(false) => {}
                Err(MembersFull) => {
                    if state.is_removable(now, &self.limits) {
                        self.remove(&mut shard, channel.as_str());
                    }
                    return Err(JoinRefused::PresenceFull);
                }
            }
        }
        let presence = join.member.map(|_| server_frame::presence_data(state.members.iter()));
        joined.cache_miss = state.confirm(channel, connection, join, presence.as_deref(), now);
        let user_id = join.member.map(|m| m.user_id.clone());
        self.release_empty(state);
        joined.occupied = state.subscribers.is_empty();
        state.subscribers.insert(socket_id, Subscriber { connection: connection.clone(), user_id });
        Ok(joined)
    }

    /// Removes `socket_id` from `channel`; tells the others when a presence member left.
    pub fn unsubscribe(&self, channel: &str, socket_id: SocketId, now: Instant) -> Left {
        if self.replica {
            return self.unsubscribe_replica(channel, socket_id);
        }
        let mut shard = self.shard(channel).write();
        let Some(state) = shard.get_mut(channel) else {
            return Left::default();
        };
        let Some(subscriber) = state.subscribers.remove(&socket_id) else {
            return Left::default();
        };
        let mut left = Left::default();
        if let Some(user_id) = subscriber.user_id.filter(|id| state.members.leave(id)) {
            state.broadcast(&server_frame::member_removed(channel, &user_id), None);
            left.member_removed = Some(user_id);
        }
        if state.subscribers.is_empty() {
            left.vacated = true;
            state.touched = now;
            if state.is_removable(now, &self.limits) || !self.retain_empty(state) {
                self.remove(&mut shard, channel);
            }
        }
        left
    }

    /// Publishes one event: takes the next serial, encodes the frame with `encode(serial)`, keeps
    /// it in history (and as the cached event when `cache` names the event and data), and queues it
    /// for every subscriber but `exclude`. Returns the serial.
    pub fn publish(
        &self,
        channel: &str,
        encode: impl FnOnce(u64) -> Bytes,
        exclude: Option<SocketId>,
        cache: Option<(&str, &str)>,
        now: Instant,
    ) -> u64 {
        self.publish_at(channel, encode, exclude, cache, now).1
    }

    /// [`Hub::publish`], returning the epoch too.
    pub fn publish_at(
        &self,
        channel: &str,
        encode: impl FnOnce(u64) -> Bytes,
        exclude: Option<SocketId>,
        cache: Option<(&str, &str)>,
        now: Instant,
    ) -> (Arc<str>, u64) {
        let mut shard = self.shard(channel).write();
        let state = self.state_mut(&mut shard, channel, now);
        state.head += 1;
        state.touched = now;
        self.release_empty(state);
        let serial = state.head;
        let frame = encode(serial);
        state.history.push(serial, frame.clone(), now, self.limits.history);
        if let Some(durable) = &self.store {
            durable.store.record(HistoryChange::Event {
                app: durable.app.clone(),
                channel: Arc::from(channel),
                serial,
                frame: frame.clone(),
                at_unix_ms: unix_ms(),
                keep: self.limits.history.max_events,
            });
        }
        if let Some((event, data)) = cache {
            let expires_at = now + self.limits.cache_ttl;
            state.cache =
                Some(CachedEvent { event: event.into(), data: data.into(), frame: frame.clone(), expires_at });
        }
        state.broadcast(&frame, exclude);
        let epoch = state.epoch.clone();
        if state.is_removable(now, &self.limits) {
            self.remove(&mut shard, channel);
        }
        (epoch, serial)
    }

    /// Counts for one channel; `None` when nobody is subscribed.
    pub fn counts(&self, channel: &str) -> Option<ChannelCounts> {
        let shard = self.shard(channel).read();
        shard.get(channel).filter(|s| !s.subscribers.is_empty()).map(Channel::counts)
    }

    /// Whether `user_id` has a socket on this node in the presence channel `channel`.
    pub(crate) fn has_member(&self, channel: &str, user_id: &str) -> bool {
        let shard = self.shard(channel).read();
        shard.get(channel).is_some_and(|state| state.members.contains(user_id))
    }

    /// The cached event of a cache channel, if it has not expired.
    pub fn cached(&self, channel: &str, now: Instant) -> Option<CachedEvent> {
        let shard = self.shard(channel).read();
        shard.get(channel).and_then(|s| s.cache.clone()).filter(|c| c.expires_at > now)
    }

    /// Up to `limit` events after serial `after`; `None` when the channel has no state.
    pub fn history(&self, channel: &str, after: u64, limit: usize, now: Instant) -> Option<HistoryPage> {
        let mut shard = self.shard(channel).write();
        let state = shard.get_mut(channel)?;
        state.history.expire(now, self.limits.history);
        let (events, truncated) = state.history.page(after, limit);
        let events = events.into_iter().map(|e| (e.serial, e.frame.clone())).collect();
        let truncated = truncated || (after < state.head && state.history.is_empty());
        Some(HistoryPage { epoch: state.epoch.clone(), head: state.head, events, truncated })
    }

    /// Occupied channels whose name starts with `prefix`, with their counts.
    pub fn occupied(&self, prefix: &str) -> Vec<(Arc<str>, ChannelCounts)> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            found.extend(
                shard
                    .iter()
                    .filter(|(name, state)| {
                        name.starts_with(prefix) && !name.starts_with('#') && !state.subscribers.is_empty()
                    })
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

    /// Channels, subscriptions, presence members and queued bytes, counted now from the shards
    /// (one read lock at a time). Users' own streams (`#…`) count towards queued bytes only.
    pub fn gauges(&self) -> crate::metrics::AppGauges {
        let mut gauges = crate::metrics::AppGauges::default();
        let mut seen = std::collections::HashSet::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (name, state) in shard.iter().filter(|(_, state)| !state.subscribers.is_empty()) {
                if !name.starts_with('#') {
                    gauges.channels += 1;
                    gauges.subscriptions += state.subscribers.len();
                    gauges.presence_members += state.members.len();
                }
                for (socket_id, subscriber) in &state.subscribers {
                    if seen.insert(*socket_id) {
                        let (bytes, frames) = subscriber.connection.outbox.queued();
                        gauges.queued_bytes += bytes;
                        gauges.queued_frames += frames;
                    }
                }
            }
        }
        gauges
    }

    /// Expires history and removes channels that nobody needs any more.
    pub fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard.write().retain(|name, state| {
                state.history.expire(now, self.limits.history);
                let keep = !state.is_removable(now, &self.limits);
                if !keep {
                    self.discard(name, state);
                }
                keep
            });
        }
    }

    /// Writes everything to the store and marks it cleanly stopped.
    pub fn close(&self) {
        if let Some(durable) = &self.store {
            durable.store.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_age_secs: u64) -> Hub {
        let history = HistoryLimits { max_events: 10, max_age: Duration::from_secs(max_age_secs) };
        Hub::new(HubLimits { max_members: 10, history, cache_ttl: Duration::from_secs(1) })
    }

    fn publish(hub: &Hub, channel: &str, now: Instant) -> (Arc<str>, u64) {
        hub.publish_at(channel, |_| Bytes::from_static(b"{}"), None, None, now)
    }

    #[test]
    fn a_booked_channel_continues_its_position_after_its_state_is_removed() {
        let hub = hub(0);
        let now = Instant::now();
        hub.book("feed-a", now);
        let (epoch, serial) = publish(&hub, "feed-a", now);
        assert_eq!(publish(&hub, "feed-a", now), (epoch.clone(), serial + 1));
        hub.sweep(now + Duration::from_secs(1));
        assert_eq!(publish(&hub, "feed-a", now), (epoch, serial + 2), "same epoch, next serial");

        let (other, _) = publish(&hub, "plain", now);
        hub.sweep(now + Duration::from_secs(1));
        assert_ne!(publish(&hub, "plain", now).0, other, "an unbooked channel starts a new epoch");
    }

    #[test]
    fn kept_positions_come_back_and_an_unclean_stop_gets_a_new_epoch_at_the_same_serial() {
        let now = Instant::now();
        let kept = |channel: &str| Booked { channel: Arc::from(channel), epoch: Arc::from("e1"), head: 41 };
        let clean = hub(300);
        clean.restore_book(vec![kept("feed-a")], false);
        assert_eq!(publish(&clean, "feed-a", now), (Arc::from("e1"), 42));
        let unclean = hub(300);
        unclean.restore_book(vec![kept("feed-a")], true);
        let (epoch, serial) = publish(&unclean, "feed-a", now);
        assert_ne!(&*epoch, "e1");
        assert_eq!(serial, 42);
        let booked = unclean.booked();
        assert_eq!(booked, [Booked { channel: Arc::from("feed-a"), epoch, head: 42 }]);
    }
}
