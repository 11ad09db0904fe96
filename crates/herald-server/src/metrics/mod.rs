//! `GET /metrics`: this node's numbers in the Prometheus text format.
//!
//! Gauges are computed from live state when scraped (the hub's channels and subscribers, each app's
//! connection count, the engine's link), so they cannot drift; counters come from each app's
//! [`herald_core::metrics::AppCounters`] and, for the HTTP API, from [`ApiRequests`] here. Series are
//! labelled by app id, status class or close code only: never by channel, user or anything a client
//! chose, and never with a secret, so the page may be served without authentication. The route
//! exists only when `[server] metrics = true`.

pub mod exposition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herald_core::Registry;
use herald_core::metrics::{CloseReason, PublishSource};

use crate::state::AppState;
use exposition::{Exposition, Kind};

/// Status classes counted for the HTTP API, in label order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters this crate keeps itself: HTTP API answers by app and status class.
#[derive(Debug)]
pub struct ApiRequests {
    /// Apps are fixed at start, so the map never changes after [`ApiRequests::new`].
    by_app: HashMap<String, [AtomicU64; 5]>,
    /// Requests naming an app id that does not exist (counted without an `app` label value).
    unknown: [AtomicU64; 5],
}

impl ApiRequests {
    pub fn new(registry: &Registry) -> Self {
        let by_app = registry.apps().map(|app| (app.id().to_owned(), Default::default())).collect();
        Self { by_app, unknown: Default::default() }
    }

    /// The counters of the app a request for `path` (`/apps/{app_id}/...`) names.
    fn of(&self, path: &str) -> &[AtomicU64; 5] {
        let app = path.strip_prefix("/apps/").and_then(|rest| rest.split('/').next());
        app.and_then(|id| self.by_app.get(id)).unwrap_or(&self.unknown)
    }
}

/// Counts one answer with `status` in its class.
fn count(counters: &[AtomicU64; 5], status: u16) {
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    counters[class].fetch_add(1, Ordering::Relaxed);
}

/// Counts every answer of the signed HTTP API (a route layer, so only matched routes).
pub async fn count_api_requests(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let counters = state.api_requests.of(request.uri().path());
    let response = next.run(request).await;
    count(counters, response.status().as_u16());
    response
}

/// `GET /metrics`.
pub async fn handle(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], render(&state)).into_response()
}

/// Every family, computed now.
pub fn render(state: &AppState) -> String {
    let mut page = Exposition::default();
    node(&mut page, state);
    gauges(&mut page, state);
    counters(&mut page, state);
    refused(&mut page, state);
    api_requests(&mut page, state);
    page.finish()
}

fn node(page: &mut Exposition, state: &AppState) {
    let engine_up = state.engine.as_ref().is_none_or(|engine| engine.is_ready());
    page.family(
        "herald_engine_up",
        Kind::Gauge,
        "1 while the engine delivers (always 1 for the embedded engine; for Redis: connected, subscribed, probed).",
    )
    .sample(&[], u64::from(engine_up));
    page.family("herald_draining", Kind::Gauge, "1 once shutdown began (connections are being closed with 4200).")
        .sample(&[], u64::from(state.shutdown.is_cancelled()));
}

fn gauges(page: &mut Exposition, state: &AppState) {
    let apps: Vec<_> = state.registry.apps().map(|app| (app.id().to_owned(), app.gauges())).collect();
    type Pick = fn(&herald_core::metrics::AppGauges) -> usize;
    let families: [(&'static str, &str, Pick); 5] = [
        ("herald_connections", "Open client connections (every transport).", |g| g.connections),
        ("herald_channels", "Channels with at least one subscriber on this node.", |g| g.channels),
        ("herald_subscriptions", "Subscriptions to channels on this node.", |g| g.subscriptions),
        ("herald_presence_members", "Presence members connected to this node, summed over channels.", |g| {
            g.presence_members
        }),
        ("herald_outbox_queued_bytes", "Bytes queued for subscribed connections, not yet written.", |g| g.queued_bytes),
    ];
    for (name, help, pick) in families {
        let mut family = page.family(name, Kind::Gauge, help);
        for (id, gauges) in &apps {
            family.sample(&[("app", id)], pick(gauges) as u64);
        }
    }
}

fn counters(page: &mut Exposition, state: &AppState) {
    let mut family = page.family("herald_deliveries_total", Kind::Counter, "Frames written to connections.");
    for app in state.registry.apps() {
        family.sample(&[("app", app.id())], app.counters().deliveries.get());
    }
    let mut family = page.family(
        "herald_publishes_total",
        Kind::Counter,
        "Events published, one per channel: by the HTTP API (source=api) or as client events (source=client).",
    );
    for app in state.registry.apps() {
        for (source, label) in [(PublishSource::Api, "api"), (PublishSource::Client, "client")] {
            family.sample(&[("app", app.id()), ("source", label)], app.counters().publishes(source));
        }
    }
    let mut family = page.family(
        "herald_messages_dropped_total",
        Kind::Counter,
        "Frames never written because their connection was closing, by its close code (4100: fell too far behind).",
    );
    for app in state.registry.apps() {
        for (code, frames) in app.counters().dropped() {
            family.sample(&[("app", app.id()), ("reason", &code.to_string())], frames);
        }
    }
    let mut family = page.family(
        "herald_connections_closed_total",
        Kind::Counter,
        "WebSocket connections ended, by the close code the server sent (reason=peer: the client left).",
    );
    for app in state.registry.apps() {
        for (reason, count) in app.counters().closed() {
            let label = match reason {
                CloseReason::Code(code) => code.to_string(),
                CloseReason::Peer => "peer".to_owned(),
            };
            family.sample(&[("app", app.id()), ("reason", &label)], count);
        }
    }
}

/// Node-wide, by reason only: an address is never a label.
fn refused(page: &mut Exposition, state: &AppState) {
    let mut family = page.family(
        "herald_connections_refused_total",
        Kind::Counter,
        "New connections turned away: rate (HTTP 503), per_ip (HTTP 429), app_limit (close 4004).",
    );
    for (reason, count) in state.admission.refused() {
        family.sample(&[("reason", reason.label())], count);
    }
}

fn api_requests(page: &mut Exposition, state: &AppState) {
    let mut family = page.family(
        "herald_http_api_requests_total",
        Kind::Counter,
        "Signed HTTP API requests answered, by status class (app=\"\": an unknown app id).",
    );
    let api = &state.api_requests;
    let mut apps: Vec<_> = api.by_app.iter().collect();
    apps.sort_by(|a, b| a.0.cmp(b.0));
    for (id, counters) in apps.into_iter().chain([(&String::new(), &api.unknown)]) {
        for (class, counter) in CLASSES.iter().zip(counters) {
            let value = counter.load(Ordering::Relaxed);
            if value > 0 {
                family.sample(&[("app", id), ("class", class)], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::AppConfig;

    use super::*;

    #[test]
    fn api_requests_are_counted_by_the_app_in_the_path_and_status_class() {
        let registry = Registry::new(vec![AppConfig::new("1", "key", "secret")]).unwrap();
        let api = ApiRequests::new(&registry);
        count(api.of("/apps/1/events"), 200);
        count(api.of("/apps/1/channels/x"), 404);
        count(api.of("/apps/2/events"), 401);
        count(api.of("/apps/10/events"), 999);
        let loads = |c: &[AtomicU64; 5]| c.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<_>>();
        assert_eq!(loads(&api.by_app["1"]), [0, 1, 0, 1, 0]);
        assert_eq!(loads(&api.unknown), [0, 0, 0, 1, 1], "an unknown app, and a status past 5xx as 5xx");
    }
}
