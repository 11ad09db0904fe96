//! The accept loop: our own, so that every connection gets the protections axum's `serve` lacks.
//!
//! Each accepted socket gets TCP_NODELAY (frames are small and latency matters), a deadline for its
//! request headers (a client that trickles headers cannot hold a socket forever), and a slot under a
//! cap on HTTP connections still waiting for or serving a request. Upgraded WebSockets leave hyper's
//! hands and are counted per app instead. Each request carries the peer's address as axum's
//! `ConnectInfo<SocketAddr>` (admission counts connections per address: this one, or behind a
//! trusted proxy the one it forwards, `admission::ClientIp`). Accept errors such as
//! EMFILE back off briefly instead of spinning. With TLS configured, the handshake runs in the
//! connection's own task under the header deadline, so a slow handshake never holds the loop.

use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::MapRequest;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (usually: out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A byte stream hyper can serve: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves `router` until `shutdown` is cancelled, then waits up to `grace` for HTTP requests in
/// flight. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_http_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
    tls: Option<TlsAcceptor>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let requests = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_http_connections));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max_http_connections, "refusing a connection: too many HTTP connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let with_peer = move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        };
        let service = TowerToHyperService::new(MapRequest::new(router.clone(), with_peer));
        let (builder, shutdown, tls) = (builder.clone(), shutdown.clone(), tls.clone());
        requests.spawn(async move {
            let stream: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(tls) => match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(error)) => return tracing::debug!(%peer, "TLS handshake failed: {error}"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake took too long"),
                },
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!("http connection ended: {error}");
            }
            drop(slot);
        });
    }
    drop(listener);
    requests.close();
    if tokio::time::timeout(grace, requests.wait()).await.is_err() {
        tracing::warn!("HTTP requests still running after the grace period");
    }
}
