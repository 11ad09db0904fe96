//! The command line, declared once; `--help` output comes from these doc comments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Herald: a self-hosted realtime hub that speaks the Pusher Channels protocol.
///
/// pusher-js, Laravel Echo and the official Pusher server SDKs work against it unchanged.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (WebSocket at /app/{key}, HTTP API at /apps/{id}/...).
    ///
    /// With no app configured, serves a development app (id 1, key herald-dev-key,
    /// secret herald-dev-secret) on loopback only, and says so in the log.
    Serve(ServeArgs),
    /// Print a configuration file with every option, its default and a comment.
    PrintDefaultConfig,
    /// Load the configuration as `serve` would, report problems, and exit without serving.
    CheckConfig(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file ([server] and [[apps]]); see `herald print-default-config`.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:6001].
    #[arg(long, env = "HERALD_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// An app as ID:KEY:SECRET, with default settings. Repeatable; the environment variable takes
    /// a comma-separated list. Added to the apps of --config.
    #[arg(long = "app", env = "HERALD_APPS", value_name = "ID:KEY:SECRET", value_delimiter = ',')]
    pub apps: Vec<String>,
    /// Directory for durable state [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds of client silence before a ping, announced to clients [default: 120].
    #[arg(long, env = "HERALD_ACTIVITY_TIMEOUT", value_name = "SECS")]
    pub activity_timeout: Option<u64>,
    /// Log format; the level filter comes from HERALD_LOG (e.g. "info", "herald_core=debug").
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
