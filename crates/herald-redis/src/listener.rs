//! The pub/sub connection: which channels this node hears, and what to do when it stops hearing.
//!
//! One task owns the connection and the set of channels the hub wants. Subscriptions are sent in
//! batches, and a channel's snapshot is taken only after Redis acknowledged its subscription, so
//! snapshot plus deliveries cover every serial. When the connection drops, the node is marked not
//! ready; on reconnect every channel is subscribed again, a probe message published to this node's
//! own channel must come back before the node is ready, and every channel is re-snapshotted: the hub
//! then replays what it missed or tells its clients `recovered: false`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use herald_core::engine::Retention;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::connection::Target;
use crate::{Inner, upkeep, wire};

/// Channels subscribed per SUBSCRIBE command.
const BATCH: usize = 500;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) enum Command {
    Start { app: String, channel: String, retention: Retention },
    Stop { app: String, channel: String },
}

/// Pub/sub name → (app, channel, retention).
type Wanted = HashMap<String, (String, String, Retention)>;

pub(crate) async fn run(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut wanted = Wanted::new();
    let mut backoff = Duration::from_millis(100);
    let mut reconnect = false;
    let mut kept: Option<Link> = None;
    loop {
        inner.ready.store(false, Ordering::Release);
        take_commands(&inner, &mut commands, &mut wanted);
        let link = match kept.take() {
            Some(link) => Ok(link),
            None => Link::open(&inner).await,
        };
        let prepared = match link {
            Ok(mut link) => match prepare(&inner, &mut link, &wanted).await {
                Ok(()) => Ok(link),
                Err(error) => {
                    kept = link.reusable().then_some(link);
                    Err(error)
                }
            },
            Err(error) => Err(error),
        };
        match prepared {
            Ok(mut link) => {
                backoff = Duration::from_millis(100);
                if reconnect {
                    tracing::info!(node = %inner.id, channels = wanted.len(), "redis pub/sub back; resyncing");
                    upkeep::reregister(&inner).await;
                }
                inner.ready.store(true, Ordering::Release);
                for (app, channel, retention) in wanted.values() {
                    spawn_snapshot(&inner, app, channel, *retention);
                }
                serve(&inner, &mut link, &mut commands, &mut wanted).await;
                tracing::warn!(node = %inner.id, "redis pub/sub connection lost; reconnecting");
                kept = link.reusable().then_some(link);
            }
            Err(error) => {
                tracing::warn!(node = %inner.id, "redis pub/sub unavailable: {error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        reconnect = true;
    }
}

/// Applies queued commands to the wanted set without a connection (they are sent on connect).
fn take_commands(inner: &Inner, commands: &mut mpsc::UnboundedReceiver<Command>, wanted: &mut Wanted) {
    while let Ok(command) = commands.try_recv() {
        apply(inner, command, wanted);
    }
}

/// Updates the wanted set; returns the pub/sub name and whether it is newly wanted or dropped.
fn apply(inner: &Inner, command: Command, wanted: &mut Wanted) -> Change {
    match command {
        Command::Start { app, channel, retention } => {
            let name = inner.keys.channel(&app, &channel).tag;
            let new = wanted.insert(name.clone(), (app, channel, retention)).is_none();
            Change::Start { name, new }
        }
        Command::Stop { app, channel } => {
            let name = inner.keys.channel(&app, &channel).tag;
            match wanted.remove(&name) {
                Some(_) => Change::Stop(name),
                None => Change::None,
            }
        }
    }
}

enum Change {
    Start { name: String, new: bool },
    Stop(String),
    None,
}

/// Subscribes to everything wanted and waits for this node's probe to come back.
async fn prepare(inner: &Inner, link: &mut Link, wanted: &Wanted) -> Result<(), redis::RedisError> {
    let probe = inner.keys.probe(&inner.id);
    link.subscribe_control(&inner.keys.control(), &probe).await?;
    let names: Vec<&String> = wanted.keys().collect();
    for batch in names.chunks(BATCH) {
        link.subscribe(batch).await?;
    }
    let token = format!("{:016x}", rand::random::<u64>());
    redis::cmd(inner.target.publish_command()).arg(&probe).arg(&token).query_async::<()>(&mut inner.conn()).await?;
    let wait = async {
        loop {
            match link.next().await {
                Event::Message { channel, payload } if channel == probe && payload == token.as_bytes() => return true,
                Event::Message { channel, payload } => dispatch(inner, &channel, &payload),
                Event::Moved(_) | Event::Other => {}
                Event::Lost => return false,
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, wait).await {
        Ok(true) => Ok(()),
        _ => Err(redis::RedisError::from((redis::ErrorKind::Io, "the probe message did not come back"))),
    }
}

/// Delivers messages and follows the hub's wishes until the connection drops.
async fn serve(
    inner: &Arc<Inner>,
    link: &mut Link,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut Wanted,
) {
    loop {
        tokio::select! {
            event = link.next() => match event {
                Event::Message { channel, payload } => dispatch(inner, &channel, &payload),
                Event::Moved(name) => {
                    // A slot moved (cluster): the server dropped our subscription. Take it again
                    // and re-snapshot, since messages may have been missed in between.
                    if let Some((app, channel, retention)) = wanted.get(&name) {
                        tracing::info!(%app, %channel, "sharded subscription dropped by the server; renewing");
                        if link.subscribe(&[&name]).await.is_err() {
                            return;
                        }
                        spawn_snapshot(inner, app, channel, *retention);
                    }
                }
                Event::Other => {}
                Event::Lost => return,
            },
            command = commands.recv() => {
                let Some(command) = command else { return };
                let mut batch = vec![command];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                if change(inner, link, batch, wanted).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends one round of subscribe/unsubscribe, then snapshots every channel that asked for one.
async fn change(
    inner: &Arc<Inner>,
    link: &mut Link,
    batch: Vec<Command>,
    wanted: &mut Wanted,
) -> Result<(), redis::RedisError> {
    let mut snapshots = Vec::new();
    for command in batch {
        let change = apply(inner, command, wanted);
        match change {
            Change::Start { name, new } => {
                if new {
                    link.subscribe(&[&name]).await?;
                }
                snapshots.push(name);
            }
            Change::Stop(name) => link.unsubscribe(&name).await?,
            Change::None => {}
        }
    }
    for name in snapshots {
        if let Some((app, channel, retention)) = wanted.get(&name) {
            spawn_snapshot(inner, app, channel, *retention);
        }
    }
    Ok(())
}

/// What the pub/sub link reported.
enum Event {
    Message {
        channel: String,
        payload: Vec<u8>,
    },
    /// The server dropped a sharded subscription we did not give up (slot migration).
    Moved(String),
    /// Confirmations and the like.
    Other,
    /// The connection is gone: messages may have been missed.
    Lost,
}

/// The pub/sub connection: plain SUBSCRIBE on one server, SSUBSCRIBE (sharded, routed to the
/// slot's owner) in a cluster, where the control channel stays on the cluster-wide bus.
enum Link {
    Single { sink: PubSubSink, stream: PubSubStream },
    Cluster { conn: ClusterConnection, pushes: mpsc::UnboundedReceiver<PushInfo> },
}

impl Link {
    async fn open(inner: &Inner) -> Result<Self, redis::RedisError> {
        match &inner.target {
            Target::Single(_) | Target::Sentinel { .. } => {
                let client = inner.target.resolve().await?;
                inner.follow(&client).await?;
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(Self::Single { sink, stream })
            }
            Target::Cluster(nodes) => {
                let (conn, pushes) = Target::cluster_subscriber(nodes).await?;
                Ok(Self::Cluster { conn, pushes })
            }
        }
    }

    /// A cluster link reconnects by itself and is kept; a single server's is opened afresh.
    fn reusable(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    async fn subscribe_control(&mut self, control: &str, probe: &str) -> Result<(), redis::RedisError> {
        match self {
            Self::Single { sink, .. } => sink.subscribe(&[control, probe]).await,
            Self::Cluster { conn, .. } => {
                conn.subscribe(control).await?;
                conn.ssubscribe(probe).await
            }
        }
    }

    async fn subscribe(&mut self, names: &[&String]) -> Result<(), redis::RedisError> {
        match self {
            Self::Single { sink, .. } => sink.subscribe(names).await,
            Self::Cluster { conn, .. } => {
                // Sharded names of different slots live on different servers: one at a time.
                for name in names {
                    conn.ssubscribe(*name).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, name: &str) -> Result<(), redis::RedisError> {
        match self {
            Self::Single { sink, .. } => sink.unsubscribe(name).await,
            Self::Cluster { conn, .. } => conn.sunsubscribe(name).await,
        }
    }

    async fn next(&mut self) -> Event {
        match self {
            Self::Single { stream, .. } => match stream.next().await {
                Some(message) => Event::Message {
                    channel: message.get_channel_name().to_owned(),
                    payload: message.get_payload_bytes().to_vec(),
                },
                None => Event::Lost,
            },
            Self::Cluster { pushes, .. } => match pushes.recv().await {
                None => Event::Lost,
                Some(push) => match push.kind {
                    PushKind::Disconnection => Event::Lost,
                    PushKind::Message | PushKind::SMessage => match push.data.as_slice() {
                        [channel, payload, ..] => Event::Message {
                            channel: bulk(channel).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
                            payload: bulk(payload).map(<[u8]>::to_vec).unwrap_or_default(),
                        },
                        _ => Event::Other,
                    },
                    PushKind::SUnsubscribe => match push.data.first().and_then(bulk) {
                        Some(name) => Event::Moved(String::from_utf8_lossy(name).into_owned()),
                        None => Event::Other,
                    },
                    _ => Event::Other,
                },
            },
        }
    }
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

/// Takes the channel's snapshot (after its subscription is acknowledged) and installs it.
fn spawn_snapshot(inner: &Arc<Inner>, app: &str, channel: &str, retention: Retention) {
    let (inner, app, channel) = (inner.clone(), app.to_owned(), channel.to_owned());
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match inner.snapshot(&app, &channel, retention, true).await {
                Ok(Some(snapshot)) => {
                    if let Some(node) = inner.node() {
                        node.install(&app, &channel, snapshot);
                    }
                    return;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%app, %channel, "snapshot failed, retrying: {error}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
}

fn dispatch(inner: &Inner, name: &str, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return tracing::warn!("dropped a non-UTF-8 pub/sub message");
    };
    let Some(node) = inner.node() else { return };
    if name == inner.keys.control() {
        if let Some((app, user_id)) = wire::parse_terminate(text) {
            node.terminate_user(&app, &user_id);
        }
        return;
    }
    let Some((app, channel)) = inner.keys.parse_channel(name) else { return };
    match wire::parse_delivery(text) {
        Some(delivery) => node.deliver(app, channel, delivery),
        None => tracing::warn!(%app, %channel, "dropped a malformed pub/sub message"),
    }
}
