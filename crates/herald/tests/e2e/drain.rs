//! Drain on SIGTERM in a two-node Redis cluster: 5,000 clients on the node that is stopped all get
//! the reconnect code (4200), come back on the other node with `resume`, and miss nothing that was
//! published before, during or after the drain; the stopped node exits within its deadline.
//!
//! Clients here are lean raw WebSockets (5,000 `TestClient`s would panic on their 5 s read
//! timeout while the drain is paced), and nothing sleeps: every wait is for a frame, a count or a
//! process exit, with a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::eventually;
use crate::redis_server::RedisServer;
use crate::support::{APP_ID, KEY, TestServer, default_config};

const CLIENTS: usize = 5000;
const CHANNELS: usize = 50;
/// Connections opened at once while the clients join.
const CONNECTING_AT_ONCE: usize = 200;
/// The stopped node's `shutdown_grace_secs`, and its close rate (5,000 closes take 2.5 s).
const GRACE_SECS: u64 = 10;
const CLOSE_RATE: u32 = 2000;
/// Events published to each channel before, during and after the drain.
const ROUNDS_BEFORE: usize = 5;
const ROUNDS_AFTER: usize = 5;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one client saw.
#[derive(Debug)]
struct Seen {
    channel: usize,
    /// The serials of the events received, in arrival order, across both nodes.
    serials: Vec<u64>,
    /// The position the client first subscribed at.
    start: u64,
    closed_with: Option<u16>,
    recovered: Option<bool>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_5000_clients_hands_them_all_to_the_other_node_without_a_lost_event() {
    let redis = RedisServer::start().await;
    let prefix = format!("herald-e2e-drain-{}", std::process::id());
    // History deep enough for the slowest reconnect under a loaded CI machine: this test is about
    // the drain, not about history limits (a resume past them is told to refetch, tested elsewhere).
    let config = format!(
        "{}history_max_events = 100000\n\n[server]\nshutdown_grace_secs = {GRACE_SECS}\nshutdown_close_rate = {CLOSE_RATE}\n\
         max_connections_per_ip = 0\nmax_new_connections_per_sec = 0\n",
        default_config()
    );
    let url = redis.url();
    let args = ["--engine", "redis", "--redis-url", url.as_str(), "--redis-prefix", prefix.as_str()];
    let leaving = TestServer::with_args(&config, &args).await;
    let staying = TestServer::with_args(&config, &args).await;
    for node in [&leaving, &staying] {
        eventually("node is up", Duration::from_secs(30), async || {
            let (status, body) = node.http("GET", "/up", "").await;
            if status == 200 { Ok(()) } else { Err(format!("{status} {body}")) }
        })
        .await;
    }

    let (finals_tx, finals) = watch::channel(None::<BTreeMap<usize, u64>>);
    let joined = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (from, to) = (leaving.addr.clone(), staying.addr.clone());
            let (finals, joined, drained, gate) = (finals.clone(), joined.clone(), drained.clone(), gate.clone());
            tokio::spawn(async move { client(i % CHANNELS, from, to, gate, joined, drained, finals).await })
        })
        .collect();
    eventually("every client joined", Duration::from_secs(120), async || {
        let n = joined.load(Ordering::Relaxed);
        if n == CLIENTS { Ok(()) } else { Err(format!("{n} of {CLIENTS}")) }
    })
    .await;

    let mut last = BTreeMap::new();
    for _ in 0..ROUNDS_BEFORE {
        publish_round(&staying, &mut last).await;
    }
    let stopping = tokio::spawn(async move {
        let sigterm = Instant::now();
        leaving.stop().await;
        sigterm.elapsed()
    });
    // Keep publishing through the other node while the drain is paced out.
    while !stopping.is_finished() {
        publish_round(&staying, &mut last).await;
    }
    let took = stopping.await.expect("the node exits 0 within 20 s");
    for _ in 0..ROUNDS_AFTER {
        publish_round(&staying, &mut last).await;
    }
    finals_tx.send(Some(last.clone())).unwrap();

    let mut seen = Vec::new();
    for client in clients {
        seen.push(tokio::time::timeout(Duration::from_secs(60), client).await.expect("client finishes").unwrap());
    }
    eprintln!("drain: {} clients got 4200; the node exited {took:?} after SIGTERM", drained.load(Ordering::Relaxed));
    assert!(took < Duration::from_secs(GRACE_SECS + 5), "exit took {took:?}, the deadline is {GRACE_SECS} s");
    let mut problems = Vec::new();
    for (n, client) in seen.iter().enumerate() {
        let expected: Vec<u64> = (client.start + 1..=last[&client.channel]).collect();
        if client.closed_with != Some(4200) {
            problems.push(format!("client {n}: closed with {:?}", client.closed_with));
        } else if client.recovered != Some(true) {
            problems.push(format!("client {n}: resume answered recovered {:?}", client.recovered));
        } else if client.serials != expected {
            problems.push(format!(
                "client {n}: serials {:?}, expected {}..={}",
                client.serials,
                client.start + 1,
                last[&client.channel]
            ));
        }
    }
    assert!(problems.is_empty(), "{} of {CLIENTS} clients: {:#?}", problems.len(), &problems[..problems.len().min(10)]);
}

/// One event to every channel through `node`; remembers each channel's serial from the answer.
async fn publish_round(node: &TestServer, last: &mut BTreeMap<usize, u64>) {
    for batch in (0..CHANNELS).collect::<Vec<_>>().chunks(10) {
        let events: Vec<Value> =
            batch.iter().map(|c| json!({"channel": channel_name(*c), "name": "tick", "data": "{}"})).collect();
        let body = json!({"batch": events}).to_string();
        // The node is taking 5,000 reconnections meanwhile (a debug build in tests): be patient.
        let path = format!("/apps/{APP_ID}/batch_events");
        let (status, body) = node.api_within("POST", &path, &body, Duration::from_secs(30)).await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        for (c, serials) in batch.iter().zip(answer["serials"].as_array().expect("serials per event")) {
            let serial = serials[channel_name(*c)].as_u64().expect("a serial per event");
            last.insert(*c, serial);
        }
    }
}

fn channel_name(channel: usize) -> String {
    format!("drain-{channel}")
}

async fn client(
    channel: usize,
    from: String,
    to: String,
    gate: Arc<Semaphore>,
    joined: Arc<AtomicUsize>,
    drained: Arc<AtomicUsize>,
    mut finals: watch::Receiver<Option<BTreeMap<usize, u64>>>,
) -> Seen {
    let name = channel_name(channel);
    let permit = gate.acquire_owned().await.unwrap();
    let mut socket = open(&from).await;
    socket.send(text(json!({"event": "pusher:subscribe", "data": {"channel": name}}))).await.unwrap();
    let joined_at = until_event(&mut socket, "pusher_internal:subscription_succeeded").await;
    drop(permit);
    let (epoch, start) = position(&joined_at);
    let mut seen = Seen { channel, serials: Vec::new(), start, closed_with: None, recovered: None };
    joined.fetch_add(1, Ordering::Relaxed);

    // On the leaving node until it asks us to go.
    while seen.closed_with.is_none() {
        match socket.next().await {
            Some(Ok(Message::Text(frame))) => {
                let frame: Value = serde_json::from_str(frame.as_str()).unwrap();
                if frame["event"] == "tick" {
                    seen.serials.push(frame["serial"].as_u64().unwrap());
                }
            }
            Some(Ok(Message::Close(Some(close)))) => seen.closed_with = Some(u16::from(close.code)),
            Some(Err(_)) | None | Some(Ok(Message::Close(None))) => seen.closed_with = Some(0),
            Some(Ok(_)) => {}
        }
    }
    drained.fetch_add(1, Ordering::Relaxed);

    // On the staying node, resumed from the last serial seen, until the final serial.
    let mut socket = open(&to).await;
    let from_serial = seen.serials.last().copied().unwrap_or(start);
    let resume = json!({"event": "pusher:subscribe", "data": {"channel": name, "resume": {"epoch": epoch, "serial": from_serial}}});
    socket.send(text(resume)).await.unwrap();
    let resumed = until_event(&mut socket, "pusher_internal:subscription_succeeded").await;
    seen.recovered = resumed["recovered"].as_bool();
    if seen.recovered != Some(true) {
        eprintln!("channel {channel}: resumed from {epoch}/{from_serial}, answer {resumed}");
    }
    loop {
        let last = seen.serials.last().copied().unwrap_or(start);
        if finals.borrow().as_ref().is_some_and(|finals| finals[&channel] <= last) {
            break;
        }
        tokio::select! {
            changed = finals.changed() => changed.unwrap(),
            frame = socket.next() => {
                let Some(Ok(Message::Text(frame))) = frame else { continue };
                let frame: Value = serde_json::from_str(frame.as_str()).unwrap();
                if frame["event"] == "tick" {
                    seen.serials.push(frame["serial"].as_u64().unwrap());
                }
            }
        }
    }
    let _ = socket.close(None).await;
    seen
}

async fn open(addr: &str) -> Socket {
    let url = format!("ws://{addr}/app/{KEY}?protocol=7&client=rust&version=1");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
    until_event(&mut socket, "pusher:connection_established").await;
    socket
}

/// Reads frames until `event`; panics on anything else ending the connection first.
async fn until_event(socket: &mut Socket, event: &str) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {event} within 30 s"))
            .expect("connection ended")
            .expect("websocket error");
        if let Message::Text(frame) = message {
            let frame: Value = serde_json::from_str(frame.as_str()).unwrap();
            if frame["event"] == event {
                return frame;
            }
        }
    }
}

fn position(frame: &Value) -> (String, u64) {
    (frame["position"]["epoch"].as_str().unwrap().to_owned(), frame["position"]["serial"].as_u64().unwrap())
}

fn text(frame: Value) -> Message {
    Message::text(frame.to_string())
}
