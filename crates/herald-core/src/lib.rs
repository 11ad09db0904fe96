//! Herald's domain, independent of any transport or HTTP framework.
//!
//! An [`App`] is one tenant: its settings, its local [`hub::Hub`] of channels and subscribers, its
//! signed-in [`users::Users`]. A [`Session`] is one client's protocol state machine: it turns parsed
//! client messages into subscriptions and frames, and writes every answer into the connection's
//! [`Outbox`]. A transport (WebSocket today, HTTP fallbacks later) only moves text in and drains the
//! outbox out; it never decides anything about channels. Nothing here opens a socket or names axum.

pub mod app;
pub mod cluster;
pub mod connection;
pub mod cursors;
pub mod engine;
pub mod feeds;
pub mod history;
pub mod hub;
pub mod idempotency;
pub mod jobs;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod publish;
pub mod rate_limit;
pub mod registry;
pub mod session;
pub mod store;
mod subscriptions;
pub mod users;
pub mod webhooks;

pub use app::{App, AppConfig};
pub use connection::Connection;
pub use hub::HistoryPage;
pub use outbox::Outbox;
pub use publish::{ChannelInfo, Publish, PublishError, Published};
pub use registry::{Registry, RegistryError};
pub use session::{Session, SessionOpenError};
pub use store::{HistoryChange, HistoryStore, StoreError, StoredChannel, StoredEvent};
