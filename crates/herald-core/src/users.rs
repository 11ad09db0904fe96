//! Signed-in users on this node: who is online, on which connections, and who watches whom.
//!
//! The user stream `#server-to-user-<id>` itself is a hub channel that a connection joins when it
//! signs in (so it has serials and history like any channel); this index answers the questions the
//! hub cannot: is a user online, whom to close on `terminate_connections`, and who watches whom. A
//! user is online while at least one of their connections is signed in; watchers hear only the
//! transitions. On an engine shared by several nodes, "online" means on any node: this node reports
//! its own transitions to the engine, and watchers hear the engine's (see `cluster.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::server_frame::{self, Presence};
use herald_protocol::{CloseCode, SocketId};
use parking_lot::Mutex;

use crate::connection::Connection;

#[derive(Debug, Default)]
pub(crate) struct Users {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Users with a connection on this node.
    online: HashMap<Arc<str>, Vec<Arc<Connection>>>,
    /// With an engine: users online on any node, as the engine reports them.
    anywhere: Option<HashSet<Arc<str>>>,
    /// Watched user id → connections watching it.
    watchers: HashMap<Arc<str>, Vec<Arc<Connection>>>,
}

impl Inner {
    fn is_online(&self, user_id: &str) -> bool {
        match &self.anywhere {
            Some(anywhere) => anywhere.contains(user_id),
            None => self.online.contains_key(user_id),
        }
    }

    fn notify_watchers(&self, user_id: &str, presence: Presence) {
        if let Some(watchers) = self.watchers.get(user_id) {
            let frame = server_frame::watchlist_events(&[(presence, vec![user_id])]);
            for watcher in watchers {
                watcher.outbox.push(frame.clone());
            }
        }
    }
}

impl Users {
    /// Records that `connection` is signed in as `user_id`, tells watchers if the user just came
    /// online, and sends the connection the current state of its own watchlist.
    /// Returns whether the user came online on this node, and the frame telling the connection the
    /// current state of its watchlist (to send right after `signin_success`).
    pub fn sign_in(
        &self,
        user_id: &Arc<str>,
        connection: &Arc<Connection>,
        watchlist: &[Arc<str>],
    ) -> (bool, Option<Bytes>) {
        let mut inner = self.inner.lock();
        let connections = inner.online.entry(user_id.clone()).or_default();
        connections.push(connection.clone());
        let came_online = connections.len() == 1;
        if came_online && inner.anywhere.is_none() {
            inner.notify_watchers(user_id, Presence::Online);
        }
        if watchlist.is_empty() {
            return (came_online, None);
        }
        let (mut online, mut offline) = (Vec::new(), Vec::new());
        for watched in watchlist {
            inner.watchers.entry(watched.clone()).or_default().push(connection.clone());
            if inner.is_online(watched) { online.push(&**watched) } else { offline.push(&**watched) }
        }
        (came_online, Some(server_frame::watchlist_events(&[(Presence::Online, online), (Presence::Offline, offline)])))
    }

    /// Undoes [`Users::sign_in`] for one connection; returns whether the user went offline on this
    /// node.
    pub fn sign_out(&self, user_id: &str, socket_id: SocketId, watchlist: &[Arc<str>]) -> bool {
        let mut inner = self.inner.lock();
        for watched in watchlist {
            if let Some(watchers) = inner.watchers.get_mut(watched) {
                watchers.retain(|c| c.socket_id != socket_id);
                if watchers.is_empty() {
                    inner.watchers.remove(watched);
                }
            }
        }
        let Some(connections) = inner.online.get_mut(user_id) else {
            return false;
        };
        connections.retain(|c| c.socket_id != socket_id);
        if !connections.is_empty() {
            return false;
        }
        inner.online.remove(user_id);
        if inner.anywhere.is_none() {
            inner.notify_watchers(user_id, Presence::Offline);
        }
        true
    }

    /// From now on, "online" is what the engine reports (several nodes).
    pub fn follow_engine(&self) {
        self.inner.lock().anywhere.get_or_insert_with(HashSet::new);
    }

    /// The engine says `user_id` came online or went offline somewhere.
    pub fn set_online(&self, user_id: &str, online: bool) {
        let mut inner = self.inner.lock();
        let Some(anywhere) = inner.anywhere.as_mut() else { return };
        let changed = if online { anywhere.insert(Arc::from(user_id)) } else { anywhere.remove(user_id) };
        if changed {
            inner.notify_watchers(user_id, if online { Presence::Online } else { Presence::Offline });
        }
    }

    /// The engine's full list of online users (after a (re)connect): watchers hear the differences.
    pub fn replace_online(&self, users: &[String]) {
        let now: HashSet<Arc<str>> = users.iter().map(|u| Arc::from(u.as_str())).collect();
        let mut inner = self.inner.lock();
        let before = inner.anywhere.replace(now.clone()).unwrap_or_default();
        for user in before.difference(&now) {
            inner.notify_watchers(user, Presence::Offline);
        }
        for user in now.difference(&before) {
            inner.notify_watchers(user, Presence::Online);
        }
    }

    /// Closes every connection signed in as `user_id` with 4009; returns how many.
    pub fn terminate(&self, user_id: &str) -> usize {
        let inner = self.inner.lock();
        let Some(connections) = inner.online.get(user_id) else {
            return 0;
        };
        for connection in connections {
            connection.outbox.close(CloseCode::Unauthorized);
        }
        connections.len()
    }
}
