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

use config::EngineKind;
use herald_core::engine::Engine;
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
    Redis(#[from] herald_redis::RedisEngineError),
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
    let (engine, shared_jobs) = engine(&config.server).await?;
    let registry = match &engine {
        Some(engine) => Registry::with_engine(config.apps, engine.clone())?,
        None => Registry::with_store(config.apps, history_store(&config.server)?)?,
    };
    let registry = Arc::new(registry);
    herald_core::cluster::attach(&registry);
    let jobs = job_store(&config.server, &registry, shared_jobs)?;
    let state = AppState::new(registry, config.server, engine);
    let sweeper = tokio::spawn(sweep(state.clone()));
    let job_sweeper = jobs.map(|store| tokio::spawn(sweep_jobs(state.registry.clone(), store)));
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
    if let Some(job_sweeper) = job_sweeper {
        job_sweeper.abort();
    }
    for app in state.registry.apps() {
        app.close();
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

/// The engine `settings` ask for and its job store; `None` for the memory engine (this node
/// alone, jobs in SQLite).
async fn engine(settings: &ServerConfig) -> Result<(Option<Arc<dyn Engine>>, Option<Arc<dyn JobStore>>), ServeError> {
    match settings.engine {
        EngineKind::Memory => Ok((None, None)),
        EngineKind::Redis => {
            let config = herald_redis::RedisConfig {
                url: settings.redis_url.clone(),
                prefix: settings.redis_prefix.clone(),
                node_lease: Duration::from_secs(settings.node_lease_secs),
            };
            let engine = herald_redis::RedisEngine::connect(config).await?;
            tracing::info!(node = engine.node_id(), prefix = %settings.redis_prefix, "engine: redis");
            let jobs: Arc<dyn JobStore> = Arc::new(engine.jobs());
            Ok((Some(Arc::new(engine)), Some(jobs)))
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
