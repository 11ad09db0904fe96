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
use crate::hub::{CachedEvent, ChannelCounts, HistoryPage};
use crate::idempotency::{MAX_KEY_LEN, Outcome};

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
        Ok(())
    }

    /// Delivers an already checked publish. Fails only when its idempotency key was used for a
    /// publish to other channels.
    pub fn publish(&self, publish: &Publish<'_>, now: Instant) -> Result<Published, PublishError> {
        let deliver =
            || -> Vec<u64> { publish.channels.iter().map(|channel| self.publish_one(channel, publish, now)).collect() };
        let Some(key) = publish.idempotency_key else {
            return Ok(Published { serials: deliver().into(), repeated: false });
        };
        let target: Vec<&str> = publish.channels.iter().map(ChannelName::as_str).collect();
        match self.idempotency.run(key, &target.join(","), now, deliver) {
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

    /// Occupancy, counts and cached event of one channel.
    pub fn channel_info(&self, channel: &ChannelName, now: Instant) -> ChannelInfo {
        let counts = self.hub.counts(channel.as_str());
        let cache = if channel.is_cache() { self.hub.cached(channel.as_str(), now) } else { None };
        ChannelInfo { occupied: counts.is_some(), counts: counts.unwrap_or_default(), cache }
    }

    /// Up to `limit` events of `channel` after serial `after`; `None` if the channel has no state.
    pub fn history(&self, channel: &ChannelName, after: u64, limit: usize, now: Instant) -> Option<HistoryPage> {
        self.hub.history(channel.as_str(), after, limit, now)
    }

    /// Occupied channels whose names start with `prefix`.
    pub fn occupied_channels(&self, prefix: &str) -> Vec<(Arc<str>, ChannelCounts)> {
        self.hub.occupied(prefix)
    }

    /// Member user ids of a presence channel.
    pub fn presence_users(&self, channel: &ChannelName) -> Vec<String> {
        match channel.kind() {
            ChannelKind::Presence => self.hub.member_ids(channel.as_str()),
            _ => Vec::new(),
        }
    }

    /// Closes every connection signed in as `user_id` (code 4009); returns how many.
    pub fn terminate_user(&self, user_id: &str) -> usize {
        self.users.terminate(user_id)
    }
}
