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
use tokio::sync::mpsc;

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
    loop {
        inner.ready.store(false, Ordering::Release);
        take_commands(&inner, &mut commands, &mut wanted);
        match connect(&inner, &wanted).await {
            Ok((sink, stream)) => {
                backoff = Duration::from_millis(100);
                if reconnect {
                    tracing::info!(node = %inner.id, channels = wanted.len(), "redis pub/sub back; resyncing");
                    upkeep::reregister(&inner).await;
                }
                inner.ready.store(true, Ordering::Release);
                for (app, channel, retention) in wanted.values() {
                    spawn_snapshot(&inner, app, channel, *retention);
                }
                serve(&inner, sink, stream, &mut commands, &mut wanted).await;
                tracing::warn!(node = %inner.id, "redis pub/sub connection lost; reconnecting");
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

/// Connects, subscribes to everything wanted, and waits for this node's probe to come back.
async fn connect(inner: &Inner, wanted: &Wanted) -> Result<(PubSubSink, PubSubStream), redis::RedisError> {
    let (mut sink, mut stream) = inner.client.get_async_pubsub().await?.split();
    let probe = inner.keys.probe(&inner.id);
    sink.subscribe(&[inner.keys.control(), probe.clone()]).await?;
    let names: Vec<&String> = wanted.keys().collect();
    for batch in names.chunks(BATCH) {
        sink.subscribe(batch).await?;
    }
    let token = format!("{:016x}", rand::random::<u64>());
    redis::cmd("PUBLISH").arg(&probe).arg(&token).query_async::<()>(&mut inner.conn()).await?;
    let wait = async {
        while let Some(message) = stream.next().await {
            if message.get_channel_name() == probe && message.get_payload_bytes() == token.as_bytes() {
                return true;
            }
            dispatch(inner, &message);
        }
        false
    };
    match tokio::time::timeout(PROBE_TIMEOUT, wait).await {
        Ok(true) => Ok((sink, stream)),
        _ => Err(redis::RedisError::from((redis::ErrorKind::Io, "the probe message did not come back"))),
    }
}

/// Delivers messages and follows the hub's wishes until the connection drops.
async fn serve(
    inner: &Arc<Inner>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut Wanted,
) {
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => dispatch(inner, &message),
                None => return,
            },
            command = commands.recv() => {
                let Some(command) = command else { return };
                let mut batch = vec![command];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                if change(inner, &mut sink, batch, wanted).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends one round of subscribe/unsubscribe, then snapshots every channel that asked for one.
async fn change(
    inner: &Arc<Inner>,
    sink: &mut PubSubSink,
    batch: Vec<Command>,
    wanted: &mut Wanted,
) -> Result<(), redis::RedisError> {
    let mut snapshots = Vec::new();
    for command in batch {
        let change = apply(inner, command, wanted);
        match change {
            Change::Start { name, new } => {
                if new {
                    sink.subscribe(&name).await?;
                }
                snapshots.push(name);
            }
            Change::Stop(name) => sink.unsubscribe(&name).await?,
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

fn dispatch(inner: &Inner, message: &redis::Msg) {
    let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
        return tracing::warn!("dropped a non-UTF-8 pub/sub message");
    };
    let Some(node) = inner.node() else { return };
    let name = message.get_channel_name();
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
