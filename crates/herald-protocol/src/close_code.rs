//! The numbered codes a client sees: WebSocket close codes and `pusher:error` codes.
//!
//! Pusher gives each range a reconnect meaning (4000–4099 do not retry, 4100–4199 back off,
//! 4200–4299 reconnect at once), and pusher-js acts on it. Every close Herald sends names one of these
//! variants, so the meaning is decided in one place and documented in `docs/protocol.md`.

/// A close code sent with a WebSocket close frame (and as the `code` of the `pusher:error` before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 4001: no app has this key. Do not reconnect.
    AppNotFound,
    /// 4003: the app exists but is disabled. Do not reconnect.
    AppDisabled,
    /// 4004: the app is at its connection limit. Do not reconnect unchanged.
    OverConnectionQuota,
    /// 4006: the `protocol` query parameter is not a number.
    InvalidVersionFormat,
    /// 4007: a protocol version Herald does not speak.
    UnsupportedProtocol,
    /// 4009: the connection is not (or no longer) authorized: failed sign-in, a backend terminated it,
    /// or it neither signed in nor subscribed to a private channel in time.
    Unauthorized,
    /// 4100: the client could not keep up with its outgoing queue. Back off, reconnect, resume.
    OverCapacity,
    /// 4200: reconnect now (graceful shutdown of this node).
    Reconnect,
    /// 4201: the client did not answer a ping in time.
    PongNotReceived,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            Self::AppNotFound => 4001,
            Self::AppDisabled => 4003,
            Self::OverConnectionQuota => 4004,
            Self::InvalidVersionFormat => 4006,
            Self::UnsupportedProtocol => 4007,
            Self::Unauthorized => 4009,
            Self::OverCapacity => 4100,
            Self::Reconnect => 4200,
            Self::PongNotReceived => 4201,
        }
    }

    /// The close reason sent with the code: short, fixed text (no user input, no secrets).
    pub fn reason(self) -> &'static str {
        match self {
            Self::AppNotFound => "App key not found",
            Self::AppDisabled => "App disabled",
            Self::OverConnectionQuota => "App over connection quota",
            Self::InvalidVersionFormat => "Invalid protocol version format",
            Self::UnsupportedProtocol => "Unsupported protocol version",
            Self::Unauthorized => "Connection unauthorized",
            Self::OverCapacity => "Client too slow to keep up; reconnect and resume",
            Self::Reconnect => "Server restarting; reconnect",
            Self::PongNotReceived => "Pong reply not received",
        }
    }
}

/// A code carried by a non-fatal `pusher:error`: the connection stays open.
///
/// 4301 and 4302 are Pusher's. 4303–4306 are Herald's, in the range Pusher leaves for errors that are
/// not close codes, so that a client can tell bad input apart without parsing the message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 4301: client event dropped by the per-connection rate limit.
    ClientEventRateLimited,
    /// 4302: the sign-in watchlist was longer than the limit; the first ids were kept.
    WatchlistTruncated,
    /// 4303: the frame was not a JSON object of the expected shape.
    MalformedMessage,
    /// 4304: the event name is not one a client may send.
    UnknownEvent,
    /// 4305: the frame or event data is larger than the app allows.
    PayloadTooLarge,
    /// 4306: a client event was refused (channel type, not subscribed, disabled, bad name).
    ClientEventRejected,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            Self::ClientEventRateLimited => 4301,
            Self::WatchlistTruncated => 4302,
            Self::MalformedMessage => 4303,
            Self::UnknownEvent => 4304,
            Self::PayloadTooLarge => 4305,
            Self::ClientEventRejected => 4306,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_sit_in_their_reconnect_ranges() {
        let refused = [
            CloseCode::AppNotFound,
            CloseCode::AppDisabled,
            CloseCode::OverConnectionQuota,
            CloseCode::InvalidVersionFormat,
            CloseCode::UnsupportedProtocol,
            CloseCode::Unauthorized,
        ];
        assert!(refused.iter().all(|c| (4000..4100).contains(&c.code())));
        assert!((4100..4200).contains(&CloseCode::OverCapacity.code()));
        for c in [CloseCode::Reconnect, CloseCode::PongNotReceived] {
            assert!((4200..4300).contains(&c.code()));
        }
    }
}
