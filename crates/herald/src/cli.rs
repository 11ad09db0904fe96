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
    ///
    /// Scenarios: idle (memory per connection), fanout (one channel, fixed rate), max-throughput
    /// (one channel, rising rate until subscribers fall behind), many-channels (a channel per
    /// connection, random targets) and jobs. Every scenario prints a table and one JSON line,
    /// refuses a --target that is not a loopback address, and ends by itself. Connections come
    /// from 127.0.0.1..N (--source-addresses) to pass the ephemeral-port limit. Run the generator
    /// on another core than the server (taskset) and give --server-pid for server CPU and memory.
    Bench(BenchArgs),
    /// Submit, list, inspect, cancel and requeue jobs (defaults: the development app).
    Jobs(JobsArgs),
    /// Webhook dead letters: list them, replay them once the endpoint works again.
    Webhooks(WebhooksArgs),
}

/// Where the signed HTTP API is and whose credentials sign (defaults: the development app).
#[derive(Debug, Args)]
pub struct ApiArgs {
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

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Webhook events whose delivery was given up.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue dead letters again (each at the end of its endpoint's queue).
    Replay {
        /// A dead letter's id (repeatable).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter of the app.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
    #[command(flatten)]
    pub api: ApiArgs,
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
    /// Server address as HOST:PORT; must be a loopback address.
    #[arg(long, global = true, default_value = "127.0.0.1:6001")]
    pub target: String,
    /// App id of the HTTP API paths (/apps/{id}/...).
    #[arg(long, global = true, default_value = "1")]
    pub app_id: String,
    /// App key: WebSocket path /app/{key}, and the key publishes are signed with.
    #[arg(long, global = true, default_value = "herald-dev-key")]
    pub key: String,
    /// App secret publishes are signed with [default: the development app's].
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
    ///
    /// Needs --server-pid (memory is read from /proc/<pid>/status). Connections join 1,000
    /// channels (idle-0 .. idle-999) and are held --hold-secs after the last one before
    /// measuring. With a long hold, several generators against several nodes show how many
    /// connections a cluster holds at once.
    Idle {
        /// Connections to open and subscribe.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold every connection open after the last one subscribed (at most 3,600).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3600))]
        hold_secs: u64,
    },
    /// N subscribers on one channel; publish at RATE/s for SECONDS; report latency and loss.
    ///
    /// One event per signed HTTP publish, each carrying its send time and a sequence number;
    /// every subscriber checks order, loss and duplicates. Reports deliveries/s, latency
    /// p50/p90/p99/p99.9/max, and server and generator CPU per delivery. Waits at most 30 s after
    /// the last publish for the subscribers.
    Fanout {
        /// Subscribers on the one channel.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events per second.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Padding bytes added to each event's data.
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Step the publish rate up on one channel until the subscribers stop keeping up.
    ///
    /// N subscribers join one channel; a publisher sends timestamped events through the signed
    /// HTTP API (batch_events, --batch events per request), for --step-seconds at each rate. After
    /// each step it waits for every subscriber to receive an end-of-step marker and reports
    /// deliveries/s offered and achieved, latency p50/p99, loss and CPU per delivery. It stops at
    /// the first step that is not sustained (any loss, gap, duplicate or closed subscriber, p99
    /// over --max-p99-ms, or achieved deliveries/s under --min-ratio of offered) and reports the
    /// last sustained step. A step the publisher itself could not send at its rate also ends the
    /// run ("publisher sent only N/s": the generator, not the server, is the limit there).
    /// Bounded: at most the listed steps, each --step-seconds plus --drain-seconds.
    MaxThroughput(MaxThroughputArgs),
    /// N connections, each on its own channel; events to random channels at a fixed total rate.
    ///
    /// Each event goes to one channel chosen at random (batch_events, --batch per request) and
    /// carries its send time and that channel's sequence number; reports deliveries/s, latency
    /// p50/p90/p99/p99.9/max, loss, gaps, duplicates and CPU per delivery. Runs for --seconds,
    /// then sends an end event to every channel and waits at most 30 s for the subscribers.
    ManyChannels(ManyChannelsArgs),
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

/// `bench max-throughput`.
#[derive(Debug, Clone, Args)]
pub struct MaxThroughputArgs {
    /// Subscribers on the one channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Events per second of the first step.
    #[arg(long, default_value_t = 25)]
    pub start_rate: u32,
    /// Each step's rate is the previous one times this.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// No step above this many events per second.
    #[arg(long, default_value_t = 12_800)]
    pub max_rate: u32,
    /// Explicit events-per-second steps (e.g. 50,100,150,200), replacing --start-rate, --factor
    /// and --max-rate.
    #[arg(long, value_delimiter = ',', value_name = "RATES")]
    pub rates: Vec<u32>,
    /// Seconds of publishing per step.
    #[arg(long, default_value_t = 3)]
    pub step_seconds: u64,
    /// A step whose p99 latency is above this is not sustained.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// A step whose achieved deliveries/s are under this share of the offered ones is not
    /// sustained.
    #[arg(long, default_value_t = 0.9)]
    pub min_ratio: f64,
    /// Seconds to wait after a step's last publish for every subscriber's end-of-step marker.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
    /// Padding bytes added to each event's data.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Events per batch_events request (Herald's and Pusher's default limit is 10).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
}

/// `bench many-channels`.
#[derive(Debug, Clone, Args)]
pub struct ManyChannelsArgs {
    /// Connections, each subscribed to its own channel.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Events per second in total, each to one random channel.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Padding bytes added to each event's data.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Events per batch_events request (Herald's and Pusher's default limit is 10).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
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
    /// PEM certificate chain; with --tls-key the listener serves TLS only (wss://, https://).
    #[arg(long, env = "HERALD_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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
