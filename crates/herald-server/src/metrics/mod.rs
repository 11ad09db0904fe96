//! `GET /metrics`: this node's numbers in the Prometheus text format.
//!
//! Gauges are computed from live state when scraped (the hub's channels and subscribers, each app's
//! connection count, the engine's link), so they cannot drift. Two of them are store reads: job
//! counts per queue and webhook events pending per endpoint, all bounded together by
//! [`STORE_READ_TIMEOUT`] so a slow store never hangs the scrape (a read that fails is left out and
//! counted). Counters come from each app's [`herald_core::metrics::AppCounters`], its webhook sink,
//! and, for the HTTP API, from [`ApiRequests`] here. Series are labelled by app id, status class,
//! close code, the config's queue names and webhook endpoint indexes only: never by channel, user,
//! URL or anything a client chose, and never with a secret, so the page may be served without
//! authentication. The route exists only when `[server] metrics = true`.

pub mod exposition;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herald_core::jobs::{JobState, QueueCounts};
use herald_core::metrics::{CloseReason, PublishSource, ScrapeSource};
use herald_core::{App, Registry};
use tokio::time::{Duration, Instant};

use crate::state::AppState;
use exposition::{Exposition, Kind};

/// How long one scrape waits, in all, for the stores it reads (job counts, pending webhooks);
/// reads still unanswered then are left out of the page and counted as scrape errors.
pub const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

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
    ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], render(&state).await).into_response()
}

/// Every family, computed now.
pub async fn render(state: &AppState) -> String {
    let stores = read_stores(&state.registry, Instant::now() + STORE_READ_TIMEOUT).await;
    let mut page = Exposition::default();
    node(&mut page, state);
    gauges(&mut page, state);
    stored(&mut page, &stores);
    counters(&mut page, state);
    webhooks(&mut page, state);
    refused(&mut page, state);
    api_requests(&mut page, state);
    page.finish()
}

/// What one app's stores answered at scrape time.
struct StoreReads {
    app: Arc<App>,
    /// Per queue (in config order), the counts by state; a queue whose read failed is left out.
    queues: Vec<(String, QueueCounts)>,
    /// Per webhook endpoint (its index in the config), events waiting; failed reads left out.
    pending: Vec<(usize, u64)>,
}

/// Reads job counts and pending webhook events of every app, one call at a time, all before
/// `deadline`. A call that fails or is still unanswered at the deadline is left out and counted
/// (`herald_metrics_scrape_errors_total`).
async fn read_stores(registry: &Registry, deadline: Instant) -> Vec<StoreReads> {
    let apps: Vec<Arc<App>> = registry.apps().cloned().collect();
    let mut reads = Vec::with_capacity(apps.len());
    for app in apps {
        let mut queues = Vec::new();
        if app.has_queues() {
            let names: Vec<String> = app.queues().map(|queue| queue.name.clone()).collect();
            for name in names {
                match tokio::time::timeout_at(deadline, app.queue_counts(&name)).await {
                    Ok(Ok(counts)) => queues.push((name, counts)),
                    Ok(Err(error)) => {
                        tracing::debug!(app = %app.id(), "job counts not read for /metrics: {error}");
                        app.counters().scrape_failed(ScrapeSource::Jobs);
                    }
                    Err(_) => app.counters().scrape_failed(ScrapeSource::Jobs),
                }
            }
        }
        let mut pending = Vec::new();
        if let Some(sink) = app.webhook_sink() {
            for index in 0..sink.endpoint_count() {
                match tokio::time::timeout_at(deadline, sink.pending_count(index)).await {
                    Ok(Ok(count)) => pending.push((index, count)),
                    Ok(Err(error)) => {
                        tracing::debug!(app = %app.id(), "pending webhooks not read for /metrics: {error}");
                        app.counters().scrape_failed(ScrapeSource::Webhooks);
                    }
                    Err(_) => app.counters().scrape_failed(ScrapeSource::Webhooks),
                }
            }
        }
        reads.push(StoreReads { app, queues, pending });
    }
    reads
}

/// Job counts by queue and state, and webhook events waiting by endpoint (its config index: a URL
/// may carry a token, so it is never a label).
fn stored(page: &mut Exposition, reads: &[StoreReads]) {
    let mut family = page.family(
        "herald_jobs",
        Kind::Gauge,
        "Jobs in each state, per queue, as the job store counts them now (all nodes' jobs).",
    );
    for read in reads {
        for (queue, counts) in &read.queues {
            for state in JobState::ALL {
                let labels = [("app", read.app.id()), ("queue", queue.as_str()), ("state", state.as_str())];
                family.sample(&labels, counts.get(state));
            }
        }
    }
    let mut family = page.family(
        "herald_webhook_events_pending",
        Kind::Gauge,
        "Webhook events queued for an endpoint (by its index in the app's webhooks) and not yet delivered.",
    );
    for read in reads {
        for (index, count) in &read.pending {
            family.sample(&[("app", read.app.id()), ("endpoint", &index.to_string())], *count);
        }
    }
    let mut family = page.family(
        "herald_metrics_scrape_errors_total",
        Kind::Counter,
        "Store reads of a /metrics scrape that failed or timed out (their series were left out).",
    );
    for read in reads {
        for source in ScrapeSource::ALL {
            family.sample(
                &[("app", read.app.id()), ("source", source.as_str())],
                read.app.counters().scrape_errors(source),
            );
        }
    }
}

/// Webhook counters of the apps that have webhooks: events dropped before the outbox, and each
/// endpoint's outcomes.
fn webhooks(page: &mut Exposition, state: &AppState) {
    let sinks: Vec<_> = state.registry.apps().filter_map(|app| Some((app.id(), app.webhook_sink()?))).collect();
    let mut family = page.family(
        "herald_webhook_events_dropped_total",
        Kind::Counter,
        "Webhook events dropped because the app's webhook dispatcher was too far behind (never queued).",
    );
    for (id, sink) in &sinks {
        family.sample(&[("app", id)], sink.events_dropped());
    }
    type Pick = fn((u64, u64, u64)) -> u64;
    let families: [(&'static str, &str, Pick); 3] = [
        ("herald_webhook_events_delivered_total", "Webhook events delivered (a 2xx answer), by endpoint index.", |o| {
            o.0
        }),
        (
            "herald_webhook_requests_failed_total",
            "Webhook requests that failed (non-2xx, error, timeout) and were retried or given up, by endpoint index.",
            |o| o.1,
        ),
        (
            "herald_webhook_events_dead_lettered_total",
            "Webhook events given up after retry_for_secs and moved to the dead letters, by endpoint index.",
            |o| o.2,
        ),
    ];
    for (name, help, pick) in families {
        let mut family = page.family(name, Kind::Counter, help);
        for (id, sink) in &sinks {
            for (index, outcomes) in sink.outcomes().enumerate() {
                family.sample(&[("app", id), ("endpoint", &index.to_string())], pick(outcomes.get()));
            }
        }
    }
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
    let families: [(&'static str, &str, Pick); 6] = [
        ("herald_connections", "Open client connections (every transport).", |g| g.connections),
        ("herald_channels", "Channels with at least one subscriber on this node.", |g| g.channels),
        ("herald_subscriptions", "Subscriptions to channels on this node.", |g| g.subscriptions),
        ("herald_presence_members", "Presence members connected to this node, summed over channels.", |g| {
            g.presence_members
        }),
        ("herald_outbox_queued_bytes", "Bytes queued for subscribed connections, not yet written.", |g| g.queued_bytes),
        ("herald_outbox_queued_frames", "Frames queued for subscribed connections, not yet written.", |g| {
            g.queued_frames
        }),
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
        "Connections ended (every transport), by the close code the server sent (reason=peer: the client left).",
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
    use herald_core::webhooks::{
        DeadLetter, OutboxFuture, PostFuture, Queued, Replay, WebhookConfig, WebhookOutbox, WebhookPoster,
        WebhookRequest,
    };

    use super::*;

    /// An outbox that never answers.
    #[derive(Debug)]
    struct Stuck;

    fn never<'a, T: Send + 'a>() -> OutboxFuture<'a, T> {
        Box::pin(std::future::pending())
    }

    impl WebhookOutbox for Stuck {
        fn append(&self, _: &str, _: &str, _: Vec<String>) -> OutboxFuture<'_, ()> {
            never()
        }
        fn pending(&self, _: &str, _: &str, _: usize) -> OutboxFuture<'_, Vec<Queued>> {
            never()
        }
        fn pending_count(&self, _: &str, _: &str) -> OutboxFuture<'_, u64> {
            never()
        }
        fn delivered(&self, _: &str, _: &str, _: Vec<u64>) -> OutboxFuture<'_, ()> {
            never()
        }
        fn bury(&self, _: &str, _: &str, _: Vec<u64>, _: &str, _: u64) -> OutboxFuture<'_, ()> {
            never()
        }
        fn dead_letters(&self, _: &str, _: usize) -> OutboxFuture<'_, Vec<DeadLetter>> {
            never()
        }
        fn replay(&self, _: &str, _: Replay) -> OutboxFuture<'_, u64> {
            never()
        }
    }

    #[derive(Debug)]
    struct Unused;

    impl WebhookPoster for Unused {
        fn post<'a>(&'a self, _: &'a WebhookRequest) -> PostFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_does_not_answer_is_left_out_and_counted_within_the_limit() {
        let hooks = (0..2).map(|n| WebhookConfig { url: format!("http://h/{n}"), ..WebhookConfig::default() });
        let config = AppConfig { webhooks: hooks.collect(), ..AppConfig::new("1", "key", "secret") };
        let registry = Registry::new(vec![config]).unwrap();
        let app = registry.apps().next().unwrap().clone();
        let _webhooks = herald_core::webhooks::start(&app, Arc::new(Stuck), Arc::new(Unused)).unwrap();
        let started = Instant::now();
        let reads = read_stores(&registry, started + STORE_READ_TIMEOUT).await;
        assert_eq!(started.elapsed(), STORE_READ_TIMEOUT, "one limit for the whole scrape");
        assert!(reads[0].pending.is_empty(), "no made-up zero");
        assert_eq!(app.counters().scrape_errors(ScrapeSource::Webhooks), 2, "both endpoints' reads");
        let mut page = Exposition::default();
        stored(&mut page, &reads);
        let text = page.finish();
        assert!(!text.contains("herald_webhook_events_pending{"), "{text}");
        assert!(text.contains("herald_metrics_scrape_errors_total{app=\"1\",source=\"webhooks\"} 2"), "{text}");
    }

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
