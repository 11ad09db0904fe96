//! `/metrics`, `/healthz` and `/readyz` on the real binary.
//!
//! The gauges are checked against ground truth the test keeps itself after a random churn of
//! connects, subscribes and disconnects from several tasks at once: any drift (a subscription not
//! undone, a member counted twice) shows up as an exact mismatch. Readiness is checked against a
//! private `redis-server` that is killed (by its own PID) and started again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::cluster::eventually;
use crate::redis_server::RedisServer;
use crate::support::{APP_ID, SECRET, TestClient, TestServer, default_config};

/// Connects plus disconnects across all tasks.
const OPERATIONS: usize = 1000;
const TASKS: usize = 8;
/// Sockets one task holds at most (TASKS × this stays far below the fd limit).
const MAX_OPEN_PER_TASK: usize = 40;
const PUBLIC: [&str; 3] = ["public-0", "public-1", "public-2"];
const PRIVATE: &str = "private-3";
const PRESENCE: &str = "presence-room";
const USERS: u64 = 40;
/// How long the server may take to see closes and flush writes.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);

/// A small deterministic generator (splitmix64); the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the test believes one open connection has.
struct Held {
    client: TestClient,
    channels: BTreeSet<&'static str>,
    presence_user: Option<String>,
}

/// One task's share of the churn: what it still holds open, and how many it closed.
struct Churned {
    open: Vec<Held>,
    closed: u64,
}

/// Every series of a scrape, keyed by `name{labels}` as written.
async fn scrape(server: &TestServer) -> HashMap<String, u64> {
    let (status, body) = server.http("GET", "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn parse(body: &str) -> HashMap<String, u64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn series(page: &HashMap<String, u64>, name: &str) -> u64 {
    page.get(name).copied().unwrap_or(0)
}

/// Reads frames until `channel`'s subscription is confirmed (other frames, such as
/// `member_added` from other tasks' joins, may come first).
async fn confirmed(client: &mut TestClient, channel: &str, first: serde_json::Value) {
    let mut frame = first;
    loop {
        if frame["event"] == "pusher_internal:subscription_succeeded" && frame["channel"] == channel {
            return;
        }
        assert_ne!(frame["event"], "pusher:subscription_error", "{frame}");
        frame = client.recv().await;
    }
}

async fn connect(server: &TestServer, rng: &mut Rng) -> Held {
    let mut client = server.client().await;
    let mut channels = BTreeSet::new();
    let mut presence_user = None;
    for channel in PUBLIC {
        if rng.below(2) == 0 {
            let first = client.subscribe(channel).await;
            confirmed(&mut client, channel, first).await;
            channels.insert(channel);
        }
    }
    if rng.below(3) == 0 {
        let first = client.subscribe_signed(PRIVATE, None).await;
        confirmed(&mut client, PRIVATE, first).await;
        channels.insert(PRIVATE);
    }
    if rng.below(3) == 0 {
        let user = format!("u{}", rng.below(USERS));
        let data = json!({"user_id": user}).to_string();
        let first = client.subscribe_signed(PRESENCE, Some(&data)).await;
        confirmed(&mut client, PRESENCE, first).await;
        channels.insert(PRESENCE);
        presence_user = Some(user);
    }
    Held { client, channels, presence_user }
}

async fn churn(server: &TestServer, seed: u64, operations: usize) -> Churned {
    let mut rng = Rng(seed);
    let mut open: Vec<Held> = Vec::new();
    let mut closed = 0;
    for _ in 0..operations {
        let connect_next = open.is_empty() || (open.len() < MAX_OPEN_PER_TASK && rng.below(100) < 55);
        if connect_next {
            open.push(connect(server, &mut rng).await);
        } else {
            let index = rng.below(open.len() as u64) as usize;
            open.swap_remove(index).client.close().await;
            closed += 1;
        }
    }
    Churned { open, closed }
}

/// The gauges' true values, from what the test holds.
fn ground_truth(held: &[Held]) -> BTreeMap<&'static str, u64> {
    let mut channels = BTreeSet::new();
    let mut members = BTreeSet::new();
    let mut subscriptions = 0;
    for h in held {
        channels.extend(h.channels.iter().copied());
        subscriptions += h.channels.len() as u64;
        members.extend(h.presence_user.iter().cloned());
    }
    BTreeMap::from([
        ("herald_connections", held.len() as u64),
        ("herald_channels", channels.len() as u64),
        ("herald_subscriptions", subscriptions),
        ("herald_presence_members", members.len() as u64),
    ])
}

fn gauges_of(page: &HashMap<String, u64>) -> BTreeMap<&'static str, u64> {
    ["herald_connections", "herald_channels", "herald_subscriptions", "herald_presence_members"]
        .into_iter()
        .map(|name| (name, series(page, &format!("{name}{{app=\"{APP_ID}\"}}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gauges_equal_ground_truth_after_random_churn_and_counters_move() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move { churn(&server, seed ^ (n << 48), OPERATIONS / TASKS).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut closed = 0;
    for task in tasks {
        let churned = task.await.unwrap();
        held.extend(churned.open);
        closed += churned.closed;
    }
    let truth = ground_truth(&held);
    println!("ground truth {truth:?}, {closed} closed by the test");
    assert!(truth["herald_presence_members"] > 0 && truth["herald_channels"] == 5, "churn too small: {truth:?}");

    // Closes reach the server asynchronously: wait until it has seen all of them, then the gauges
    // must be exact.
    let deliveries = format!("herald_deliveries_total{{app=\"{APP_ID}\"}}");
    let peer_closes = format!("herald_connections_closed_total{{app=\"{APP_ID}\",reason=\"peer\"}}");
    let page = eventually("every close counted", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let seen = series(&page, &peer_closes);
        if seen == closed { Ok(page) } else { Err(format!("{seen} of {closed} closes")) }
    })
    .await;
    assert_eq!(gauges_of(&page), truth, "gauges after the churn");

    // Counters move: publishes are counted exactly, and every subscriber's copy is written. First
    // let the churn's last frames (member_removed) be written, so that nothing else is counted.
    let mut before = scrape(&server).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = scrape(&server).await;
        let done = series(&now, &deliveries) == series(&before, &deliveries);
        before = now;
        if done {
            break;
        }
    }
    let subscribers = held.iter().filter(|h| h.channels.contains("public-0")).count() as u64;
    const PUBLISHES: u64 = 3;
    for n in 0..PUBLISHES {
        let (status, body) = server.publish(json!({"name": "e", "channel": "public-0", "data": n.to_string()})).await;
        assert_eq!(status, 200, "{body}");
    }
    let sender = held.iter_mut().find(|h| h.channels.contains(PRESENCE)).unwrap();
    sender.client.send(json!({"event": "client-hi", "channel": PRESENCE, "data": {}})).await;
    let presence_subscribers = truth_on(&held, PRESENCE) - 1;
    let expected_deliveries = PUBLISHES * subscribers + presence_subscribers;
    let api = format!("herald_publishes_total{{app=\"{APP_ID}\",source=\"api\"}}");
    let client = format!("herald_publishes_total{{app=\"{APP_ID}\",source=\"client\"}}");
    let after = eventually("the publishes written", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let written = series(&page, &deliveries) - series(&before, &deliveries);
        if written >= expected_deliveries { Ok(page) } else { Err(format!("{written} of {expected_deliveries}")) }
    })
    .await;
    assert_eq!(series(&after, &api) - series(&before, &api), PUBLISHES);
    assert_eq!(series(&after, &client) - series(&before, &client), 1);
    assert_eq!(series(&after, &deliveries) - series(&before, &deliveries), expected_deliveries, "nothing else written");
    let ok = format!("herald_http_api_requests_total{{app=\"{APP_ID}\",class=\"2xx\"}}");
    assert_eq!(series(&after, &ok) - series(&before, &ok), PUBLISHES);
    assert_eq!(gauges_of(&after), truth, "publishing changes no gauge");

    let (_, text) = server.http("GET", "/metrics", "").await;
    for secret_or_data in [SECRET, "public-0", PRESENCE, "u0"] {
        assert!(!text.contains(secret_or_data), "/metrics shows {secret_or_data:?}");
    }
    for h in held {
        h.client.close().await;
    }
    eventually("every connection gone", SETTLE_WITHIN, async || {
        let gauges = gauges_of(&scrape(&server).await);
        if gauges.values().all(|v| *v == 0) { Ok(()) } else { Err(format!("{gauges:?}")) }
    })
    .await;
}

/// Subscribers of `channel` among what the test holds.
fn truth_on(held: &[Held], channel: &str) -> u64 {
    held.iter().filter(|h| h.channels.contains(channel)).count() as u64
}

#[tokio::test]
async fn an_unknown_app_id_is_counted_without_its_name() {
    let server = TestServer::start().await;
    let (status, _) = server.http("GET", "/apps/not-an-app%22x/channels", "").await;
    assert!(status >= 400);
    let page = scrape(&server).await;
    assert!(page.keys().any(|series| series.starts_with("herald_http_api_requests_total{app=\"\",class=\"4xx\"}")));
    assert!(!page.keys().any(|series| series.contains("not-an-app")), "{page:?}");
}

#[tokio::test]
async fn health_is_always_served_and_metrics_can_be_turned_off() {
    let config = format!("[server]\nmetrics = false\n\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    assert_eq!(server.http("GET", "/healthz", "").await, (200, "ok\n".to_owned()));
    assert_eq!(server.http("GET", "/readyz", "").await, (200, "ready\n".to_owned()));
    assert_eq!(server.http("GET", "/metrics", "").await.0, 404);
}

/// Polls `/readyz` until it answers `status`.
async fn await_ready(server: &TestServer, status: u16, engine_up: u64) {
    eventually(&format!("/readyz answers {status}"), Duration::from_secs(30), async || {
        let (got, body) = server.http("GET", "/readyz", "").await;
        let up = series(&scrape(server).await, "herald_engine_up");
        if got == status && up == engine_up { Ok(()) } else { Err(format!("{got} {body}, engine_up {up}")) }
    })
    .await;
}

#[tokio::test]
async fn readyz_is_503_while_the_redis_engine_has_lost_redis() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let prefix = format!("herald-e2e-metrics-{}-{nanos:x}", std::process::id());
    let args = ["--engine", "redis", "--redis-url", &url, "--redis-prefix", &prefix];
    let server = TestServer::with_args(&default_config(), &args).await;
    await_ready(&server, 200, 1).await;

    redis.kill().await;
    await_ready(&server, 503, 0).await;
    assert_eq!(server.http("GET", "/healthz", "").await, (200, "ok\n".to_owned()), "alive while not ready");

    redis.revive().await;
    await_ready(&server, 200, 1).await;
}

#[tokio::test]
async fn a_connection_closed_for_falling_behind_is_counted_with_its_dropped_frames() {
    // A queue smaller than one event: the first publish overflows it at once, so the test needs no
    // reader that is slow "enough".
    let config = format!("[server]\nmax_queued_bytes = 2048\n\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    let mut client = server.client().await;
    let first = client.subscribe("public-0").await;
    confirmed(&mut client, "public-0", first).await;
    let (status, body) = server.publish(json!({"name": "e", "channel": "public-0", "data": "x".repeat(3000)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(client.expect_close().await, crate::support::Closed::Code(4100));
    let closed = format!("herald_connections_closed_total{{app=\"{APP_ID}\",reason=\"4100\"}}");
    let dropped = format!("herald_messages_dropped_total{{app=\"{APP_ID}\",reason=\"4100\"}}");
    let connections = format!("herald_connections{{app=\"{APP_ID}\"}}");
    // The close is counted when the socket task ends, the drops when its session is dropped.
    let page = eventually("the connection gone and counted", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let gone = series(&page, &closed) == 1 && series(&page, &connections) == 0;
        if gone { Ok(page) } else { Err(format!("{page:?}")) }
    })
    .await;
    assert_eq!(series(&page, &dropped), 1, "the one event that did not fit");
}

/// One pusher-js HTTP fallback session (`xhr` long polls), driven by hand.
struct XhrSession<'a> {
    server: &'a TestServer,
    base: String,
}

impl<'a> XhrSession<'a> {
    /// Opens the session (`o`) and reads its `connection_established`.
    async fn open(server: &'a TestServer, id: &str) -> Self {
        let session = Self { server, base: format!("/pusher/app/{}/100/{id}", crate::support::KEY) };
        assert_eq!(session.poll().await, "o\n");
        let established = session.frames().await;
        assert_eq!(established[0]["event"], "pusher:connection_established", "{established:?}");
        session
    }

    /// One long poll's body (call it only when something is queued: an empty poll holds 20 s).
    async fn poll(&self) -> String {
        let (status, body) = self.server.http("POST", &format!("{}/xhr?protocol=7", self.base), "").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The frames of one poll, as JSON texts.
    async fn frame_texts(&self) -> (Vec<String>, String) {
        let body = self.poll().await;
        let texts = body
            .lines()
            .filter_map(|line| line.strip_prefix('a'))
            .flat_map(|array| serde_json::from_str::<Vec<String>>(array).unwrap())
            .collect();
        (texts, body)
    }

    async fn frames(&self) -> Vec<serde_json::Value> {
        self.frame_texts().await.0.iter().map(|text| serde_json::from_str(text).unwrap()).collect()
    }

    async fn send(&self, frame: serde_json::Value) {
        let body = serde_json::to_string(&[frame.to_string()]).unwrap();
        let (status, answer) = self.server.http("POST", &format!("{}/xhr_send", self.base), &body).await;
        assert_eq!(status, 204, "{answer}");
    }
}

#[tokio::test]
async fn queued_bytes_are_what_a_subscriber_that_stops_reading_has_waiting_and_http_closes_are_counted() {
    let config = format!("[server]\nmax_queued_bytes = 2048\n\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    let queued = format!("herald_outbox_queued_bytes{{app=\"{APP_ID}\"}}");
    let xhr = XhrSession::open(&server, "abc").await;
    xhr.send(json!({"event": "pusher:subscribe", "data": {"channel": "public-0"}})).await;
    let joined = xhr.frames().await;
    assert_eq!(joined[0]["event"], "pusher_internal:subscription_succeeded", "{joined:?}");
    assert_eq!(series(&scrape(&server).await, &queued), 0, "everything was read");

    // The session stops polling: each publish waits in its outbox (a publish answers once queued).
    for n in 0..3 {
        let (status, body) = server.publish(json!({"name": "e", "channel": "public-0", "data": n.to_string()})).await;
        assert_eq!(status, 200, "{body}");
    }
    let page = scrape(&server).await;
    let waiting = series(&page, &queued);
    assert_eq!(series(&page, &format!("herald_outbox_queued_frames{{app=\"{APP_ID}\"}}")), 3);
    let (texts, body) = xhr.frame_texts().await;
    assert_eq!(texts.len(), 3, "{body}");
    assert_eq!(waiting, texts.iter().map(|t| t.len() as u64).sum::<u64>(), "the gauge is the bytes the poll got");
    assert_eq!(series(&scrape(&server).await, &queued), 0, "and nothing once read");

    // A publish bigger than the queue closes the session with 4100; the next poll tells it, and
    // its end is counted with the same series and code as a WebSocket's.
    let (status, body) = server.publish(json!({"name": "e", "channel": "public-0", "data": "x".repeat(3000)})).await;
    assert_eq!(status, 200, "{body}");
    let (texts, body) = xhr.frame_texts().await;
    assert!(texts.is_empty() && body.contains("c[4100,"), "{body}");
    let closed = format!("herald_connections_closed_total{{app=\"{APP_ID}\",reason=\"4100\"}}");
    let connections = format!("herald_connections{{app=\"{APP_ID}\"}}");
    let dropped = format!("herald_messages_dropped_total{{app=\"{APP_ID}\",reason=\"4100\"}}");
    let page = eventually("the HTTP session gone and counted", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let gone = series(&page, &closed) == 1 && series(&page, &connections) == 0;
        if gone { Ok(page) } else { Err(format!("{page:?}")) }
    })
    .await;
    assert_eq!(series(&page, &dropped), 1, "the event that did not fit");
    assert!(!page.keys().any(|s| s.starts_with("herald_connections_closed_total") && s.contains("peer")));
}

#[tokio::test]
async fn an_sse_stream_closed_for_falling_behind_is_counted_like_a_websocket() {
    let config = format!("[server]\nmax_queued_bytes = 2048\n\n{}", default_config());
    let server = TestServer::with_config(&config).await;
    let mut stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let request = format!("GET /sse/{}?channels=public-0 HTTP/1.1\r\nHost: x\r\n\r\n", crate::support::KEY);
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("subscription_succeeded") {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(SETTLE_WITHIN, tokio::io::AsyncReadExt::read(&mut stream, &mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..read]);
    }
    let (status, body) = server.publish(json!({"name": "e", "channel": "public-0", "data": "x".repeat(3000)})).await;
    assert_eq!(status, 200, "{body}");
    let closed = format!("herald_connections_closed_total{{app=\"{APP_ID}\",reason=\"4100\"}}");
    let connections = format!("herald_connections{{app=\"{APP_ID}\"}}");
    eventually("the SSE stream gone and counted", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let gone = series(&page, &closed) == 1 && series(&page, &connections) == 0;
        if gone { Ok(()) } else { Err(format!("{page:?}")) }
    })
    .await;
}

#[tokio::test]
async fn job_counts_by_state_are_read_from_the_store_at_scrape_time() {
    let config = format!("{}[[apps.queues]]\nname = \"reports\"\n", default_config());
    let server = TestServer::with_config(&config).await;
    let gauge = |state: &str| format!("herald_jobs{{app=\"{APP_ID}\",queue=\"reports\",state=\"{state}\"}}");
    let page = scrape(&server).await;
    assert_eq!(page.get(&gauge("queued")), Some(&0), "an empty queue is shown");
    for n in 0..3 {
        let body = json!({"payload": {"n": n}}).to_string();
        let (status, answer) = server.api("POST", &format!("/apps/{APP_ID}/queues/reports/jobs"), &[], &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let page = scrape(&server).await;
    assert_eq!((series(&page, &gauge("queued")), series(&page, &gauge("running"))), (3, 0));
    let (status, answer) =
        server.api("POST", &format!("/apps/{APP_ID}/queues/reports/claim"), &[], r#"{"wait_secs":0}"#).await;
    assert_eq!(status, 200, "{answer}");
    let page = scrape(&server).await;
    assert_eq!((series(&page, &gauge("queued")), series(&page, &gauge("running"))), (2, 1));
    let errors = format!("herald_metrics_scrape_errors_total{{app=\"{APP_ID}\",source=\"jobs\"}}");
    assert_eq!(page.get(&errors), Some(&0));
}

#[tokio::test]
async fn webhook_events_an_endpoint_refuses_are_shown_pending_by_endpoint_index_never_url() {
    // A port nobody listens on: every request fails to connect.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed_port}/hook?token=do-not-show");
    let config = format!(
        "{}webhook_leave_delay_ms = 0\n\
         [[apps.webhooks]]\nurl = \"{url}\"\nbackoff_base_ms = 50\nbackoff_cap_ms = 200\nretry_for_secs = 600\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{closed_port}/other\"\nevent_types = [\"member_added\"]\n",
        default_config()
    );
    let server = TestServer::with_config(&config).await;
    let mut client = server.client().await;
    let first = client.subscribe("public-0").await;
    confirmed(&mut client, "public-0", first).await;
    let pending = |index: u32| format!("herald_webhook_events_pending{{app=\"{APP_ID}\",endpoint=\"{index}\"}}");
    let failed = format!("herald_webhook_requests_failed_total{{app=\"{APP_ID}\",endpoint=\"0\"}}");
    let page = eventually("channel_occupied pending and retried", SETTLE_WITHIN, async || {
        let page = scrape(&server).await;
        let seen = (series(&page, &pending(0)), series(&page, &failed));
        if seen.0 == 1 && seen.1 >= 2 { Ok(page) } else { Err(format!("pending, failed: {seen:?}")) }
    })
    .await;
    assert_eq!(page.get(&pending(1)), Some(&0), "the other endpoint wants none of it");
    let delivered = format!("herald_webhook_events_delivered_total{{app=\"{APP_ID}\",endpoint=\"0\"}}");
    let dead = format!("herald_webhook_events_dead_lettered_total{{app=\"{APP_ID}\",endpoint=\"0\"}}");
    let dropped = format!("herald_webhook_events_dropped_total{{app=\"{APP_ID}\"}}");
    assert_eq!((page.get(&delivered), page.get(&dead), page.get(&dropped)), (Some(&0), Some(&0), Some(&0)));
    let (_, text) = server.http("GET", "/metrics", "").await;
    assert!(!text.contains("do-not-show") && !text.contains("/hook"), "a webhook url is never a label");
}
