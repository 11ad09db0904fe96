//! Pusher's HTTP API (publish, batch publish, channel queries, terminate connections) and Herald's
//! own routes (history, jobs).
//!
//! Every route is signed (see [`auth`]); handlers parse their input into core types and call the
//! app. Errors are [`ApiError`] values that know their status and carry a short plain-text body,
//! which is what the official SDKs surface to their callers.

pub mod auth;
pub mod channels;
pub mod cursors;
pub mod error;
pub mod events;
pub mod feeds;
pub mod history;
pub mod jobs;
pub mod users;
pub mod webhooks;

pub use error::ApiError;
