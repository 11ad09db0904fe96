//! Signed-in users on this node: who is online, on which connections, and who watches whom.
//!
//! The user stream `#server-to-user-<id>` itself is a hub channel that a connection joins when it
//! signs in (so it has serials and history like any channel); this index answers the questions the
//! hub cannot: is a user online, whom to close on `terminate_connections`, and who watches whom. A
//! user is online while at least one of their connections is signed in; watchers hear only the
//! transitions.

use std::collections::HashMap;
use std::sync::Arc;

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
    online: HashMap<Arc<str>, Vec<Arc<Connection>>>,
    /// Watched user id → connections watching it.
    watchers: HashMap<Arc<str>, Vec<Arc<Connection>>>,
}

impl Inner {
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
    pub fn sign_in(&self, user_id: &Arc<str>, connection: &Arc<Connection>, watchlist: &[Arc<str>]) {
        let mut inner = self.inner.lock();
        let connections = inner.online.entry(user_id.clone()).or_default();
        connections.push(connection.clone());
        if connections.len() == 1 {
            inner.notify_watchers(user_id, Presence::Online);
        }
        if watchlist.is_empty() {
            return;
        }
        let (mut online, mut offline) = (Vec::new(), Vec::new());
        for watched in watchlist {
            inner.watchers.entry(watched.clone()).or_default().push(connection.clone());
            if inner.online.contains_key(watched) { online.push(&**watched) } else { offline.push(&**watched) }
        }
        connection
            .outbox
            .push(server_frame::watchlist_events(&[(Presence::Online, online), (Presence::Offline, offline)]));
    }

    /// Undoes [`Users::sign_in`] for one connection.
    pub fn sign_out(&self, user_id: &str, socket_id: SocketId, watchlist: &[Arc<str>]) {
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
            return;
        };
        connections.retain(|c| c.socket_id != socket_id);
        if connections.is_empty() {
            inner.online.remove(user_id);
            inner.notify_watchers(user_id, Presence::Offline);
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
