//! The protocol codec on its own: a client frame parsed once, a server frame encoded once per
//! channel event, and the channel authorisation checked per private subscribe.
//!
//! Run with: cargo bench -p herald-protocol --bench codec
#![allow(clippy::unwrap_used, reason = "benchmark setup")]

use criterion::{Criterion, criterion_group, criterion_main};
use herald_protocol::signature::{channel_auth_message, verify_auth};
use herald_protocol::{ClientMessage, FrameData, Secret, SocketId, server_frame};

const SUBSCRIBE: &str = r#"{"event":"pusher:subscribe","data":{"channel":"room-42"}}"#;
const CLIENT_EVENT: &str =
    r#"{"event":"client-typing","channel":"private-room-42","data":{"user":"ann","action":"a81f","typing":true}}"#;
const DATA: &str = r#"{"message":"hello, this is a typical chat message of about a hundred bytes","user":42}"#;

fn parse(c: &mut Criterion) {
    c.bench_function("parse_subscribe", |b| b.iter(|| ClientMessage::parse(std::hint::black_box(SUBSCRIBE)).unwrap()));
    c.bench_function("parse_client_event", |b| {
        b.iter(|| ClientMessage::parse(std::hint::black_box(CLIENT_EVENT)).unwrap())
    });
}

fn encode(c: &mut Criterion) {
    c.bench_function("encode_channel_event", |b| {
        b.iter(|| server_frame::channel_event("message", "presence-room-42", FrameData::Text(DATA), None, 42))
    });
}

fn authorise(c: &mut Criterion) {
    let secret = Secret::new("7ad3773142a6692b25b8");
    let socket = SocketId::new(1234, 1234);
    // Pusher's published vector (PUSHER-PROTOCOL.md): a valid signature, so the whole check runs.
    let message = channel_auth_message(socket, "private-foobar", None);
    let auth = "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
    c.bench_function("verify_channel_auth", |b| {
        b.iter(|| verify_auth("278d425bdf160c739803", &secret, message.as_bytes(), Some(auth)).unwrap())
    });
}

criterion_group!(benches, parse, encode, authorise);
criterion_main!(benches);
