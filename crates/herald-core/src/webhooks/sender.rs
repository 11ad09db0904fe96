//! One endpoint's sender: posts its queue in order, one request at a time, and retries.
//!
//! A request that fails (non-2xx, an error, or no answer within `timeout_ms`) is tried again after
//! an exponentially growing delay with jitter, for `retry_for_secs`; then its events are moved to
//! the dead letters and the queue moves on. Each endpoint has its own task, so a dead endpoint only
//! ever delays itself. Delivery is at least once: a request that succeeded just before a crash is
//! sent again after the restart. The HTTP client is the [`WebhookPoster`] seam.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::Secret;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::{Queued, WebhookConfig, WebhookOutbox, millis, unix_ms};
use crate::metrics::WebhookOutcomes;

/// One signed webhook request.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub url: Arc<str>,
    /// `X-Pusher-Key`.
    pub key: String,
    /// `X-Pusher-Signature`: hex HMAC-SHA256 of `body` with the app secret.
    pub signature: String,
    pub body: Bytes,
}

/// Why a request got no HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

pub type PostFuture<'a> = Pin<Box<dyn Future<Output = Result<u16, PostError>> + Send + 'a>>;

/// Sends one webhook request and returns the HTTP status (the sender applies the timeout).
pub trait WebhookPoster: Send + Sync + std::fmt::Debug {
    fn post<'a>(&'a self, request: &'a WebhookRequest) -> PostFuture<'a>;
}

/// `{"time_ms":…,"events":[…]}` around events that are already JSON objects.
pub fn request_body<'a>(time_ms: u64, events: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = format!(r#"{{"time_ms":{time_ms},"events":["#);
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
    body
}

/// The wait before retry number `attempt` (0-based): `base · 2^attempt`, at most `cap`, of which
/// the upper half is scaled by `jitter` (0 to 1), so endpoints that failed together do not retry
/// together.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let full = base.saturating_mul(2u32.saturating_pow(attempt.min(31))).min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// An endpoint of one app, and the wake-up its sender waits on.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub app: Arc<str>,
    pub key: String,
    pub secret: Secret,
    pub config: WebhookConfig,
    pub url: Arc<str>,
    /// Notified when events were queued for this endpoint.
    pub wake: Notify,
    /// What became of its requests, for `/metrics`.
    pub outcomes: WebhookOutcomes,
}

impl Endpoint {
    /// The url without credentials or query, for logs.
    pub fn shown(&self) -> &str {
        let url = &*self.url;
        let end = url.find(['?', '#']).unwrap_or(url.len());
        let url = &url[..end];
        match url.strip_prefix("http://").and_then(|rest| rest.split_once('@')) {
            Some(_) => "http://(credentials hidden)",
            None => url,
        }
    }
}

/// Posts `endpoint`'s queue for ever (until the task is aborted).
pub(crate) async fn run(endpoint: Arc<Endpoint>, outbox: Arc<dyn WebhookOutbox>, poster: Arc<dyn WebhookPoster>) {
    let config = &endpoint.config;
    loop {
        let batch = match outbox.pending(&endpoint.app, &endpoint.url, config.max_events()).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(app = %endpoint.app, url = endpoint.shown(), "webhook queue unreadable: {error}");
                tokio::time::sleep(millis(config.backoff_cap_ms)).await;
                continue;
            }
        };
        if batch.is_empty() {
            endpoint.wake.notified().await;
            if config.batch {
                tokio::time::sleep(millis(config.batch_window_ms)).await;
            }
            continue;
        }
        deliver(&endpoint, &*outbox, &*poster, batch).await;
    }
}

/// Posts one request until it succeeds or `retry_for_secs` is over (then the events are buried).
async fn deliver(endpoint: &Endpoint, outbox: &dyn WebhookOutbox, poster: &dyn WebhookPoster, batch: Vec<Queued>) {
    let config = &endpoint.config;
    let ids: Vec<u64> = batch.iter().map(|q| q.id).collect();
    let body = request_body(unix_ms(), batch.iter().map(|q| q.event.as_str()));
    let request = WebhookRequest {
        url: endpoint.url.clone(),
        key: endpoint.key.clone(),
        signature: endpoint.secret.sign(body.as_bytes()),
        body: Bytes::from(body),
    };
    let started = Instant::now();
    let retry_for = Duration::from_secs(config.retry_for_secs);
    let (base, cap) = (millis(config.backoff_base_ms), millis(config.backoff_cap_ms));
    for attempt in 0u32.. {
        let reason = match tokio::time::timeout(millis(config.timeout_ms), poster.post(&request)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                endpoint.outcomes.delivered(ids.len() as u64);
                if let Err(error) = outbox.delivered(&endpoint.app, &endpoint.url, ids).await {
                    tracing::warn!(app = %endpoint.app, url = endpoint.shown(), "delivered webhook not removed (it will be sent again): {error}");
                }
                return;
            }
            Ok(Ok(status)) => format!("HTTP {status}"),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        endpoint.outcomes.failed();
        if started.elapsed() >= retry_for {
            tracing::warn!(app = %endpoint.app, url = endpoint.shown(), events = ids.len(), "webhook given up after {attempt} retries ({reason}); moved to dead letters");
            let events = ids.len() as u64;
            match outbox.bury(&endpoint.app, &endpoint.url, ids, &reason, unix_ms()).await {
                Ok(()) => endpoint.outcomes.dead_lettered(events),
                Err(error) => {
                    tracing::warn!(app = %endpoint.app, url = endpoint.shown(), "webhook not moved to dead letters: {error}");
                }
            }
            return;
        }
        let delay = backoff_delay(attempt, base, cap, rand::random::<f64>());
        tracing::info!(app = %endpoint.app, url = endpoint.shown(), "webhook failed ({reason}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::webhooks::MemoryOutbox;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        let check = |attempt, jitter, expected_ms| {
            assert_eq!(backoff_delay(attempt, base, cap, jitter), Duration::from_millis(expected_ms), "{attempt}");
        };
        check(0, 1.0, 100);
        check(0, 0.0, 50);
        check(1, 1.0, 200);
        check(2, 0.5, 300);
        check(3, 1.0, 800);
        check(4, 1.0, 1000);
        check(40, 0.0, 500);
    }

    #[test]
    fn bodies_wrap_events() {
        assert_eq!(request_body(5, [r#"{"a":1}"#, r#"{"b":2}"#]), r#"{"time_ms":5,"events":[{"a":1},{"b":2}]}"#);
    }

    /// Answers 500 to the first `failures` requests, then 200.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: usize,
        calls: AtomicUsize,
        bodies: parking_lot::Mutex<Vec<Bytes>>,
    }

    impl WebhookPoster for Flaky {
        fn post<'a>(&'a self, request: &'a WebhookRequest) -> PostFuture<'a> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if call < self.failures {
                    return Ok(500);
                }
                self.bodies.lock().push(request.body.clone());
                Ok(200)
            })
        }
    }

    fn endpoint(retry_for_secs: u64) -> Arc<Endpoint> {
        let config = WebhookConfig {
            url: "http://hook.test/".into(),
            retry_for_secs,
            backoff_base_ms: 100,
            backoff_cap_ms: 1000,
            ..WebhookConfig::default()
        };
        Arc::new(Endpoint {
            app: "1".into(),
            key: "key".into(),
            secret: Secret::new("secret"),
            url: config.url.as_str().into(),
            config,
            wake: Notify::new(),
            outcomes: WebhookOutcomes::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_request_is_retried_until_it_succeeds_then_removed() {
        let outbox = Arc::new(MemoryOutbox::default());
        outbox.append("1", "http://hook.test/", vec![r#"{"n":1}"#.into(), r#"{"n":2}"#.into()]).await.unwrap();
        let poster = Arc::new(Flaky { failures: 5, ..Flaky::default() });
        let started = Instant::now();
        let endpoint = endpoint(300);
        let task = tokio::spawn(run(endpoint.clone(), outbox.clone(), poster.clone()));
        while poster.bodies.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::task::yield_now().await;
        assert_eq!(endpoint.outcomes.get(), (2, 5, 0), "two events delivered after five failed requests");
        // Five failures: at least 50+100+200+400+500 ms of waiting (the lower half of each delay).
        assert!(started.elapsed() >= Duration::from_millis(1250), "{:?}", started.elapsed());
        task.abort();
        assert_eq!(poster.calls.load(Ordering::SeqCst), 7, "5 failures, then one request per event");
        let bodies = poster.bodies.lock().clone();
        assert!(bodies[0].ends_with(br#""events":[{"n":1}]}"#) && bodies[1].ends_with(br#""events":[{"n":2}]}"#));
        assert!(outbox.pending("1", "http://hook.test/", 10).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_failing_for_retry_for_goes_to_the_dead_letters() {
        let outbox = Arc::new(MemoryOutbox::default());
        outbox.append("1", "http://hook.test/", vec![r#"{"n":1}"#.into()]).await.unwrap();
        let poster = Arc::new(Flaky { failures: usize::MAX, ..Flaky::default() });
        let started = Instant::now();
        let endpoint = endpoint(3);
        let task = tokio::spawn(run(endpoint.clone(), outbox.clone(), poster.clone()));
        while outbox.dead_letters("1", 10).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let (delivered, failed, dead) = endpoint.outcomes.get();
        assert_eq!((delivered, dead), (0, 1));
        assert_eq!(failed, u64::try_from(poster.calls.load(Ordering::SeqCst)).unwrap(), "every request failed");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(5), "{elapsed:?}");
        let dead = outbox.dead_letters("1", 10).await.unwrap();
        assert_eq!((dead[0].event.as_str(), dead[0].reason.as_str()), (r#"{"n":1}"#, "HTTP 500"));
        assert!(outbox.pending("1", "http://hook.test/", 10).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn batches_gather_events_for_the_window_and_hold_at_most_the_maximum() {
        let outbox = Arc::new(MemoryOutbox::default());
        let poster = Arc::new(Flaky::default());
        let mut endpoint = Arc::into_inner(endpoint(300)).unwrap();
        endpoint.config = WebhookConfig { batch: true, batch_max_events: 3, ..endpoint.config };
        let endpoint = Arc::new(endpoint);
        let task = tokio::spawn(run(endpoint.clone(), outbox.clone(), poster.clone()));
        tokio::task::yield_now().await;
        for n in 0..5 {
            outbox.append("1", "http://hook.test/", vec![format!(r#"{{"n":{n}}}"#)]).await.unwrap();
            endpoint.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while poster.bodies.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let bodies = poster.bodies.lock().clone();
        assert!(bodies[0].ends_with(br#""events":[{"n":0},{"n":1},{"n":2}]}"#), "{bodies:?}");
        assert!(bodies[1].ends_with(br#""events":[{"n":3},{"n":4}]}"#), "{bodies:?}");
    }

    #[test]
    fn logged_urls_hide_credentials_and_queries() {
        let shown = |url: &str| {
            let mut endpoint = Arc::into_inner(endpoint(1)).unwrap();
            endpoint.url = url.into();
            endpoint.shown().to_owned()
        };
        assert_eq!(shown("http://h:1/p?token=x"), "http://h:1/p");
        assert_eq!(shown("http://u:pw@h/p"), "http://(credentials hidden)");
    }
}
