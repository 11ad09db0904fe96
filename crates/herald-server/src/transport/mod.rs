//! Transports move text between a client and its [`herald_core::Session`]; they know sockets and
//! framing, nothing about channels: WebSocket, and pusher-js's HTTP streaming and polling fallbacks.

pub mod http_fallback;
pub mod websocket;
