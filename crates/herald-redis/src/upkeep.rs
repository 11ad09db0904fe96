//! What a node keeps true in Redis over time: its lease, its counts, its presence, and the
//! withdrawal of nodes that died.
//!
//! A node renews its lease (a score in one sorted set) every third of the lease. Every node also
//! looks for expired leases; the one whose `ZREM` succeeds withdraws the dead node's presence
//! members (each leave is the same script a live node runs, so `member_removed` goes out once) and
//! its subscription counts. Counts are flushed in batches every 100 ms rather than per subscribe,
//! so churn costs one write per channel per flush. Presence changes run one at a time, in order, so
//! a quick join-then-leave can never be applied the other way round.

use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::EngineError;
use herald_core::hub::ChannelCounts;
use herald_protocol::SocketId;
use tokio::sync::mpsc;

use crate::{Inner, arbiter, scripts, unavailable, unix_ms, wire};

const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) enum PresenceChange {
    Join { key: (String, String, String), user_info: Option<String>, socket: SocketId },
    Leave { key: (String, String, String) },
}

/// Renews this node's lease.
pub(crate) async fn heartbeat(inner: &Inner) -> Result<(), redis::RedisError> {
    let expires = unix_ms() + inner.lease.as_millis() as u64;
    redis::cmd("ZADD").arg(inner.keys.nodes()).arg(expires).arg(&inner.id).query_async::<()>(&mut inner.conn()).await
}

/// Whether this node is still in the lease set (no other node withdrew it).
async fn still_registered(inner: &Inner) -> Result<bool, redis::RedisError> {
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg(inner.keys.nodes()).arg(&inner.id).query_async(&mut inner.conn()).await?;
    Ok(score.is_some())
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renew_every = inner.lease / 3;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        flush_counts(&inner).await;
        if renewed.elapsed() >= renew_every {
            renewed = tokio::time::Instant::now();
            // A node whose lease ran out (a long stall) was withdrawn by another: put its
            // members and counts back as after a reconnect.
            let withdrawn = match still_registered(&inner).await {
                Ok(registered) => !registered,
                Err(error) => {
                    tracing::warn!(node = %inner.id, "lease not checked: {error}");
                    continue;
                }
            };
            if withdrawn {
                tracing::warn!(node = %inner.id, "this node's lease ran out and it was withdrawn; registering again");
                reregister(&inner).await;
            } else if let Err(error) = heartbeat(&inner).await {
                tracing::warn!(node = %inner.id, "lease not renewed: {error}");
                continue;
            }
            if let Err(error) = reap(&inner).await {
                tracing::warn!(node = %inner.id, "could not check other nodes' leases: {error}");
            }
        }
    }
}

async fn flush_counts(inner: &Inner) {
    let dirty: Vec<((String, String), usize)> = {
        let mut counts = inner.counts.lock();
        let dirty = std::mem::take(&mut counts.dirty);
        dirty.into_iter().map(|key| (key.clone(), counts.current.get(&key).copied().unwrap_or(0))).collect()
    };
    if dirty.is_empty() {
        return;
    }
    let mut commands = Vec::new();
    let index = inner.keys.node_subscriptions(&inner.id);
    for ((app, channel), count) in &dirty {
        let keys = inner.keys.channel(app, channel);
        let member = serde_json::to_string(&(app, channel)).unwrap_or_default();
        if *count > 0 {
            commands.push(redis::cmd("HSET").arg(keys.subscriptions()).arg(&inner.id).arg(*count).take());
            commands.push(redis::cmd("SADD").arg(inner.keys.app_channels(app)).arg(channel).take());
            commands.push(redis::cmd("SADD").arg(&index).arg(member).take());
        } else {
            commands.push(redis::cmd("HDEL").arg(keys.subscriptions()).arg(&inner.id).take());
            commands.push(redis::cmd("SREM").arg(&index).arg(member).take());
        }
    }
    if let Err(error) = inner.conn().run_all::<redis::Value>(commands).await {
        tracing::warn!(node = %inner.id, "subscription counts not flushed, will retry: {error}");
        inner.counts.lock().dirty.extend(dirty.into_iter().map(|(key, _)| key));
    }
}

/// Withdraws every node whose lease ran out (that another node has not already claimed).
async fn reap(inner: &Inner) -> Result<(), redis::RedisError> {
    let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(inner.keys.nodes())
        .arg("-inf")
        .arg(unix_ms())
        .query_async(&mut inner.conn())
        .await?;
    for node in dead.into_iter().filter(|n| *n != inner.id) {
        let claimed: usize =
            redis::cmd("ZREM").arg(inner.keys.nodes()).arg(&node).query_async(&mut inner.conn()).await?;
        if claimed == 1 {
            tracing::info!(node = %inner.id, dead = %node, "withdrawing a node whose lease ran out");
            if let Err(error) = withdraw(inner, &node).await {
                // Put it back as expired, so this or another node tries again.
                let retry = redis::cmd("ZADD").arg(inner.keys.nodes()).arg(0).arg(&node).take();
                let _ = retry.query_async::<()>(&mut inner.conn()).await;
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Removes `node`'s presence members (announcing each once) and subscription counts.
async fn withdraw(inner: &Inner, node: &str) -> Result<(), redis::RedisError> {
    let presence_index = inner.keys.node_presence(node);
    let entries: Vec<String> = redis::cmd("SMEMBERS").arg(&presence_index).query_async(&mut inner.conn()).await?;
    let mut departed = Vec::new();
    for entry in entries {
        if let Ok((app, channel, user)) = serde_json::from_str::<(String, String, String)>(&entry) {
            leave(inner, &app, &channel, &user, node).await?;
            // Every entry, told or not by this attempt: a withdrawal retried after an error finds
            // the leaves already done, and the departure must still be reported (it is judged
            // again, so reporting twice tells it once).
            arbiter::forget_node(inner, &app, &channel, node, Some(&user)).await?;
            departed.push((app, channel, Some(user)));
        }
    }
    let subscription_index = inner.keys.node_subscriptions(node);
    let entries: Vec<String> = redis::cmd("SMEMBERS").arg(&subscription_index).query_async(&mut inner.conn()).await?;
    let mut commands = Vec::new();
    for entry in entries {
        if let Ok((app, channel)) = serde_json::from_str::<(String, String)>(&entry) {
            let keys = inner.keys.channel(&app, &channel);
            commands.push(redis::cmd("HDEL").arg(keys.subscriptions()).arg(node).take());
            commands.push(redis::cmd("HDEL").arg(keys.webhook_nodes()).arg(node).take());
            departed.push((app, channel, None));
        }
    }
    commands.push(redis::cmd("DEL").arg(&presence_index).take());
    commands.push(redis::cmd("DEL").arg(&subscription_index).take());
    inner.conn().run_all::<redis::Value>(commands).await?;
    // For webhooks: this node settles a dead node's departures as if they were its own (its own
    // departures, when it leaves, its sessions have reported already).
    if let Some(here) = inner.node().filter(|_| node != inner.id) {
        for (app, channel, user) in departed {
            here.withdrawn(&app, &channel, user.as_deref());
        }
    }
    Ok(())
}

/// Runs the leave script; whether the user stopped being a member (this was their last node).
async fn leave(inner: &Inner, app: &str, channel: &str, user: &str, node: &str) -> Result<bool, redis::RedisError> {
    let keys = inner.keys.channel(app, channel);
    scripts::LEAVE
        .key(keys.members())
        .key(keys.member_nodes())
        .key(keys.member_counts())
        .arg(user)
        .arg(node)
        .arg(&keys.tag)
        .arg(wire::member_removed(user))
        .arg(inner.target.publish_command())
        .invoke_async::<u8>(&mut inner.conn())
        .await
        .map(|left| left == 1)
}

async fn join(
    inner: &Inner,
    (app, channel, user): &(String, String, String),
    user_info: Option<&str>,
    socket: SocketId,
) -> Result<(), redis::RedisError> {
    let keys = inner.keys.channel(app, channel);
    let entry = serde_json::to_string(&(app, channel, user)).unwrap_or_default();
    redis::cmd("SADD").arg(inner.keys.node_presence(&inner.id)).arg(entry).query_async::<()>(&mut inner.conn()).await?;
    scripts::JOIN
        .key(keys.members())
        .key(keys.member_nodes())
        .key(keys.member_counts())
        .arg(user)
        .arg(&inner.id)
        .arg(user_info.unwrap_or(""))
        .arg(&keys.tag)
        .arg(wire::member_added(user, user_info, socket))
        .arg(inner.target.publish_command())
        .invoke_async::<()>(&mut inner.conn())
        .await
}

/// Applies presence changes one at a time, retrying while Redis is away.
pub(crate) async fn run_presence(inner: Arc<Inner>, mut changes: mpsc::UnboundedReceiver<PresenceChange>) {
    while let Some(change) = changes.recv().await {
        let mut delay = Duration::from_millis(100);
        loop {
            let done = match &change {
                PresenceChange::Join { key, user_info, socket } => {
                    join(&inner, key, user_info.as_deref(), *socket).await
                }
                PresenceChange::Leave { key: (app, channel, user) } => {
                    // Leave first, then drop it from this node's index: a crash in between leaves
                    // an index entry the reaper can still act on, never a member it cannot find.
                    let entry = serde_json::to_string(&(app, channel, user)).unwrap_or_default();
                    let left = match leave(&inner, app, channel, user, &inner.id).await {
                        Ok(_) => {
                            redis::cmd("SREM")
                                .arg(inner.keys.node_presence(&inner.id))
                                .arg(entry)
                                .query_async::<()>(&mut inner.conn())
                                .await
                        }
                        Err(error) => Err(error),
                    };
                    if left.is_ok() {
                        inner.leaving.lock().remove(&(app.clone(), channel.clone(), user.clone()));
                    }
                    left
                }
            };
            match done {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(node = %inner.id, "presence change waiting for Redis: {error}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// After a reconnect: renews the lease and puts back this node's presence and counts (Redis may
/// have lost them, or another node may have withdrawn them while this one was cut off).
pub(crate) async fn reregister(inner: &Inner) {
    if let Err(error) = heartbeat(inner).await {
        tracing::warn!(node = %inner.id, "lease not renewed: {error}");
    }
    let held: Vec<_> = inner.held.lock().iter().map(|(k, (info, socket))| (k.clone(), info.clone(), *socket)).collect();
    for (key, user_info, socket) in held {
        if let Err(error) = join(inner, &key, user_info.as_deref(), socket).await {
            tracing::warn!(node = %inner.id, "presence not restored: {error}");
        }
    }
    let mut counts = inner.counts.lock();
    let keys: Vec<_> = counts.current.keys().cloned().collect();
    counts.dirty.extend(keys);
}

/// Leaves cleanly: this node's members leave and its counts go, now rather than after the lease.
pub(crate) async fn withdraw_self(inner: &Inner) -> Result<(), EngineError> {
    let mut held: Vec<_> = inner.held.lock().drain().map(|(key, _)| key).collect();
    held.extend(inner.leaving.lock().drain());
    for (app, channel, user) in held {
        leave(inner, &app, &channel, &user, &inner.id).await.map_err(unavailable)?;
    }
    inner.counts.lock().current.clear();
    withdraw(inner, &inner.id).await.map_err(unavailable)?;
    redis::cmd("ZREM")
        .arg(inner.keys.nodes())
        .arg(&inner.id)
        .query_async::<()>(&mut inner.conn())
        .await
        .map_err(unavailable)
}

/// Occupied channels of `app` starting with `prefix`, with counts summed over nodes.
pub(crate) async fn occupied(
    inner: &Inner,
    app: &str,
    prefix: &str,
) -> Result<Vec<(String, ChannelCounts)>, EngineError> {
    let index = inner.keys.app_channels(app);
    let names: Vec<String> =
        redis::cmd("SMEMBERS").arg(&index).query_async(&mut inner.conn()).await.map_err(unavailable)?;
    let names: Vec<String> = names.into_iter().filter(|n| n.starts_with(prefix) && !n.starts_with('#')).collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let subscriptions: Vec<Vec<usize>> = inner
        .conn()
        .run_all(
            names
                .iter()
                .map(|name| redis::cmd("HVALS").arg(inner.keys.channel(app, name).subscriptions()).take())
                .collect(),
        )
        .await
        .map_err(unavailable)?;
    let members: Vec<usize> = inner
        .conn()
        .run_all(
            names.iter().map(|name| redis::cmd("HLEN").arg(inner.keys.channel(app, name).members()).take()).collect(),
        )
        .await
        .map_err(unavailable)?;
    let replies = subscriptions.into_iter().zip(members);
    let mut found = Vec::new();
    for (name, (subscriptions, users)) in names.into_iter().zip(replies) {
        let subscription_count: usize = subscriptions.iter().sum();
        if subscription_count > 0 {
            found.push((name, ChannelCounts { subscription_count, user_count: users }));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}
