//! Channel names and the kind of channel each prefix selects.
//!
//! A name is validated once, when it enters from the wire or the HTTP API, and its kind is decided
//! then; later code asks `kind()` instead of re-reading prefixes. Names allow Pusher's characters
//! `[A-Za-z0-9_\-=@,.;]`; `#` is reserved for `#server-to-user-<id>`, which only the server side
//! (publishing, sign-in) may name.

use std::fmt;
use std::sync::Arc;

/// What a channel's prefix makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// No reserved prefix: anyone may subscribe.
    Public,
    /// `private-`: subscription signed by the app's backend.
    Private,
    /// `private-encrypted-`: as private, and the payload is opaque to Herald.
    PrivateEncrypted,
    /// `presence-`: signed, with a member list.
    Presence,
    /// `#server-to-user-<id>`: the stream of a signed-in user.
    ServerToUser,
}

impl ChannelKind {
    /// Private, encrypted and presence channels need a signature to subscribe.
    pub fn requires_auth(self) -> bool {
        matches!(self, Self::Private | Self::PrivateEncrypted | Self::Presence)
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {max} characters")]
    TooLong { max: usize },
    #[error("channel name contains a character outside [A-Za-z0-9_\\-=@,.;]")]
    InvalidCharacter,
    #[error("channel names starting with '#' are reserved")]
    Reserved,
}

/// A validated channel name; cloning shares the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    name: Arc<str>,
    kind: ChannelKind,
    cache: bool,
}

const SERVER_TO_USER: &str = "#server-to-user-";

/// (prefix, kind, cache), longest prefix first so that the first match wins.
const PREFIXES: [(&str, ChannelKind, bool); 7] = [
    ("private-encrypted-cache-", ChannelKind::PrivateEncrypted, true),
    ("private-encrypted-", ChannelKind::PrivateEncrypted, false),
    ("private-cache-", ChannelKind::Private, true),
    ("private-", ChannelKind::Private, false),
    ("presence-cache-", ChannelKind::Presence, true),
    ("presence-", ChannelKind::Presence, false),
    ("cache-", ChannelKind::Public, true),
];

impl ChannelName {
    /// Validates a name a client or publisher gave, allowing `#server-to-user-<id>`.
    pub fn parse(name: &str, max_len: usize) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > max_len {
            return Err(ChannelNameError::TooLong { max: max_len });
        }
        if let Some(user_id) = name.strip_prefix(SERVER_TO_USER) {
            check_characters(user_id)?;
            if user_id.is_empty() {
                return Err(ChannelNameError::Empty);
            }
            return Ok(Self::with_kind(name, ChannelKind::ServerToUser, false));
        }
        if name.starts_with('#') {
            return Err(ChannelNameError::Reserved);
        }
        check_characters(name)?;
        let (kind, cache) = PREFIXES
            .iter()
            .find(|(prefix, _, _)| name.starts_with(prefix))
            .map_or((ChannelKind::Public, false), |&(_, kind, cache)| (kind, cache));
        Ok(Self::with_kind(name, kind, cache))
    }

    /// The user stream of `user_id`. The id must already be a valid user id.
    pub fn server_to_user(user_id: &str) -> Self {
        Self::with_kind(&format!("{SERVER_TO_USER}{user_id}"), ChannelKind::ServerToUser, false)
    }

    fn with_kind(name: &str, kind: ChannelKind, cache: bool) -> Self {
        Self { name: Arc::from(name), kind, cache }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Cache channels replay their last event to new subscribers.
    pub fn is_cache(&self) -> bool {
        self.cache
    }

    /// For `#server-to-user-<id>`, the user id.
    pub fn user_id(&self) -> Option<&str> {
        match self.kind {
            ChannelKind::ServerToUser => self.name.strip_prefix(SERVER_TO_USER),
            _ => None,
        }
    }
}

fn check_characters(name: &str) -> Result<(), ChannelNameError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b);
    if name.bytes().all(allowed) { Ok(()) } else { Err(ChannelNameError::InvalidCharacter) }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Result<(ChannelKind, bool), ChannelNameError>) {
        let got = ChannelName::parse(name, 200).map(|c| (c.kind(), c.is_cache()));
        assert_eq!(got, expected, "{name:?}");
    }

    #[test]
    fn prefixes_select_kinds() {
        use ChannelKind::*;
        check("my-channel", Ok((Public, false)));
        check("cache-x", Ok((Public, true)));
        check("private-x", Ok((Private, false)));
        check("private-cache-x", Ok((Private, true)));
        check("private-encrypted-x", Ok((PrivateEncrypted, false)));
        check("private-encrypted-cache-x", Ok((PrivateEncrypted, true)));
        check("presence-x", Ok((Presence, false)));
        check("presence-cache-x", Ok((Presence, true)));
        check("#server-to-user-42", Ok((ServerToUser, false)));
        check("a,b;c=d@e.f_g-h", Ok((Public, false)));
    }

    #[test]
    fn hostile_names_are_refused() {
        check("", Err(ChannelNameError::Empty));
        check("#other", Err(ChannelNameError::Reserved));
        check("#server-to-user-", Err(ChannelNameError::Empty));
        for bad in ["a b", "a\"b", "a/b", "é", "a\0b", "<script>", "a\nb"] {
            check(bad, Err(ChannelNameError::InvalidCharacter));
        }
        check(&"x".repeat(201), Err(ChannelNameError::TooLong { max: 200 }));
        check(&"x".repeat(200), Ok((ChannelKind::Public, false)));
    }

    #[test]
    fn server_to_user_exposes_the_user_id() {
        let c = ChannelName::server_to_user("u-1");
        assert_eq!(c.as_str(), "#server-to-user-u-1");
        assert_eq!(c.user_id(), Some("u-1"));
        assert_eq!(ChannelName::parse("private-a", 200).unwrap().user_id(), None);
    }
}
