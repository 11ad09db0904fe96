//! Presence membership of one channel: members are users, not sockets.
//!
//! A user with three tabs open is one member; `member_added` is due when their first socket joins
//! and `member_removed` when their last one leaves. This module only counts; the hub sends frames.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

/// What a socket brings when it joins a presence channel (from its signed `channel_data`).
#[derive(Debug, Clone)]
pub struct MemberJoin {
    pub user_id: Arc<str>,
    pub user_info: Option<Box<RawValue>>,
}

#[derive(Debug)]
struct Member {
    user_info: Option<Box<RawValue>>,
    sockets: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Members {
    members: HashMap<Arc<str>, Member>,
    /// Join order, so that member lists come out in a stable order.
    order: Vec<Arc<str>>,
}

/// The member list is full and this user is not in it yet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MembersFull;

impl Members {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Adds a socket of `join.user_id`; returns true when the user became a member.
    pub fn join(&mut self, join: &MemberJoin, max_members: usize) -> Result<bool, MembersFull> {
        if let Some(member) = self.members.get_mut(&join.user_id) {
            member.sockets += 1;
            return Ok(false);
        }
        if self.members.len() >= max_members {
            return Err(MembersFull);
        }
        self.members.insert(join.user_id.clone(), Member { user_info: join.user_info.clone(), sockets: 1 });
        self.order.push(join.user_id.clone());
        Ok(true)
    }

    /// Removes a socket of `user_id`; returns true when the user stopped being a member.
    pub fn leave(&mut self, user_id: &str) -> bool {
        let Some(member) = self.members.get_mut(user_id) else {
            return false;
        };
        member.sockets -= 1;
        if member.sockets > 0 {
            return false;
        }
        self.members.remove(user_id);
        self.order.retain(|id| &**id != user_id);
        true
    }

    pub fn contains(&self, user_id: &str) -> bool {
        self.members.contains_key(user_id)
    }

    /// Removes `user_id` whatever its socket count (a roster of other nodes' members); returns
    /// whether it was a member.
    pub fn leave_all(&mut self, user_id: &str) -> bool {
        if self.members.remove(user_id).is_none() {
            return false;
        }
        self.order.retain(|id| &**id != user_id);
        true
    }

    pub fn user_info(&self, user_id: &str) -> Option<&RawValue> {
        self.members.get(user_id).and_then(|m| m.user_info.as_deref())
    }

    /// Members in join order with their `user_info`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&RawValue>)> {
        self.order.iter().map(|id| (&**id, self.user_info(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(id: &str) -> MemberJoin {
        MemberJoin { user_id: Arc::from(id), user_info: None }
    }

    #[test]
    fn one_member_per_user_however_many_sockets() {
        let mut members = Members::default();
        assert_eq!(members.join(&join("a"), 2), Ok(true));
        assert_eq!(members.join(&join("a"), 2), Ok(false));
        assert_eq!(members.join(&join("b"), 2), Ok(true));
        assert_eq!(members.join(&join("c"), 2), Err(MembersFull));
        assert_eq!(members.join(&join("a"), 2), Ok(false), "an existing member may add sockets when full");
        assert!(!members.leave("a"));
        assert!(!members.leave("a"));
        assert!(members.leave("a"));
        assert!(!members.leave("a"));
        assert_eq!(members.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec!["b"]);
    }
}
