//! Where everything lives in Redis.
//!
//! Every key and pub/sub channel starts with the deployment's prefix, so deployments sharing one
//! Redis never meet. A channel's keys share one hash tag, `{<app>:<channel>}`, so that the script
//! that publishes to it touches a single slot (Redis Cluster) and its pub/sub channel hashes there
//! too. Channel names cannot contain `:` or braces (the protocol forbids them), so the app id and
//! channel name split back apart at the last `:`.

/// Names for one deployment (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// Keys of one channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    /// Also the channel's pub/sub name.
    pub tag: String,
}

impl ChannelKeys {
    pub fn meta(&self) -> String {
        format!("{}:meta", self.tag)
    }
    pub fn history(&self) -> String {
        format!("{}:hist", self.tag)
    }
    pub fn cache(&self) -> String {
        format!("{}:cache", self.tag)
    }
    /// node id → this node's subscription count.
    pub fn subscriptions(&self) -> String {
        format!("{}:subs", self.tag)
    }
    /// user id → user_info of every presence member.
    pub fn members(&self) -> String {
        format!("{}:pm", self.tag)
    }
    /// "user\nnode" → 1 for each node holding a socket of the user.
    pub fn member_nodes(&self) -> String {
        format!("{}:pn", self.tag)
    }
    /// user id → how many nodes hold a socket of the user.
    pub fn member_counts(&self) -> String {
        format!("{}:pc", self.tag)
    }
    /// What webhooks last told of the channel: "o" while told occupied, "m\n<user>" while the user
    /// was told a member.
    pub fn webhooked(&self) -> String {
        format!("{}:wh", self.tag)
    }
    /// node → 1 for each node whose webhooks reported the channel occupied and not yet vacated.
    pub fn webhook_nodes(&self) -> String {
        format!("{}:whn", self.tag)
    }
    /// "user\nnode" → 1 for each node whose webhooks reported the user a member and not yet gone.
    pub fn webhook_member_nodes(&self) -> String {
        format!("{}:whm", self.tag)
    }
    /// user → how many nodes hold a "user\nnode" entry above.
    pub fn webhook_member_counts(&self) -> String {
        format!("{}:whc", self.tag)
    }
    /// A feed's item ids, in order (list).
    pub fn feed_order(&self) -> String {
        format!("{}:f:order", self.tag)
    }
    /// A feed's item id → value JSON.
    pub fn feed_values(&self) -> String {
        format!("{}:f:values", self.tag)
    }
    /// A feed's item id → serial of its last change (sorted set).
    pub fn feed_serials(&self) -> String {
        format!("{}:f:serials", self.tag)
    }
    /// A feed's retracted id → serial of the retraction (sorted set, the newest `max_items`).
    pub fn feed_retracted(&self) -> String {
        format!("{}:f:retracted", self.tag)
    }
    /// A feed's `horizon`: the newest retraction serial no longer remembered.
    pub fn feed_state(&self) -> String {
        format!("{}:f:state", self.tag)
    }
    /// Serials of the channel's counted (`count_unread`) events, the newest kept (sorted set).
    pub fn counted(&self) -> String {
        format!("{}:counted", self.tag)
    }
    /// The epoch the counted serials and the cursors belong to.
    pub fn counted_epoch(&self) -> String {
        format!("{}:counted:epoch", self.tag)
    }
    /// User id → the serial the user read the channel up to.
    pub fn cursors(&self) -> String {
        format!("{}:cursors", self.tag)
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn channel(&self, app: &str, channel: &str) -> ChannelKeys {
        ChannelKeys { tag: format!("{}:{{{app}:{channel}}}", self.prefix) }
    }

    /// The app and channel a pub/sub name belongs to, if it is one of this prefix's channels.
    pub fn parse_channel<'a>(&self, pubsub: &'a str) -> Option<(&'a str, &'a str)> {
        let inner = pubsub.strip_prefix(&self.prefix)?.strip_prefix(":{")?.strip_suffix('}')?;
        inner.rsplit_once(':')
    }

    /// Channels of an app that had subscribers (a hint; counts say which still do).
    pub fn app_channels(&self, app: &str) -> String {
        format!("{}:{{{app}}}:channels", self.prefix)
    }

    /// Control messages for every node (terminate a user).
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// Sorted set: node id → lease expiry (unix ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// What a node holds, so that others can withdraw it when the node dies.
    pub fn node_presence(&self, node: &str) -> String {
        format!("{}:node:{node}:presence", self.prefix)
    }
    pub fn node_subscriptions(&self, node: &str) -> String {
        format!("{}:node:{node}:subs", self.prefix)
    }

    /// The hash tag of a job queue (`{app:q:queue}`): every key of the queue starts with it.
    pub fn queue(&self, app: &str, queue: &str) -> String {
        format!("{}:{{{app}:q:{queue}}}", self.prefix)
    }

    /// Job id → queue name, per app.
    pub fn job_ids(&self, app: &str) -> String {
        format!("{}:{{{app}}}:jobids", self.prefix)
    }

    /// Every (app, queue) that ever had a job, for the lease sweep.
    pub fn job_queues(&self) -> String {
        format!("{}:jobqueues", self.prefix)
    }

    /// An idempotency key of an app: `target\nserials` while remembered.
    pub fn idempotency(&self, app: &str, key: &str) -> String {
        format!("{}:{{{app}}}:idem:{key}", self.prefix)
    }

    /// A node's own channel, which proves delivery works.
    pub fn probe(&self, node: &str) -> String {
        format!("{}:probe:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_share_a_hash_tag() {
        let keys = Keys::new("herald");
        let channel = keys.channel("app:1", "presence-room");
        assert_eq!(channel.tag, "herald:{app:1:presence-room}");
        assert_eq!(keys.parse_channel(&channel.tag), Some(("app:1", "presence-room")));
        assert!(channel.meta().starts_with(&channel.tag) && channel.members().starts_with(&channel.tag));
        assert_eq!(Keys::new("other").parse_channel(&channel.tag), None, "another prefix's channel");
    }
}
