//! The accept loop: our own, so that every connection gets the protections axum's `serve` lacks.
//!
//! Each accepted socket gets TCP_NODELAY (frames are small and latency matters), a deadline for its
//! request headers (a client that trickles headers cannot hold a socket forever), and a slot under a
//! cap on HTTP connections still waiting for or serving a request. Upgraded WebSockets leave hyper's
//! hands and are counted per app instead. Accept errors such as EMFILE back off briefly instead of
//! spinning.

use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (usually: out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` until `shutdown` is cancelled, then waits up to `grace` for HTTP requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_http_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
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
        let stream = match accepted {
            Ok((stream, _)) => stream,
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
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let shutdown = shutdown.clone();
        requests.spawn(async move {
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
