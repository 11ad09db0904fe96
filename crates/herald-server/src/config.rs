//! The configuration tree: `[server]` settings and `[[apps]]`, with defaults in one place.
//!
//! Parsing binds no port and opens no file but the one it is given, so `herald check-config` and
//! tests can use it freely. Command-line flags and `HERALD_*` variables are applied by the binary on
//! top of what is parsed here. [`DEFAULT_CONFIG`] is the commented file `herald print-default-config`
//! prints; a test keeps it equal to the defaults below.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Reverse proxies (addresses and CIDR ranges) whose `X-Forwarded-For` names the client address
    /// that `max_connections_per_ip` counts. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
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
            trusted_proxies: Vec::new(),
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

/// An IP address or CIDR range, as `trusted_proxies` lists them: `10.0.0.1`, `10.0.0.0/8`, `::1`,
/// `fd00::/8`. Parsed when the file is read, so a bad entry stops the server at start. An
/// IPv4-mapped range (`::ffff:10.0.0.0/104`) is kept as its IPv4 range; an address is compared in
/// its canonical form, so `::ffff:10.1.2.3` is in `10.0.0.0/8` and no IPv4 address is in an IPv6
/// range such as `::/0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    /// The first address of the range (no bits set past the prefix).
    network: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` (or the IPv4 address it maps) is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => u32::from(ip) & v4_mask(self.prefix) == u32::from(network),
            (IpAddr::V6(network), IpAddr::V6(ip)) => u128::from(ip) & v6_mask(self.prefix) == u128::from(network),
            _ => false,
        }
    }

    fn width(ip: IpAddr) -> u8 {
        if ip.is_ipv4() { 32 } else { 128 }
    }

    /// `ip` with every bit past `prefix` cleared.
    fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
        match ip {
            IpAddr::V4(ip) => IpAddr::from((u32::from(ip) & v4_mask(prefix)).to_be_bytes()),
            IpAddr::V6(ip) => IpAddr::from((u128::from(ip) & v6_mask(prefix)).to_be_bytes()),
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Why a `trusted_proxies` entry was refused; the message quotes the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("trusted proxy {0:?} is not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)")]
    Address(String),
    #[error("trusted proxy {entry:?}: the prefix length must be a number from 0 to {width}")]
    Prefix { entry: String, width: u8 },
    #[error("trusted proxy {entry:?} has bits set past its prefix length; did you mean {network}?")]
    HostBits { entry: String, network: IpNet },
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(entry: &str) -> Result<Self, IpNetError> {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let ip: IpAddr = address.parse().map_err(|_| IpNetError::Address(entry.into()))?;
        let width = Self::width(ip);
        let prefix = match prefix {
            None => width,
            // Digits only: `u8::from_str` would also take "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= width).ok_or(IpNetError::Prefix { entry: entry.into(), width })?
            }
            Some(_) => return Err(IpNetError::Prefix { entry: entry.into(), width }),
        };
        let (ip, prefix) = match ip {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => (ip.to_canonical(), prefix - 96),
            _ => (ip, prefix),
        };
        let network = Self::masked(ip, prefix);
        if network != ip {
            return Err(IpNetError::HostBits { entry: entry.into(), network: Self { network, prefix } });
        }
        Ok(Self { network, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;

    fn try_from(entry: String) -> Result<Self, IpNetError> {
        entry.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        net.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Self::width(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
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

    /// `entry` parses as a range holding exactly the `inside` addresses of those given.
    fn check(entry: &str, inside: &[&str], outside: &[&str]) {
        let net: IpNet = entry.parse().unwrap_or_else(|error| panic!("{entry}: {error}"));
        for ip in inside {
            assert!(net.contains(ip.parse().unwrap()), "{ip} should be in {entry}");
        }
        for ip in outside {
            assert!(!net.contains(ip.parse().unwrap()), "{ip} should not be in {entry}");
        }
    }

    #[test]
    fn trusted_proxy_ranges() {
        check("127.0.0.1", &["127.0.0.1", "::ffff:127.0.0.1"], &["127.0.0.2", "::1", "0.0.0.0"]);
        check("127.0.0.1/32", &["127.0.0.1"], &["127.0.0.0"]);
        check("10.0.0.0/8", &["10.0.0.0", "10.255.255.255", "::ffff:10.1.2.3"], &["11.0.0.0", "9.255.255.255"]);
        check("0.0.0.0/0", &["0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"], &["::", "::1"]);
        check("192.168.1.128/25", &["192.168.1.128", "192.168.1.255"], &["192.168.1.127"]);
        check("::1", &["::1"], &["::2", "127.0.0.1"]);
        check("::1/128", &["::1"], &["::"]);
        check("fd00::/8", &["fd00::1", "fdff:ffff::"], &["fe00::", "fc00::"]);
        check("::/0", &["::", "ffff::1", "2001:db8::1"], &["1.2.3.4", "::ffff:1.2.3.4"]);
        check("2001:db8::/32", &["2001:db8:ffff::1"], &["2001:db9::"]);
        // IPv4-mapped ranges are their IPv4 range, whichever way the address is written.
        check("::ffff:10.0.0.0/104", &["10.9.9.9", "::ffff:10.9.9.9"], &["11.0.0.0"]);
        check("::ffff:127.0.0.1", &["127.0.0.1"], &["127.0.0.2"]);
        assert_eq!("::ffff:10.0.0.0/104".parse::<IpNet>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("::ffff:0.0.0.0/96".parse::<IpNet>().unwrap().to_string(), "0.0.0.0/0");
        for shown in ["127.0.0.1", "10.0.0.0/8", "0.0.0.0/0", "::1", "fd00::/8", "::/0"] {
            assert_eq!(shown.parse::<IpNet>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn bad_trusted_proxies_are_refused_naming_the_entry_and_why() {
        let address = "not an IP address";
        let prefix = "prefix length";
        let host_bits = "bits set past";
        for (entry, why) in [
            ("", address),
            ("localhost", address),
            ("10.0.0", address),
            ("10.0.0.256", address),
            (" 10.0.0.1", address),
            ("010.0.0.1", address),
            ("fe80::1%eth0", address),
            ("10.0.0.0/", prefix),
            ("10.0.0.0/33", prefix),
            ("10.0.0.0/+8", prefix),
            ("10.0.0.0/-1", prefix),
            ("10.0.0.0/8/8", prefix),
            ("10.0.0.0/0008", prefix),
            ("::/129", prefix),
            ("::/256", prefix),
            ("10.0.0.1/8", host_bits),
            ("fd00::1/8", host_bits),
            ("::ffff:10.0.0.1/104", host_bits),
        ] {
            let error = entry.parse::<IpNet>().unwrap_err().to_string();
            assert!(error.contains(why) && error.contains(&format!("{entry:?}")), "{entry:?}: {error}");
        }
        let error = "10.0.0.1/8".parse::<IpNet>().unwrap_err().to_string();
        assert!(error.contains("did you mean 10.0.0.0/8?"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_read_from_the_file_and_a_bad_one_is_named() {
        let config = Config::from_toml("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]").unwrap();
        let shown: Vec<String> = config.server.trusted_proxies.iter().map(IpNet::to_string).collect();
        assert_eq!(shown, ["127.0.0.1", "10.0.0.0/8", "::1"]);
        let error = Config::from_toml("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/33\"]").unwrap_err();
        let error = error.to_string();
        assert!(error.contains("\"10.0.0.0/33\"") && error.contains("0 to 32") && error.contains("line 2"), "{error}");
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
