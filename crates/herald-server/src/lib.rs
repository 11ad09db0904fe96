//! Herald's server: configuration, the WebSocket transport, the signed HTTP API, and shutdown.
//!
//! [`run`] takes an already bound listener and a shutdown future, so tests bind `127.0.0.1:0` and
//! stop the server when they are done. This is the one crate that knows axum; the domain lives in
//! `herald-core` and the wire format in `herald-protocol`.

pub mod admission;
pub mod api;
pub mod config;
pub mod console;
pub mod cors;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod router;
pub mod state;
pub mod tls;
pub mod transport;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use config::EngineKind;
use herald_core::cursors::CursorStore;
use herald_core::engine::Engine;
use herald_core::feeds::FeedStore;
use herald_core::jobs::JobStore;
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
    #[error(transparent)]
    State(#[from] herald_sqlite::StateError),
    #[error(transparent)]
    Redis(#[from] herald_redis::RedisEngineError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

/// How long a stopping node may take to withdraw its presence and counts from the engine.
const ENGINE_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often expired cache entries of unsubscribed channels are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often expired job leases are looked for.
const JOB_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
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
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let Shared { engine, jobs: shared_jobs, state: shared_state } = engine(&config.server).await?;
    let registry = match &engine {
        Some(engine) => Registry::with_engine(config.apps, engine.clone())?,
        None => Registry::with_store(config.apps, history_store(&config.server)?)?,
    };
    let registry = Arc::new(registry);
    herald_core::cluster::attach(&registry);
    let jobs = job_store(&config.server, &registry, shared_jobs)?;
    let kept_state = state_store(&config.server, &registry, shared_state)?;
    let webhooks = webhooks::start(&config.server, &registry)?;
    let state = AppState::new(registry, config.server, engine);
    let sweeper = tokio::spawn(sweep(state.clone()));
    let job_sweeper = jobs.map(|store| tokio::spawn(sweep_jobs(state.registry.clone(), store)));
    let grace = Duration::from_secs(state.settings.shutdown_grace_secs);
    let token = state.shutdown.clone();
    let http_sessions = state.http_sessions.clone();
    let (pacer, tracker) = (state.close_pacer.clone(), state.tracker.clone());
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(connections = tracker.len(), "shutting down: closing connections with 4200");
        pacer.begin(tracker.len(), grace);
        token.cancel();
        http_sessions.close_all();
    });
    let app = router::router(state.clone());
    let max_http = state.settings.max_http_connections;
    listener::serve(listener, app, max_http, state.shutdown.clone(), grace, tls).await;
    state.tracker.close();
    if tokio::time::timeout(grace, state.tracker.wait()).await.is_err() {
        tracing::warn!(remaining = state.tracker.len(), "shutdown grace period over; exiting with connections open");
    }
    for app_webhooks in webhooks {
        app_webhooks.close().await;
    }
    sweeper.abort();
    if let Some(job_sweeper) = job_sweeper {
        job_sweeper.abort();
    }
    for app in state.registry.apps() {
        app.close();
    }
    if let Some(store) = kept_state {
        for app in state.registry.apps() {
            store.save_positions(app.id(), app.positions().into_iter().map(booked_row).collect());
        }
        store.close();
    }
    if let Some(engine) = &state.engine {
        match tokio::time::timeout(ENGINE_CLOSE_TIMEOUT, engine.close()).await {
            Ok(Ok(())) => tracing::info!("left the cluster cleanly"),
            Ok(Err(error)) => tracing::warn!("could not leave the cluster cleanly (others will time us out): {error}"),
            Err(_) => tracing::warn!("leaving the cluster timed out (others will time us out)"),
        }
    }
    Ok(())
}

/// What several nodes share through an engine: nothing (all `None`) on the memory engine.
#[derive(Default)]
struct Shared {
    engine: Option<Arc<dyn Engine>>,
    jobs: Option<Arc<dyn JobStore>>,
    state: Option<(Arc<dyn FeedStore>, Arc<dyn CursorStore>)>,
}

/// The engine `settings` ask for and its stores; none for the memory engine (this node alone,
/// jobs, feeds and cursors in SQLite).
async fn engine(settings: &ServerConfig) -> Result<Shared, ServeError> {
    match settings.engine {
        EngineKind::Memory => Ok(Shared::default()),
        EngineKind::Redis => {
            let config = herald_redis::RedisConfig {
                url: settings.redis_url.clone(),
                prefix: settings.redis_prefix.clone(),
                node_lease: Duration::from_secs(settings.node_lease_secs),
            };
            let engine = herald_redis::RedisEngine::connect(config).await?;
            tracing::info!(node = engine.node_id(), prefix = %settings.redis_prefix, "engine: redis");
            let jobs: Arc<dyn JobStore> = Arc::new(engine.jobs());
            let feeds: Arc<dyn FeedStore> = Arc::new(engine.feeds());
            let cursors: Arc<dyn CursorStore> = Arc::new(engine.cursors());
            Ok(Shared { engine: Some(Arc::new(engine)), jobs: Some(jobs), state: Some((feeds, cursors)) })
        }
    }
}

/// The engine's job store (Redis), or `data_dir/jobs.sqlite3`, for the apps that declare queues.
fn job_store(
    settings: &ServerConfig,
    registry: &Registry,
    shared: Option<Arc<dyn JobStore>>,
) -> Result<Option<Arc<dyn JobStore>>, ServeError> {
    if !registry.apps().any(|app| app.has_queues()) {
        return Ok(None);
    }
    if let Some(store) = shared {
        for app in registry.apps().filter(|app| app.has_queues()) {
            app.attach_job_store(store.clone());
        }
        return Ok(Some(store));
    }
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| ServeError::DataDir { path: settings.data_dir.display().to_string(), source })?;
    let path = settings.data_dir.join("jobs.sqlite3");
    tracing::info!(path = %path.display(), "jobs kept in SQLite");
    let store: Arc<dyn JobStore> = Arc::new(herald_sqlite::SqliteJobs::open(&path)?);
    for app in registry.apps().filter(|app| app.has_queues()) {
        app.attach_job_store(store.clone());
    }
    Ok(Some(store))
}

/// Where feeds and read cursors live: the engine (Redis), or `data_dir/state.sqlite3` on one node,
/// which also keeps the positions of feed and counted channels across restarts. Returns the SQLite
/// store, to write those positions back at shutdown.
fn state_store(
    settings: &ServerConfig,
    registry: &Registry,
    shared: Option<(Arc<dyn FeedStore>, Arc<dyn CursorStore>)>,
) -> Result<Option<Arc<herald_sqlite::SqliteState>>, ServeError> {
    if let Some((feeds, cursors)) = shared {
        for app in registry.apps() {
            app.attach_feed_store(feeds.clone());
            app.attach_cursor_store(cursors.clone());
        }
        return Ok(None);
    }
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| ServeError::DataDir { path: settings.data_dir.display().to_string(), source })?;
    let store = Arc::new(herald_sqlite::SqliteState::open(&settings.data_dir.join("state.sqlite3"))?);
    let clean = store.was_clean();
    for app in registry.apps() {
        app.attach_feed_store(store.clone());
        app.attach_cursor_store(store.clone());
        let kept = store.booked(app.id())?;
        app.restore_positions(kept.into_iter().map(booked_position).collect(), clean);
    }
    Ok(Some(store))
}

fn booked_position(row: herald_sqlite::Booked) -> herald_core::hub::Booked {
    herald_core::hub::Booked { channel: row.channel.into(), epoch: row.epoch.into(), head: row.head }
}

fn booked_row(position: herald_core::hub::Booked) -> herald_sqlite::Booked {
    herald_sqlite::Booked {
        channel: position.channel.to_string(),
        epoch: position.epoch.to_string(),
        head: position.head,
    }
}

/// Takes back expired claims (telling each job's user) every second; prunes finished jobs every
/// minute.
async fn sweep_jobs(registry: Arc<Registry>, store: Arc<dyn JobStore>) {
    let mut interval = tokio::time::interval(JOB_SWEEP_INTERVAL);
    let mut last_prune = Instant::now();
    loop {
        interval.tick().await;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        match store.expire(now).await {
            Ok(changed) => {
                for (app_id, job) in changed {
                    if let Some(app) = registry.by_id(&app_id) {
                        tracing::info!(app = %app_id, job = %job.id, state = job.state.as_str(), "a job's lease ran out");
                        app.job_changed(&job).await;
                    }
                }
            }
            Err(error) => tracing::warn!("expired job leases not taken back: {error}"),
        }
        if last_prune.elapsed() >= SWEEP_INTERVAL {
            last_prune = Instant::now();
            for app in registry.apps() {
                app.prune_jobs().await;
            }
        }
    }
}

fn history_store(settings: &ServerConfig) -> Result<Option<Arc<dyn HistoryStore>>, ServeError> {
    if !settings.durable_history {
        return Ok(None);
    }
    let path = settings.data_dir.join("history.sqlite3");
    tracing::info!(path = %path.display(), "durable history on");
    Ok(Some(Arc::new(herald_sqlite::SqliteHistory::open(&path)?)))
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
