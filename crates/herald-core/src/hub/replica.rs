//! A hub whose channels mirror an engine shared with other nodes.
//!
//! On a replica hub a channel's serials come from the engine. The hub keeps, for each channel it
//! has subscribers for, a mirror of the engine's state: epoch, head, recent history, cached event
//! and the presence roster of every node. The mirror is built from a snapshot the engine takes
//! after it started delivering to this node, and kept current by deliveries applied strictly in
//! serial order. Until the snapshot arrives the channel is *syncing*: joiners wait and deliveries
//! are buffered. A delivery that does not follow the head (a lost message, a new epoch) sends the
//! channel back to syncing and asks for a new snapshot; if the snapshot cannot fill the hole, each
//! subscriber is told `recovered: false` with the new position, so a gap is never silent.
//!
//! Resume, replay and confirmation then work exactly as on a single node, from the mirror, under
//! the same shard lock.

use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::server_frame::{self, SubscriptionErrorKind};
use herald_protocol::{ChannelName, FrameData, Resume, SocketId};
use serde_json::value::RawValue;
use tokio::time::{Duration, Instant};

use super::{CachedEvent, Channel, Confirmation, Hub, Join, JoinRefused, Subscriber};
use crate::connection::Connection;
use crate::engine::{Delivery, Engine, Record, Retention, Snapshot};
use crate::presence::{MemberJoin, Members};

/// A channel waiting for its snapshot.
#[derive(Debug, Default)]
pub(crate) struct Syncing {
    pending: Vec<OwnedJoin>,
    buffered: Vec<Delivery>,
}

/// A join kept until the channel is live.
#[derive(Debug)]
pub(crate) struct OwnedJoin {
    connection: Arc<Connection>,
    member: Option<MemberJoin>,
    resume: Option<Resume>,
    /// A sign-in's user data and the frame that follows its confirmation.
    signin: Option<(Box<str>, Option<Bytes>)>,
    confirmed: Option<Arc<tokio::sync::Notify>>,
}

impl OwnedJoin {
    fn new(connection: &Arc<Connection>, join: Join<'_>) -> Self {
        let signin = match join.confirmation {
            Confirmation::SubscriptionSucceeded => None,
            Confirmation::SigninSuccess { user_data, then } => Some((user_data.into(), then.cloned())),
        };
        Self {
            connection: connection.clone(),
            member: join.member.cloned(),
            resume: join.resume.cloned(),
            signin,
            confirmed: join.confirmed.cloned(),
        }
    }

    fn as_join(&self) -> Join<'_> {
        let confirmation = match &self.signin {
            None => Confirmation::SubscriptionSucceeded,
            Some((user_data, then)) => Confirmation::SigninSuccess { user_data, then: then.as_ref() },
        };
        Join {
            member: self.member.as_ref(),
            resume: self.resume.as_ref(),
            confirmation,
            confirmed: self.confirmed.as_ref(),
        }
    }
}

/// The engine a replica hub mirrors, for the calls it makes under its shard locks (listen and
/// unlisten only: both return at once and never call back into the node).
pub(crate) struct Link {
    engine: Arc<dyn Engine>,
    app: Arc<str>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("app", &self.app).finish()
    }
}

impl Link {
    pub fn new(engine: Arc<dyn Engine>, app: &str) -> Self {
        Self { engine, app: Arc::from(app) }
    }
}

/// What a subscribe asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    /// This node's first socket of a presence user: tell the engine.
    pub member: Option<MemberJoin>,
    /// This node's subscriptions on the channel now (replica hubs).
    pub count: Option<usize>,
    /// For webhooks: the channel had no subscriber (on this node) before.
    pub occupied: bool,
    /// For webhooks: this user's first socket (on this node) joined the presence channel.
    pub member_added: Option<Arc<str>>,
    /// For webhooks: a cache channel with nothing cached was joined.
    pub cache_miss: bool,
}

/// What an unsubscribe asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct Left {
    /// This node's last socket of a presence user left.
    pub member_left: Option<Arc<str>>,
    pub count: Option<usize>,
    /// For webhooks: the last subscriber (on this node) left.
    pub vacated: bool,
    /// For webhooks: this user's last socket (on this node) left the presence channel.
    pub member_removed: Option<Arc<str>>,
}

/// What installing a snapshot asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct Installed {
    /// Presence users whose first socket here joined; with the socket that joined.
    pub joined: Vec<(MemberJoin, SocketId)>,
    pub count: usize,
    /// For webhooks: waiting joiners made the channel occupied on this node, how many joined,
    /// and their cache misses.
    pub occupied: bool,
    pub joiners: usize,
    pub cache_misses: usize,
}

fn encode(channel: &str, record: &Record) -> Bytes {
    let message = &record.message;
    let raw: Option<&RawValue> = if message.json { serde_json::from_str(&message.data).ok() } else { None };
    let data = raw.map_or(FrameData::Text(&message.data), FrameData::Json);
    server_frame::channel_event(&message.event, channel, data, message.user_id.as_deref(), record.serial)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The instant `at_unix_ms` was, on this node's clock.
fn instant_of(at_unix_ms: u64, now: Instant) -> Instant {
    let age = Duration::from_millis(unix_ms().saturating_sub(at_unix_ms));
    now.checked_sub(age).unwrap_or(now)
}

fn member_join(user_id: &str, user_info: Option<&str>) -> MemberJoin {
    let user_info = user_info.and_then(|info| RawValue::from_string(info.to_owned()).ok());
    MemberJoin { user_id: Arc::from(user_id), user_info }
}

impl Hub {
    /// Asks the engine to (re)start delivering `channel`; call with its shard lock held.
    fn listen(&self, channel: &str) {
        if let Some(link) = &self.link {
            link.engine.listen(&link.app, channel, self.retention(channel));
        }
    }

    /// Asks the engine to stop delivering `channel`; call with its shard lock held.
    fn unlisten(&self, channel: &str) {
        if let Some(link) = &self.link {
            link.engine.unlisten(&link.app, channel);
        }
    }

    fn retention(&self, channel: &str) -> Retention {
        let history = self.limits.history;
        Retention {
            max_events: if history.enabled() { history.max_events } else { 0 },
            max_age_ms: history.max_age.as_millis() as u64,
            cache_ttl_ms: if is_cache(channel) { self.limits.cache_ttl.as_millis() as u64 } else { 0 },
        }
    }

    pub(super) fn subscribe_replica(
        &self,
        channel: &ChannelName,
        connection: &Arc<Connection>,
        join: Join<'_>,
        now: Instant,
    ) -> Result<Joined, JoinRefused> {
        let mut shard = self.shard(channel.as_str()).write();
        let Some(state) = shard.get_mut(channel.as_str()) else {
            let mut state = Channel::new(Arc::from(""), now);
            let pending = vec![OwnedJoin::new(connection, join)];
            state.syncing = Some(Box::new(Syncing { pending, buffered: Vec::new() }));
            shard.insert(Arc::from(channel.as_str()), state);
            self.listen(channel.as_str());
            return Ok(Joined::default());
        };
        if let Some(syncing) = &mut state.syncing {
            syncing.pending.retain(|p| p.connection.socket_id != connection.socket_id);
            syncing.pending.push(OwnedJoin::new(connection, join));
            return Ok(Joined::default());
        }
        if state.is_behind(join.resume) {
            // The joiner saw serials this mirror has not applied yet (it comes from a node that is
            // further along, as when a draining node hands its clients over): it waits for a fresh
            // snapshot, which the engine guarantees is at least as far along, instead of being
            // told that its position is unknown.
            let pending = vec![OwnedJoin::new(connection, join)];
            state.syncing = Some(Box::new(Syncing { pending, buffered: Vec::new() }));
            self.listen(channel.as_str());
            return Ok(Joined::default());
        }
        self.join_live(state, channel, connection, join, now)
    }

    /// Joins a live mirror: like a single node's join, but members are announced by the engine.
    fn join_live(
        &self,
        state: &mut Channel,
        channel: &ChannelName,
        connection: &Arc<Connection>,
        join: Join<'_>,
        now: Instant,
    ) -> Result<Joined, JoinRefused> {
        state.history.expire(now, self.limits.history);
        let socket_id = connection.socket_id;
        let again = state.subscribers.contains_key(&socket_id);
        let mut joined = Joined::default();
        if let (Some(member), false) = (join.member, again) {
            let known = state.members.contains(&member.user_id) || state.roster.contains(&member.user_id);
            if !known && state.roster.len() >= self.limits.max_members {
                return Err(JoinRefused::PresenceFull);
            }
            if state.members.join(member, usize::MAX) == Ok(true) {
                joined.member = Some(member.clone());
                joined.member_added = Some(member.user_id.clone());
            }
        }
        let presence = join.member.map(|member| {
            let itself =
                (!state.roster.contains(&member.user_id)).then(|| (&*member.user_id, member.user_info.as_deref()));
            server_frame::presence_data(state.roster.iter().chain(itself))
        });
        let join = if again { Join { resume: None, ..join } } else { join };
        joined.cache_miss = state.confirm(channel, connection, join, presence.as_deref(), now) && !again;
        if !again {
            let user_id = join.member.map(|m| m.user_id.clone());
            joined.occupied = state.subscribers.is_empty();
            state.subscribers.insert(socket_id, Subscriber { connection: connection.clone(), user_id });
        }
        joined.count = Some(state.subscribers.len());
        Ok(joined)
    }

    pub(super) fn unsubscribe_replica(&self, channel: &str, socket_id: SocketId) -> Left {
        let mut shard = self.shard(channel).write();
        let Some(state) = shard.get_mut(channel) else {
            return Left::default();
        };
        let mut left = Left::default();
        if let Some(syncing) = &mut state.syncing {
            syncing.pending.retain(|p| p.connection.socket_id != socket_id);
        }
        if let Some(subscriber) = state.subscribers.remove(&socket_id) {
            left.member_left = subscriber.user_id.filter(|id| state.members.leave(id));
            left.member_removed = left.member_left.clone();
            left.vacated = state.subscribers.is_empty();
        }
        left.count = Some(state.subscribers.len());
        let waiting = state.syncing.as_ref().is_some_and(|s| !s.pending.is_empty());
        if state.subscribers.is_empty() && !waiting {
            self.remove(&mut shard, channel);
            self.unlisten(channel);
        }
        left
    }

    /// Applies one delivery from the engine to the mirror of `channel`: in order, or else the
    /// channel goes back to syncing and asks for a new snapshot.
    pub(crate) fn apply(&self, channel: &str, delivery: Delivery, now: Instant) {
        let mut shard = self.shard(channel).write();
        let Some(state) = shard.get_mut(channel) else {
            // Nobody here needs it (a stray delivery after the last subscriber left).
            return self.unlisten(channel);
        };
        if let Some(syncing) = &mut state.syncing {
            syncing.buffered.push(delivery);
            return;
        }
        match delivery {
            Delivery::Event(record) => {
                if record.serial <= state.head && *record.epoch == *state.epoch {
                    return;
                }
                if *record.epoch != *state.epoch || record.serial != state.head + 1 {
                    let buffered = vec![Delivery::Event(record)];
                    state.syncing = Some(Box::new(Syncing { pending: Vec::new(), buffered }));
                    return self.listen(channel);
                }
                self.append(state, channel, &record, now);
            }
            Delivery::MemberAdded { user_id, user_info, exclude } => {
                state.add_member(channel, &member_join(&user_id, user_info.as_deref()), exclude);
            }
            Delivery::MemberRemoved { user_id } => state.remove_member(channel, &user_id),
        }
    }

    /// The next event of the mirror: kept, cached and queued for every subscriber.
    fn append(&self, state: &mut Channel, channel: &str, record: &Record, now: Instant) {
        let frame = encode(channel, record);
        state.head = record.serial;
        state.touched = now;
        state.history.push(record.serial, frame.clone(), instant_of(record.at_unix_ms, now), self.limits.history);
        if is_cache(channel) {
            state.cache = Some(self.cached_event(record, frame.clone(), now));
        }
        state.broadcast(&frame, record.message.exclude);
    }

    fn cached_event(&self, record: &Record, frame: Bytes, now: Instant) -> CachedEvent {
        let age = Duration::from_millis(unix_ms().saturating_sub(record.at_unix_ms));
        CachedEvent {
            event: record.message.event.as_str().into(),
            data: record.message.data.as_str().into(),
            frame,
            expires_at: now + self.limits.cache_ttl.saturating_sub(age),
        }
    }

    /// Installs the engine's snapshot of `channel`: catches the mirror up (or resets it and says
    /// so), replays what was buffered meanwhile, then lets the waiting joiners in.
    pub(crate) fn install(&self, channel: &str, snapshot: Snapshot, now: Instant) -> Installed {
        let mut shard = self.shard(channel).write();
        let (Ok(name), Some(state)) = (ChannelName::parse(channel, usize::MAX), shard.get_mut(channel)) else {
            self.unlisten(channel);
            return Installed::default();
        };
        let syncing = state.syncing.take().map(|s| *s).unwrap_or_default();
        let live = !state.epoch.is_empty();
        let told = self.catch_up(state, channel, &snapshot, now);
        let members: Vec<MemberJoin> =
            snapshot.members.iter().map(|(id, info)| member_join(id, info.as_deref())).collect();
        if live {
            state.sync_roster(channel, &members);
        } else {
            state.roster = Members::default();
            for member in &members {
                let _ = state.roster.join(member, usize::MAX);
            }
        }
        if told {
            state.tell_recovered_false(&name);
        }
        let mut installed = Installed::default();
        let mut buffered = syncing.buffered.into_iter();
        while let Some(delivery) = buffered.next() {
            if let Delivery::Event(record) = &delivery
                && (*record.epoch != *state.epoch || record.serial > state.head + 1)
            {
                let rest = std::iter::once(delivery).chain(buffered).collect();
                state.syncing = Some(Box::new(Syncing { pending: syncing.pending, buffered: rest }));
                installed.count = state.subscribers.len();
                self.listen(channel);
                return installed;
            }
            match delivery {
                Delivery::Event(record) if record.serial == state.head + 1 => self.append(state, channel, &record, now),
                Delivery::Event(_) => {}
                Delivery::MemberAdded { user_id, user_info, exclude } => {
                    state.add_member(channel, &member_join(&user_id, user_info.as_deref()), exclude);
                }
                Delivery::MemberRemoved { user_id } => state.remove_member(channel, &user_id),
            }
        }
        for pending in syncing.pending {
            match self.join_live(state, &name, &pending.connection, pending.as_join(), now) {
                Ok(joined) => {
                    installed.occupied |= joined.occupied;
                    installed.joiners += 1;
                    installed.cache_misses += usize::from(joined.cache_miss);
                    if let Some(member) = joined.member {
                        installed.joined.push((member, pending.connection.socket_id));
                    }
                }
                Err(JoinRefused::PresenceFull) => {
                    let message = format!("presence channel is full ({} members)", self.limits.max_members);
                    let frame =
                        server_frame::subscription_error(channel, SubscriptionErrorKind::LimitReached, &message);
                    pending.connection.outbox.push(frame);
                }
            }
        }
        installed.count = state.subscribers.len();
        if state.subscribers.is_empty() {
            self.remove(&mut shard, channel);
            self.unlisten(channel);
        }
        installed
    }

    /// Brings the mirror's position to the snapshot's; returns whether subscribers must be told
    /// that events were lost.
    fn catch_up(&self, state: &mut Channel, channel: &str, snapshot: &Snapshot, now: Instant) -> bool {
        let live = !state.epoch.is_empty();
        if live && *state.epoch == *snapshot.epoch && state.head >= snapshot.head {
            return false;
        }
        if live && *state.epoch == *snapshot.epoch {
            let missing: Vec<&Record> = snapshot.events.iter().filter(|r| r.serial > state.head).collect();
            let complete = missing.first().is_some_and(|r| r.serial == state.head + 1)
                && missing.len() as u64 == snapshot.head - state.head;
            if complete {
                for record in missing {
                    self.append(state, channel, record, now);
                }
                return false;
            }
        }
        state.epoch = snapshot.epoch.clone();
        state.head = snapshot.head;
        state.history = Default::default();
        for record in &snapshot.events {
            let frame = encode(channel, record);
            let at = instant_of(record.at_unix_ms, now);
            state.history.restore(record.serial, frame, at, now, self.limits.history);
        }
        state.cache = snapshot.cached.as_ref().map(|r| self.cached_event(r, encode(channel, r), now));
        live && !state.subscribers.is_empty()
    }
}

fn is_cache(channel: &str) -> bool {
    ChannelName::parse(channel, usize::MAX).is_ok_and(|c| c.is_cache())
}

impl Channel {
    /// Whether a resume in this mirror's epoch is past its head: the mirror lags the engine.
    fn is_behind(&self, resume: Option<&herald_protocol::Resume>) -> bool {
        resume.is_some_and(|resume| *resume.epoch == *self.epoch && resume.serial > self.head)
    }

    fn add_member(&mut self, channel: &str, member: &MemberJoin, exclude: Option<SocketId>) {
        if self.roster.join(member, usize::MAX) == Ok(true) {
            let info = self.roster.user_info(&member.user_id);
            let frame = server_frame::member_added(channel, &member.user_id, info);
            self.broadcast_about(&frame, &member.user_id, exclude);
        }
    }

    fn remove_member(&mut self, channel: &str, user_id: &str) {
        if self.roster.leave_all(user_id) {
            self.broadcast_about(&server_frame::member_removed(channel, user_id), user_id, None);
        }
    }

    /// Queues a member change for every subscriber but the user's own sockets (they count
    /// themselves in from their own confirmation; a change racing it must not announce them to
    /// themselves) and `exclude`.
    fn broadcast_about(&self, frame: &Bytes, user_id: &str, exclude: Option<SocketId>) {
        for (socket_id, subscriber) in &self.subscribers {
            if Some(*socket_id) != exclude && subscriber.user_id.as_deref() != Some(user_id) {
                subscriber.connection.outbox.push(frame.clone());
            }
        }
    }

    /// Replaces the roster with the engine's, announcing who came and went meanwhile.
    fn sync_roster(&mut self, channel: &str, members: &[MemberJoin]) {
        let gone: Vec<String> = self
            .roster
            .iter()
            .map(|(id, _)| id.to_owned())
            .filter(|id| !members.iter().any(|m| *m.user_id == **id))
            .collect();
        for user_id in gone {
            self.remove_member(channel, &user_id);
        }
        for member in members {
            self.add_member(channel, member, None);
        }
    }

    /// Tells every subscriber its channel's new position and that events in between are lost.
    fn tell_recovered_false(&self, name: &ChannelName) {
        let presence = (name.kind() == herald_protocol::ChannelKind::Presence)
            .then(|| server_frame::presence_data(self.roster.iter()));
        let frame =
            server_frame::subscription_succeeded(name.as_str(), presence.as_deref(), self.position(), Some(false));
        self.broadcast(&frame, None);
    }
}

/// A history page (and the live cached event) answered from an engine's snapshot.
pub(crate) fn page_of(
    channel: &str,
    snapshot: &Snapshot,
    after: u64,
    limit: usize,
    cache_ttl_secs: u64,
    now: Instant,
) -> (super::HistoryPage, Option<CachedEvent>) {
    let held = snapshot.events.iter().filter(|r| r.serial > after);
    let events: Vec<(u64, Bytes)> = held.take(limit).map(|r| (r.serial, encode(channel, r))).collect();
    let first = snapshot.events.iter().find(|r| r.serial > after).map(|r| r.serial);
    let truncated = after < snapshot.head && first.is_none_or(|serial| serial > after + 1);
    let cached = snapshot.cached.as_ref().map(|r| {
        let age = Duration::from_millis(unix_ms().saturating_sub(r.at_unix_ms));
        CachedEvent {
            event: r.message.event.as_str().into(),
            data: r.message.data.as_str().into(),
            frame: encode(channel, r),
            expires_at: now + Duration::from_secs(cache_ttl_secs).saturating_sub(age),
        }
    });
    let page = super::HistoryPage { epoch: snapshot.epoch.clone(), head: snapshot.head, events, truncated };
    (page, cached)
}
