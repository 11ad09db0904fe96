//! The operator console at `GET /console`: one HTML page, its script and its style sheet, built
//! into the binary (no build step, no CDN).
//!
//! The page holds no privilege of its own. The operator types the app's id, key and secret into
//! it; the script signs the ordinary Pusher HTTP API requests in the browser (WebCrypto HMAC, a
//! small MD5 for bodies) and subscribes over `/app/{key}` like any client, so the secret never
//! crosses the wire and the server adds no route that trusts the page. A strict
//! Content-Security-Policy keeps the page to its own origin. `[server] console = false` leaves
//! the routes out (404).

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The console's routes, or none when `[server] console = false`.
pub fn routes(state: &AppState) -> Router<AppState> {
    match state.settings.console {
        true => Router::new()
            .route("/console", get(index))
            .route("/console/console.js", get(script))
            .route("/console/console.css", get(style)),
        false => Router::new(),
    }
}

async fn index(headers: HeaderMap) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| plain_host(h));
    let csp = policy(host);
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Same origin only: scripts, styles and fetches from this server; WebSockets to this host. The
/// WebSocket sources are spelled out because older browsers do not let `'self'` cover `ws:`.
fn policy(host: Option<&str>) -> String {
    let sockets = host.map(|h| format!(" ws://{h} wss://{h}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// A `Host` header that can go into the policy as it is: a name or address and a port, nothing
/// that could end a directive.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_this_host_for_websockets_and_nothing_else() {
        let csp = policy(Some("127.0.0.1:6001"));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:6001 wss://127.0.0.1:6001;"));
        assert!(csp.starts_with("default-src 'none';"));
        assert_eq!(policy(None).matches("ws://").count(), 0);
    }

    #[test]
    fn a_host_that_could_end_a_directive_is_left_out() {
        assert!(plain_host("example.com:443"));
        assert!(plain_host("[::1]:6001"));
        assert!(!plain_host("evil.com; script-src *"));
        assert!(!plain_host("a,b"));
        assert!(!plain_host(""));
    }
}
