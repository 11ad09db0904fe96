//! The `socket_id` that names one connection: `"<digits>.<digits>"`.
//!
//! Clients sign channel subscriptions over it and publishers exclude it, so its text form is part of
//! the protocol. It is stored as two integers so that hashing and comparison stay cheap; it is not a
//! secret and is not generated here (the core chooses the numbers).

use std::fmt;
use std::str::FromStr;

/// One connection's identity, as Pusher spells it: two unsigned integers joined by a dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub high: u64,
    pub low: u64,
}

impl SocketId {
    pub fn new(high: u64, low: u64) -> Self {
        Self { high, low }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.high, self.low)
    }
}

/// The text was not `<digits>.<digits>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id: expected <digits>.<digits>")]
pub struct InvalidSocketId;

impl FromStr for SocketId {
    type Err = InvalidSocketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (high, low) = s.split_once('.').ok_or(InvalidSocketId)?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(high) || !digits(low) {
            return Err(InvalidSocketId);
        }
        Ok(Self { high: high.parse().map_err(|_| InvalidSocketId)?, low: low.parse().map_err(|_| InvalidSocketId)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let id: SocketId = "1234.5678".parse().unwrap();
        assert_eq!(id.to_string(), "1234.5678");
        for bad in ["", "1234", ".1", "1.", "a.1", "1.2.3", "-1.2", "1 .2"] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad:?}");
        }
    }
}
