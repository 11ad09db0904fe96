//! Herald's server: configuration, the WebSocket transport, the signed HTTP API, and shutdown.
//!
//! [`run`] takes an already bound listener and a shutdown future, so tests bind `127.0.0.1:0` and
//! stop the server when they are done. This is the one crate that knows axum; the domain lives in
//! `herald-core` and the wire format in `herald-protocol`.

pub mod api;
pub mod config;
pub mod listener;
pub mod router;
pub mod state;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

use herald_core::{HistoryStore, Registry, RegistryError};
use tokio::net::TcpListener;
use tokio::time::{Duration, Instant};

pub use config::{Config, ConfigError, ServerConfig};
pub use state::AppState;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Apps(#[from] RegistryError),
    #[error("no app configured")]
    NoApps,
    #[error(transparent)]
    History(#[from] herald_sqlite::OpenError),
}

/// How often expired cache entries of unsubscribed channels are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often idle HTTP fallback sessions are looked for.
const HTTP_SESSION_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `config` on `listener` until `shutdown` completes, then closes every connection with
/// 4200 (paced) and waits up to `shutdown_grace_secs` for them to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    if config.apps.is_empty() {
        return Err(ServeError::NoApps);
    }
    let store: Option<Arc<dyn HistoryStore>> = match config.server.durable_history {
        true => {
            let path = config.server.data_dir.join("history.sqlite3");
            tracing::info!(path = %path.display(), "durable history on");
            Some(Arc::new(herald_sqlite::SqliteHistory::open(&path)?))
        }
        false => None,
    };
    let registry = Registry::with_store(config.apps, store)?;
    let state = AppState::new(registry, config.server);
    let sweeper = tokio::spawn(sweep(state.clone()));
    let grace = Duration::from_secs(state.settings.shutdown_grace_secs);
    let token = state.shutdown.clone();
    let http_sessions = state.http_sessions.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: closing connections with 4200");
        token.cancel();
        http_sessions.close_all();
    });
    let app = router::router(state.clone());
    let max_http = state.settings.max_http_connections;
    listener::serve(listener, app, max_http, state.shutdown.clone(), grace).await;
    state.tracker.close();
    if tokio::time::timeout(grace, state.tracker.wait()).await.is_err() {
        tracing::warn!(remaining = state.tracker.len(), "shutdown grace period over; exiting with connections open");
    }
    sweeper.abort();
    for app in state.registry.apps() {
        app.close();
    }
    Ok(())
}

async fn sweep(state: AppState) {
    let mut interval = tokio::time::interval(HTTP_SESSION_SWEEP_INTERVAL);
    let mut last_channel_sweep = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        state.http_sessions.sweep(now, Duration::from_secs(state.settings.http_session_timeout_secs));
        if now.saturating_duration_since(last_channel_sweep) >= SWEEP_INTERVAL {
            last_channel_sweep = now;
            for app in state.registry.apps() {
                app.sweep(now);
            }
        }
    }
}
