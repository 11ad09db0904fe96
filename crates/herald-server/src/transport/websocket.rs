//! The WebSocket transport at `/app/{key}` (Pusher protocol 7).
//!
//! One task owns each socket. It waits on three things at once: a frame from the client, frames
//! queued in the connection's outbox, and its timers (activity ping, pong deadline, authorization
//! deadline, shutdown). Queued frames are written with `feed` and flushed once per wakeup, so a burst
//! costs one write. Send and flush futures never sit in a `select!` arm; only `recv` (cancel-safe)
//! does. Refusals that happen after the upgrade (unknown key, disabled app, quota) are sent as a
//! `pusher:error` and a close code, since browsers cannot read an HTTP status on a failed upgrade;
//! node-wide admission (rate, per address: [`crate::admission`]) answers before it, with HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use herald_core::metrics::CloseReason;
use herald_core::outbox::{Drained, Frames};
use herald_core::{Session, SessionOpenError};
use herald_protocol::{CloseCode, ErrorCode, server_frame};
use tokio::time::{Duration, Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::admission::{ClientIp, IpSlot, RefusedReason};
use crate::config::ServerConfig;
use crate::state::{AppState, ClosePacer};

/// Protocol versions whose frames Herald speaks.
const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;
/// Read buffer per socket: small, because most connections are idle and client frames are small
/// (CRATES.md; a longer frame is read in several chunks). Measured in BENCHMARKS.md.
const READ_BUFFER_BYTES: usize = 512;
const WRITE_BUFFER_BYTES: usize = 8192;
/// The `pusher:error` 4009 message for a connection holding no subscription by `subscribe_within_secs`.
const NO_SUBSCRIPTION: &str = "no subscription in time";

/// `GET /app/{key}`: upgrades, then runs the connection until it ends.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ClientIp(ip): ClientIp,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match state.admission.admit(ip, Instant::now()) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    // The URL's parts are used here and dropped: they cost nothing while the connection idles.
    let opened = open_session(&state, &key, query.get("protocol").map(String::as_str));
    let max_message = state.max_ws_message_bytes();
    let admitted = Box::new(Admitted { state, slot, opened });
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(admitted.state.settings.max_queued_bytes.max(WRITE_BUFFER_BYTES * 2))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| admitted.start(socket))
}

/// What a connection was given before its upgrade. It and the socket go into one allocation that
/// the connection's task only points to: a future keeps every value it captures for its whole
/// life, so values moved through nested futures would otherwise be kept two or three times over
/// (measured with `-Zprint-type-sizes`: 3.7 KiB of task per idle connection before, see
/// BENCHMARKS.md).
struct Admitted {
    state: AppState,
    slot: Option<IpSlot>,
    opened: Result<Session, CloseCode>,
}

impl Admitted {
    fn start(self: Box<Self>, socket: WebSocket) -> impl Future<Output = ()> + Send + 'static {
        let Admitted { state, slot, opened } = *self;
        let next = match opened {
            Ok(session) => Ok(Box::new(Connection::new(socket, session, state, slot))),
            Err(code) => Err((Box::new(socket), code)),
        };
        async move {
            match next {
                Ok(connection) => connection.run().await,
                Err((mut socket, code)) => refuse(&mut socket, code).await,
            }
        }
    }
}

pub(crate) fn open_session(state: &AppState, key: &str, protocol: Option<&str>) -> Result<Session, CloseCode> {
    check_protocol(protocol)?;
    let Some(app) = state.registry.by_key(key).cloned() else {
        tracing::info!("connection refused: unknown app key");
        return Err(CloseCode::AppNotFound);
    };
    let settings = &state.settings;
    Session::open(app, settings.max_queued_bytes, settings.activity_timeout_secs, Instant::now()).map_err(|error| {
        if error == SessionOpenError::OverQuota {
            state.admission.count(RefusedReason::AppLimit);
        }
        error.close_code()
    })
}

/// Missing `protocol` is treated as 7, as Pusher-compatible servers do.
fn check_protocol(protocol: Option<&str>) -> Result<(), CloseCode> {
    let Some(text) = protocol else {
        return Ok(());
    };
    let version: u32 = text.parse().map_err(|_| CloseCode::InvalidVersionFormat)?;
    if SUPPORTED_PROTOCOLS.contains(&version) { Ok(()) } else { Err(CloseCode::UnsupportedProtocol) }
}

async fn refuse(socket: &mut WebSocket, code: CloseCode) {
    let _ = socket.feed(text_message(server_frame::error(code.code(), code.reason()))).await;
    let _ = socket.send(close_message(code.code(), code.reason())).await;
}

fn text_message(frame: Bytes) -> Message {
    // Frames are produced by serde_json, so they are always UTF-8.
    Message::Text(Utf8Bytes::try_from(frame).unwrap_or_default())
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// Why the loop ended and what, if anything, to send as a close frame.
enum End {
    /// The client closed or the socket failed: nothing more to send.
    Gone,
    Close(u16, &'static str),
}

struct Connection {
    socket: WebSocket,
    session: Session,
    /// What the connection uses of the node's state (not all of it: it is kept per connection).
    settings: Arc<ServerConfig>,
    shutdown: CancellationToken,
    close_pacer: Arc<ClosePacer>,
    /// Held for the connection's life: its place in its address's count, and in the tracker that
    /// a graceful shutdown waits on.
    _slot: Option<IpSlot>,
    _tracked: TaskTrackerToken,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    /// Until checked: when the connection must hold a subscription (`subscribe_within_secs`).
    subscribe_by: Option<Instant>,
}

impl Connection {
    fn new(socket: WebSocket, session: Session, state: AppState, slot: Option<IpSlot>) -> Self {
        let now = Instant::now();
        let within = state.settings.subscribe_within_secs;
        let subscribe_by = (within > 0).then(|| now + Duration::from_secs(within));
        let tracked = state.tracker.token();
        Self {
            socket,
            session,
            settings: state.settings.clone(),
            shutdown: state.shutdown.clone(),
            close_pacer: state.close_pacer.clone(),
            _slot: slot,
            _tracked: tracked,
            last_seen: now,
            ping_sent: None,
            subscribe_by,
        }
    }

    async fn run(mut self: Box<Self>) {
        let end = self.serve().await;
        let counted = match end {
            End::Gone => CloseReason::Peer,
            End::Close(code, _) => CloseReason::Code(code),
        };
        let app = self.session.app().clone();
        if let End::Close(code, reason) = end {
            // Bounded like every write: a peer that does not read does not get to hold the task.
            let limit = Duration::from_secs(self.settings.pong_timeout_secs);
            let _ = tokio::time::timeout(limit, self.socket.send(close_message(code, reason))).await;
        }
        // Counted once the session is gone, so a counted close has left no subscription behind.
        drop(self);
        app.counters().connection_closed(counted);
    }

    async fn serve(&mut self) -> End {
        let connection = self.session.connection().clone();
        // Both futures live across iterations: re-creating them on every wakeup would register
        // with the shared shutdown token and the timer wheel each time (measured in BENCHMARKS.md).
        let mut stopping = std::pin::pin!(self.shutdown.clone().cancelled_owned());
        let mut timer = std::pin::pin!(sleep_until(self.next_deadline()));
        loop {
            if let Some(end) = self.write_pending().await {
                return end;
            }
            let deadline = self.next_deadline();
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                () = &mut stopping => return self.drain_for_shutdown().await,
                () = connection.outbox.ready() => {}
                message = self.socket.recv() => {
                    if let Some(end) = self.on_message(message) {
                        return end;
                    }
                }
                () = &mut timer => {
                    if let Some(end) = self.on_deadline() {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes everything queued, then flushes once.
    async fn write_pending(&mut self) -> Option<End> {
        let (frames, drained) = self.session.connection().outbox.take();
        if !frames.is_empty() {
            let count = frames.len() as u64;
            // A peer that stops reading (or vanished without a FIN) must not hold this task, its
            // presence and its sign-in forever: a write that cannot finish in the pong timeout
            // ends the connection.
            let limit = Duration::from_secs(self.settings.pong_timeout_secs);
            match tokio::time::timeout(limit, self.write_batch(frames)).await {
                // Counted once per flush, on this thread's slot: nothing shared per frame.
                Ok(true) => self.session.app().counters().deliveries.add(count),
                Ok(false) => return Some(End::Gone),
                Err(_) => {
                    tracing::info!(socket_id = %self.session.connection().socket_id, "write stalled; dropping connection");
                    return Some(End::Gone);
                }
            }
        }
        match drained {
            Drained::Open => None,
            Drained::Close(code) => Some(End::Close(code.code(), code.reason())),
        }
    }

    /// Feeds every drained frame, then flushes once; false if the socket failed.
    async fn write_batch(&mut self, frames: Frames) -> bool {
        for frame in frames {
            if self.socket.feed(text_message(frame)).await.is_err() {
                return false;
            }
        }
        self.socket.flush().await.is_ok()
    }

    fn on_message(&mut self, message: Option<Result<Message, axum::Error>>) -> Option<End> {
        let now = Instant::now();
        self.last_seen = now;
        self.ping_sent = None;
        match message {
            Some(Ok(Message::Text(text))) => self.session.handle_text(text.as_str(), now),
            Some(Ok(Message::Binary(_))) => {
                let frame = server_frame::error(
                    ErrorCode::MalformedMessage.code(),
                    "binary frames are not part of the protocol",
                );
                self.session.connection().outbox.push(frame);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => return Some(End::Gone),
            Some(Err(error)) => return Some(self.on_error(&error)),
        }
        None
    }

    /// A read error: a client that vanished is routine; a frame over the cap or a protocol
    /// violation is closed with the matching WebSocket code.
    fn on_error(&self, error: &axum::Error) -> End {
        use tungstenite::error::{CapacityError, Error, ProtocolError};
        let socket_id = self.session.connection().socket_id;
        match std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>()) {
            Some(Error::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                tracing::info!(%socket_id, size, max_size, "frame over the WebSocket cap");
                End::Close(1009, "Message too big")
            }
            Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) | Error::Io(_)) | None => {
                tracing::debug!(%socket_id, "connection lost: {error}");
                End::Gone
            }
            Some(other) => {
                tracing::info!(%socket_id, "websocket protocol error: {other}");
                End::Close(1002, "Protocol error")
            }
        }
    }

    /// When to ping, or (a ping sent) when to give up on the pong.
    fn liveness_deadline(&self) -> Instant {
        let settings = &self.settings;
        match self.ping_sent {
            Some(sent) => sent + Duration::from_secs(settings.pong_timeout_secs),
            None => self.last_seen + Duration::from_secs(settings.activity_timeout_secs),
        }
    }

    fn next_deadline(&self) -> Instant {
        let liveness = self.liveness_deadline();
        let auth = self.session.auth_deadline().filter(|_| !self.session.is_authorized());
        [auth, self.subscribe_by].into_iter().flatten().fold(liveness, Instant::min)
    }

    fn on_deadline(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.session.enforce_auth_deadline(now) {
            return None;
        }
        if let Some(by) = self.subscribe_by.filter(|by| *by <= now) {
            self.subscribe_by = None;
            if self.session.subscription_count() == 0 {
                tracing::debug!(socket_id = %self.session.connection().socket_id, late_by = ?now - by, "no subscription in time");
                // Like the authorization deadline: `pusher:error` 4009, then the close, in order.
                let outbox = &self.session.connection().outbox;
                outbox.push(server_frame::error(CloseCode::Unauthorized.code(), NO_SUBSCRIPTION));
                outbox.close(CloseCode::Unauthorized);
                return None;
            }
        }
        if now < self.liveness_deadline() {
            return None;
        }
        match self.ping_sent {
            Some(sent) if now >= sent + Duration::from_secs(self.settings.pong_timeout_secs) => {
                let code = CloseCode::PongNotReceived;
                Some(End::Close(code.code(), code.reason()))
            }
            Some(_) => None,
            None => {
                self.ping_sent = Some(now);
                self.session.connection().outbox.push(server_frame::ping());
                None
            }
        }
    }

    /// Waits for this connection's turn (closes are paced), then asks the client to reconnect.
    async fn drain_for_shutdown(&mut self) -> End {
        self.close_pacer.wait_turn().await;
        let _ = self.write_pending().await;
        let code = CloseCode::Reconnect;
        let _ = self.socket.feed(text_message(server_frame::error(code.code(), code.reason()))).await;
        End::Close(code.code(), code.reason())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        tracing::debug!(socket_id = %self.session.connection().socket_id, "connection closed");
    }
}
