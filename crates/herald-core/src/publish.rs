//! Publishing from the app's backend and the queries that go with it.
//!
//! A publish is validated against the app's limits first and then encoded once per channel; the
//! same bytes go to every subscriber (or, for `#server-to-user-<id>`, to every connection signed in
//! as that user). Event names in Pusher's and Herald's own namespaces are refused, so a backend bug
//! cannot forge a `pusher_internal:member_added` at a client.

use std::sync::Arc;

use herald_protocol::{ChannelKind, ChannelName, FrameData, SocketId, server_frame};
use tokio::time::{Duration, Instant};

use crate::app::App;
use crate::hub::{CachedEvent, ChannelCounts};

/// One event to publish to one or more channels.
#[derive(Debug)]
pub struct Publish<'a> {
    pub event: &'a str,
    pub channels: &'a [ChannelName],
    pub data: &'a str,
    /// The connection that caused the event, which must not receive it back.
    pub exclude: Option<SocketId>,
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
        Ok(())
    }

    /// Delivers an already checked publish; returns how many connections it was queued for.
    pub fn publish(&self, publish: &Publish<'_>, now: Instant) -> usize {
        publish.channels.iter().map(|channel| self.publish_one(channel, publish, now)).sum()
    }

    fn publish_one(&self, channel: &ChannelName, publish: &Publish<'_>, now: Instant) -> usize {
        let frame = server_frame::channel_event(publish.event, channel.as_str(), FrameData::Text(publish.data), None);
        if let Some(user_id) = channel.user_id() {
            return self.users.send(user_id, &frame, publish.exclude);
        }
        let cache = channel.is_cache().then(|| CachedEvent {
            event: publish.event.into(),
            data: publish.data.into(),
            frame: frame.clone(),
            expires_at: now + Duration::from_secs(self.config.cache_ttl_secs),
        });
        self.hub.publish(channel.as_str(), &frame, publish.exclude, cache)
    }

    /// Occupancy, counts and cached event of one channel.
    pub fn channel_info(&self, channel: &ChannelName, now: Instant) -> ChannelInfo {
        if let Some(user_id) = channel.user_id() {
            let connections = self.users.connection_count(user_id);
            let counts = ChannelCounts { subscription_count: connections, user_count: usize::from(connections > 0) };
            return ChannelInfo { occupied: connections > 0, counts, cache: None };
        }
        let counts = self.hub.counts(channel.as_str());
        let cache = if channel.is_cache() { self.hub.cached(channel.as_str(), now) } else { None };
        ChannelInfo { occupied: counts.is_some(), counts: counts.unwrap_or_default(), cache }
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
