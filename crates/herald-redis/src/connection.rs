//! The command connection, whether Redis is one server or a cluster.
//!
//! `--redis-url redis://host:port` is one server (the connection manager reconnects by itself);
//! `redis+cluster://host1:port1,host2:port2` is a Redis Cluster, reached through any of the listed
//! nodes, with commands routed by key slot. Everything Herald sends for one channel shares the
//! channel's hash tag, so its scripts run in one slot; commands that span channels are sent one by
//! one in a cluster and pipelined on a single server.

use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use crate::RedisEngineError;

const CLUSTER_SCHEMES: [&str; 1] = ["redis+cluster://"];

/// Where Redis is, parsed from the URL.
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    /// Seed node URLs (`redis://...`).
    Cluster(Vec<String>),
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, RedisEngineError> {
        let invalid = |e: redis::RedisError| RedisEngineError::Url(e.to_string());
        let Some(rest) = CLUSTER_SCHEMES.iter().find_map(|scheme| url.strip_prefix(scheme)) else {
            return Ok(Self::Single(redis::Client::open(url).map_err(invalid)?));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let nodes: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}")).collect();
        if nodes.is_empty() {
            return Err(RedisEngineError::Url("a cluster URL names at least one node".into()));
        }
        for node in &nodes {
            redis::Client::open(node.as_str()).map_err(invalid)?;
        }
        Ok(Self::Cluster(nodes))
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
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_max_delay(Duration::from_secs(2));
                let manager = ConnectionManager::new_with_config(client.clone(), config).await.map_err(connect)?;
                Ok(Conn::Single(manager))
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
