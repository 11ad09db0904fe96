//! pusher-js's HTTP fallback transports, `xhr_streaming` and `xhr_polling`, for clients behind
//! proxies that break WebSockets.
//!
//! pusher-js names a session in the URL (`/pusher/app/{key}/{server}/{session}/...`) and speaks a
//! SockJS-like framing, one frame per line: `o` (open), `a["msg",...]` (messages, each a Pusher
//! frame as a JSON string), `h` (heartbeat), `c[code,"reason"]` (close). A receive request
//! (`xhr_streaming`: a response that stays open; `xhr`: one long poll per request) carries frames to
//! the client (a stream starts with a 2 KiB `h` line: browsers hold back the first bytes of a
//! streaming response before reporting any); `xhr_send` carries a JSON array of frames from it. Each session is an ordinary
//! [`Session`] with its outbox, so an HTTP client is a full client: private and presence channels,
//! client events, sign-in, resume. `o` is sent once per session; a later receive request for the
//! same session (a re-poll, or a stream pusher-js reopened after 256 KiB) just continues. pusher-js
//! says nothing when it goes away over HTTP, so a session with no receive request for
//! `http_session_timeout_secs` is closed (presence members leave then).
//!
//! A session's end is counted like a WebSocket's (`herald_connections_closed_total`), once, when
//! the session is gone: the code its outbox was closed with (4100 too slow, 4009, 4200 shutdown, …),
//! else `peer`: a session nobody polled for `http_session_timeout_secs` is how pusher-js leaves over
//! HTTP, like a WebSocket client that closed or vanished.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::metrics::CloseReason;
use herald_core::outbox::Drained;
use herald_core::{App, Connection, Session};
use herald_protocol::{CloseCode, server_frame};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::admission::{ClientIp, IpSlot};
use crate::state::AppState;

/// A long poll with nothing to say answers `h` after this long.
const POLL_HOLD: Duration = Duration::from_secs(20);
/// A stream with nothing to say sends `h` this often.
const STREAM_HEARTBEAT: Duration = Duration::from_secs(25);
/// Browsers hold back the first bytes of a streaming XHR response (content sniffing) before they
/// report progress; a 2 KiB line of `h` (a heartbeat to pusher-js) gets past that at once.
const STREAM_PRELUDE_LEN: usize = 2048;
/// pusher-js drops and reopens a stream once it has buffered this many characters; a stream stops
/// writing there, so that nothing is written into a response the client is about to abort.
const STREAM_ROTATE_AT: usize = 256 * 1024;
/// A stream whose client does not read for this long is ended.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames one `xhr_send` may carry.
const MAX_FRAMES_PER_SEND: usize = 100;

/// Every HTTP session of this node, by app key and the session id from the URL.
#[derive(Debug, Default)]
pub struct HttpSessions {
    sessions: Mutex<HashMap<(String, String), Arc<HttpSession>>>,
}

#[derive(Debug)]
struct HttpSession {
    session: Mutex<Session>,
    connection: Arc<Connection>,
    /// `o` was sent.
    opened: AtomicBool,
    /// Bumped by each receive request; an older request that sees a newer number steps aside.
    generation: AtomicU64,
    receivers: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// This session's place in its address's count, given back when the session is dropped.
    _slot: Option<IpSlot>,
    /// Counts the session's end when dropped. Fields drop in order, so this last one runs after
    /// `session` has undone its subscriptions, as on WebSocket.
    _end: EndCount,
}

/// Counts an HTTP session's end, however it ended, exactly once: when it is dropped.
#[derive(Debug)]
struct EndCount {
    app: Arc<App>,
    connection: Arc<Connection>,
}

impl Drop for EndCount {
    fn drop(&mut self) {
        let reason =
            self.connection.outbox.close_code().map_or(CloseReason::Peer, |code| CloseReason::Code(code.code()));
        self.app.counters().connection_closed(reason);
    }
}

/// The kind of request in the URL's last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Streaming,
    Polling,
    Send,
}

impl HttpSessions {
    fn get(&self, key: &str, id: &str) -> Option<Arc<HttpSession>> {
        self.sessions.lock().get(&(key.to_owned(), id.to_owned())).cloned()
    }

    fn remove(&self, key: &str, id: &str) {
        self.sessions.lock().remove(&(key.to_owned(), id.to_owned()));
    }

    /// Closes sessions nobody has polled for `idle_timeout`, and those past their auth deadline.
    pub fn sweep(&self, now: Instant, idle_timeout: Duration) {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, http| {
            let idle = http.receivers.load(Ordering::Acquire) == 0
                && now.saturating_duration_since(*http.idle_since.lock()) >= idle_timeout;
            if !idle {
                http.session.lock().enforce_auth_deadline(now);
            }
            !idle
        });
    }

    /// Asks every session to reconnect elsewhere (server shutting down).
    pub fn close_all(&self) {
        for http in self.sessions.lock().values() {
            let code = CloseCode::Reconnect;
            http.connection.outbox.push(server_frame::error(code.code(), code.reason()));
            http.connection.outbox.close(code);
        }
    }
}

/// `POST /pusher/app/{key}/{server}/{session}/{kind}`
pub async fn handle(
    State(state): State<AppState>,
    Path((key, server, session, kind)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = match kind.as_str() {
        "xhr_streaming" => Kind::Streaming,
        "xhr" => Kind::Polling,
        "xhr_send" => Kind::Send,
        _ => return super::with_cors(StatusCode::NOT_FOUND.into_response(), &headers),
    };
    if !valid_session_part(&server) || !valid_session_part(&session) {
        return super::with_cors((StatusCode::BAD_REQUEST, "invalid session id\n").into_response(), &headers);
    }
    let id = format!("{server}/{session}");
    let response = match kind {
        Kind::Send => send(&state, &key, &id, &body),
        Kind::Streaming | Kind::Polling => receive(&state, &key, &id, kind, query.get("protocol"), ip).await,
    };
    super::with_cors(response, &headers)
}

/// `OPTIONS` for the same paths: pusher-js sends `Content-Type: application/json`, which makes
/// browsers ask first when the page is on another origin.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    super::with_cors(response, &headers)
}

/// pusher-js makes these from digits and base-32 letters; anything else is refused.
fn valid_session_part(part: &str) -> bool {
    !part.is_empty() && part.len() <= 32 && part.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn send(state: &AppState, key: &str, id: &str, body: &[u8]) -> Response {
    let Some(http) = state.http_sessions.get(key, id).filter(|h| !h.connection.outbox.is_closing()) else {
        return (StatusCode::NOT_FOUND, "unknown session\n").into_response();
    };
    let Ok(frames) = serde_json::from_slice::<Vec<String>>(body) else {
        return (StatusCode::BAD_REQUEST, "expected a JSON array of strings\n").into_response();
    };
    if frames.len() > MAX_FRAMES_PER_SEND {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too many frames in one request\n").into_response();
    }
    let now = Instant::now();
    let mut session = http.session.lock();
    for frame in &frames {
        session.handle_text(frame, now);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn receive(
    state: &AppState,
    key: &str,
    id: &str,
    kind: Kind,
    protocol: Option<&String>,
    ip: Option<IpAddr>,
) -> Response {
    let http = match state.http_sessions.get(key, id) {
        Some(http) => http,
        None => {
            let slot = match state.admission.admit(ip, Instant::now()) {
                Ok(slot) => slot,
                Err(refusal) => return refusal.into_response(),
            };
            match open(state, key, id, protocol.map(String::as_str), slot) {
                Ok(http) => http,
                Err(code) => return text_response(close_line(code.code(), code.reason())),
            }
        }
    };
    let generation = http.generation.fetch_add(1, Ordering::AcqRel) + 1;
    http.connection.outbox.wake();
    let first = !http.opened.swap(true, Ordering::AcqRel);
    match kind {
        Kind::Polling if first => text_response("o\n".to_owned()),
        Kind::Polling => {
            let _guard = ReceiverGuard::new(&http);
            let body = poll(state, key, id, &http, generation).await;
            text_response(body)
        }
        _ => stream(state.clone(), key.to_owned(), id.to_owned(), http, generation, first),
    }
}

fn open(
    state: &AppState,
    key: &str,
    id: &str,
    protocol: Option<&str>,
    slot: Option<IpSlot>,
) -> Result<Arc<HttpSession>, CloseCode> {
    let session = super::websocket::open_session(state, key, protocol)?;
    let connection = session.connection().clone();
    let end = EndCount { app: session.app().clone(), connection: connection.clone() };
    let http = Arc::new(HttpSession {
        session: Mutex::new(session),
        connection,
        opened: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        receivers: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
        _slot: slot,
        _end: end,
    });
    state.http_sessions.sessions.lock().insert((key.to_owned(), id.to_owned()), http.clone());
    Ok(http)
}

/// Counts a receive request while it lives, and notes when the session became idle.
struct ReceiverGuard(Arc<HttpSession>);

impl ReceiverGuard {
    fn new(http: &Arc<HttpSession>) -> Self {
        http.receivers.fetch_add(1, Ordering::AcqRel);
        Self(http.clone())
    }
}

impl Drop for ReceiverGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock() = Instant::now();
        self.0.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one drain of the outbox produced, as lines of the framing.
fn drain_lines(http: &HttpSession) -> (String, Option<CloseCode>) {
    let mut frames = Vec::new();
    let drained = http.connection.outbox.drain(&mut frames);
    let mut lines = String::new();
    if !frames.is_empty() {
        http.session.lock().app().counters().deliveries.add(frames.len() as u64);
        let texts: Vec<&str> = frames.iter().filter_map(|f| std::str::from_utf8(f).ok()).collect();
        lines.push('a');
        lines.push_str(&serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into()));
        lines.push('\n');
    }
    match drained {
        Drained::Open => (lines, None),
        Drained::Close(code) => {
            lines.push_str(&close_line(code.code(), code.reason()));
            (lines, Some(code))
        }
    }
}

/// Length as JavaScript counts it (UTF-16 code units), which is what pusher-js compares.
fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

fn close_line(code: u16, reason: &str) -> String {
    format!("c{}\n", serde_json::json!([code, reason]))
}

/// A poll answer or a stream: the same headers for both (no sniffing, no caching).
fn text_response(body: impl Into<Body>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/javascript; charset=UTF-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body.into()).into_response()
}

/// One long poll: whatever is queued now, or the next frames, or a heartbeat after [`POLL_HOLD`].
async fn poll(state: &AppState, key: &str, id: &str, http: &Arc<HttpSession>, generation: u64) -> String {
    let deadline = Instant::now() + POLL_HOLD;
    loop {
        let (lines, close) = drain_lines(http);
        if close.is_some() {
            state.http_sessions.remove(key, id);
        }
        if !lines.is_empty() {
            return lines;
        }
        if http.generation.load(Ordering::Acquire) != generation {
            http.connection.outbox.wake();
            return "h\n".into();
        }
        tokio::select! {
            () = http.connection.outbox.ready() => {}
            () = tokio::time::sleep_until(deadline) => return "h\n".into(),
        }
    }
}

/// A streaming response: `o` (first time), then frames as they come, heartbeats while idle.
fn stream(state: AppState, key: String, id: String, http: Arc<HttpSession>, generation: u64, first: bool) -> Response {
    let (lines, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let guard = ReceiverGuard::new(&http);
        let send = |text: Bytes| {
            let lines = lines.clone();
            async move { matches!(tokio::time::timeout(STREAM_WRITE_TIMEOUT, lines.send(Ok(text))).await, Ok(Ok(()))) }
        };
        let mut prelude = "h".repeat(STREAM_PRELUDE_LEN);
        prelude.push('\n');
        if first {
            prelude.push_str("o\n");
        }
        let mut written = prelude.len();
        if !send(Bytes::from(prelude)).await {
            return;
        }
        loop {
            if guard.0.generation.load(Ordering::Acquire) != generation {
                guard.0.connection.outbox.wake();
                return;
            }
            if written > STREAM_ROTATE_AT {
                // pusher-js reopens the stream now; frames wait in the outbox for the new one.
                lines.closed().await;
                return;
            }
            let (text, close) = drain_lines(&guard.0);
            if close.is_some() {
                state.http_sessions.remove(&key, &id);
            }
            written += utf16_len(&text);
            if !text.is_empty() && !send(Bytes::from(text)).await {
                return;
            }
            if close.is_some() {
                return;
            }
            tokio::select! {
                () = guard.0.connection.outbox.ready() => {}
                () = tokio::time::sleep(STREAM_HEARTBEAT) => {
                    written += 2;
                    if !send(Bytes::from_static(b"h\n")).await {
                        return;
                    }
                }
                () = lines.closed() => return,
            }
        }
    });
    text_response(super::channel_body(receiver))
}
