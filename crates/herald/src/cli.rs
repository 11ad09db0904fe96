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
    /// Publish one event through the signed HTTP API (defaults: the development app on
    /// 127.0.0.1:6001).
    Publish(PublishArgs),
    /// Load-test a Pusher-compatible server (Herald or another) on loopback.
    Bench(BenchArgs),
    /// Submit, list, inspect, cancel and requeue jobs (defaults: the development app).
    Jobs(JobsArgs),
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
    /// Herald's base URL (http only).
    #[arg(long, global = true, env = "HERALD_URL", default_value = "http://127.0.0.1:6001")]
    pub url: String,
    #[arg(long, global = true, env = "HERALD_APP_ID", default_value = "1")]
    pub app_id: String,
    #[arg(long, global = true, env = "HERALD_APP_KEY", default_value = "herald-dev-key")]
    pub key: String,
    #[arg(
        long,
        global = true,
        env = "HERALD_APP_SECRET",
        default_value = "herald-dev-secret",
        hide_default_value = true
    )]
    pub secret: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Submit a job to a queue.
    Submit {
        #[arg(long)]
        queue: String,
        /// The job's payload, as JSON.
        #[arg(long)]
        payload: String,
        /// The user told about every change (on their #server-to-user stream).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long, default_value_t = 0)]
        delay_secs: u64,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A queue's counts by state; with --state, its jobs in that state too.
    List {
        #[arg(long)]
        queue: String,
        /// queued, running, succeeded, failed, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One job, with its payload, progress, result or error.
    Inspect { id: String },
    /// Put a dead or failed job back in its queue, attempts reset.
    Requeue { id: String },
    /// Cancel a queued or running job.
    Cancel { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: BenchScenario,
    /// Server address as HOST:PORT.
    #[arg(long, global = true, default_value = "127.0.0.1:6001")]
    pub target: String,
    #[arg(long, global = true, default_value = "1")]
    pub app_id: String,
    #[arg(long, global = true, default_value = "herald-dev-key")]
    pub key: String,
    #[arg(long, global = true, default_value = "herald-dev-secret", hide_default_value = true)]
    pub secret: String,
    /// The server's process id, to read its memory and CPU time from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Loopback source addresses (127.0.0.1..N) to spread connections over.
    #[arg(long, global = true, default_value_t = 8)]
    pub source_addresses: u8,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchScenario {
    /// Hold N subscribed connections; report server memory per connection and connect rate.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// N subscribers on one channel; publish at RATE/s for SECONDS; report latency and loss.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Padding bytes added to each event's data.
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Jobs per second through submit → claim → finish over the HTTP API (the queue must exist).
    Jobs {
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        /// Workers, and as many submitters, running at once.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
    },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Channel to publish to. Repeatable.
    #[arg(long = "channel", required = true, value_name = "NAME")]
    pub channels: Vec<String>,
    /// Event name.
    #[arg(long, value_name = "NAME")]
    pub event: String,
    /// Event data, sent as a string (usually JSON).
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Herald's base URL (http only).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:6001")]
    pub url: String,
    #[arg(long, env = "HERALD_APP_ID", default_value = "1")]
    pub app_id: String,
    #[arg(long, env = "HERALD_APP_KEY", default_value = "herald-dev-key")]
    pub key: String,
    #[arg(long, env = "HERALD_APP_SECRET", default_value = "herald-dev-secret", hide_default_value = true)]
    pub secret: String,
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
    /// Keep channel history in DATA_DIR/history.sqlite3 so clients resume across restarts.
    #[arg(long, env = "HERALD_DURABLE_HISTORY")]
    pub durable_history: bool,
    /// Where state shared between nodes lives [default: memory].
    #[arg(long, env = "HERALD_ENGINE", value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineArg>,
    /// Redis server of the redis engine [default: redis://127.0.0.1:6379].
    #[arg(long, env = "HERALD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and pub/sub channel [default: herald].
    #[arg(long, env = "HERALD_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Seconds after which a silent node's presence members leave [default: 10].
    #[arg(long, env = "HERALD_NODE_LEASE_SECS", value_name = "SECS")]
    pub node_lease_secs: Option<u64>,
    /// Seconds of client silence before a ping, announced to clients [default: 120].
    #[arg(long, env = "HERALD_ACTIVITY_TIMEOUT", value_name = "SECS")]
    pub activity_timeout: Option<u64>,
    /// Log format; the level filter comes from HERALD_LOG (e.g. "info", "herald_core=debug").
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--engine`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    /// This node alone (the embedded default).
    Memory,
    /// Several nodes sharing one Redis.
    Redis,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
