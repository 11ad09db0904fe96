//! What the app reports to its webhook sink: the hub's and sessions' changes, turned into events.
//!
//! Each call returns at once when the app has no webhook (an empty cell), so the hot path pays
//! nothing without webhooks. Users' own streams (`#server-to-user-…`) are not channels to
//! webhooks. On a replica hub (Redis) each node reports what it sees of a channel; the engine
//! then decides, for all nodes, what is told (`Engine::arbitrate_webhook`).

use std::sync::Arc;

use super::{WebhookEvent, WebhookEventKind, WebhookSink};
use crate::app::App;
use crate::hub::{Installed, Joined, Left};

impl App {
    /// This app's webhook sink, when it has webhooks.
    pub fn webhook_sink(&self) -> Option<&WebhookSink> {
        self.webhooks.get()
    }

    /// The sink, when there is one and `channel` is a channel to webhooks (users' own streams,
    /// `#…`, are not).
    fn channel_sink(&self, channel: &str) -> Option<&WebhookSink> {
        self.webhooks.get().filter(|_| !channel.starts_with('#'))
    }

    /// Reports what a subscribe changed.
    pub(crate) fn webhook_joined(&self, channel: &str, joined: &Joined) {
        let Some(sink) = self.channel_sink(channel) else { return };
        if joined.occupied {
            sink.emit(WebhookEvent::ChannelOccupied { channel: Arc::from(channel) });
        }
        if let Some(user_id) = &joined.member_added {
            sink.emit(WebhookEvent::MemberAdded { channel: Arc::from(channel), user_id: user_id.clone() });
        }
        if joined.cache_miss {
            sink.emit(WebhookEvent::CacheMiss { channel: Arc::from(channel) });
        }
        // A replica's joiner that waits for a snapshot is not subscribed yet: its count comes
        // with the install.
        if !self.is_clustered() || joined.count.is_some() {
            self.webhook_count(sink, channel);
        }
    }

    /// Reports the channel's subscription count, when an endpoint asked for it.
    fn webhook_count(&self, sink: &WebhookSink, channel: &str) {
        if sink.wants(WebhookEventKind::SubscriptionCount) {
            let subscription_count = self.hub.counts(channel).map_or(0, |counts| counts.subscription_count);
            sink.emit(WebhookEvent::SubscriptionCount { channel: Arc::from(channel), subscription_count });
        }
    }

    /// Reports what an unsubscribe changed.
    pub(crate) fn webhook_left(&self, channel: &str, left: &Left) {
        let Some(sink) = self.channel_sink(channel) else { return };
        if let Some(user_id) = &left.member_removed {
            sink.emit(WebhookEvent::MemberRemoved { channel: Arc::from(channel), user_id: user_id.clone() });
        }
        if left.vacated {
            sink.emit(WebhookEvent::ChannelVacated { channel: Arc::from(channel) });
        }
        self.webhook_count(sink, channel);
    }

    /// Reports what installing a snapshot changed: joiners that waited for it are subscribed now.
    pub(crate) fn webhook_installed(&self, channel: &str, installed: &Installed) {
        let Some(sink) = self.channel_sink(channel) else { return };
        if installed.occupied {
            sink.emit(WebhookEvent::ChannelOccupied { channel: Arc::from(channel) });
        }
        for (member, _) in &installed.joined {
            sink.emit(WebhookEvent::MemberAdded { channel: Arc::from(channel), user_id: member.user_id.clone() });
        }
        for _ in 0..installed.cache_misses {
            sink.emit(WebhookEvent::CacheMiss { channel: Arc::from(channel) });
        }
        if installed.joiners > 0 {
            self.webhook_count(sink, channel);
        }
    }

    /// Reports another node's withdrawn part of `channel` as a departure seen here; the engine
    /// decides whether the channel (or member) is really gone. Nothing when this node still has
    /// the channel (or the member): then it is not gone.
    pub(crate) fn webhook_withdrawn(&self, channel: &str, user_id: Option<&str>) {
        let Some(sink) = self.channel_sink(channel) else { return };
        match user_id {
            Some(user_id) if !self.hub.has_member(channel, user_id) => {
                sink.emit(WebhookEvent::MemberRemoved { channel: Arc::from(channel), user_id: Arc::from(user_id) });
            }
            // (`counts` is `None` exactly when nobody here is subscribed)
            None if self.hub.counts(channel).is_none() => {
                sink.emit(WebhookEvent::ChannelVacated { channel: Arc::from(channel) });
            }
            _ => {}
        }
    }

    /// Reports a client event that was delivered.
    pub(crate) fn webhook_client_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        socket_id: herald_protocol::SocketId,
        user_id: Option<&Arc<str>>,
    ) {
        let Some(sink) = self.webhooks.get().filter(|sink| sink.wants(WebhookEventKind::ClientEvent)) else {
            return;
        };
        sink.emit(WebhookEvent::ClientEvent {
            channel: Arc::from(channel),
            event: event.to_owned(),
            data: data.to_owned(),
            socket_id: socket_id.to_string(),
            user_id: user_id.cloned(),
        });
    }
}
