//! Webhooks end to end: a local HTTP receiver that fails and recovers, delivery exactly once and in
//! order with a valid signature, isolation between apps, the leave delay, dead letters replayed
//! from the CLI, and a restart with webhooks pending.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::{APP_ID, KEY, SECRET, TestClient, TestServer, hmac_hex};

/// How long a test waits for webhooks before failing.
const WAIT: Duration = Duration::from_secs(30);

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Fail,
    /// 500 for this long after the first request, then 200.
    FailFor(Duration),
}

#[derive(Debug)]
struct Request {
    key: String,
    signature: String,
    body: String,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    first_request: Option<Instant>,
    accepted: Vec<Request>,
    refused: usize,
}

impl State {
    fn events(&self) -> Vec<Value> {
        self.accepted.iter().flat_map(|r| events_of(&r.body)).collect()
    }
}

/// A tiny HTTP/1.1 endpoint that records what it accepts.
struct Receiver {
    url: String,
    state: Arc<Mutex<State>>,
    changes: watch::Receiver<u64>,
}

impl Receiver {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { mode, first_request: None, accepted: Vec::new(), refused: 0 }));
        let (tell, changes) = watch::channel(0u64);
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, tell) = (shared.clone(), tell.clone());
                tokio::spawn(async move {
                    if read_request(stream, &state).await.is_some() {
                        tell.send_modify(|n| *n += 1);
                    }
                });
            }
        });
        Self { url, state, changes }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Every accepted event, in the order accepted.
    fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events()
    }

    /// Waits (bounded) until `done` holds for what was received.
    async fn wait_until(&self, what: &str, done: impl Fn(&State) -> bool) {
        let mut changes = self.changes.clone();
        let deadline = Instant::now() + WAIT;
        loop {
            if done(&self.state.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                panic!("timed out waiting for {what}; received {:?}", self.events());
            }
        }
    }

    async fn wait_for_events(&self, count: usize) -> Vec<Value> {
        self.wait_until(&format!("{count} webhook events"), |s| {
            s.accepted.iter().map(|r| events_of(&r.body).len()).sum::<usize>() >= count
        })
        .await;
        self.events()
    }

    /// Every accepted request carried the app key and a valid signature of its body.
    fn check_signatures(&self, key: &str, secret: &str) {
        let state = self.state.lock().unwrap();
        assert!(!state.accepted.is_empty());
        for request in &state.accepted {
            assert_eq!(request.key, key);
            assert_eq!(request.signature, hmac_hex(secret, &request.body), "signature of {}", request.body);
            let body: Value = serde_json::from_str(&request.body).unwrap();
            assert!(body["time_ms"].as_u64().unwrap() > 1_600_000_000_000, "{body}");
        }
    }
}

fn events_of(body: &str) -> Vec<Value> {
    let body: Value = serde_json::from_str(body).unwrap();
    body["events"].as_array().unwrap().clone()
}

/// Reads one request, answers it according to the mode, records it if accepted.
async fn read_request(mut stream: tokio::net::TcpStream, state: &Mutex<State>) -> Option<()> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().ok()?;
    while data.len() < head_end + length {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8(data[head_end..head_end + length].to_vec()).ok()?;
    let accept = {
        let mut state = state.lock().unwrap();
        let first = *state.first_request.get_or_insert_with(Instant::now);
        let accept = match state.mode {
            Mode::Ok => true,
            Mode::Fail => false,
            Mode::FailFor(span) => first.elapsed() >= span,
        };
        if accept {
            let request = Request { key: header("x-pusher-key"), signature: header("x-pusher-signature"), body };
            state.accepted.push(request);
        } else {
            state.refused += 1;
        }
        accept
    };
    let status = if accept { "200 OK" } else { "500 Internal Server Error" };
    let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(answer.as_bytes()).await.ok()?;
    Some(())
}

/// One app with one webhook (short retries); `extra` goes into the app table.
fn app(id: &str, key: &str, secret: &str, url: &str, extra: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\nwebhook_leave_delay_ms = 300\n\
         [[apps.webhooks]]\nurl = \"{url}\"\nbackoff_base_ms = 50\nbackoff_cap_ms = 500\n{extra}\n"
    )
}

fn event(name: &str, channel: &str) -> Value {
    json!({ "name": name, "channel": channel })
}

/// The events of one channel, in order.
fn of_channel(events: &[Value], channel: &str) -> Vec<Value> {
    events.iter().filter(|e| e["channel"] == channel).cloned().collect()
}

async fn client_of(server: &TestServer, key: &str) -> TestClient {
    let mut client = server.connect(key, "protocol=7&client=rust&version=1").await;
    client.expect_event("pusher:connection_established").await;
    client
}

fn cli(server: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(["webhooks", "dead-letters"]).args(args).args([
        "--url",
        &format!("http://{}", server.addr),
        "--app-id",
        APP_ID,
        "--key",
        KEY,
        "--secret",
        SECRET,
    ]);
    command
}

async fn cli_json(server: &TestServer, args: &[&str]) -> Value {
    let output = tokio::time::timeout(WAIT, cli(server, args).output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn webhooks_outlast_a_failing_endpoint_once_and_in_order_without_delaying_another_app() {
    let failing = Receiver::start(Mode::FailFor(Duration::from_secs(3))).await;
    let healthy = Receiver::start(Mode::Ok).await;
    let config = format!(
        "{}{}",
        app(APP_ID, KEY, SECRET, &failing.url, "retry_for_secs = 120"),
        app("2", "key-2", "secret-2", &healthy.url, "")
    );
    let server = TestServer::with_config(&config).await;

    let mut client = server.client().await;
    client.subscribe_signed("private-chat", None).await;
    for n in 0..5 {
        client.send(json!({"event": "client-n", "channel": "private-chat", "data": {"n": n}})).await;
    }
    for channel in ["ch-a", "ch-b"] {
        client.subscribe(channel).await;
        client.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}})).await;
    }
    failing.wait_until("a refused request", |s| s.refused > 0).await;

    // The other app's endpoint is not held up by the failing one.
    let started = Instant::now();
    let mut other = client_of(&server, "key-2").await;
    other.subscribe("news").await;
    let delivered = healthy.wait_for_events(1).await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(delivered, [event("channel_occupied", "news")]);
    assert!(failing.events().is_empty(), "the first endpoint is still failing");
    healthy.check_signatures("key-2", "secret-2");

    // 1 occupied + 5 client events + 2 × (occupied, vacated).
    let events = failing.wait_for_events(10).await;
    assert!(failing.refused() >= 3, "retried: {}", failing.refused());
    let mut expected_chat = vec![event("channel_occupied", "private-chat")];
    for n in 0..5 {
        expected_chat.push(json!({
            "name": "client_event", "channel": "private-chat", "event": "client-n",
            "data": json!({"n": n}).to_string(), "socket_id": client.socket_id,
        }));
    }
    assert_eq!(of_channel(&events, "private-chat"), expected_chat);
    for channel in ["ch-a", "ch-b"] {
        let expected = [event("channel_occupied", channel), event("channel_vacated", channel)];
        assert_eq!(of_channel(&events, channel), expected);
    }
    assert_eq!(events.len(), 10, "each exactly once: {events:?}");
    failing.check_signatures(KEY, SECRET);
}

#[tokio::test]
async fn a_page_refresh_within_the_leave_delay_emits_nothing() {
    let receiver = Receiver::start(Mode::Ok).await;
    let server = TestServer::with_config(&app(APP_ID, KEY, SECRET, &receiver.url, "batch = true")).await;
    let member = r#"{"user_id":"u1"}"#;
    let mut client = server.client().await;
    client.subscribe_signed("presence-room", Some(member)).await;
    client.subscribe("news").await;
    let joined = [
        json!({"name": "channel_occupied", "channel": "presence-room"}),
        json!({"name": "member_added", "channel": "presence-room", "user_id": "u1"}),
        event("channel_occupied", "news"),
    ];
    assert_eq!(receiver.wait_for_events(3).await, joined);

    // Unsubscribe and subscribe again on the same connection.
    client.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}})).await;
    client.subscribe("news").await;
    // A reload: the connection goes, a new one joins as the same user.
    client.close().await;
    let mut again = server.client().await;
    again.subscribe_signed("presence-room", Some(member)).await;
    again.subscribe("news").await;

    // A marker whose vacated is held as long as any departure above: when it arrives, anything
    // not cancelled would have arrived before it.
    again.subscribe("marker").await;
    again.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "marker"}})).await;
    let events = receiver.wait_for_events(5).await;
    let mut expected = joined.to_vec();
    expected.extend([event("channel_occupied", "marker"), event("channel_vacated", "marker")]);
    assert_eq!(events, expected);
    receiver.check_signatures(KEY, SECRET);
}

#[tokio::test]
async fn an_endpoint_that_never_recovers_leaves_dead_letters_which_the_cli_replays() {
    let receiver = Receiver::start(Mode::Fail).await;
    let config = app(APP_ID, KEY, SECRET, &receiver.url, "retry_for_secs = 1\nevent_types = [\"channel_occupied\"]");
    let server = TestServer::with_config(&config).await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    client.subscribe("sport").await;

    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let listed = cli_json(&server, &["list"]).await;
        let letters = listed["dead_letters"].as_array().unwrap().clone();
        if letters.len() == 2 {
            break letters;
        }
        assert!(Instant::now() < deadline, "no dead letters: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters[0]["event"], event("channel_occupied", "news"));
    assert_eq!(letters[0]["url"], receiver.url.as_str());
    assert_eq!(letters[0]["reason"], "HTTP 500");
    assert!(receiver.refused() >= 2);

    receiver.set_mode(Mode::Ok);
    let id = letters[1]["id"].as_u64().unwrap().to_string();
    assert_eq!(cli_json(&server, &["replay", "--id", &id]).await, json!({"replayed": 1}));
    assert_eq!(receiver.wait_for_events(1).await, [event("channel_occupied", "sport")]);
    assert_eq!(cli_json(&server, &["replay", "--all"]).await, json!({"replayed": 1}));
    let events = receiver.wait_for_events(2).await;
    assert_eq!(events, [event("channel_occupied", "sport"), event("channel_occupied", "news")]);
    let listed = cli_json(&server, &["list"]).await;
    assert_eq!(listed["dead_letters"], json!([]));
    receiver.check_signatures(KEY, SECRET);
}

#[tokio::test]
async fn pending_webhooks_survive_a_restart() {
    let receiver = Receiver::start(Mode::Fail).await;
    let config = app(APP_ID, KEY, SECRET, &receiver.url, "retry_for_secs = 600");
    let dir = TestServer::fresh_dir();
    let server = TestServer::in_dir(&dir, &config, &[]).await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    receiver.wait_until("a refused request", |s| s.refused > 0).await;
    // The vacated is held for the leave delay; a stop queues it at once.
    client.close().await;
    server.stop().await;

    receiver.set_mode(Mode::Ok);
    let _server = TestServer::in_dir(&dir, &config, &[]).await;
    let events = receiver.wait_for_events(2).await;
    assert_eq!(events, [event("channel_occupied", "news"), event("channel_vacated", "news")]);
    receiver.check_signatures(KEY, SECRET);
}

#[tokio::test]
async fn endpoints_get_cache_misses_and_subscription_counts_when_they_ask() {
    let receiver = Receiver::start(Mode::Ok).await;
    let extra = "event_types = [\"cache_miss\", \"subscription_count\"]";
    let server = TestServer::with_config(&app(APP_ID, KEY, SECRET, &receiver.url, extra)).await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    client.subscribe("cache-prices").await;
    let events = receiver.wait_for_events(3).await;
    let count = |channel: &str| json!({"name": "subscription_count", "channel": channel, "subscription_count": 1});
    assert_eq!(events, [count("news"), event("cache_miss", "cache-prices"), count("cache-prices")]);
}

/// How many of `events` are `name` on `channel` (and for `user_id`, when given).
fn count_of(events: &[Value], name: &str, channel: &str, user_id: Option<&str>) -> usize {
    let user_matches = |e: &Value| user_id.is_none_or(|user| e["user_id"] == user);
    events.iter().filter(|e| e["name"] == name && e["channel"] == channel && user_matches(e)).count()
}

/// Waits until the cluster (asked through `node`) counts `expected` subscriptions on `channel`:
/// every node's count has reached Redis.
async fn cluster_count(node: &TestServer, channel: &str, expected: u64) {
    crate::cluster::eventually(&format!("{channel} counted {expected} across nodes"), WAIT, async || {
        let path = format!("/apps/{APP_ID}/channels/{channel}");
        let (status, body) = node.api("GET", &path, &[("info", "subscription_count")], "").await;
        let count = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["subscription_count"].as_u64());
        if status == 200 && count == Some(expected) { Ok(()) } else { Err(format!("{status} {body}")) }
    })
    .await;
}

/// Two nodes on one Redis: each node sees only its part of a channel, yet every occupancy and
/// membership change is told once for the cluster, a departure only when no node still has the
/// channel (or the member), a refresh that lands on the other node is silent, a client event is
/// told by the node that got it, and a node that dies has its channels told vacated by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_each_change_is_told_once_for_the_whole_cluster() {
    let receiver = Receiver::start(Mode::Ok).await;
    let redis = crate::redis_server::RedisServer::start().await;
    let prefix = format!("herald-e2e-webhooks-{}", std::process::id());
    let config = format!(
        "[server]\nnode_lease_secs = 2\n\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         webhook_leave_delay_ms = 1500\n[[apps.webhooks]]\nurl = \"{}\"\nbackoff_base_ms = 50\n",
        receiver.url
    );
    let url = redis.url();
    let args = ["--engine", "redis", "--redis-url", url.as_str(), "--redis-prefix", prefix.as_str()];
    let a = TestServer::with_args(&config, &args).await;
    let b = TestServer::with_args(&config, &args).await;

    // One channel, a subscriber on each node: occupied once; vacated once, when the last goes.
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    on_a.subscribe("room").await;
    on_b.subscribe("room").await;
    cluster_count(&a, "room", 2).await;
    on_a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "room"}})).await;
    cluster_count(&a, "room", 1).await;
    on_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "room"}})).await;
    receiver.wait_until("room vacated", |s| count_of(&s.events(), "channel_vacated", "room", None) > 0).await;

    // One presence user with a socket on each node: added once, removed once.
    let member = r#"{"user_id":"u1"}"#;
    on_a.subscribe_signed("presence-team", Some(member)).await;
    on_b.subscribe_signed("presence-team", Some(member)).await;
    receiver.wait_until("u1 added", |s| count_of(&s.events(), "member_added", "presence-team", None) > 0).await;
    // (b's membership reaches Redis long before a's departure is judged, a leave delay later)
    on_a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-team"}})).await;
    on_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-team"}})).await;
    receiver.wait_until("u1 removed", |s| count_of(&s.events(), "member_removed", "presence-team", None) > 0).await;

    // A refresh that reconnects to the other node within the leave delay: nothing.
    on_a.subscribe("lobby").await;
    receiver.wait_until("lobby occupied", |s| count_of(&s.events(), "channel_occupied", "lobby", None) > 0).await;
    on_a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "lobby"}})).await;
    on_b.subscribe("lobby").await;

    // A client event is told by the node that got it.
    on_b.subscribe_signed("private-chat", None).await;
    on_b.send(json!({"event": "client-typing", "channel": "private-chat", "data": {"n": 1}})).await;
    receiver.wait_until("the client event", |s| count_of(&s.events(), "client_event", "private-chat", None) > 0).await;

    // Node b dies holding lobby and private-chat (once its counts are in Redis): a's reaper
    // withdraws it, and a tells both vacated (after its leave delay), once.
    cluster_count(&a, "private-chat", 1).await;
    cluster_count(&a, "lobby", 1).await;
    b.crash().await;
    receiver
        .wait_until("b's channels vacated", |s| {
            let events = s.events();
            count_of(&events, "channel_vacated", "lobby", None) > 0
                && count_of(&events, "channel_vacated", "private-chat", None) > 0
        })
        .await;
    // Anything a node could still tell twice would be queued within its leave delay: a marker
    // whose vacated is held that long and comes after it bounds the wait.
    on_a.subscribe("marker").await;
    on_a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "marker"}})).await;
    receiver.wait_until("marker vacated", |s| count_of(&s.events(), "channel_vacated", "marker", None) > 0).await;

    let events = receiver.events();
    let told = |name: &str, channel: &str| count_of(&events, name, channel, None);
    assert_eq!((told("channel_occupied", "room"), told("channel_vacated", "room")), (1, 1), "{events:?}");
    assert_eq!(told("channel_occupied", "presence-team"), 1, "{events:?}");
    assert_eq!(told("channel_vacated", "presence-team"), 1, "{events:?}");
    assert_eq!(count_of(&events, "member_added", "presence-team", Some("u1")), 1, "{events:?}");
    assert_eq!(count_of(&events, "member_removed", "presence-team", Some("u1")), 1, "{events:?}");
    assert_eq!((told("channel_occupied", "lobby"), told("channel_vacated", "lobby")), (1, 1), "{events:?}");
    assert_eq!(told("client_event", "private-chat"), 1, "{events:?}");
    assert_eq!(told("channel_vacated", "private-chat"), 1, "{events:?}");
    // Per channel, in the order they happened.
    let names =
        |channel: &str| -> Vec<Value> { of_channel(&events, channel).iter().map(|e| e["name"].clone()).collect() };
    assert_eq!(names("room"), [json!("channel_occupied"), json!("channel_vacated")]);
    assert_eq!(names("lobby"), [json!("channel_occupied"), json!("channel_vacated")]);
    receiver.check_signatures(KEY, SECRET);
}
