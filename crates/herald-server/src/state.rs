//! What every request handler and connection task shares: the apps, the settings, and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::Registry;
use herald_core::engine::Engine;
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::transport::http_fallback::HttpSessions;

#[derive(Clone, Debug)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub settings: Arc<ServerConfig>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so that shutdown can wait for them.
    pub tracker: TaskTracker,
    pub close_pacer: Arc<ClosePacer>,
    /// pusher-js HTTP fallback sessions.
    pub http_sessions: Arc<HttpSessions>,
    /// The engine shared with other nodes, if any.
    pub engine: Option<Arc<dyn Engine>>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, settings: ServerConfig, engine: Option<Arc<dyn Engine>>) -> Self {
        let close_pacer = Arc::new(ClosePacer::new(settings.shutdown_close_rate));
        Self {
            registry,
            settings: Arc::new(settings),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            close_pacer,
            http_sessions: Arc::default(),
            engine,
        }
    }

    /// Whether this node can serve: its engine (if any) delivers.
    pub fn is_ready(&self) -> bool {
        self.engine.as_ref().is_none_or(|engine| engine.is_ready())
    }

    /// The WebSocket message cap: room for the largest app payload plus envelope, never below
    /// 64 KiB. Frames between an app's limit and this cap get a `pusher:error` 4305; larger ones
    /// end the connection (1009).
    pub fn max_ws_message_bytes(&self) -> usize {
        let largest = self.registry.apps().map(|a| a.config.max_payload_bytes).max().unwrap_or(0);
        (largest * 2 + 4096).max(64 * 1024)
    }
}

/// Spreads shutdown closes over time: the n-th connection to ask waits n / rate seconds.
#[derive(Debug)]
pub struct ClosePacer {
    per_second: u64,
    next: AtomicU64,
    start: Mutex<Option<Instant>>,
}

impl ClosePacer {
    pub fn new(per_second: u32) -> Self {
        Self { per_second: u64::from(per_second.max(1)), next: AtomicU64::new(0), start: Mutex::new(None) }
    }

    pub async fn wait_turn(&self) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let start = *self.start.lock().get_or_insert_with(Instant::now);
        let offset = Duration::from_micros(turn.saturating_mul(1_000_000) / self.per_second);
        tokio::time::sleep_until(start + offset).await;
    }
}
