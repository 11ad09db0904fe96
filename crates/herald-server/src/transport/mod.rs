//! Transports move text between a client and its [`herald_core::Session`]; they know sockets and
//! framing, nothing about channels: WebSocket, pusher-js's HTTP streaming and polling fallbacks,
//! and server-sent events.

pub mod http_fallback;
pub mod sse;
pub mod websocket;

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tokio::sync::mpsc;

/// A response body fed by a connection's task, for the transports that stream over HTTP.
pub(crate) fn channel_body(receiver: mpsc::Receiver<Result<Bytes, Infallible>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    }))
}

/// Lets pages on other origins read the HTTP transports (pusher-js's XHRs, EventSource).
pub(crate) fn with_cors(mut response: Response, request: &HeaderMap) -> Response {
    let origin = request.get(header::ORIGIN).cloned().unwrap_or(HeaderValue::from_static("*"));
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}
