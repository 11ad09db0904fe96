//! Publishing from the app's backend and the queries that go with it.
//!
//! A publish is validated against the app's limits first and then delivered channel by channel:
//! each channel gives it the next serial and encodes it once; the same bytes go to every subscriber
//! (for `#server-to-user-<id>`, every connection signed in as that user). Event names in Pusher's and
//! Herald's own namespaces are refused, so a backend bug cannot forge a
//! `pusher_internal:member_added` at a client.

use std::sync::Arc;

use herald_protocol::{ChannelKind, ChannelName, FrameData, SocketId, server_frame};
use tokio::time::Instant;

use crate::app::App;
use crate::engine::{EngineError, Message, Reservation};
use crate::feeds::is_feed_channel;
use crate::hub::{CachedEvent, ChannelCounts, HistoryPage};
use crate::idempotency::{MAX_KEY_LEN, Outcome};
use crate::metrics::PublishSource;

/// One event to publish to one or more channels.
#[derive(Debug)]
pub struct Publish<'a> {
    pub event: &'a str,
    pub channels: &'a [ChannelName],
    pub data: &'a str,
    /// The connection that caused the event, which must not receive it back.
    pub exclude: Option<SocketId>,
    /// A repeat of this key within the app's window is acknowledged, not delivered.
    pub idempotency_key: Option<&'a str>,
    /// Herald: the event counts as unread until each user's read cursor passes it.
    pub count_unread: bool,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The serial the event took in each channel, in the order of `Publish::channels`.
    pub serials: Arc<[u64]>,
    /// The idempotency key was seen before: nothing was delivered this time.
    pub repeated: bool,
}

/// Why a publish was refused; the HTTP layer maps each to a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("event name must be 1 to {max} characters")]
    InvalidEventName { max: usize },
    #[error("event names starting with pusher:, pusher_internal: or herald: are reserved")]
    ReservedEventName,
    #[error("event data is larger than {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("no channel given")]
    NoChannels,
    #[error("too many channels: at most {max} per event")]
    TooManyChannels { max: usize },
    #[error("idempotency_key must be 1 to {MAX_KEY_LEN} characters")]
    InvalidIdempotencyKey,
    #[error("idempotency_key was already used for a publish to other channels")]
    IdempotencyConflict,
    #[error("feed channels change only through the feed routes")]
    FeedChannel,
    #[error("{0}")]
    Unavailable(#[from] EngineError),
    #[error("{0}")]
    Cursors(#[from] crate::cursors::CursorError),
}

/// What the HTTP API reports about one channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    pub occupied: bool,
    pub counts: ChannelCounts,
    pub cache: Option<CachedEvent>,
}

const RESERVED_PREFIXES: [&str; 3] = ["pusher:", "pusher_internal:", "herald:"];

impl App {
    /// Checks a publish against the app's limits without delivering it.
    pub fn check_publish(&self, publish: &Publish<'_>) -> Result<(), PublishError> {
        let limits = &self.config;
        if publish.event.is_empty() || publish.event.len() > limits.max_event_name_len {
            return Err(PublishError::InvalidEventName { max: limits.max_event_name_len });
        }
        if RESERVED_PREFIXES.iter().any(|p| publish.event.starts_with(p)) {
            return Err(PublishError::ReservedEventName);
        }
        if publish.data.len() > limits.max_payload_bytes {
            return Err(PublishError::PayloadTooLarge { max: limits.max_payload_bytes });
        }
        if publish.channels.is_empty() {
            return Err(PublishError::NoChannels);
        }
        if publish.channels.len() > limits.max_event_channels {
            return Err(PublishError::TooManyChannels { max: limits.max_event_channels });
        }
        if publish.idempotency_key.is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN) {
            return Err(PublishError::InvalidIdempotencyKey);
        }
        if publish.channels.iter().any(|c| is_feed_channel(c.as_str())) {
            return Err(PublishError::FeedChannel);
        }
        Ok(())
    }

    /// Delivers an already checked publish. Fails when its idempotency key was used for a publish
    /// to other channels, or when the engine cannot be reached.
    pub async fn publish(&self, publish: &Publish<'_>, now: Instant) -> Result<Published, PublishError> {
        let published = self.publish_uncounted(publish, now).await?;
        if publish.count_unread && !published.repeated {
            for (channel, serial) in publish.channels.iter().zip(published.serials.iter()) {
                self.count_unread(channel.as_str(), *serial).await?;
            }
        }
        Ok(published)
    }

    async fn publish_uncounted(&self, publish: &Publish<'_>, now: Instant) -> Result<Published, PublishError> {
        if self.engine.is_some() {
            return self.publish_shared(publish, now).await;
        }
        if publish.count_unread {
            for channel in publish.channels {
                self.book_counted(channel.as_str(), now);
            }
        }
        let deliver =
            || -> Vec<u64> { publish.channels.iter().map(|channel| self.publish_one(channel, publish, now)).collect() };
        let Some(key) = publish.idempotency_key else {
            return Ok(Published { serials: deliver().into(), repeated: false });
        };
        match self.idempotency.run(key, &target(publish), now, deliver) {
            Outcome::Delivered(serials) => Ok(Published { serials, repeated: false }),
            Outcome::Repeated(serials) => Ok(Published { serials, repeated: true }),
            Outcome::Conflict => Err(PublishError::IdempotencyConflict),
        }
    }

    fn publish_one(&self, channel: &ChannelName, publish: &Publish<'_>, now: Instant) -> u64 {
        let encode = |serial| {
            server_frame::channel_event(publish.event, channel.as_str(), FrameData::Text(publish.data), None, serial)
        };
        let cache = channel.is_cache().then_some((publish.event, publish.data));
        self.hub.publish(channel.as_str(), encode, publish.exclude, cache, now)
    }

    /// Publishes through the engine, which also remembers idempotency keys for every node.
    async fn publish_shared(&self, publish: &Publish<'_>, _now: Instant) -> Result<Published, PublishError> {
        let window_ms = self.config.idempotency_window_secs * 1000;
        let key = publish.idempotency_key.filter(|_| window_ms > 0).map(|key| format!("p:{key}"));
        let target = target(publish);
        if let (Some(key), Some(engine)) = (&key, &self.engine) {
            match engine.reserve_key(self.id(), key, &target, window_ms).await? {
                Reservation::Fresh => {}
                Reservation::Repeated(serials) => return Ok(Published { serials: serials.into(), repeated: true }),
                Reservation::Conflict => return Err(PublishError::IdempotencyConflict),
            }
        }
        let mut serials = Vec::with_capacity(publish.channels.len());
        for channel in publish.channels {
            let message = Message {
                event: publish.event.to_owned(),
                data: publish.data.to_owned(),
                json: false,
                user_id: None,
                exclude: publish.exclude,
            };
            match self.publish_message(channel.as_str(), message).await {
                Ok(serial) => serials.push(serial),
                Err(error) => {
                    self.settle_key(key.as_deref(), &target, None).await;
                    return Err(error.into());
                }
            }
        }
        self.settle_key(key.as_deref(), &target, Some(&serials)).await;
        Ok(Published { serials: serials.into(), repeated: false })
    }

    /// Records (or, with `None`, releases) a reserved key; a failure only shortens its memory.
    async fn settle_key(&self, key: Option<&str>, target: &str, serials: Option<&[u64]>) {
        if let (Some(key), Some(engine)) = (key, &self.engine)
            && let Err(error) = engine.settle(self.id(), key, target, serials).await
        {
            tracing::warn!(app = %self.id(), "idempotency key not settled: {error}");
        }
    }

    /// Publishes a client event through the engine, once per idempotency key (if any).
    pub(crate) async fn publish_client_event(
        &self,
        channel: &str,
        message: Message,
        key: Option<&str>,
    ) -> Result<bool, EngineError> {
        let window_ms = self.config.idempotency_window_secs * 1000;
        let key = key.filter(|_| window_ms > 0);
        if let (Some(key), Some(engine)) = (key, &self.engine)
            && engine.reserve_key(self.id(), key, channel, window_ms).await? != Reservation::Fresh
        {
            return Ok(false);
        }
        match self.publish_message(channel, message).await {
            Ok(serial) => {
                self.counters().published(PublishSource::Client, 1);
                self.settle_key(key, channel, Some(&[serial])).await;
                Ok(true)
            }
            Err(error) => {
                self.settle_key(key, channel, None).await;
                Err(error)
            }
        }
    }

    /// Publishes one message through the engine.
    pub(crate) async fn publish_message(&self, channel: &str, message: Message) -> Result<u64, EngineError> {
        let engine = self.engine.as_ref().ok_or_else(|| EngineError::Unavailable("no engine".into()))?;
        let is_cache = ChannelName::parse(channel, usize::MAX).is_ok_and(|c| c.is_cache());
        engine.publish(self.id(), channel, message, self.retention(is_cache)).await
    }

    /// Occupancy, counts and cached event of one channel.
    pub async fn channel_info(&self, channel: &ChannelName, now: Instant) -> Result<ChannelInfo, EngineError> {
        let Some(engine) = &self.engine else {
            let counts = self.hub.counts(channel.as_str());
            let cache = if channel.is_cache() { self.hub.cached(channel.as_str(), now) } else { None };
            return Ok(ChannelInfo { occupied: counts.is_some(), counts: counts.unwrap_or_default(), cache });
        };
        let counts = engine.channel_counts(self.id(), channel.as_str()).await?;
        let cache = match channel.is_cache() {
            true => self.history_shared(channel, u64::MAX, 0, now).await?.and_then(|(_, cached)| cached),
            false => None,
        };
        Ok(ChannelInfo { occupied: counts.subscription_count > 0, counts, cache })
    }

    /// Up to `limit` events of `channel` after serial `after`; `None` if the channel has no state.
    pub async fn history(
        &self,
        channel: &ChannelName,
        after: u64,
        limit: usize,
        now: Instant,
    ) -> Result<Option<HistoryPage>, EngineError> {
        if self.engine.is_none() {
            return Ok(self.hub.history(channel.as_str(), after, limit, now));
        }
        Ok(self.history_shared(channel, after, limit, now).await?.map(|(page, _)| page))
    }

    async fn history_shared(
        &self,
        channel: &ChannelName,
        after: u64,
        limit: usize,
        now: Instant,
    ) -> Result<Option<(HistoryPage, Option<CachedEvent>)>, EngineError> {
        let engine = self.engine.as_ref().ok_or_else(|| EngineError::Unavailable("no engine".into()))?;
        let retention = self.retention(channel.is_cache());
        let Some(snapshot) = engine.snapshot(self.id(), channel.as_str(), retention).await? else {
            return Ok(None);
        };
        Ok(Some(crate::hub::page_of(channel.as_str(), &snapshot, after, limit, self.config.cache_ttl_secs, now)))
    }

    /// Occupied channels whose names start with `prefix`.
    pub async fn occupied_channels(&self, prefix: &str) -> Result<Vec<(Arc<str>, ChannelCounts)>, EngineError> {
        let Some(engine) = &self.engine else {
            return Ok(self.hub.occupied(prefix));
        };
        let found = engine.channels(self.id(), prefix).await?;
        Ok(found.into_iter().map(|(name, counts)| (Arc::from(name), counts)).collect())
    }

    /// Member user ids of a presence channel.
    pub async fn presence_users(&self, channel: &ChannelName) -> Result<Vec<String>, EngineError> {
        if channel.kind() != ChannelKind::Presence {
            return Ok(Vec::new());
        }
        match &self.engine {
            None => Ok(self.hub.member_ids(channel.as_str())),
            Some(engine) => engine.members(self.id(), channel.as_str()).await,
        }
    }

    /// Closes every connection signed in as `user_id` (code 4009), on every node. Returns how many
    /// were closed here (on an engine, other nodes close theirs on their own).
    pub async fn terminate_user(&self, user_id: &str) -> Result<usize, EngineError> {
        match &self.engine {
            None => Ok(self.users.terminate(user_id)),
            Some(engine) => engine.terminate_user(self.id(), user_id).await.map(|()| 0),
        }
    }
}

fn target(publish: &Publish<'_>) -> String {
    let target: Vec<&str> = publish.channels.iter().map(ChannelName::as_str).collect();
    target.join(",")
}
