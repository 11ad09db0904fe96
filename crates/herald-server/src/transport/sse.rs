//! Server-sent events for read-only consumers: `curl -N`, `EventSource`, backends.
//!
//! `GET /sse/{key}?channels=a,b` streams every frame of those channels as an SSE `data:` line (the
//! same JSON a WebSocket client gets, with `serial`). Private channels need a token the app's
//! backend signs: `auth = hex(HMAC-SHA256(secret, "sse:{key}:{expires}:{channels}"))` with
//! `expires` a Unix time in the future. Each event carries an `id:` listing the position of every
//! channel (`epoch:serial|epoch:serial`, in the order of `channels`); a client that reconnects with
//! `Last-Event-ID` (EventSource does it by itself; curl can pass `last_event_id=`) resumes each
//! channel from there, or is told `"recovered":false` in that channel's `subscription_succeeded`.
//! The consumer is an ordinary [`Session`] subscribed without a socket-id signature; presence
//! channels and the user stream are not offered here. A stream's end is counted like a WebSocket's
//! (`herald_connections_closed_total`): the close code its outbox was closed with (4100, 4009, …),
//! 4200 at shutdown, or `peer` when the consumer went away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::metrics::CloseReason;
use herald_core::outbox::Drained;
use herald_core::{Session, SessionOpenError};
use herald_protocol::{ChannelName, CloseCode, Resume};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::admission::{ClientIp, IpSlot, RefusedReason};
use crate::state::AppState;

/// A stream with nothing to say sends a comment this often, so proxies keep it open.
const HEARTBEAT: Duration = Duration::from_secs(25);

#[derive(Debug, Deserialize)]
pub struct SseQuery {
    channels: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    expires: Option<u64>,
    #[serde(default)]
    last_event_id: Option<String>,
}

/// `GET /sse/{key}`
pub async fn handle(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<SseQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let slot = match state.admission.admit(ip, Instant::now()) {
        Ok(slot) => slot,
        Err(refusal) => return super::with_cors(refusal.into_response(), &headers),
    };
    let response = match open(&state, &key, &query, &headers) {
        Ok((session, positions)) => stream(state, session, positions, slot),
        Err((status, message)) => (status, format!("{message}\n")).into_response(),
    };
    super::with_cors(response, &headers)
}

type Refusal = (StatusCode, String);

fn open(state: &AppState, key: &str, query: &SseQuery, headers: &HeaderMap) -> Result<(Session, Positions), Refusal> {
    let app = state.registry.by_key(key).cloned().ok_or((StatusCode::NOT_FOUND, "unknown app key".into()))?;
    let names: Vec<String> = query.channels.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    if names.is_empty() || names.len() > app.config.max_channels_per_connection {
        let max = app.config.max_channels_per_connection;
        return Err((StatusCode::BAD_REQUEST, format!("give 1 to {max} comma-separated channels")));
    }
    let mut needs_token = false;
    for name in &names {
        let channel = ChannelName::parse(name, app.config.max_channel_name_len)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid channel {name:?}: {e}")))?;
        needs_token |= channel.kind().requires_auth();
    }
    if needs_token {
        check_token(&app, key, query)?;
    }
    let settings = &state.settings;
    let mut session = Session::open(app, settings.max_queued_bytes, settings.activity_timeout_secs, Instant::now())
        .map_err(|e| match e {
            SessionOpenError::AppDisabled => (StatusCode::FORBIDDEN, "app disabled".to_owned()),
            SessionOpenError::OverQuota => {
                state.admission.count(RefusedReason::AppLimit);
                (StatusCode::TOO_MANY_REQUESTS, "app over connection quota".to_owned())
            }
        })?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone());
    let resumes = parse_positions(last_event_id.as_deref(), names.len());
    let now = Instant::now();
    for (name, resume) in names.iter().zip(&resumes) {
        session.subscribe_preauthorized(name, resume.clone(), now);
    }
    let at = names
        .iter()
        .zip(resumes)
        .filter_map(|(name, resume)| resume.map(|r| (name.clone(), (r.epoch, r.serial))))
        .collect();
    Ok((session, Positions { order: names, at }))
}

/// The string an SSE token signs.
pub fn token_message(key: &str, expires: u64, channels: &str) -> String {
    format!("sse:{key}:{expires}:{channels}")
}

fn check_token(app: &herald_core::App, key: &str, query: &SseQuery) -> Result<(), Refusal> {
    let unauthorized = |m: &str| (StatusCode::UNAUTHORIZED, m.to_owned());
    let (Some(auth), Some(expires)) = (&query.auth, query.expires) else {
        return Err(unauthorized("private channels need auth and expires"));
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if expires < now {
        return Err(unauthorized("token expired"));
    }
    if !app.secret().verify(token_message(key, expires, &query.channels).as_bytes(), auth) {
        return Err(unauthorized("invalid token signature"));
    }
    Ok(())
}

/// `epoch:serial|epoch:serial` → one optional resume per channel; anything malformed means none.
fn parse_positions(id: Option<&str>, channels: usize) -> Vec<Option<Resume>> {
    let parsed: Option<Vec<Option<Resume>>> = id.map(|id| {
        id.split('|')
            .map(|part| {
                let (epoch, serial) = part.rsplit_once(':')?;
                Some(Resume { epoch: epoch.to_owned(), serial: serial.parse().ok()? })
            })
            .collect()
    });
    match parsed {
        Some(resumes) if resumes.len() == channels => resumes,
        _ => vec![None; channels],
    }
}

/// Each channel's position, in the order of the `channels` parameter.
struct Positions {
    order: Vec<String>,
    at: HashMap<String, (String, u64)>,
}

impl Positions {
    /// Notes what `frame` says about a position; returns the new event id if it changed.
    fn update(&mut self, frame: &Value) -> Option<String> {
        let channel = frame["channel"].as_str()?;
        if let Some(serial) = frame["serial"].as_u64() {
            self.at.get_mut(channel)?.1 = serial;
        } else if frame["recovered"] == true {
            // Keep the resume point: the replayed events that follow advance it one by one, so a
            // consumer that drops mid-replay resumes from the last event it actually got.
            self.at.get(channel)?;
        } else if let (Some(epoch), Some(serial)) =
            (frame["position"]["epoch"].as_str(), frame["position"]["serial"].as_u64())
        {
            self.at.insert(channel.to_owned(), (epoch.to_owned(), serial));
        } else {
            return None;
        }
        let parts: Option<Vec<String>> =
            self.order.iter().map(|c| self.at.get(c).map(|(e, s)| format!("{e}:{s}"))).collect();
        parts.map(|p| p.join("|"))
    }
}

fn stream(state: AppState, session: Session, mut positions: Positions, slot: Option<IpSlot>) -> Response {
    let (lines, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let connection = session.connection().clone();
        let app = session.app().clone();
        let mut frames = Vec::new();
        let end = loop {
            let drained = connection.outbox.drain(&mut frames);
            app.counters().deliveries.add(frames.len() as u64);
            let text = render(&mut positions, frames.drain(..));
            if !text.is_empty() && lines.send(Ok(Bytes::from(text))).await.is_err() {
                break CloseReason::Peer;
            }
            if let Drained::Close(code) = drained {
                break CloseReason::Code(code.code());
            }
            tokio::select! {
                () = connection.outbox.ready() => {}
                () = state.shutdown.cancelled() => break CloseReason::Code(CloseCode::Reconnect.code()),
                () = tokio::time::sleep(HEARTBEAT) => {
                    if lines.send(Ok(Bytes::from_static(b": heartbeat\n\n"))).await.is_err() {
                        break CloseReason::Peer;
                    }
                }
                () = lines.closed() => break CloseReason::Peer,
            }
        };
        // Counted once the session is gone, as on WebSocket.
        drop((session, slot));
        app.counters().connection_closed(end);
    });
    let body = super::channel_body(receiver);
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-store"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, body).into_response()
}

/// SSE text for a batch of frames; pings and pongs are not for SSE consumers.
fn render(positions: &mut Positions, frames: impl Iterator<Item = Bytes>) -> String {
    let mut out = String::new();
    for frame in frames {
        let Ok(text) = std::str::from_utf8(&frame) else { continue };
        let Ok(value) = serde_json::from_str::<Value>(text) else { continue };
        if matches!(value["event"].as_str(), Some("pusher:ping" | "pusher:pong")) {
            continue;
        }
        if let Some(id) = positions.update(&value) {
            out.push_str("id: ");
            out.push_str(&id);
            out.push('\n');
        }
        out.push_str("data: ");
        out.push_str(text);
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_event_ids() {
        let resumes = parse_positions(Some("e1:5|e2:0"), 2);
        assert_eq!(resumes[0], Some(Resume { epoch: "e1".into(), serial: 5 }));
        assert_eq!(resumes[1], Some(Resume { epoch: "e2".into(), serial: 0 }));
        assert_eq!(parse_positions(Some("e1:5"), 2), vec![None, None], "one position per channel or none");
        assert_eq!(parse_positions(Some("e1:x|e2:1"), 2)[0], None);
        let mut positions = Positions { order: vec!["a".into(), "b".into()], at: HashMap::new() };
        let joined_a = serde_json::json!({"channel": "a", "position": {"epoch": "ea", "serial": 1}});
        assert_eq!(positions.update(&joined_a), None, "b has no position yet");
        let joined_b = serde_json::json!({"channel": "b", "position": {"epoch": "eb", "serial": 0}});
        assert_eq!(positions.update(&joined_b).as_deref(), Some("ea:1|eb:0"));
        let event = serde_json::json!({"channel": "a", "serial": 2, "event": "x"});
        assert_eq!(positions.update(&event).as_deref(), Some("ea:2|eb:0"));
        let recovered =
            serde_json::json!({"channel": "a", "position": {"epoch": "ea", "serial": 9}, "recovered": true});
        assert_eq!(positions.update(&recovered).as_deref(), Some("ea:2|eb:0"), "replayed events advance it");
    }
}
