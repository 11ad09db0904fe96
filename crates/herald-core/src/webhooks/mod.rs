//! Pusher-format webhooks: what happened on this node's channels, told to the app's endpoints.
//!
//! The hub and the session report channel changes to the app's [`WebhookSink`] (absent when the
//! app has no webhook, so the hot path only checks an empty cell). The sink's dispatcher holds
//! `channel_vacated` and `member_removed` for the leave delay and drops them, with the matching
//! `channel_occupied`/`member_added`, when the channel or member comes back in time (a page
//! refresh emits nothing); everything else goes at once into the [`WebhookOutbox`], one queue per
//! endpoint, before any delivery is tried, so a restart loses nothing that was queued. One sender
//! task per endpoint posts its queue in order, retries with exponential back-off and jitter, and
//! moves a batch that failed for `retry_for_secs` to dead letters, which an operator can replay.
//!
//! Not here: the HTTP client (the [`WebhookPoster`] seam; `herald-server` implements it) and
//! anything shared between nodes (on the Redis engine each node reports its own channels).

pub mod conformance;
mod counts;
mod dispatch;
mod memory;
mod report;
mod sender;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Duration;

pub use counts::COUNT_THROTTLE;
pub use dispatch::{WebhookSink, Webhooks, start};
pub use memory::MemoryOutbox;
pub use sender::{PostError, PostFuture, WebhookPoster, WebhookRequest, backoff_delay, request_body};

/// One `[[apps.webhooks]]` entry: an endpoint and how it is fed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` only).
    pub url: String,
    /// The event types this endpoint gets; empty: all of them but `subscription_count`, which
    /// comes only when listed.
    pub event_types: Vec<WebhookEventKind>,
    /// Several events per request (up to `batch_max_events`, gathered for `batch_window_ms`);
    /// off: one event per request, as Pusher does by default.
    pub batch: bool,
    pub batch_window_ms: u64,
    pub batch_max_events: usize,
    /// A request that takes longer counts as failed.
    pub timeout_ms: u64,
    /// How long a failing request is retried before its events go to the dead letters.
    pub retry_for_secs: u64,
    /// First retry delay; each next one doubles, up to `backoff_cap_ms` (with jitter).
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            event_types: Vec::new(),
            batch: false,
            batch_window_ms: 50,
            batch_max_events: 100,
            timeout_ms: 5000,
            retry_for_secs: 300,
            backoff_base_ms: 1000,
            backoff_cap_ms: 60_000,
        }
    }
}

/// Why a webhook entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook url must start with http:// and name a host (no credentials)")]
    Url,
    #[error("webhook {0} must be greater than 0")]
    Zero(&'static str),
}

impl WebhookConfig {
    /// Checks what would make the endpoint misbehave rather than fail.
    pub fn check(&self) -> Result<(), WebhookConfigError> {
        let host = self.url.strip_prefix("http://").map(|rest| rest.split(['/', '?']).next().unwrap_or(""));
        if host.is_none_or(|host| host.is_empty() || host.contains('@')) {
            return Err(WebhookConfigError::Url);
        }
        let nonzero = [
            ("batch_max_events", self.batch_max_events as u64),
            ("timeout_ms", self.timeout_ms),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_cap_ms", self.backoff_cap_ms),
        ];
        match nonzero.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(WebhookConfigError::Zero(name)),
            None => Ok(()),
        }
    }

    fn wants(&self, kind: WebhookEventKind) -> bool {
        match self.event_types.is_empty() {
            true => kind != WebhookEventKind::SubscriptionCount,
            false => self.event_types.contains(&kind),
        }
    }

    /// Events per request.
    fn max_events(&self) -> usize {
        if self.batch { self.batch_max_events.max(1) } else { 1 }
    }
}

/// The event types Pusher defines.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventKind {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
    CacheMiss,
    SubscriptionCount,
}

impl WebhookEventKind {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One event, serialized exactly as it appears in a webhook's `events` array.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    ChannelOccupied {
        channel: Arc<str>,
    },
    ChannelVacated {
        channel: Arc<str>,
    },
    MemberAdded {
        channel: Arc<str>,
        user_id: Arc<str>,
    },
    MemberRemoved {
        channel: Arc<str>,
        user_id: Arc<str>,
    },
    ClientEvent {
        channel: Arc<str>,
        event: String,
        /// The event's data as JSON text (a string, as Pusher sends it).
        data: String,
        socket_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<Arc<str>>,
    },
    CacheMiss {
        channel: Arc<str>,
    },
    /// The channel's subscriptions on this node, throttled (see [`COUNT_THROTTLE`]).
    SubscriptionCount {
        channel: Arc<str>,
        subscription_count: usize,
    },
}

impl WebhookEvent {
    pub fn kind(&self) -> WebhookEventKind {
        match self {
            Self::ChannelOccupied { .. } => WebhookEventKind::ChannelOccupied,
            Self::ChannelVacated { .. } => WebhookEventKind::ChannelVacated,
            Self::MemberAdded { .. } => WebhookEventKind::MemberAdded,
            Self::MemberRemoved { .. } => WebhookEventKind::MemberRemoved,
            Self::ClientEvent { .. } => WebhookEventKind::ClientEvent,
            Self::CacheMiss { .. } => WebhookEventKind::CacheMiss,
            Self::SubscriptionCount { .. } => WebhookEventKind::SubscriptionCount,
        }
    }

    /// The JSON object stored in the outbox and sent in `events`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why an outbox call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("webhook outbox unavailable: {0}")]
    Unavailable(String),
}

/// An event waiting for delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Increases with every append (also replays) in the whole store.
    pub id: u64,
    /// The event's JSON object.
    pub event: String,
}

/// An event whose delivery was given up, kept until replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: u64,
    pub url: String,
    /// The event's JSON object as text.
    pub event: String,
    /// When it was given up (unix ms).
    pub failed_at_ms: u64,
    /// The last failure, e.g. `HTTP 500` or `timed out`.
    pub reason: String,
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    All,
    Ids(Vec<u64>),
}

pub type OutboxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OutboxError>> + Send + 'a>>;

/// Where queued webhook events and dead letters are kept, per (app, endpoint url). Every
/// implementation passes [`conformance`].
pub trait WebhookOutbox: Send + Sync + std::fmt::Debug {
    /// Queues `events` (JSON objects) for `url`, after everything queued before.
    fn append(&self, app: &str, url: &str, events: Vec<String>) -> OutboxFuture<'_, ()>;
    /// Up to `limit` of `url`'s queued events, oldest first.
    fn pending(&self, app: &str, url: &str, limit: usize) -> OutboxFuture<'_, Vec<Queued>>;
    /// How many events are queued for `url` now (for `/metrics`: a count, no event is read).
    fn pending_count(&self, app: &str, url: &str) -> OutboxFuture<'_, u64>;
    /// Removes delivered events.
    fn delivered(&self, app: &str, url: &str, ids: Vec<u64>) -> OutboxFuture<'_, ()>;
    /// Moves queued events to the dead letters.
    fn bury(&self, app: &str, url: &str, ids: Vec<u64>, reason: &str, at_ms: u64) -> OutboxFuture<'_, ()>;
    /// Up to `limit` of the app's dead letters, oldest first.
    fn dead_letters(&self, app: &str, limit: usize) -> OutboxFuture<'_, Vec<DeadLetter>>;
    /// Queues dead letters again (each at the end of its endpoint's queue, oldest first); returns
    /// how many.
    fn replay(&self, app: &str, which: Replay) -> OutboxFuture<'_, u64>;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_pusher_sends_them() {
        let check = |event: WebhookEvent, expected: &str| assert_eq!(event.to_json(), expected);
        check(WebhookEvent::ChannelOccupied { channel: "a".into() }, r#"{"name":"channel_occupied","channel":"a"}"#);
        check(
            WebhookEvent::MemberRemoved { channel: "presence-a".into(), user_id: "7".into() },
            r#"{"name":"member_removed","channel":"presence-a","user_id":"7"}"#,
        );
        check(
            WebhookEvent::ClientEvent {
                channel: "private-a".into(),
                event: "client-x".into(),
                data: r#"{"n":1}"#.into(),
                socket_id: "1.2".into(),
                user_id: None,
            },
            r#"{"name":"client_event","channel":"private-a","event":"client-x","data":"{\"n\":1}","socket_id":"1.2"}"#,
        );
    }

    #[test]
    fn config_checks_the_url() {
        let config = |url: &str| WebhookConfig { url: url.into(), ..WebhookConfig::default() };
        assert_eq!(config("http://127.0.0.1:9/hook").check(), Ok(()));
        assert_eq!(config("https://example.com/").check(), Err(WebhookConfigError::Url));
        assert_eq!(config("http:///x").check(), Err(WebhookConfigError::Url));
        assert_eq!(config("http://user:pw@h/x").check(), Err(WebhookConfigError::Url));
    }
}
