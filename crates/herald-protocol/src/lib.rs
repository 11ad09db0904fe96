//! Herald's wire layer for the Pusher Channels protocol, version 7.
//!
//! Text from a client becomes a [`ClientMessage`] here, once; frames to clients are encoded here,
//! once per event, into shared [`bytes::Bytes`]. Signatures (channel auth, user sign-in, signed HTTP
//! requests) are checked here in constant time. This crate does no IO and knows no runtime: it is
//! plain functions over bytes, so every rule in it can be tested without a socket.

pub mod channel_name;
pub mod client_message;
pub mod close_code;
pub mod request_signature;
pub mod server_frame;
pub mod signature;
pub mod socket_id;

pub use channel_name::{ChannelKind, ChannelName, ChannelNameError};
pub use client_message::{ClientEvent, ClientMessage, MessageError, Resume, Signin, Subscribe};
pub use close_code::{CloseCode, ErrorCode};
pub use request_signature::{RequestAuthError, SignedRequest};
pub use server_frame::{FrameData, Position};
pub use signature::{AuthError, Secret};
pub use socket_id::SocketId;
