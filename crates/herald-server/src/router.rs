//! The route table: one place that says which path goes to which handler.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::api::{channels, events, history, users};
use crate::state::AppState;
use crate::transport::{http_fallback, sse, websocket};

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

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_request_body_bytes;
    Router::new()
        .route("/app/{key}", get(websocket::upgrade))
        .route(
            "/pusher/app/{key}/{server}/{session}/{kind}",
            post(http_fallback::handle).options(http_fallback::preflight),
        )
        .route("/apps/{app_id}/events", post(events::publish))
        .route("/apps/{app_id}/batch_events", post(events::publish_batch))
        .route("/apps/{app_id}/channels", get(channels::list))
        .route("/apps/{app_id}/channels/{channel}", get(channels::show))
        .route("/apps/{app_id}/channels/{channel}/users", get(channels::users))
        .route("/apps/{app_id}/channels/{channel}/history", get(history::history))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(users::terminate_connections))
        .route("/sse/{key}", get(sse::handle))
        .route("/up", get(|| async { "OK\n" }))
        .route("/herald.js", get(herald_js))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
