//! CORS for the signed HTTP API (`/apps/...`).
//!
//! The API takes requests signed with an app secret, so it is meant for backends, and by default no
//! browser page on another origin may read its answers. Operators who sign requests in a trusted
//! page elsewhere (an admin tool on its own origin) list that origin in
//! `[server] cors_allowed_origins`. The transports (WebSocket, pusher-js's HTTP fallbacks, SSE)
//! are public by nature and answer every origin on their own; the console is same-origin.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// Adds CORS headers for allowed origins and answers their preflights; other requests pass as
/// they are (a browser then refuses to show the answer to the page).
pub async fn api_cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allowed = allowed_origin(&state.settings.cors_allowed_origins, request.headers());
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(origin) = allowed else {
            return (StatusCode::FORBIDDEN, "origin not allowed (server.cors_allowed_origins)\n").into_response();
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS));
        return with_origin(response, origin);
    }
    let response = next.run(request).await;
    match allowed {
        Some(origin) => with_origin(response, origin),
        None => response,
    }
}

/// The request's `Origin` when the configuration allows it (`"*"` allows every origin).
fn allowed_origin(allowed: &[String], request: &HeaderMap) -> Option<HeaderValue> {
    let origin = request.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed.iter().any(|entry| entry == "*" || entry.eq_ignore_ascii_case(text)).then(|| origin.clone())
}

fn with_origin(mut response: Response, origin: HeaderValue) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let listed = vec!["https://admin.example.com".to_owned()];
        assert!(allowed_origin(&listed, &origin("https://admin.example.com")).is_some());
        assert!(allowed_origin(&listed, &origin("https://ADMIN.example.com")).is_some());
        assert!(allowed_origin(&listed, &origin("https://evil.example.com")).is_none());
        assert!(allowed_origin(&listed, &HeaderMap::new()).is_none());
        assert!(allowed_origin(&[], &origin("https://admin.example.com")).is_none());
        assert!(allowed_origin(&["*".to_owned()], &origin("https://any.example")).is_some());
    }
}
