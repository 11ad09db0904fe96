//! Webhooks decided once for the whole cluster.
//!
//! Each node reports only its own part of a channel (its first subscriber came, its last left), so
//! on its own it would tell `channel_occupied` once per node and `channel_vacated` while another
//! node still has subscribers. The channel's slot keeps what webhooks last told of it, and which
//! nodes reported the channel (each member) and have not reported it gone; one script updates both,
//! so the first node to see a change tells it, the others find it told, and a departure is told
//! only by the last node to report one. The record is its own: it never waits on the subscription
//! counts nodes flush every 100 ms. A dead node's reports are forgotten when it is withdrawn
//! ([`forget_node`]), before the withdrawing node reports its departures.

use herald_core::engine::EngineError;
use herald_core::webhooks::WebhookEvent;

use crate::{Inner, scripts, unavailable};

/// Whether this node tells `event` (see `Engine::arbitrate_webhook`).
pub(crate) async fn arbitrate(
    inner: &Inner,
    app: &str,
    event: WebhookEvent,
) -> Result<Option<WebhookEvent>, EngineError> {
    let (channel, kind, user, own_count) = match &event {
        WebhookEvent::ChannelOccupied { channel } => (channel, "occupied", "", 0),
        WebhookEvent::ChannelVacated { channel } => (channel, "vacated", "", 0),
        WebhookEvent::MemberAdded { channel, user_id } => (channel, "added", &**user_id, 0),
        WebhookEvent::MemberRemoved { channel, user_id } => (channel, "removed", &**user_id, 0),
        WebhookEvent::SubscriptionCount { channel, subscription_count } => (channel, "count", "", *subscription_count),
        WebhookEvent::ClientEvent { .. } | WebhookEvent::CacheMiss { .. } => return Ok(Some(event)),
    };
    let keys = inner.keys.channel(app, channel);
    let answer: u64 = scripts::ARBITRATE_WEBHOOK
        .key(keys.webhooked())
        .key(keys.webhook_nodes())
        .key(keys.webhook_member_nodes())
        .key(keys.webhook_member_counts())
        .key(keys.subscriptions())
        .arg(kind)
        .arg(&inner.id)
        .arg(user)
        .arg(own_count)
        .invoke_async(&mut inner.conn())
        .await
        .map_err(unavailable)?;
    Ok(match event {
        WebhookEvent::SubscriptionCount { channel, .. } => {
            Some(WebhookEvent::SubscriptionCount { channel, subscription_count: answer as usize })
        }
        event => (answer == 1).then_some(event),
    })
}

/// Forgets what dead `node` reported of `channel` (of `user` in it, when given).
pub(crate) async fn forget_node(
    inner: &Inner,
    app: &str,
    channel: &str,
    node: &str,
    user: Option<&str>,
) -> Result<(), redis::RedisError> {
    let keys = inner.keys.channel(app, channel);
    scripts::FORGET_WEBHOOK_NODE
        .key(keys.webhook_nodes())
        .key(keys.webhook_member_nodes())
        .key(keys.webhook_member_counts())
        .arg(node)
        .arg(user.unwrap_or(""))
        .invoke_async::<()>(&mut inner.conn())
        .await
}
