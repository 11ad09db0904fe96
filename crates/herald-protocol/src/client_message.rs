//! What a client may send, parsed from one text frame into one enum.
//!
//! This is the only place that reads a client's event names. `pusher:*` data is accepted as an object
//! or as a string holding a JSON object (clients differ); client event data is kept as the raw JSON
//! the client sent, so it is relayed byte for byte. Limits that depend on the app (sizes, rates) are
//! applied by the session, not here.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::close_code::ErrorCode;

/// One message from a client.
#[derive(Debug)]
pub enum ClientMessage {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin(Signin),
    /// A `client-*` event to relay to the channel's other subscribers.
    ClientEvent(ClientEvent),
    /// Herald: submit a job as the signed-in user.
    JobSubmit(JobSubmit),
    /// Herald: ask for the state of one of the signed-in user's jobs.
    JobGet(JobGet),
    /// Herald: send a feed channel's snapshot again.
    FeedSnapshotRequest(FeedSnapshotRequest),
    /// Herald: move the signed-in user's read cursor on a channel.
    MarkRead(MarkRead),
}

/// `herald:feed_snapshot_request` data.
#[derive(Debug, Deserialize)]
pub struct FeedSnapshotRequest {
    pub channel: String,
}

/// `herald:mark_read` data.
#[derive(Debug, Deserialize)]
pub struct MarkRead {
    pub channel: String,
    pub serial: u64,
}

/// `herald:job_submit` data. Any `user_id` a client adds is ignored: the job belongs to the user
/// the connection signed in as.
#[derive(Debug, Deserialize)]
pub struct JobSubmit {
    pub queue: String,
    pub payload: Box<RawValue>,
    /// Echoed in the answer, so a client can match it to its request.
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `herald:job_get` data.
#[derive(Debug, Deserialize)]
pub struct JobGet {
    pub id: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// A `client-*` event.
#[derive(Debug)]
pub struct ClientEvent {
    pub event: String,
    pub channel: String,
    pub data: Box<RawValue>,
    /// Herald: a repeat of this key within the app's window is not delivered again.
    pub idempotency_key: Option<String>,
}

/// Herald: where a client left off, sent with `pusher:subscribe` or `pusher:signin`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resume {
    pub epoch: String,
    pub serial: u64,
}

/// `pusher:subscribe` data.
#[derive(Debug, Deserialize)]
pub struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// For presence channels: the exact JSON string that was signed.
    #[serde(default)]
    pub channel_data: Option<String>,
    /// Herald: resume after this position instead of starting live.
    #[serde(default)]
    pub resume: Option<Resume>,
    /// Herald: on a feed channel, send `herald:feed_snapshot` after the confirmation.
    #[serde(default)]
    pub snapshot: bool,
    /// Herald: for a signed-in connection, send the channel's `herald:unread` after the confirmation.
    #[serde(default)]
    pub unread: bool,
}

/// `pusher:signin` data.
#[derive(Debug, Deserialize)]
pub struct Signin {
    pub auth: String,
    /// The exact JSON string that was signed.
    pub user_data: String,
    /// Herald: resume the user stream after this position.
    #[serde(default)]
    pub resume: Option<Resume>,
}

#[derive(Deserialize)]
struct Unsubscribe {
    channel: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Why a frame could not become a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown event: {0}")]
    UnknownEvent(String),
}

impl MessageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::MalformedMessage,
            Self::UnknownEvent(_) => ErrorCode::UnknownEvent,
        }
    }
}

const MAX_ECHOED_NAME: usize = 64;

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        let envelope: Envelope<'_> = serde_json::from_str(text)
            .map_err(|e| MessageError::Malformed(format!("expected a JSON object with an \"event\" string ({e})")))?;
        match &*envelope.event {
            "pusher:ping" => Ok(Self::Ping),
            "pusher:pong" => Ok(Self::Pong),
            "pusher:subscribe" => object_data(envelope.data).map(Self::Subscribe),
            "pusher:unsubscribe" => {
                object_data::<Unsubscribe>(envelope.data).map(|u| Self::Unsubscribe { channel: u.channel })
            }
            "pusher:signin" => object_data(envelope.data).map(Self::Signin),
            "herald:job_submit" => object_data(envelope.data).map(Self::JobSubmit),
            "herald:job_get" => object_data(envelope.data).map(Self::JobGet),
            "herald:feed_snapshot_request" => object_data(envelope.data).map(Self::FeedSnapshotRequest),
            "herald:mark_read" => object_data(envelope.data).map(Self::MarkRead),
            name if name.starts_with("client-") => {
                let channel = envelope
                    .channel
                    .ok_or_else(|| MessageError::Malformed("client event without \"channel\"".into()))?;
                let data = match envelope.data {
                    Some(raw) => raw.to_owned(),
                    None => {
                        RawValue::from_string("{}".to_owned()).map_err(|e| MessageError::Malformed(e.to_string()))?
                    }
                };
                Ok(Self::ClientEvent(ClientEvent {
                    event: name.to_owned(),
                    channel: channel.into_owned(),
                    data,
                    idempotency_key: envelope.idempotency_key,
                }))
            }
            other => Err(MessageError::UnknownEvent(truncate(other, MAX_ECHOED_NAME).to_owned())),
        }
    }
}

/// Reads `pusher:*` data given either as an object or as a string holding one.
fn object_data<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<T, MessageError> {
    let raw = raw.ok_or_else(|| MessageError::Malformed("missing \"data\"".into()))?;
    let result = if raw.get().starts_with('"') {
        serde_json::from_str::<String>(raw.get()).and_then(|s| serde_json::from_str(&s))
    } else {
        serde_json::from_str(raw.get())
    };
    result.map_err(|e| MessageError::Malformed(format!("invalid \"data\": {e}")))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_event() {
        assert!(matches!(ClientMessage::parse(r#"{"event":"pusher:ping","data":{}}"#), Ok(ClientMessage::Ping)));
        assert!(matches!(ClientMessage::parse(r#"{"event":"pusher:pong"}"#), Ok(ClientMessage::Pong)));
        let Ok(ClientMessage::Subscribe(s)) = ClientMessage::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":1}"}}"#,
        ) else {
            panic!("subscribe")
        };
        assert_eq!((s.channel.as_str(), s.auth.as_deref()), ("presence-a", Some("k:s")));
        assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":1}"#));
        let Ok(ClientMessage::Unsubscribe { channel }) =
            ClientMessage::parse(r#"{"event":"pusher:unsubscribe","data":"{\"channel\":\"a\"}"}"#)
        else {
            panic!("unsubscribe as string data")
        };
        assert_eq!(channel, "a");
        let Ok(ClientMessage::Signin(s)) =
            ClientMessage::parse(r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#)
        else {
            panic!("signin")
        };
        assert_eq!(s.user_data, r#"{"id":"1"}"#);
        let Ok(ClientMessage::ClientEvent(ClientEvent { event, channel, data, idempotency_key })) =
            ClientMessage::parse(
                r#"{"event":"client-typing","channel":"private-a","data":{"x": [1, 2]},"idempotency_key":"k1"}"#,
            )
        else {
            panic!("client event")
        };
        assert_eq!(idempotency_key.as_deref(), Some("k1"));
        let Ok(ClientMessage::Subscribe(s)) = ClientMessage::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"a","resume":{"epoch":"e1","serial":7}}}"#,
        ) else {
            panic!("subscribe with resume")
        };
        assert_eq!(s.resume, Some(Resume { epoch: "e1".into(), serial: 7 }));
        assert_eq!((event.as_str(), channel.as_str(), data.get()), ("client-typing", "private-a", r#"{"x": [1, 2]}"#));
    }

    #[test]
    fn client_event_data_is_kept_verbatim() {
        // JSON's grammar has no number range: data Herald relays is never re-read into f64 (found by
        // the client_message fuzz target, whose check had used `serde_json::Value`).
        let data = r#"{"x": [3, 255555554755555e547, -1e-999], "s":"\u00e9"}"#;
        let frame = format!(r#"{{"event":"client-a","channel":"private-a","data":{data}}}"#);
        let Ok(ClientMessage::ClientEvent(event)) = ClientMessage::parse(&frame) else { panic!("client event") };
        assert_eq!(event.data.get(), data);
    }

    #[test]
    fn bad_frames_have_codes() {
        let code = |t: &str| ClientMessage::parse(t).unwrap_err().code().code();
        assert_eq!(code("not json"), 4303);
        assert_eq!(code("[1,2]"), 4303);
        assert_eq!(code(r#"{"data":{}}"#), 4303);
        assert_eq!(code(r#"{"event":"pusher:subscribe"}"#), 4303);
        assert_eq!(code(r#"{"event":"pusher:subscribe","data":{"auth":"x"}}"#), 4303);
        assert_eq!(code(r#"{"event":"client-x","data":{}}"#), 4303);
        assert_eq!(code(r#"{"event":"pusher:nope","data":{}}"#), 4304);
        assert_eq!(code(r#"{"event":"my-event","data":{}}"#), 4304);
        let long = format!(r#"{{"event":"{}"}}"#, "é".repeat(100));
        let MessageError::UnknownEvent(name) = ClientMessage::parse(&long).unwrap_err() else { panic!() };
        assert!(name.len() <= MAX_ECHOED_NAME);
    }
}
