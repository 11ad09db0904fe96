//! The shared handle of one connection: what other parts of the hub may hold to reach it.
//!
//! Channels and the user index keep `Arc<Connection>`; they can queue frames and request a close,
//! nothing else. The connection's protocol state lives in its [`crate::Session`], owned by one task.

use std::sync::atomic::{AtomicU64, Ordering};

use herald_protocol::SocketId;

use crate::outbox::Outbox;

#[derive(Debug)]
pub struct Connection {
    pub socket_id: SocketId,
    pub outbox: Outbox,
}

static NEXT_LOW: AtomicU64 = AtomicU64::new(1);

impl Connection {
    pub fn new(max_queued_bytes: usize) -> Self {
        Self { socket_id: next_socket_id(), outbox: Outbox::new(max_queued_bytes) }
    }
}

/// A process-unique socket id: a random high part (below 10^10, as Pusher's look) and a counter.
fn next_socket_id() -> SocketId {
    let high = rand::random_range(1..10_000_000_000u64);
    SocketId::new(high, NEXT_LOW.fetch_add(1, Ordering::Relaxed))
}
