//! Arbitrary text frames into `ClientMessage::parse`, then every channel they name into
//! `ChannelName::parse`.
//!
//! Nothing may panic. Where a parse succeeds: the message re-encoded as JSON (with `pusher:*` data
//! as an object and again as a string holding one) parses back to the same message; a client event's
//! data is relayed byte for byte in the frame Herald would send; a channel name that validates keeps
//! its text and gets the kind an independent reading of the prefix rules gives. The frame itself is
//! also tried as a channel name, so that names reach the validator without JSON escaping in the way.

#![no_main]

use std::collections::BTreeMap;

use herald_protocol::client_message::{FeedSnapshotRequest, JobGet, JobSubmit, MarkRead};
use herald_protocol::server_frame::{self, FrameData};
use herald_protocol::{ChannelKind, ChannelName, ChannelNameError, ClientEvent, ClientMessage, Signin, Subscribe};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// `MAX_ECHOED_NAME` in client_message.rs: an unknown event's name is echoed back at most this long.
const MAX_ECHOED_NAME: usize = 64;

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by the time the session sees it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_channel(text);
    match ClientMessage::parse(text) {
        Ok(message) => {
            for channel in channels(&message) {
                check_channel(channel);
            }
            check_round_trip(&message);
            if let ClientMessage::ClientEvent(event) = &message {
                check_relay(event);
            }
        }
        Err(error) => {
            assert!(matches!(error.code().code(), 4303 | 4304), "{error:?}");
            if let herald_protocol::MessageError::UnknownEvent(name) = &error {
                assert!(name.len() <= MAX_ECHOED_NAME, "echoed name too long: {}", name.len());
            }
        }
    }
});

fn channels(message: &ClientMessage) -> Vec<&str> {
    match message {
        ClientMessage::Subscribe(Subscribe { channel, .. })
        | ClientMessage::Unsubscribe { channel }
        | ClientMessage::ClientEvent(ClientEvent { channel, .. })
        | ClientMessage::FeedSnapshotRequest(FeedSnapshotRequest { channel })
        | ClientMessage::MarkRead(MarkRead { channel, .. }) => vec![channel.as_str()],
        _ => Vec::new(),
    }
}

/// The prefix rules of PUSHER-PROTOCOL.md, read independently of channel_name.rs.
fn expected_channel(name: &str, max: usize) -> Result<(ChannelKind, bool), ChannelNameError> {
    let alphabet = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b));
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max {
        return Err(ChannelNameError::TooLong { max });
    }
    if let Some(user) = name.strip_prefix("#server-to-user-") {
        return match (alphabet(user), user.is_empty()) {
            (false, _) => Err(ChannelNameError::InvalidCharacter),
            (true, true) => Err(ChannelNameError::Empty),
            (true, false) => Ok((ChannelKind::ServerToUser, false)),
        };
    }
    if name.starts_with('#') {
        return Err(ChannelNameError::Reserved);
    }
    if !alphabet(name) {
        return Err(ChannelNameError::InvalidCharacter);
    }
    let (rest, kind) = if let Some(rest) = name.strip_prefix("private-encrypted-") {
        (rest, ChannelKind::PrivateEncrypted)
    } else if let Some(rest) = name.strip_prefix("private-") {
        (rest, ChannelKind::Private)
    } else if let Some(rest) = name.strip_prefix("presence-") {
        (rest, ChannelKind::Presence)
    } else {
        (name, ChannelKind::Public)
    };
    Ok((kind, rest.starts_with("cache-")))
}

fn check_channel(name: &str) {
    for max in [164, 200, usize::MAX] {
        let got = ChannelName::parse(name, max);
        let summary = got.as_ref().map(|c| (c.kind(), c.is_cache())).map_err(Clone::clone);
        assert_eq!(summary, expected_channel(name, max), "{name:?} (max {max})");
        if let Ok(channel) = got {
            assert_eq!(channel.as_str(), name);
            assert_eq!(channel.to_string(), name);
            assert_eq!(
                channel.kind().requires_auth(),
                matches!(channel.kind(), ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence)
            );
            match channel.user_id() {
                Some(user) => {
                    assert_eq!(channel.kind(), ChannelKind::ServerToUser);
                    assert_eq!(ChannelName::server_to_user(user), channel);
                }
                None => assert_ne!(channel.kind(), ChannelKind::ServerToUser),
            }
        }
    }
}

/// Pusher's `data` for `pusher:*` events, as an object or as a string holding one.
fn envelope(event: &str, data: Value, as_string: bool) -> String {
    envelope_text(event, data.to_string(), as_string)
}

fn envelope_text(event: &str, data: String, as_string: bool) -> String {
    let data = if as_string { json!(data).to_string() } else { data };
    format!(r#"{{"event":{},"data":{data}}}"#, json!(event))
}

fn resume_value(resume: &Option<herald_protocol::Resume>) -> Option<Value> {
    resume.as_ref().map(|r| json!({ "epoch": r.epoch, "serial": r.serial }))
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

/// The message as a client could have sent it, or `None` for messages without fields.
fn reencode(message: &ClientMessage, as_string: bool) -> Option<String> {
    let text = match message {
        ClientMessage::Ping | ClientMessage::Pong => return None,
        ClientMessage::Subscribe(Subscribe { channel, auth, channel_data, resume, snapshot, unread }) => {
            let mut data = Map::new();
            data.insert("channel".into(), json!(channel));
            insert_some(&mut data, "auth", auth.as_ref().map(|a| json!(a)));
            insert_some(&mut data, "channel_data", channel_data.as_ref().map(|d| json!(d)));
            insert_some(&mut data, "resume", resume_value(resume));
            data.insert("snapshot".into(), json!(snapshot));
            data.insert("unread".into(), json!(unread));
            envelope("pusher:subscribe", Value::Object(data), as_string)
        }
        ClientMessage::Unsubscribe { channel } => {
            envelope("pusher:unsubscribe", json!({ "channel": channel }), as_string)
        }
        ClientMessage::Signin(Signin { auth, user_data, resume }) => {
            let mut data = Map::new();
            data.insert("auth".into(), json!(auth));
            data.insert("user_data".into(), json!(user_data));
            insert_some(&mut data, "resume", resume_value(resume));
            envelope("pusher:signin", Value::Object(data), as_string)
        }
        ClientMessage::JobSubmit(JobSubmit { queue, payload, request_id, idempotency_key }) => {
            let mut data = Map::new();
            data.insert("queue".into(), json!(queue));
            insert_some(&mut data, "request_id", request_id.as_ref().map(|r| json!(r)));
            insert_some(&mut data, "idempotency_key", idempotency_key.as_ref().map(|k| json!(k)));
            // The payload is spliced in verbatim, so that the round trip can compare its exact text.
            let rest = Value::Object(data).to_string();
            envelope_text("herald:job_submit", format!(r#"{{"payload":{},{}"#, payload.get(), &rest[1..]), as_string)
        }
        ClientMessage::JobGet(JobGet { id, request_id }) => {
            let mut data = Map::new();
            data.insert("id".into(), json!(id));
            insert_some(&mut data, "request_id", request_id.as_ref().map(|r| json!(r)));
            envelope("herald:job_get", Value::Object(data), as_string)
        }
        ClientMessage::FeedSnapshotRequest(FeedSnapshotRequest { channel }) => {
            envelope("herald:feed_snapshot_request", json!({ "channel": channel }), as_string)
        }
        ClientMessage::MarkRead(MarkRead { channel, serial }) => {
            envelope("herald:mark_read", json!({ "channel": channel, "serial": serial }), as_string)
        }
        ClientMessage::ClientEvent(ClientEvent { event, channel, data, idempotency_key }) => {
            // The data is spliced in verbatim: a client event's data is relayed as sent.
            let mut text = format!(r#"{{"event":{},"channel":{},"data":{}"#, json!(event), json!(channel), data.get());
            if let Some(key) = idempotency_key {
                text.push_str(&format!(r#","idempotency_key":{}"#, json!(key)));
            }
            text.push('}');
            text
        }
    };
    Some(text)
}

/// Re-encoding a parsed message and parsing it again gives the same message. Debug output is the
/// comparison because the message types carry `RawValue`s and derive no `PartialEq`; it shows every
/// field, and a `RawValue`'s exact text.
fn check_round_trip(message: &ClientMessage) {
    let original = format!("{message:?}");
    for as_string in [false, true] {
        if as_string && matches!(message, ClientMessage::ClientEvent(_)) {
            continue; // client event data is relayed verbatim, never unwrapped from a string
        }
        let Some(text) = reencode(message, as_string) else { continue };
        let again = ClientMessage::parse(&text).unwrap_or_else(|e| panic!("re-encoded {text:?} fails: {e}"));
        let again = format!("{again:?}");
        assert_eq!(original, again, "round trip of {text:?}");
    }
}

/// The frame Herald relays for a client event carries the client's data byte for byte.
///
/// The frame is read back as members holding `RawValue`s (a syntax check), not as a `Value`: JSON's
/// grammar allows numbers past `f64` (`1e999`), which a client may send and Herald relays untouched,
/// but which `Value` refuses ("number out of range").
fn check_relay(event: &ClientEvent) {
    assert!(event.event.starts_with("client-"));
    let frame = server_frame::channel_event(&event.event, &event.channel, FrameData::Json(&event.data), Some("u"), 7);
    let text = std::str::from_utf8(&frame).expect("frames are UTF-8");
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("frame {text:?} is not JSON: {e}"));
    let string = |name: &str| serde_json::from_str::<String>(members[name].get()).expect("a string member");
    assert_eq!(string("event"), event.event);
    assert_eq!(string("channel"), event.channel);
    assert_eq!(members["data"].get(), event.data.get(), "data not relayed verbatim");
    assert_eq!(string("user_id"), "u");
    assert_eq!(members["serial"].get(), "7");
}
