//! One tenant: its configuration and its live state on this node.
//!
//! Everything an app owns (channels, members, signed-in users, connection count) hangs off [`App`],
//! so nothing can cross from one app to another. The settings are Pusher's defaults unless the
//! operator says otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_protocol::Secret;
use serde::{Deserialize, Serialize};
use tokio::time::Duration;

use crate::engine::{Engine, Retention};
use crate::history::HistoryLimits;
use crate::hub::{Hub, HubLimits};
use crate::idempotency::Idempotency;
use crate::jobs::QueueConfig;
use crate::jobs::service::AppJobs;
use crate::metrics::{AppCounters, AppGauges};
use crate::store::{HistoryStore, StoreError};
use crate::users::Users;

/// Idempotency keys remembered per app at most (oldest forgotten first).
const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Client-event idempotency keys remembered per app at most.
const MAX_CLIENT_IDEMPOTENCY_KEYS: usize = 10_000;

/// Per-app settings, as read from `[[apps]]` in the config file or `--app ID:KEY:SECRET`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: Secret,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// Whether clients may send `client-*` events on private and presence channels.
    pub client_events: bool,
    /// Whether clients may sign in (`pusher:signin`).
    pub user_signin: bool,
    /// Connections allowed at once on this node; 0 means no limit. Over it: close 4004.
    pub max_connections: usize,
    /// Largest event `data` in bytes, on every ingress path (HTTP 413, client event 4305).
    pub max_payload_bytes: usize,
    pub max_channel_name_len: usize,
    pub max_event_name_len: usize,
    pub max_channels_per_connection: usize,
    /// Channels one HTTP publish may name.
    pub max_event_channels: usize,
    /// Events one `batch_events` call may carry.
    pub max_batch_events: usize,
    pub max_presence_members: usize,
    pub max_presence_user_info_bytes: usize,
    pub max_presence_user_id_len: usize,
    pub client_events_per_second: u32,
    pub max_watchlist_size: usize,
    /// When above 0, a connection that neither signs in nor subscribes to a private or presence
    /// channel within this many seconds is closed with 4009.
    pub require_auth_within_secs: u64,
    /// How long a cache channel keeps its last event.
    pub cache_ttl_secs: u64,
    /// Events kept per channel so that clients can resume; 0 turns history off.
    pub history_max_events: usize,
    /// How long events stay in history; 0 turns history off.
    pub history_max_age_secs: u64,
    /// How long a publish's `idempotency_key` is remembered; 0 turns idempotency off.
    pub idempotency_window_secs: u64,
    /// Items one feed may hold.
    pub feed_max_items: usize,
    /// Largest feed item value (JSON text) in bytes.
    pub feed_max_item_bytes: usize,
    /// Newest `count_unread` events remembered per channel; also the largest unread count reported.
    pub unread_keep: usize,
    /// Job queues (`[[apps.queues]]`).
    pub queues: Vec<QueueConfig>,
    /// Webhook endpoints (`[[apps.webhooks]]`).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// How long `channel_vacated` and `member_removed` wait, to be dropped if the channel or
    /// member comes back (a page refresh).
    pub webhook_leave_delay_ms: u64,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            key: String::new(),
            secret: Secret::new(""),
            enabled: true,
            client_events: true,
            user_signin: true,
            max_connections: 0,
            max_payload_bytes: 10 * 1024,
            max_channel_name_len: 200,
            max_event_name_len: 200,
            max_channels_per_connection: 100,
            max_event_channels: 100,
            max_batch_events: 10,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            max_presence_user_id_len: 128,
            client_events_per_second: 10,
            max_watchlist_size: 100,
            require_auth_within_secs: 0,
            cache_ttl_secs: 30 * 60,
            history_max_events: 100,
            history_max_age_secs: 5 * 60,
            idempotency_window_secs: 5 * 60,
            feed_max_items: 1000,
            feed_max_item_bytes: 10 * 1024,
            unread_keep: 1000,
            queues: Vec::new(),
            webhooks: Vec::new(),
            webhook_leave_delay_ms: 3000,
        }
    }
}

impl AppConfig {
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits { max_events: self.history_max_events, max_age: Duration::from_secs(self.history_max_age_secs) }
    }

    /// An app with default settings and the given credentials.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { id: id.into(), key: key.into(), secret: Secret::new(secret), ..Self::default() }
    }
}

fn hub_limits(config: &AppConfig) -> HubLimits {
    HubLimits {
        max_members: config.max_presence_members,
        history: config.history_limits(),
        cache_ttl: Duration::from_secs(config.cache_ttl_secs),
    }
}

/// An app's live state on this node.
#[derive(Debug)]
pub struct App {
    pub config: AppConfig,
    pub(crate) hub: Hub,
    pub(crate) users: Users,
    /// Keys of backend publishes.
    pub(crate) idempotency: Idempotency,
    /// Keys of client events: their own table, so clients cannot evict backend keys.
    pub(crate) client_idempotency: Idempotency,
    connections: AtomicUsize,
    /// Totals for `/metrics`.
    counters: AppCounters,
    pub(crate) jobs: AppJobs,
    /// Where feeds are kept (SQLite on one node, Redis with the Redis engine).
    pub(crate) feeds: std::sync::OnceLock<Arc<dyn crate::feeds::FeedStore>>,
    /// Where read cursors and counted serials are kept.
    pub(crate) cursors: std::sync::OnceLock<Arc<dyn crate::cursors::CursorStore>>,
    /// Where webhook events are reported; unset when the app has no webhook.
    pub(crate) webhooks: std::sync::OnceLock<crate::webhooks::WebhookSink>,
    /// Shared with other nodes: serials, delivery, presence, counts. `None` on a single node.
    pub(crate) engine: Option<Arc<dyn Engine>>,
}

impl App {
    pub fn new(config: AppConfig) -> Self {
        Self::with_hub(config, |hub| hub)
    }

    /// An app whose channels are shared with other nodes through `engine`.
    pub fn with_engine(config: AppConfig, engine: Arc<dyn Engine>) -> Self {
        let mut app = Self::with_hub(config, |hub| hub);
        app.hub = Hub::replica(app.hub_limits(), engine.clone(), &app.config.id);
        app.engine = Some(engine);
        app
    }

    fn hub_limits(&self) -> HubLimits {
        hub_limits(&self.config)
    }

    /// How the engine keeps `channel`'s events for this app.
    pub(crate) fn retention(&self, is_cache: bool) -> Retention {
        let limits = self.config.history_limits();
        let max_events = if limits.enabled() { limits.max_events } else { 0 };
        Retention {
            max_events,
            max_age_ms: limits.max_age.as_millis() as u64,
            cache_ttl_ms: if is_cache { self.config.cache_ttl_secs * 1000 } else { 0 },
        }
    }

    /// An app whose channel history is kept in `store`, resuming what it kept before.
    pub fn with_store(config: AppConfig, store: Arc<dyn HistoryStore>) -> Result<Self, StoreError> {
        let kept = store.load(&config.id)?;
        let id = config.id.clone();
        Ok(Self::with_hub(config, |hub| hub.with_store(store, &id, kept, tokio::time::Instant::now())))
    }

    fn with_hub(config: AppConfig, attach: impl FnOnce(Hub) -> Hub) -> Self {
        let hub = attach(Hub::new(hub_limits(&config)));
        let window = Duration::from_secs(config.idempotency_window_secs);
        let idempotency = Idempotency::new(window, MAX_IDEMPOTENCY_KEYS);
        let client_idempotency = Idempotency::new(window, MAX_CLIENT_IDEMPOTENCY_KEYS);
        let jobs = AppJobs::new(&config.queues).unwrap_or_default();
        Self {
            config,
            hub,
            users: Users::default(),
            idempotency,
            client_idempotency,
            connections: AtomicUsize::new(0),
            counters: AppCounters::default(),
            jobs,
            feeds: std::sync::OnceLock::new(),
            cursors: std::sync::OnceLock::new(),
            webhooks: std::sync::OnceLock::new(),
            engine: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn key(&self) -> &str {
        &self.config.key
    }

    pub fn secret(&self) -> &Secret {
        &self.config.secret
    }

    /// Connections currently open on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// This app's totals (deliveries, publishes, drops, closes).
    pub fn counters(&self) -> &AppCounters {
        &self.counters
    }

    /// This app's live state on this node, computed now (never a kept tally).
    pub fn gauges(&self) -> AppGauges {
        AppGauges { connections: self.connection_count(), ..self.hub.gauges() }
    }

    /// Counts a new connection unless the app is at its limit.
    pub(crate) fn try_add_connection(&self) -> bool {
        let max = self.config.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1))
            .is_ok()
    }

    pub(crate) fn remove_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Drops expired cache entries of channels nobody is subscribed to. Called periodically.
    pub fn sweep(&self, now: tokio::time::Instant) {
        self.hub.sweep(now);
    }

    /// Writes durable history and marks it cleanly stopped (on graceful shutdown).
    pub fn close(&self) {
        self.hub.close();
    }
}
