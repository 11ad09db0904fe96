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
    /// HTTP API answers by app and status class, for `/metrics`.
    pub api_requests: Arc<crate::metrics::ApiRequests>,
    /// Which new connections this node takes (rate, per address), and the refusals counted.
    pub admission: Arc<crate::admission::Admission>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, settings: ServerConfig, engine: Option<Arc<dyn Engine>>) -> Self {
        let close_pacer = Arc::new(ClosePacer::new(settings.shutdown_close_rate));
        let api_requests = Arc::new(crate::metrics::ApiRequests::new(&registry));
        let admission = Arc::new(crate::admission::Admission::new(&settings, Instant::now()));
        Self {
            registry,
            settings: Arc::new(settings),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            close_pacer,
            http_sessions: Arc::default(),
            engine,
            api_requests,
            admission,
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

/// Spreads shutdown closes over time, so that clients told to reconnect (pusher-js does so at once
/// on 4200) do not all arrive at the other nodes in the same instant: the n-th close waits n / rate
/// seconds plus a pseudo-random part of its own slot (jitter without lockstep). When the configured
/// rate would not reach every connection before the grace deadline, [`ClosePacer::begin`] raises
/// it, so that all of them hear 4200 within 80% of the grace rather than being cut off.
#[derive(Debug)]
pub struct ClosePacer {
    configured: u64,
    per_second: AtomicU64,
    next: AtomicU64,
    start: Mutex<Option<Instant>>,
}

impl ClosePacer {
    pub fn new(per_second: u32) -> Self {
        let configured = u64::from(per_second.max(1));
        Self { configured, per_second: AtomicU64::new(configured), next: AtomicU64::new(0), start: Mutex::new(None) }
    }

    /// Starts the drain of `connections` connections, which must all be closed `within`.
    pub fn begin(&self, connections: usize, within: Duration) {
        let budget = (within.as_secs_f64() * 0.8).max(0.001);
        let needed = (connections as f64 / budget).ceil() as u64;
        self.per_second.store(self.configured.max(needed), Ordering::Relaxed);
        *self.start.lock() = Some(Instant::now());
    }

    pub async fn wait_turn(&self) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let start = *self.start.lock().get_or_insert_with(Instant::now);
        let rate = self.per_second.load(Ordering::Relaxed).max(1);
        let slot_us = (1_000_000 / rate).max(1);
        let offset_us = turn.saturating_mul(1_000_000) / rate + spread(turn) % slot_us;
        tokio::time::sleep_until(start + Duration::from_micros(offset_us)).await;
    }
}

/// A well-mixed number from a turn number (splitmix64): jitter that needs no random source.
pub(crate) fn spread(turn: u64) -> u64 {
    let mut z = turn.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `connections` turns on a paused clock; returns when each one's wait ended.
    async fn turns(pacer: Arc<ClosePacer>, connections: usize) -> Vec<Duration> {
        let began = Instant::now();
        let waits: Vec<_> = (0..connections)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.wait_turn().await;
                    began.elapsed()
                })
            })
            .collect();
        let mut ended = Vec::new();
        for wait in waits {
            ended.push(wait.await.expect("turn"));
        }
        ended
    }

    #[tokio::test(start_paused = true)]
    async fn closes_keep_the_configured_rate_with_jitter_inside_each_slot() {
        let pacer = Arc::new(ClosePacer::new(100));
        pacer.begin(200, Duration::from_secs(10));
        let ended = turns(pacer, 200).await;
        for (n, at) in ended.iter().enumerate() {
            let slot = Duration::from_millis(10 * n as u64);
            // Tokio's timers fire on whole milliseconds: the end of a slot rounds up to it.
            assert!(*at >= slot && *at <= slot + Duration::from_millis(10), "turn {n} at {at:?}");
        }
        let offsets: std::collections::BTreeSet<u128> = ended.iter().map(|at| at.as_millis() % 10).collect();
        assert!(offsets.len() >= 8, "the moments inside slots vary: {offsets:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_too_slow_for_the_deadline_is_raised_to_meet_it() {
        let pacer = Arc::new(ClosePacer::new(100));
        pacer.begin(5000, Duration::from_secs(10));
        let ended = turns(pacer, 5000).await;
        let last = ended.iter().max().copied().unwrap_or_default();
        assert!(last <= Duration::from_secs(8), "the last close came at {last:?}, after 80% of the grace");
        assert!(last >= Duration::from_secs(7), "and the closes were still spread: last at {last:?}");
    }
}
