//! Transports move text between a client and its [`herald_core::Session`]; they know sockets and
//! framing, nothing about channels: WebSocket, pusher-js's HTTP streaming and polling fallbacks,
//! and server-sent events.

pub mod http_fallback;
pub mod sse;
pub mod websocket;
