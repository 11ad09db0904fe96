//! The configuration tree: `[server]` settings and `[[apps]]`, with defaults in one place.
//!
//! Parsing binds no port and opens no file but the one it is given, so `herald check-config` and
//! tests can use it freely. Command-line flags and `HERALD_*` variables are applied by the binary on
//! top of what is parsed here. [`DEFAULT_CONFIG`] is the commented file `herald print-default-config`
//! prints; a test keeps it equal to the defaults below.

use std::net::SocketAddr;
use std::path::PathBuf;

use herald_core::AppConfig;
use serde::{Deserialize, Serialize};

/// Everything `herald serve` needs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub apps: Vec<AppConfig>,
}

/// Node-wide settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Where durable state is kept.
    pub data_dir: PathBuf,
    /// Keep channel history in `data_dir/history.sqlite3`, so that a restart keeps epochs and
    /// serials and clients resume across it. Off: a restart starts new epochs.
    pub durable_history: bool,
    /// Seconds of silence after which the server pings a client; announced in
    /// `pusher:connection_established`.
    pub activity_timeout_secs: u64,
    /// Seconds a client has to answer a ping before it is closed with 4201.
    pub pong_timeout_secs: u64,
    /// Bytes of frames that may wait for one slow connection before it is closed with 4100.
    pub max_queued_bytes: usize,
    /// Largest HTTP API request body.
    pub max_request_body_bytes: usize,
    /// HTTP connections (not yet upgraded to WebSocket) served at once; more are refused.
    pub max_http_connections: usize,
    /// An HTTP API request (body included) that takes longer is answered 408.
    pub request_timeout_secs: u64,
    /// An HTTP-fallback (xhr_streaming/xhr_polling) session with no receive request for this long
    /// is closed: pusher-js sends nothing when it leaves over HTTP.
    pub http_session_timeout_secs: u64,
    /// On SIGTERM, connections are told to reconnect (4200) at most this many per second.
    pub shutdown_close_rate: u32,
    /// On SIGTERM, how long to wait for connections to finish before exiting.
    pub shutdown_grace_secs: u64,
    /// New connections (every transport) this node accepts per second; more are answered 503 with
    /// `Retry-After`. 0 = no limit.
    pub max_new_connections_per_sec: u32,
    /// How many new connections may arrive at once before the per-second rate applies.
    pub max_new_connections_burst: u32,
    /// Connections one client address may hold at once; more are answered 429. 0 = no limit.
    pub max_connections_per_ip: u32,
    /// A WebSocket connection holding no subscription this long after it opened is closed with
    /// 4009. 0 = never.
    pub subscribe_within_secs: u64,
    /// Where state shared between nodes lives: `memory` (this node alone) or `redis`.
    pub engine: EngineKind,
    /// The Redis server of the `redis` engine.
    pub redis_url: String,
    /// Starts every Redis key and pub/sub channel; deployments with different prefixes never meet.
    pub redis_prefix: String,
    /// A node that stops renewing its lease for this long is dead: its presence members leave.
    pub node_lease_secs: u64,
    /// Serve `GET /metrics` (Prometheus text, counts per app id only) without authentication.
    pub metrics: bool,
    /// Serve the operator console at `GET /console` (it signs API requests in the browser).
    pub console: bool,
    /// Browser origins (e.g. `https://admin.example.com`, or `*`) whose pages may read the signed
    /// HTTP API's answers. Empty: none (the API is for backends).
    pub cors_allowed_origins: Vec<String>,
    /// PEM certificate chain: with `tls_key`, the listener speaks TLS only (`wss://`, `https://`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Which engine holds the state nodes share.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One node; nothing is shared.
    #[default]
    Memory,
    /// Several nodes share one Redis.
    Redis,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 6001)),
            data_dir: PathBuf::from("./herald-data"),
            durable_history: false,
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            max_queued_bytes: herald_core::outbox::DEFAULT_MAX_QUEUED_BYTES,
            max_request_body_bytes: 1 << 20,
            max_http_connections: 10_000,
            request_timeout_secs: 30,
            http_session_timeout_secs: 10,
            shutdown_close_rate: 2000,
            shutdown_grace_secs: 10,
            max_new_connections_per_sec: 5000,
            max_new_connections_burst: 5000,
            max_connections_per_ip: 0,
            subscribe_within_secs: 0,
            engine: EngineKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "herald".into(),
            node_lease_secs: 10,
            metrics: true,
            console: true,
            cors_allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration in {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid --app/HERALD_APPS entry #{0}: expected ID:KEY:SECRET (secrets may not contain ',')")]
    AppSpec(usize),
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("app {app}: {source}")]
    Webhook { app: String, source: herald_core::webhooks::WebhookConfigError },
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks settings that would make the server misbehave rather than fail to start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        let nonzero = [
            ("server.activity_timeout_secs", server.activity_timeout_secs as usize),
            ("server.pong_timeout_secs", server.pong_timeout_secs as usize),
            ("server.max_queued_bytes", server.max_queued_bytes),
            ("server.max_request_body_bytes", server.max_request_body_bytes),
            ("server.max_http_connections", server.max_http_connections),
            ("server.request_timeout_secs", server.request_timeout_secs as usize),
            ("server.http_session_timeout_secs", server.http_session_timeout_secs as usize),
            ("server.shutdown_close_rate", server.shutdown_close_rate as usize),
            ("server.node_lease_secs", server.node_lease_secs as usize),
        ];
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            return Err(ConfigError::Conflict("tls_cert and tls_key are given together or not at all"));
        }
        if server.engine == EngineKind::Redis && server.durable_history {
            return Err(ConfigError::Conflict("durable_history is for the memory engine; Redis keeps history itself"));
        }
        for app in &self.apps {
            for webhook in &app.webhooks {
                webhook.check().map_err(|source| ConfigError::Webhook { app: app.id.clone(), source })?;
            }
        }
        match nonzero.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}

/// Parses `ID:KEY:SECRET` (the secret may itself contain ':'). Errors name the entry by position
/// only, so a mistyped secret never reaches the terminal or a log.
pub fn parse_app_spec(index: usize, spec: &str) -> Result<AppConfig, ConfigError> {
    let mut parts = spec.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(key), Some(secret)) if !id.is_empty() && !key.is_empty() && !secret.is_empty() => {
            Ok(AppConfig::new(id, key, secret))
        }
        _ => Err(ConfigError::AppSpec(index)),
    }
}

/// The file printed by `herald print-default-config`: every option, its default, and why.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_are_the_real_defaults() {
        let printed = Config::from_toml(DEFAULT_CONFIG).unwrap();
        assert_eq!(printed.server, ServerConfig::default());
        let app = &printed.apps[0];
        let expected = AppConfig::new("1", "herald-dev-key", "herald-dev-secret");
        assert_eq!(app, &expected);
    }

    #[test]
    fn unknown_options_are_errors() {
        let error = Config::from_toml("[server]\nbindd = \"1.2.3.4:5\"").unwrap_err();
        assert!(error.to_string().contains("bindd"), "{error}");
        assert!(Config::from_toml("[[apps]]\nid = \"1\"\nmax_conections = 3").is_err());
    }

    #[test]
    fn app_specs() {
        let app = parse_app_spec(1, "1:key:se:cret").unwrap();
        assert_eq!((app.id.as_str(), app.key.as_str(), app.secret.expose()), ("1", "key", "se:cret"));
        assert!(parse_app_spec(1, "1:key").is_err());
        let error = parse_app_spec(2, "1::hunter2").unwrap_err().to_string();
        assert!(error.contains("#2") && !error.contains("hunter2"), "{error}");
    }
}
