//! The command connection, whether Redis is one server or a cluster.
//!
//! `--redis-url redis://host:port` is one server (the connection manager reconnects by itself);
//! `redis+cluster://host1:port1,host2:port2` is a Redis Cluster, reached through any of the listed
//! nodes, with commands routed by key slot; `redis+sentinel://host1:26379,host2:26379/service` asks
//! the Sentinels for the service's master, again after every lost pub/sub connection, so a failover
//! moves the node to the new master. The user and password of the URL are used for every
//! connection (Sentinels, masters, cluster nodes). Everything Herald sends for one channel shares the
//! channel's hash tag, so its scripts run in one slot; commands that span channels are sent one by
//! one in a cluster and pipelined on a single server.

use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Cmd, FromRedisValue, Pipeline, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use crate::RedisEngineError;

const CLUSTER_SCHEME: &str = "redis+cluster://";
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Where Redis is, parsed from the URL.
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    /// Seed node URLs (`redis://...`).
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        master: redis::RedisConnectionInfo,
    },
}

/// Splits `[auth@]host:port,host:port[/rest]` into `redis://[auth@]host:port` URLs and the rest.
fn node_urls(rest: &str) -> Result<(Vec<String>, String, &str), RedisEngineError> {
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let (hosts, path) = hosts.split_once('/').unwrap_or((hosts, ""));
    let nodes: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}")).collect();
    if nodes.is_empty() {
        return Err(RedisEngineError::Url("the URL names no host".into()));
    }
    for node in &nodes {
        redis::Client::open(node.as_str()).map_err(|e| RedisEngineError::Url(e.to_string()))?;
    }
    Ok((nodes, auth, path))
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, RedisEngineError> {
        let invalid = |e: redis::RedisError| RedisEngineError::Url(e.to_string());
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            return Ok(Self::Cluster(node_urls(rest)?.0));
        }
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            let (sentinels, auth, service) = node_urls(rest)?;
            if service.is_empty() {
                return Err(RedisEngineError::Url("a sentinel URL ends with /<service name>".into()));
            }
            let master = redis::Client::open(format!("redis://{auth}localhost").as_str())
                .map_err(invalid)?
                .get_connection_info()
                .redis_settings()
                .clone();
            return Ok(Self::Sentinel { sentinels, service: service.to_owned(), master });
        }
        Ok(Self::Single(redis::Client::open(url).map_err(invalid)?))
    }

    /// The client of the one server to talk to: the server itself, or the master the Sentinels
    /// name now.
    pub async fn resolve(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Single(client) => Ok(client.clone()),
            Self::Sentinel { sentinels, service, master } => {
                let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(master.clone());
                Sentinel::build(sentinels.clone())?.async_master_for(service, Some(&info)).await
            }
            Self::Cluster(_) => {
                Err(redis::RedisError::from((redis::ErrorKind::Client, "a cluster has no single server")))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The command used to publish to a channel's pub/sub name: sharded in a cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    pub async fn commands(&self) -> Result<Conn, RedisEngineError> {
        let connect = |e: redis::RedisError| RedisEngineError::Connect(e.to_string());
        match self {
            Self::Single(_) | Self::Sentinel { .. } => {
                let client = self.resolve().await.map_err(connect)?;
                Self::manager(client).await.map_err(connect)
            }
            Self::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(5))
                    .build()
                    .map_err(connect)?;
                Ok(Conn::Cluster(client.get_async_connection().await.map_err(connect)?))
            }
        }
    }

    /// A self-reconnecting command connection to one server.
    pub async fn manager(client: redis::Client) -> RedisResult<Conn> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2));
        Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
    }

    /// A RESP3 cluster connection whose pushes (sharded messages, disconnections) go to `pushes`.
    pub async fn cluster_subscriber(
        nodes: &[String],
    ) -> RedisResult<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = ClusterClientBuilder::new(nodes.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(Duration::from_secs(2))
            .build()?;
        Ok((client.get_async_connection().await?, rx))
    }
}

/// The command connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs commands that may touch different slots: one pipeline on a single server, separate
    /// commands in a cluster.
    pub async fn run_all<T: FromRedisValue + Send>(&mut self, commands: Vec<Cmd>) -> RedisResult<Vec<T>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Single(manager) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(manager).await
            }
            Self::Cluster(cluster) => {
                try_join_all(commands.into_iter().map(|command| {
                    let mut cluster = cluster.clone();
                    async move { command.query_async::<T>(&mut cluster).await }
                }))
                .await
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
