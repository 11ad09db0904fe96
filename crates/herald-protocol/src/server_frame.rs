//! Frames Herald sends, encoded once into shared bytes.
//!
//! Every frame is `{"event", "channel"?, "data"?, "user_id"?}`. Pusher double-encodes `data` (a JSON
//! string holding JSON) for system events and for events published over HTTP, and relays a client
//! event's data as the client sent it; [`FrameData`] says which. Encoding happens once per event, not
//! per recipient: the returned [`Bytes`] are cloned (a reference count) into every queue.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::socket_id::SocketId;

/// The `data` member of a frame.
#[derive(Clone, Copy, Debug)]
pub enum FrameData<'a> {
    /// Sent as a JSON string (Pusher's double encoding).
    Text(&'a str),
    /// Sent as the given JSON, verbatim.
    Json(&'a RawValue),
}

impl Serialize for FrameData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Json(raw) => raw.serialize(serializer),
        }
    }
}

/// Herald: a channel's position, `(epoch, serial)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Position<'a> {
    pub epoch: &'a str,
    pub serial: u64,
}

/// A frame with the optional members Pusher defines, in Pusher's order, then Herald's additions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame<'a> {
    pub event: &'a str,
    pub channel: Option<&'a str>,
    pub data: Option<FrameData<'a>>,
    pub user_id: Option<&'a str>,
    /// Herald: the event's serial in its channel.
    pub serial: Option<u64>,
    /// Herald: the channel's head, on `subscription_succeeded` and `signin_success`.
    pub position: Option<Position<'a>>,
    /// Herald: whether a requested resume succeeded.
    pub recovered: Option<bool>,
}

impl Serialize for Frame<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", self.event)?;
        if let Some(channel) = self.channel {
            map.serialize_entry("channel", channel)?;
        }
        if let Some(data) = &self.data {
            map.serialize_entry("data", data)?;
        }
        if let Some(user_id) = self.user_id {
            map.serialize_entry("user_id", user_id)?;
        }
        if let Some(serial) = self.serial {
            map.serialize_entry("serial", &serial)?;
        }
        if let Some(position) = &self.position {
            map.serialize_entry("position", position)?;
        }
        if let Some(recovered) = self.recovered {
            map.serialize_entry("recovered", &recovered)?;
        }
        map.end()
    }
}

impl Frame<'_> {
    pub fn encode(&self) -> Bytes {
        to_bytes(self)
    }
}

/// Serializes a value that cannot fail to serialize (no maps with non-string keys, no I/O).
fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(128);
    // Serializing these plain structs into a Vec has no failure path; an empty frame would be
    // dropped by the client rather than crash the server.
    let _ = serde_json::to_writer(&mut out, value);
    Bytes::from(out)
}

fn to_json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A channel event (published over HTTP, relayed from a client, or replayed), with its serial.
pub fn channel_event(event: &str, channel: &str, data: FrameData<'_>, user_id: Option<&str>, serial: u64) -> Bytes {
    Frame { event, channel: Some(channel), data: Some(data), user_id, serial: Some(serial), ..Frame::default() }
        .encode()
}

/// Herald: an answer about a channel to one connection (a feed snapshot, an unread count): routed
/// to the channel like an event, but without a serial, because it is not one of the channel's events.
pub fn channel_notice(event: &str, channel: &str, data: &str) -> Bytes {
    system(event, Some(channel), Some(data))
}

fn system(event: &str, channel: Option<&str>, data: Option<&str>) -> Bytes {
    Frame { event, channel, data: data.map(FrameData::Text), ..Frame::default() }.encode()
}

pub fn connection_established(socket_id: SocketId, activity_timeout_secs: u64) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data {
        socket_id: String,
        activity_timeout: u64,
    }
    let data = to_json_string(&Data { socket_id: socket_id.to_string(), activity_timeout: activity_timeout_secs });
    system("pusher:connection_established", None, Some(&data))
}

/// `pusher:error`; `code` is a close code before a close, or a non-fatal [`crate::ErrorCode`].
pub fn error(code: u16, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        message: &'a str,
        code: u16,
    }
    system("pusher:error", None, Some(&to_json_string(&Data { message, code })))
}

pub fn ping() -> Bytes {
    system("pusher:ping", None, Some("{}"))
}

/// A Herald event to one connection (`herald:job_accepted` and the like); `data` is JSON text,
/// sent as a string like Pusher's own system events.
pub fn herald_event(event: &str, data: &str) -> Bytes {
    system(event, None, Some(data))
}

pub fn pong() -> Bytes {
    system("pusher:pong", None, Some("{}"))
}

/// `pusher_internal:subscription_succeeded`; `data` is the presence document, or `{}`. Herald adds
/// the channel's position, and `recovered` when the client asked to resume.
pub fn subscription_succeeded(
    channel: &str,
    data: Option<&str>,
    position: Position<'_>,
    recovered: Option<bool>,
) -> Bytes {
    Frame {
        event: "pusher_internal:subscription_succeeded",
        channel: Some(channel),
        data: Some(FrameData::Text(data.unwrap_or("{}"))),
        position: Some(position),
        recovered,
        ..Frame::default()
    }
    .encode()
}

/// The presence document of `subscription_succeeded`: `{"presence":{"ids","hash","count"}}`.
/// `members` yields each user id with its `user_info` JSON (or `None`).
pub fn presence_data<'a>(members: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>) -> String {
    let mut ids = Vec::new();
    let mut hash = serde_json::Map::new();
    for (id, info) in members {
        ids.push(id);
        let info = info.and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or(serde_json::Value::Null);
        hash.insert(id.to_owned(), info);
    }
    let count = ids.len();
    to_json_string(&serde_json::json!({ "presence": { "ids": ids, "hash": hash, "count": count } }))
}

/// The reasons a subscription fails, with the `type` and `status` pusher-js reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionErrorKind {
    /// 401: missing or wrong signature, or bad `channel_data`.
    Auth,
    /// 400: the name is not a valid channel name, or not one a client may subscribe to.
    InvalidChannel,
    /// 429: too many channels on this connection, or the presence channel is full.
    LimitReached,
}

pub fn subscription_error(channel: &str, kind: SubscriptionErrorKind, error: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        error: &'a str,
        status: u16,
    }
    let (kind, status) = match kind {
        SubscriptionErrorKind::Auth => ("AuthError", 401),
        SubscriptionErrorKind::InvalidChannel => ("InvalidChannel", 400),
        SubscriptionErrorKind::LimitReached => ("LimitReached", 429),
    };
    system("pusher:subscription_error", Some(channel), Some(&to_json_string(&Data { kind, error, status })))
}

pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    system("pusher_internal:member_added", Some(channel), Some(&to_json_string(&Data { user_id, user_info })))
}

pub fn member_removed(channel: &str, user_id: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        user_id: &'a str,
    }
    system("pusher_internal:member_removed", Some(channel), Some(&to_json_string(&Data { user_id })))
}

/// `pusher:signin_success`; Herald adds the user stream's position, and `recovered` when the
/// client asked to resume it.
pub fn signin_success(user_data: &str, position: Position<'_>, recovered: Option<bool>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        user_data: &'a str,
    }
    let data = to_json_string(&Data { user_data });
    Frame {
        event: "pusher:signin_success",
        data: Some(FrameData::Text(&data)),
        position: Some(position),
        recovered,
        ..Frame::default()
    }
    .encode()
}

/// Whether watched users came online or went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
}

/// `pusher_internal:watchlist_events` with one entry per non-empty group.
pub fn watchlist_events(groups: &[(Presence, Vec<&str>)]) -> Bytes {
    let events: Vec<_> = groups
        .iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(presence, ids)| {
            let name = match presence {
                Presence::Online => "online",
                Presence::Offline => "offline",
            };
            serde_json::json!({ "name": name, "user_ids": ids })
        })
        .collect();
    let data = to_json_string(&serde_json::json!({ "events": events }));
    system("pusher_internal:watchlist_events", None, Some(&data))
}

pub fn cache_miss(channel: &str) -> Bytes {
    system("pusher:cache_miss", Some(channel), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn system_frames_double_encode_data() {
        assert_eq!(
            text(connection_established(SocketId::new(12, 34), 120)),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"12.34\",\"activity_timeout\":120}"}"#
        );
        assert_eq!(
            text(error(4001, "App key not found")),
            r#"{"event":"pusher:error","data":"{\"message\":\"App key not found\",\"code\":4001}"}"#
        );
        assert_eq!(text(cache_miss("cache-a")), r#"{"event":"pusher:cache_miss","channel":"cache-a"}"#);
        assert_eq!(
            text(subscription_succeeded("a", None, Position { epoch: "e1", serial: 3 }, Some(true))),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"a","data":"{}","position":{"epoch":"e1","serial":3},"recovered":true}"#
        );
    }

    #[test]
    fn channel_events_keep_data_verbatim() {
        let raw = RawValue::from_string(r#"{"a": 1}"#.into()).unwrap();
        assert_eq!(
            text(channel_event("client-x", "private-a", FrameData::Json(&raw), Some("u1"), 7)),
            r#"{"event":"client-x","channel":"private-a","data":{"a": 1},"user_id":"u1","serial":7}"#
        );
        assert_eq!(
            text(channel_event("e", "a", FrameData::Text("{\"b\":\"</script>\"}"), None, 1)),
            r#"{"event":"e","channel":"a","data":"{\"b\":\"</script>\"}","serial":1}"#
        );
    }

    #[test]
    fn presence_document_lists_members() {
        let info = RawValue::from_string(r#"{"name":"Ann"}"#.into()).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&presence_data([("1", Some(&*info)), ("2", None)].into_iter())).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"presence":{"ids":["1","2"],"hash":{"1":{"name":"Ann"},"2":null},"count":2}})
        );
    }

    #[test]
    fn watchlist_skips_empty_groups() {
        let frame = text(watchlist_events(&[(Presence::Online, vec!["a"]), (Presence::Offline, vec![])]));
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"events":[{"name":"online","user_ids":["a"]}]}));
    }
}
