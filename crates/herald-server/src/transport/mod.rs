//! Transports move text between a client and its [`herald_core::Session`]; they know sockets and
//! framing, nothing about channels. WebSocket is the one transport so far.

pub mod websocket;
