//! Herald's multi-node engine on Redis.
//!
//! Each `herald serve` process is a node with its own id. Commands go over one multiplexed,
//! self-reconnecting connection; pub/sub has its own connection, owned by the [`listener`] task,
//! which subscribes only to the channels this node has subscribers for and, after any reconnect,
//! resubscribes, proves delivery with a probe message and re-snapshots every channel so that the
//! hub can fill or announce what was missed. The [`upkeep`] task flushes subscription counts,
//! renews this node's lease and withdraws the presence and counts of nodes whose lease ran out.
//! What must be atomic is a Lua script ([`scripts`]); where everything lives is [`keys`]. Jobs,
//! feeds and read cursors are stores on the same connection ([`RedisJobs`], [`RedisFeeds`],
//! [`RedisCursors`]).

mod arbiter;
mod connection;
mod cursors;
mod feeds;
mod jobs;
mod keys;
mod listener;
mod scripts;
mod upkeep;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use herald_core::engine::{Engine, EngineError, EngineFuture, Message, Node, Record, Reservation, Retention, Snapshot};
use herald_core::hub::ChannelCounts;
use herald_core::webhooks::WebhookEvent;
use herald_protocol::SocketId;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::cursors::RedisCursors;
pub use crate::feeds::RedisFeeds;
pub use crate::jobs::RedisJobs;

use crate::connection::{Conn, Target};
use crate::keys::Keys;

/// How long a node waits at start for its pub/sub connection to be subscribed and probed.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a channel's serial counter outlives its last publish or subscribe. After that the
/// channel starts a new epoch (clients resuming an older one are told `recovered: false`).
const META_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How to reach Redis and how this deployment is named there.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `redis+unix:///path`, a Redis Cluster as
    /// `redis+cluster://[user:password@]host1:port1,host2:port2`, or the master a set of Sentinels
    /// names as `redis+sentinel://[user:password@]host1:26379,host2:26379/service`.
    pub url: String,
    /// Starts every key and pub/sub channel: deployments with different prefixes never meet.
    pub prefix: String,
    /// A node that stops renewing its lease this long is dead: its members leave.
    pub node_lease: Duration,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisEngineError {
    #[error("redis prefix must be 1 to 64 characters without braces, spaces or colons at the ends")]
    InvalidPrefix,
    #[error("redis url: {0}")]
    Url(String),
    #[error("cannot reach Redis: {0}")]
    Connect(String),
}

/// One node's handle on Redis. Dropping it stops its tasks without leaving (as a crash would);
/// [`Engine::close`] leaves cleanly.
pub struct RedisEngine {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine").field("node", &self.inner.id).field("prefix", &self.inner.keys).finish()
    }
}

type ChannelKey = (String, String);
/// (app, channel, user id) of a presence member this node holds.
pub(crate) type MemberKey = (String, String, String);

pub(crate) struct Inner {
    id: String,
    keys: Keys,
    target: Target,
    /// Replaced when the Sentinels name a new master.
    conn: RwLock<Conn>,
    /// The server `conn` talks to (Sentinel: the master it was resolved to).
    server: parking_lot::Mutex<String>,
    node: RwLock<Option<Weak<dyn Node>>>,
    ready: AtomicBool,
    lease: Duration,
    listen: mpsc::UnboundedSender<listener::Command>,
    presence: mpsc::UnboundedSender<upkeep::PresenceChange>,
    counts: Mutex<Counts>,
    /// Presence members this node holds: (app, channel, user) → (user_info, socket that joined).
    held: Mutex<HashMap<MemberKey, (Option<String>, SocketId)>>,
    /// Members whose leave is queued but not yet applied, so a clean stop can still withdraw them.
    leaving: Mutex<HashSet<MemberKey>>,
}

#[derive(Default)]
struct Counts {
    current: HashMap<ChannelKey, usize>,
    dirty: HashSet<ChannelKey>,
}

fn unavailable(error: redis::RedisError) -> EngineError {
    EngineError::Unavailable(error.to_string())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && !prefix.contains(['{', '}'])
        && !prefix.contains(char::is_whitespace)
        && !prefix.starts_with(':')
        && !prefix.ends_with(':')
}

impl RedisEngine {
    /// Connects (failing fast if Redis cannot be reached now) and starts this node's tasks.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisEngineError> {
        if !valid_prefix(&config.prefix) {
            return Err(RedisEngineError::InvalidPrefix);
        }
        let target = Target::parse(&config.url)?;
        let conn = target.commands().await?;
        let (listen, listen_rx) = mpsc::unbounded_channel();
        let (presence, presence_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            id: format!("{:016x}", rand::random::<u64>()),
            keys: Keys::new(&config.prefix),
            server: parking_lot::Mutex::new(String::new()),
            target,
            conn: RwLock::new(conn),
            node: RwLock::new(None),
            ready: AtomicBool::new(false),
            lease: config.node_lease.max(Duration::from_secs(1)),
            listen,
            presence,
            counts: Mutex::default(),
            held: Mutex::default(),
            leaving: Mutex::default(),
        });
        upkeep::heartbeat(&inner).await.map_err(|e| RedisEngineError::Connect(e.to_string()))?;
        let tasks = vec![
            tokio::spawn(listener::run(inner.clone(), listen_rx)),
            tokio::spawn(upkeep::run(inner.clone())),
            tokio::spawn(upkeep::run_presence(inner.clone(), presence_rx)),
        ];
        let engine = Self { inner, tasks };
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while !engine.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RedisEngineError::Connect("pub/sub did not come up (subscribe and probe)".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(node = %engine.inner.id, prefix = %config.prefix, "redis engine started");
        Ok(engine)
    }

    /// The engine's job store, shared by every node on this Redis and prefix.
    pub fn jobs(&self) -> RedisJobs {
        RedisJobs::new(self.inner.clone())
    }

    /// The engine's feed store: each change is stored and published on the feed's channel by one
    /// script, so every node listening to the channel gets it as an ordinary event.
    pub fn feeds(&self) -> RedisFeeds {
        RedisFeeds::new(self.inner.clone())
    }

    /// The engine's read cursors and unread counts, shared by every node on this Redis and prefix.
    pub fn cursors(&self) -> RedisCursors {
        RedisCursors::new(self.inner.clone())
    }

    /// This node's id in Redis.
    pub fn node_id(&self) -> &str {
        &self.inner.id
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    fn node(&self) -> Option<Arc<dyn Node>> {
        self.node.read().as_ref().and_then(Weak::upgrade)
    }

    fn conn(&self) -> Conn {
        self.conn.read().clone()
    }

    /// The channel's state; creates its epoch when `create` (a node starting to listen).
    async fn snapshot(
        &self,
        app: &str,
        channel: &str,
        retention: Retention,
        create: bool,
    ) -> Result<Option<Snapshot>, EngineError> {
        type Reply = Option<(String, u64, Vec<String>, String, Vec<String>)>;
        let keys = self.keys.channel(app, channel);
        let reply: Reply = scripts::SNAPSHOT
            .key(keys.meta())
            .key(keys.history())
            .key(keys.cache())
            .key(keys.members())
            .arg(herald_core::engine::fresh_epoch())
            .arg(META_TTL.as_millis() as u64)
            .arg(if create { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some((epoch, head, history, cached, members)) = reply else {
            return Ok(None);
        };
        let oldest = unix_ms().saturating_sub(retention.max_age_ms);
        let parse = |text: &String| -> Result<Record, EngineError> {
            wire::parse_record(text).ok_or_else(|| EngineError::Malformed(format!("history entry of {channel}")))
        };
        let mut events = Vec::with_capacity(history.len());
        for text in &history {
            let record = parse(text)?;
            if record.at_unix_ms >= oldest && record.serial <= head {
                events.push(record);
            }
        }
        let cached = if cached.is_empty() { None } else { Some(parse(&cached)?) };
        let members = members
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), Some(pair[1].clone()).filter(|info| !info.is_empty())))
            .collect();
        Ok(Some(Snapshot { epoch: Arc::from(epoch), head, events, cached, members }))
    }

    async fn counts(&self, app: &str, channel: &str) -> Result<ChannelCounts, EngineError> {
        let keys = self.keys.channel(app, channel);
        let subscriptions: Vec<usize> =
            redis::cmd("HVALS").arg(keys.subscriptions()).query_async(&mut self.conn()).await.map_err(unavailable)?;
        let users: usize =
            redis::cmd("HLEN").arg(keys.members()).query_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(ChannelCounts { subscription_count: subscriptions.iter().sum(), user_count: users })
    }
}

impl Engine for RedisEngine {
    fn attach(&self, node: Weak<dyn Node>) {
        *self.inner.node.write() = Some(node);
    }

    fn publish(&self, app: &str, channel: &str, message: Message, retention: Retention) -> EngineFuture<'_, u64> {
        if !self.is_ready() {
            // Refuse at once rather than after the connection's retries: clients are being told to
            // resync anyway, and a backend should retry (or go to another node).
            return Box::pin(std::future::ready(Err(EngineError::Unavailable("not connected to Redis".into()))));
        }
        let keys = self.inner.keys.channel(app, channel);
        let mut invocation = scripts::PUBLISH.prepare_invoke();
        invocation
            .key(keys.meta())
            .key(keys.history())
            .key(keys.cache())
            .arg(herald_core::engine::fresh_epoch())
            .arg(wire::payload(&message))
            .arg(retention.max_events)
            .arg(retention.max_age_ms.max(1))
            .arg(META_TTL.as_millis() as u64)
            .arg(retention.cache_ttl_ms)
            .arg(&keys.tag)
            .arg(self.inner.target.publish_command());
        let mut conn = self.inner.conn();
        Box::pin(async move { invocation.invoke_async(&mut conn).await.map_err(unavailable) })
    }

    fn listen(&self, app: &str, channel: &str, retention: Retention) {
        let command = listener::Command::Start { app: app.into(), channel: channel.into(), retention };
        let _ = self.inner.listen.send(command);
    }

    fn unlisten(&self, app: &str, channel: &str) {
        let _ = self.inner.listen.send(listener::Command::Stop { app: app.into(), channel: channel.into() });
    }

    fn snapshot(&self, app: &str, channel: &str, retention: Retention) -> EngineFuture<'_, Option<Snapshot>> {
        let (app, channel) = (app.to_owned(), channel.to_owned());
        Box::pin(async move { self.inner.snapshot(&app, &channel, retention, false).await })
    }

    fn presence_join(&self, app: &str, channel: &str, user_id: &str, user_info: Option<&str>, socket: SocketId) {
        let key = (app.to_owned(), channel.to_owned(), user_id.to_owned());
        self.inner.held.lock().insert(key.clone(), (user_info.map(str::to_owned), socket));
        let change = upkeep::PresenceChange::Join { key, user_info: user_info.map(str::to_owned), socket };
        let _ = self.inner.presence.send(change);
    }

    fn presence_leave(&self, app: &str, channel: &str, user_id: &str) {
        let key = (app.to_owned(), channel.to_owned(), user_id.to_owned());
        self.inner.held.lock().remove(&key);
        self.inner.leaving.lock().insert(key.clone());
        let _ = self.inner.presence.send(upkeep::PresenceChange::Leave { key });
    }

    fn set_count(&self, app: &str, channel: &str, count: usize) {
        let key = (app.to_owned(), channel.to_owned());
        let mut counts = self.inner.counts.lock();
        if count == 0 {
            counts.current.remove(&key);
        } else {
            counts.current.insert(key.clone(), count);
        }
        counts.dirty.insert(key);
    }

    fn channel_counts(&self, app: &str, channel: &str) -> EngineFuture<'_, ChannelCounts> {
        let (app, channel) = (app.to_owned(), channel.to_owned());
        Box::pin(async move { self.inner.counts(&app, &channel).await })
    }

    fn channels(&self, app: &str, prefix: &str) -> EngineFuture<'_, Vec<(String, ChannelCounts)>> {
        let (app, prefix) = (app.to_owned(), prefix.to_owned());
        Box::pin(async move { upkeep::occupied(&self.inner, &app, &prefix).await })
    }

    fn members(&self, app: &str, channel: &str) -> EngineFuture<'_, Vec<String>> {
        let key = self.inner.keys.channel(app, channel).members();
        let mut conn = self.inner.conn();
        Box::pin(async move {
            let mut members: Vec<String> =
                redis::cmd("HKEYS").arg(key).query_async(&mut conn).await.map_err(unavailable)?;
            members.sort();
            Ok(members)
        })
    }

    fn terminate_user(&self, app: &str, user_id: &str) -> EngineFuture<'_, ()> {
        let message = wire::terminate(app, user_id);
        let channel = self.inner.keys.control();
        let mut conn = self.inner.conn();
        Box::pin(async move {
            redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<()>(&mut conn).await.map_err(unavailable)
        })
    }

    fn reserve_key(&self, app: &str, key: &str, target: &str, window_ms: u64) -> EngineFuture<'_, Reservation> {
        let redis_key = self.inner.keys.idempotency(app, key);
        let target = target.to_owned();
        Box::pin(async move {
            let mut conn = self.inner.conn();
            // The key can expire between SET NX and GET; then try again.
            for _ in 0..3 {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(format!("{target}\n"))
                    .arg("NX")
                    .arg("PX")
                    .arg(window_ms.max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if set.is_some() {
                    return Ok(Reservation::Fresh);
                }
                let held: Option<String> =
                    redis::cmd("GET").arg(&redis_key).query_async(&mut conn).await.map_err(unavailable)?;
                let Some(held) = held else { continue };
                let (first, serials) = held.split_once('\n').unwrap_or((held.as_str(), ""));
                if first != target {
                    return Ok(Reservation::Conflict);
                }
                return Ok(Reservation::Repeated(serials.split(',').filter_map(|s| s.parse().ok()).collect()));
            }
            Err(EngineError::Unavailable("idempotency key kept changing".into()))
        })
    }

    fn settle(&self, app: &str, key: &str, target: &str, serials: Option<&[u64]>) -> EngineFuture<'_, ()> {
        let redis_key = self.inner.keys.idempotency(app, key);
        let command = match serials {
            None => redis::cmd("DEL").arg(&redis_key).take(),
            Some(serials) => {
                let serials: Vec<String> = serials.iter().map(u64::to_string).collect();
                let value = format!("{target}\n{}", serials.join(","));
                redis::cmd("SET").arg(&redis_key).arg(value).arg("XX").arg("KEEPTTL").take()
            }
        };
        let mut conn = self.inner.conn();
        Box::pin(async move { command.query_async::<()>(&mut conn).await.map_err(unavailable) })
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    fn arbitrate_webhook(&self, app: &str, event: WebhookEvent) -> EngineFuture<'_, Option<WebhookEvent>> {
        let app = app.to_owned();
        Box::pin(async move { arbiter::arbitrate(&self.inner, &app, event).await })
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        // No queued join may land after the withdrawal: it would leave a member no lease covers.
        for task in &self.tasks {
            task.abort();
        }
        Box::pin(async move { upkeep::withdraw_self(&self.inner).await })
    }
}

impl Inner {
    /// Points the command connection at `client`'s server when it is not there already (the
    /// Sentinels named a new master).
    async fn follow(&self, client: &redis::Client) -> redis::RedisResult<()> {
        let address = client.get_connection_info().addr().to_string();
        if *self.server.lock() == address {
            return Ok(());
        }
        if !self.server.lock().is_empty() {
            tracing::warn!(node = %self.id, %address, "following a new Redis master");
        }
        let conn = Target::manager(client.clone()).await?;
        *self.conn.write() = conn;
        *self.server.lock() = address;
        Ok(())
    }
}
