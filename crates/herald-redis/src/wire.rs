//! The text Herald nodes exchange over Redis pub/sub and keep in history lists.
//!
//! An event is `E\n<serial>\n<epoch>\n<unix ms>\n<json>`; the header is written by the publish
//! script, which alone knows the serial and the time. Member changes are `A<json>` and `R<json>`;
//! control messages are `T<json>`. Anything else is logged and dropped: a malformed message from a
//! foreign writer must not take a node down.

use std::sync::Arc;

use herald_core::engine::{Delivery, Message, Record};
use herald_protocol::SocketId;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Payload {
    e: String,
    d: String,
    #[serde(default)]
    j: bool,
    #[serde(default)]
    u: Option<String>,
    #[serde(default)]
    x: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Member {
    u: String,
    #[serde(default)]
    i: Option<String>,
    #[serde(default)]
    x: Option<String>,
}

/// The JSON body of an event, before the script adds its header.
pub(crate) fn payload(message: &Message) -> String {
    let payload = Payload {
        e: message.event.clone(),
        d: message.data.clone(),
        j: message.json,
        u: message.user_id.clone(),
        x: message.exclude.map(|s| s.to_string()),
    };
    serde_json::to_string(&payload).unwrap_or_default()
}

pub(crate) fn member_added(user_id: &str, user_info: Option<&str>, exclude: SocketId) -> String {
    let member = Member { u: user_id.into(), i: user_info.map(Into::into), x: Some(exclude.to_string()) };
    format!("A{}", serde_json::to_string(&member).unwrap_or_default())
}

pub(crate) fn member_removed(user_id: &str) -> String {
    let member = Member { u: user_id.into(), i: None, x: None };
    format!("R{}", serde_json::to_string(&member).unwrap_or_default())
}

pub(crate) fn terminate(app: &str, user_id: &str) -> String {
    format!("T{}", serde_json::to_string(&(app, user_id)).unwrap_or_default())
}

pub(crate) fn parse_terminate(text: &str) -> Option<(String, String)> {
    serde_json::from_str(text.strip_prefix('T')?).ok()
}

/// An event record as the publish script wrote it.
pub(crate) fn parse_record(text: &str) -> Option<Record> {
    let rest = text.strip_prefix("E\n")?;
    let mut parts = rest.splitn(4, '\n');
    let serial = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let at_unix_ms = parts.next()?.parse().ok()?;
    let payload: Payload = serde_json::from_str(parts.next()?).ok()?;
    let message = Message {
        event: payload.e,
        data: payload.d,
        json: payload.j,
        user_id: payload.u,
        exclude: payload.x.and_then(|x| x.parse().ok()),
    };
    Some(Record { epoch: Arc::from(epoch), serial, at_unix_ms, message: Arc::new(message) })
}

pub(crate) fn parse_delivery(text: &str) -> Option<Delivery> {
    match text.as_bytes().first()? {
        b'E' => parse_record(text).map(Delivery::Event),
        b'A' => {
            let member: Member = serde_json::from_str(&text[1..]).ok()?;
            let exclude = member.x.and_then(|x| x.parse().ok());
            Some(Delivery::MemberAdded { user_id: member.u, user_info: member.i, exclude })
        }
        b'R' => {
            let member: Member = serde_json::from_str(&text[1..]).ok()?;
            Some(Delivery::MemberRemoved { user_id: member.u })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_members_round_trip() {
        let message = Message {
            event: "client-x".into(),
            data: r#"{"a":"line\nbreak"}"#.into(),
            json: true,
            user_id: Some("u\n1".into()),
            exclude: Some("123.456".parse().unwrap_or_else(|_| panic!("socket id"))),
        };
        let text = format!("E\n7\nabc\n1700000000000\n{}", payload(&message));
        let record = parse_record(&text).unwrap_or_else(|| panic!("parses"));
        assert_eq!((record.serial, &*record.epoch, record.at_unix_ms), (7, "abc", 1_700_000_000_000));
        assert_eq!(*record.message, message);
        let added = parse_delivery(&member_added("u\n1", Some("{}"), message.exclude.unwrap_or_else(|| panic!())));
        assert!(matches!(added, Some(Delivery::MemberAdded { user_id, .. }) if user_id == "u\n1"));
        assert_eq!(parse_delivery(&member_removed("u")), Some(Delivery::MemberRemoved { user_id: "u".into() }));
        assert_eq!(parse_delivery("garbage"), None);
        assert_eq!(parse_terminate(&terminate("a", "u")), Some(("a".into(), "u".into())));
    }
}
