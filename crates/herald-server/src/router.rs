//! The route table: one place that says which path goes to which handler.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::api::{channels, cursors, events, feeds, history, jobs, users, webhooks};
use crate::state::AppState;
use crate::transport::{http_fallback, sse, websocket};
use crate::{health, metrics};

/// The Herald JS client (`clients/js/src/index.js`), built into the binary.
const HERALD_JS: &str = include_str!("../../../clients/js/src/index.js");

async fn herald_js() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        HERALD_JS,
    )
}

/// Every API request, body included, must finish within `request_timeout_secs`: a client that
/// sends its body slowly cannot hold a connection slot.
async fn deadline(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = std::time::Duration::from_secs(state.settings.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (axum::http::StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_request_body_bytes;
    Router::new()
        .merge(api(state.clone()))
        .merge(observability(&state))
        .merge(crate::console::routes(&state))
        .route("/app/{key}", get(websocket::upgrade))
        .route(
            "/pusher/app/{key}/{server}/{session}/{kind}",
            post(http_fallback::handle).options(http_fallback::preflight),
        )
        .route("/sse/{key}", get(sse::handle))
        .route("/up", get(up))
        .route("/herald.js", get(herald_js))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The signed HTTP API, under a request deadline.
fn api(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events::publish))
        .route("/apps/{app_id}/batch_events", post(events::publish_batch))
        .route("/apps/{app_id}/channels", get(channels::list))
        .route("/apps/{app_id}/channels/{channel}", get(channels::show))
        .route("/apps/{app_id}/channels/{channel}/users", get(channels::users))
        .route("/apps/{app_id}/channels/{channel}/history", get(history::history))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(users::terminate_connections))
        .route("/apps/{app_id}/queues/{queue}", get(jobs::queue))
        .route("/apps/{app_id}/queues/{queue}/jobs", post(jobs::submit))
        .route("/apps/{app_id}/queues/{queue}/claim", post(jobs::claim))
        .route("/apps/{app_id}/jobs/{job}", get(jobs::show))
        .route("/apps/{app_id}/jobs/{job}/{action}", post(jobs::act))
        .route("/apps/{app_id}/feeds/{channel}", get(feeds::show))
        .route("/apps/{app_id}/feeds/{channel}/items", post(feeds::publish))
        .route("/apps/{app_id}/feeds/{channel}/items/{item}", get(feeds::item))
        .route("/apps/{app_id}/feeds/{channel}/items/{item}/{action}", post(feeds::change))
        .route("/apps/{app_id}/users/{user_id}/read", post(cursors::read))
        .route("/apps/{app_id}/users/{user_id}/unread", post(cursors::unread))
        .route("/apps/{app_id}/webhooks/dead_letters", get(webhooks::dead_letters))
        .route("/apps/{app_id}/webhooks/dead_letters/replay", post(webhooks::replay))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_api_requests))
        .route_layer(axum::middleware::from_fn_with_state(state, crate::cors::api_cors))
}

/// Liveness, readiness and (unless `[server] metrics = false`) `/metrics`: no signature, no secret.
fn observability(state: &AppState) -> Router<AppState> {
    let routes = Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    match state.settings.metrics {
        true => routes.route("/metrics", get(metrics::handle)),
        false => routes,
    }
}

/// 200 when this node can serve; 503 while its engine cannot deliver (Redis away, or resubscribing
/// after a reconnect until a probe came back), so a load balancer sends clients elsewhere.
async fn up(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.is_ready() {
        true => (StatusCode::OK, "OK\n"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "NOT READY: engine unavailable\n"),
    }
}
