//! How an app on a replica hub talks to its engine, and how the engine reaches the apps.
//!
//! The hub reports what a subscribe, an unsubscribe, a delivery or a snapshot changed
//! ([`Joined`], [`Left`], [`Apply`], [`Installed`]); this module turns those reports into engine
//! calls, after the hub's locks are released. On a single node (no engine) every call here is a
//! no-op, so the session and the HTTP API use one code path for both.

use std::sync::Arc;

use herald_protocol::SocketId;
use tokio::time::Instant;

use crate::app::App;
use crate::engine::{Delivery, Node, Snapshot};
use crate::hub::{Installed, Joined, Left};
use crate::registry::Registry;

/// The engine channel whose presence members are the users signed in on any node. Its name cannot
/// be a client channel's (`#` is reserved), and it is never listed.
const ONLINE: &str = "#online";

impl App {
    /// Whether this app shares its channels with other nodes.
    pub fn is_clustered(&self) -> bool {
        self.engine.is_some()
    }

    /// Starts following which users are online on every node (for watchlists).
    fn follow_online(&self) {
        let Some(engine) = &self.engine else { return };
        self.users.follow_engine();
        engine.listen(self.id(), ONLINE, self.retention(false));
    }

    /// Tells the engine a user came online on this node (`true`) or went offline.
    pub(crate) fn user_online_here(&self, user_id: &str, online: bool, socket_id: SocketId) {
        let Some(engine) = &self.engine else { return };
        match online {
            true => engine.presence_join(self.id(), ONLINE, user_id, None, socket_id),
            false => engine.presence_leave(self.id(), ONLINE, user_id),
        }
    }

    /// Passes on what a subscribe changed.
    pub(crate) fn joined(&self, channel: &str, joined: Joined, socket_id: SocketId) {
        self.webhook_joined(channel, &joined);
        let Some(engine) = &self.engine else { return };
        if let Some(member) = joined.member {
            let info = member.user_info.as_deref().map(|i| i.get());
            engine.presence_join(self.id(), channel, &member.user_id, info, socket_id);
        }
        if let Some(count) = joined.count {
            engine.set_count(self.id(), channel, count);
        }
    }

    /// Passes on what an unsubscribe changed.
    pub(crate) fn left(&self, channel: &str, left: Left) {
        self.webhook_left(channel, &left);
        let Some(engine) = &self.engine else { return };
        if let Some(user_id) = left.member_left {
            engine.presence_leave(self.id(), channel, &user_id);
        }
        if let Some(count) = left.count {
            engine.set_count(self.id(), channel, count);
        }
    }

    fn delivered(&self, channel: &str, delivery: Delivery) {
        if self.engine.is_none() {
            return;
        }
        if channel == ONLINE {
            match delivery {
                Delivery::MemberAdded { user_id, .. } => self.users.set_online(&user_id, true),
                Delivery::MemberRemoved { user_id } => self.users.set_online(&user_id, false),
                Delivery::Event(_) => {}
            }
            return;
        }
        self.hub.apply(channel, delivery, Instant::now());
    }

    fn installed(&self, channel: &str, snapshot: Snapshot) {
        let Some(engine) = &self.engine else { return };
        if channel == ONLINE {
            let users: Vec<String> = snapshot.members.into_iter().map(|(id, _)| id).collect();
            return self.users.replace_online(&users);
        }
        let installed = self.hub.install(channel, snapshot, Instant::now());
        self.webhook_installed(channel, &installed);
        let Installed { joined, count, .. } = installed;
        for (member, socket_id) in joined {
            let info = member.user_info.as_deref().map(|i| i.get());
            engine.presence_join(self.id(), channel, &member.user_id, info, socket_id);
        }
        engine.set_count(self.id(), channel, count);
    }
}

impl Node for Registry {
    fn deliver(&self, app: &str, channel: &str, delivery: Delivery) {
        if let Some(app) = self.by_id(app) {
            app.delivered(channel, delivery);
        }
    }

    fn install(&self, app: &str, channel: &str, snapshot: Snapshot) {
        if let Some(app) = self.by_id(app) {
            app.installed(channel, snapshot);
        }
    }

    fn terminate_user(&self, app: &str, user_id: &str) {
        if let Some(app) = self.by_id(app) {
            let closed = app.users.terminate(user_id);
            tracing::info!(app = %app.id(), closed, "terminated a user's connections on this node");
        }
    }

    fn withdrawn(&self, app: &str, channel: &str, user_id: Option<&str>) {
        if let Some(app) = self.by_id(app) {
            app.webhook_withdrawn(channel, user_id);
        }
    }
}

/// Keeps `registry` reachable from its apps' engine.
pub fn attach(registry: &Arc<Registry>) {
    let node: Arc<dyn Node> = registry.clone();
    for app in registry.apps() {
        if let Some(engine) = &app.engine {
            engine.attach(Arc::downgrade(&node));
            app.follow_online();
        }
    }
}
