//! Several `herald serve` processes sharing one Redis (`--engine redis`): one app, one order of
//! serials per channel, one presence roster, counts and control messages across nodes, and what
//! happens when a node or Redis itself dies.
//!
//! Every test starts its own private `redis-server` (see `redis_server.rs`) and uses a fresh
//! `--redis-prefix`, so tests never meet and need no serialising.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::redis_server::RedisServer;
use crate::support::{APP_ID, Closed, TestClient, TestServer, data_of, default_config};

/// `--node-lease-secs` for tests that kill a node.
const LEASE_SECS: u64 = 2;
/// How long a node may take to become ready, or to recover after Redis came back.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long cluster-wide counts may take to agree (they are flushed every ~100 ms).
const COUNTS_WITHIN: Duration = Duration::from_secs(10);

/// A prefix no other test (or earlier run) uses.
fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("herald-e2e-{tag}-{}-{nanos:x}", std::process::id())
}

/// One node on `redis` with `prefix`; returns once its `/up` answers 200.
async fn node(redis: &RedisServer, prefix: &str, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec!["--engine", "redis", "--redis-url", &url, "--redis-prefix", prefix];
    args.extend_from_slice(extra);
    let node = TestServer::with_args(&default_config(), &args).await;
    wait_up(&node).await;
    node
}

async fn cluster(redis: &RedisServer, prefix: &str, size: usize, extra: &[&str]) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..size {
        nodes.push(node(redis, prefix, extra).await);
    }
    nodes
}

async fn wait_up(node: &TestServer) {
    eventually(&format!("GET /up on {} answers 200", node.addr), READY_WITHIN, async || {
        let (status, body) = node.http("GET", "/up", "").await;
        if status == 200 { Ok(()) } else { Err(format!("{status} {body}")) }
    })
    .await;
}

/// Runs `check` every 50 ms until it succeeds; panics with its last complaint after `within`.
pub(crate) async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => panic!("{what}: still not so after {within:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The next frame, waiting up to `within` (which may exceed `TestClient::recv`'s own 5 s).
async fn recv_within(client: &mut TestClient, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no frame within {within:?}");
        // Shorter than recv's own timeout, so recv never panics on it; dropping the read is safe.
        if let Ok(frame) = tokio::time::timeout(left.min(Duration::from_secs(4)), client.recv()).await {
            return frame;
        }
    }
}

/// Proves nothing arrives for `quiet` (at most 4 s).
async fn expect_silence(client: &mut TestClient, quiet: Duration) {
    assert!(quiet < Duration::from_secs(5));
    if let Ok(frame) = tokio::time::timeout(quiet, client.recv()).await {
        panic!("expected nothing for {quiet:?}, got {frame}");
    }
}

/// A signed GET answering 200 with JSON.
async fn get_json(node: &TestServer, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let (status, body) = node.api("GET", path, params, "").await;
    if status != 200 {
        return Err(format!("GET {path} {params:?} on {} answered {status}: {body}", node.addr));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

fn position(frame: &Value) -> (String, u64) {
    let epoch = frame["position"]["epoch"].as_str().unwrap_or_else(|| panic!("no position in {frame}"));
    (epoch.to_owned(), frame["position"]["serial"].as_u64().unwrap())
}

fn presence_ids(frame: &Value) -> Vec<String> {
    let data = data_of(frame);
    let mut ids: Vec<String> =
        data["presence"]["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(data["presence"]["count"], ids.len(), "count and ids disagree in {frame}");
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    ids.sort();
    ids
}

/// `/channels/{channel}/users` on `node`, sorted.
async fn users_on(node: &TestServer, channel: &str) -> Result<Vec<String>, String> {
    let body = get_json(node, &format!("/apps/{APP_ID}/channels/{channel}/users"), &[]).await?;
    let mut ids: Vec<String> = body["users"]
        .as_array()
        .ok_or_else(|| format!("no users in {body}"))?
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Waits until `node` reports exactly `ids` as the members of `channel`. A join reaches the shared
/// roster shortly after its `subscription_succeeded`; a later joiner's roster is only certain to
/// include a member once the roster has it.
async fn wait_members(node: &TestServer, channel: &str, ids: &[&str]) {
    let want = sorted(ids);
    eventually(&format!("members of {channel} on {} are {want:?}", node.addr), COUNTS_WITHIN, async || {
        let users = users_on(node, channel).await?;
        if users == want { Ok(()) } else { Err(format!("{users:?}")) }
    })
    .await;
}

/// Publishes over HTTP to `node`; returns the serial the channel gave the event.
async fn publish_on(node: &TestServer, channel: &str, event: &str, data: &str) -> u64 {
    let (status, body) = node.publish(json!({"name": event, "channel": channel, "data": data})).await;
    assert_eq!(status, 200, "publish to {channel} on {}: {body}", node.addr);
    let answer: Value = serde_json::from_str(&body).unwrap();
    answer["serials"][channel].as_u64().unwrap_or_else(|| panic!("no serial for {channel} in {body}"))
}

/// A signed publish that may take up to `within` (the harness's own HTTP helper gives up after
/// 5 s); `None` if no answer came in time.
async fn publish_within(node: &TestServer, body: &Value, within: Duration) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = format!("/apps/{APP_ID}/events");
    let body = body.to_string();
    let query = crate::support::signed_query(
        "POST",
        &path,
        &[],
        &body,
        crate::support::KEY,
        crate::support::SECRET,
        crate::support::unix_now(),
    );
    let request = format!(
        "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        node.addr,
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    };
    tokio::time::timeout(within, exchange).await.ok()
}

/// Whether process `pid` is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

#[tokio::test]
async fn round_robin_publishes_reach_every_subscriber_on_every_node_in_serial_order() {
    const EVENTS: u64 = 1000;
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("fanout"), 3, &[]).await;
    let mut epochs = BTreeSet::new();
    let mut readers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for s in 0..3 {
            let mut client = node.client().await;
            let joined = client.subscribe("fan").await;
            assert_eq!(joined["event"], "pusher_internal:subscription_succeeded", "node {n}: {joined}");
            let (epoch, serial) = position(&joined);
            assert_eq!(serial, 0, "node {n}: a channel without events is at serial 0: {joined}");
            epochs.insert(epoch);
            readers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < EVENTS as usize {
                    let frame = client.recv().await;
                    assert_eq!(frame["event"], "e", "node {n} subscriber {s}: unexpected frame after {seen:?}");
                    seen.push((frame["serial"].as_u64().unwrap(), frame["data"].as_str().unwrap().to_owned()));
                }
                (client, seen)
            }));
        }
    }
    assert_eq!(epochs.len(), 1, "every node must report the channel's one epoch: {epochs:?}");

    for i in 0..EVENTS {
        let node = &nodes[(i % 3) as usize];
        let serial = publish_on(node, "fan", "e", &i.to_string()).await;
        assert_eq!(serial, i + 1, "publish {i} went to node {}", i % 3);
    }

    let expected: Vec<(u64, String)> = (1..=EVENTS).map(|serial| (serial, (serial - 1).to_string())).collect();
    for (index, reader) in readers.into_iter().enumerate() {
        let (mut client, seen) =
            tokio::time::timeout(Duration::from_secs(60), reader).await.expect("reader timed out").unwrap();
        if seen != expected {
            let first_wrong = seen.iter().zip(&expected).position(|(a, b)| a != b);
            panic!("subscriber {index} (node {}): first difference at index {first_wrong:?}", index / 3);
        }
        client.expect_nothing_pending().await;
    }
}

#[tokio::test]
async fn presence_is_one_roster_and_a_dead_node_loses_its_members_once() {
    let redis = RedisServer::start().await;
    let lease = LEASE_SECS.to_string();
    let mut nodes = cluster(&redis, &unique_prefix("presence"), 3, &["--node-lease-secs", &lease]).await;
    let room = "presence-room";
    let ann = r#"{"user_id":"ann","user_info":{"name":"Ann"}}"#;

    // An observer on node C watches; Ann joins on A, then again on B.
    let mut obs = nodes[2].client().await;
    assert_eq!(obs.subscribe("lobby").await["event"], "pusher_internal:subscription_succeeded");
    let joined = obs.subscribe_signed(room, Some(r#"{"user_id":"obs"}"#)).await;
    assert_eq!(presence_ids(&joined), sorted(&["obs"]));
    wait_members(&nodes[0], room, &["obs"]).await;
    let mut ann_a = nodes[0].client().await;
    let joined = ann_a.subscribe_signed(room, Some(ann)).await;
    assert_eq!(presence_ids(&joined), sorted(&["ann", "obs"]), "Ann on A sees the observer on C");
    let added = recv_within(&mut obs, Duration::from_secs(5)).await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(data_of(&added), json!({"user_id": "ann", "user_info": {"name": "Ann"}}));

    let mut ann_b = nodes[1].client().await;
    let joined = ann_b.subscribe_signed(room, Some(ann)).await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded", "{joined}");
    assert_eq!(presence_ids(&joined), sorted(&["ann", "obs"]), "Ann's second socket is not a second member");
    // Bob joins on B only, after Ann's second join there: the observer's next frame is Bob's
    // member_added, not a second one for Ann.
    let mut bob = nodes[1].client().await;
    let joined = bob.subscribe_signed(room, Some(r#"{"user_id":"bob"}"#)).await;
    assert_eq!(presence_ids(&joined), sorted(&["ann", "bob", "obs"]));
    // Bob and the observer are also on a public channel, to watch counts after the crash.
    assert_eq!(bob.subscribe("lobby").await["event"], "pusher_internal:subscription_succeeded");
    for client in [&mut obs, &mut ann_a, &mut ann_b] {
        let added = client.expect_event("pusher_internal:member_added").await;
        assert_eq!(data_of(&added), json!({"user_id": "bob"}), "a second member_added for Ann?");
    }

    // A late observer on C counts each user once.
    let mut late = nodes[2].client().await;
    let joined = late.subscribe_signed(room, Some(r#"{"user_id":"late"}"#)).await;
    assert_eq!(presence_ids(&joined), sorted(&["ann", "bob", "late", "obs"]));
    for client in [&mut obs, &mut ann_a, &mut ann_b, &mut bob] {
        let added = client.expect_event("pusher_internal:member_added").await;
        assert_eq!(data_of(&added), json!({"user_id": "late"}));
    }
    for (n, node) in nodes.iter().enumerate() {
        eventually(&format!("lobby count on node {n}"), COUNTS_WITHIN, async || {
            let info =
                get_json(node, &format!("/apps/{APP_ID}/channels/lobby"), &[("info", "subscription_count")]).await?;
            if info["subscription_count"] == 2 { Ok(()) } else { Err(info.to_string()) }
        })
        .await;
        eventually(&format!("users of {room} on node {n}"), COUNTS_WITHIN, async || {
            let users = users_on(node, room).await?;
            let count = get_json(node, &format!("/apps/{APP_ID}/channels/{room}"), &[("info", "user_count")]).await?;
            let want = sorted(&["ann", "bob", "late", "obs"]);
            if users == want && count["user_count"] == 4 { Ok(()) } else { Err(format!("{users:?} {count}")) }
        })
        .await;
    }
    for client in [&mut obs, &mut ann_a, &mut ann_b, &mut bob, &mut late] {
        client.expect_nothing_pending().await;
    }

    // Node B dies without leaving: Bob (only there) is removed once, within the lease; Ann (also
    // on A) stays.
    let crashed_at = Instant::now();
    nodes.remove(1).crash().await;
    drop((ann_b, bob));
    let within = Duration::from_secs(LEASE_SECS + 8);
    for client in [&mut obs, &mut ann_a, &mut late] {
        let left = within.saturating_sub(crashed_at.elapsed()).max(Duration::from_secs(1));
        let removed = recv_within(client, left).await;
        assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
        assert_eq!(data_of(&removed), json!({"user_id": "bob"}));
    }
    println!("member_removed for the dead node's member after {:?}", crashed_at.elapsed());
    for node in &nodes {
        wait_members(node, room, &["ann", "late", "obs"]).await;
        eventually(
            &format!("the dead node's subscription off the count on {}", node.addr),
            COUNTS_WITHIN,
            async || {
                let info = get_json(node, &format!("/apps/{APP_ID}/channels/lobby"), &[("info", "subscription_count")])
                    .await?;
                if info["subscription_count"] == 1 { Ok(()) } else { Err(info.to_string()) }
            },
        )
        .await;
    }
    // No second member_removed (for Bob, or wrongly for Ann) over another lease and more.
    expect_silence(&mut obs, Duration::from_secs(LEASE_SECS + 1)).await;
    let serial = publish_on(&nodes[0], room, "probe", "p").await;
    for client in [&mut obs, &mut ann_a, &mut late] {
        let probe = client.recv().await;
        assert_eq!((probe["event"].as_str(), probe["serial"].as_u64()), (Some("probe"), Some(serial)), "{probe}");
        client.expect_nothing_pending().await;
    }
}

#[tokio::test]
async fn a_node_that_stops_gracefully_withdraws_its_members_at_once() {
    let redis = RedisServer::start().await;
    // A lease far longer than the wait below: only a clean leave can explain a quick removal.
    let mut nodes = cluster(&redis, &unique_prefix("leave"), 2, &["--node-lease-secs", "60"]).await;
    let mut obs = nodes[0].client().await;
    obs.subscribe_signed("presence-leave", Some(r#"{"user_id":"obs"}"#)).await;
    let mut gone = nodes[1].client().await;
    gone.subscribe_signed("presence-leave", Some(r#"{"user_id":"gone"}"#)).await;
    assert_eq!(data_of(&obs.expect_event("pusher_internal:member_added").await), json!({"user_id": "gone"}));
    nodes.remove(1).stop().await;
    let removed = obs.recv().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(data_of(&removed), json!({"user_id": "gone"}));
    wait_members(&nodes[0], "presence-leave", &["obs"]).await;
    obs.expect_nothing_pending().await;
}

/// What every node must eventually answer about the app's channels.
struct Expected<'a> {
    /// Occupied channels and their subscription counts (presence: user counts).
    channels: &'a [(&'a str, u64)],
    /// Channels that must read as unoccupied.
    vacant: &'a [&'a str],
}

async fn counts_agree(nodes: &[&TestServer], expected: &Expected<'_>) {
    let names: BTreeSet<String> = expected.channels.iter().map(|(c, _)| (*c).to_owned()).collect();
    for node in nodes {
        eventually(&format!("channel counts on {}", node.addr), COUNTS_WITHIN, async || {
            let path = format!("/apps/{APP_ID}/channels");
            let listed = get_json(node, &path, &[]).await?;
            let listed: BTreeSet<String> = listed["channels"].as_object().unwrap().keys().cloned().collect();
            if listed != names {
                return Err(format!("listed {listed:?}, want {names:?}"));
            }
            let with_info = get_json(node, &path, &[("info", "subscription_count")]).await?;
            let with_info: BTreeSet<String> = with_info["channels"].as_object().unwrap().keys().cloned().collect();
            if with_info != names {
                return Err(format!("listed with info=subscription_count {with_info:?}, want {names:?}"));
            }
            let presence = get_json(node, &path, &[("filter_by_prefix", "presence-"), ("info", "user_count")]).await?;
            let want_presence: BTreeMap<String, Value> = expected
                .channels
                .iter()
                .filter(|(c, _)| c.starts_with("presence-"))
                .map(|(c, n)| ((*c).to_owned(), json!({"user_count": n})))
                .collect();
            let got_presence: BTreeMap<String, Value> =
                presence["channels"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if got_presence != want_presence {
                return Err(format!("presence list {got_presence:?}, want {want_presence:?}"));
            }
            for (channel, count) in expected.channels {
                let attribute = if channel.starts_with("presence-") { "user_count" } else { "subscription_count" };
                let path = format!("/apps/{APP_ID}/channels/{channel}");
                let info = get_json(node, &path, &[("info", attribute)]).await?;
                let mut want = serde_json::Map::new();
                want.insert("occupied".into(), true.into());
                want.insert(attribute.into(), (*count).into());
                if info != Value::Object(want) {
                    return Err(format!("{channel}: {info}, want {attribute} {count}"));
                }
            }
            for channel in expected.vacant {
                let path = format!("/apps/{APP_ID}/channels/{channel}");
                let info = get_json(node, &path, &[]).await?;
                if info != json!({"occupied": false}) {
                    return Err(format!("{channel}: {info}, want unoccupied"));
                }
            }
            Ok(())
        })
        .await;
    }
}

#[tokio::test]
async fn channel_lists_and_counts_are_cluster_wide_on_every_node() {
    let redis = RedisServer::start().await;
    let mut nodes = cluster(&redis, &unique_prefix("counts"), 3, &[]).await;
    let u1 = r#"{"user_id":"u1"}"#;
    let u2 = r#"{"user_id":"u2"}"#;
    let ok = |frame: Value| assert_eq!(frame["event"], "pusher_internal:subscription_succeeded", "{frame}");

    let mut a1 = nodes[0].client().await;
    ok(a1.subscribe("count-a").await);
    ok(a1.subscribe_signed("private-count", None).await);
    ok(a1.subscribe_signed("presence-count", Some(u1)).await);
    let mut b1 = nodes[1].client().await;
    ok(b1.subscribe("count-a").await);
    ok(b1.subscribe_signed("private-count", None).await);
    ok(b1.subscribe_signed("presence-count", Some(u1)).await);
    wait_members(&nodes[2], "presence-count", &["u1"]).await;
    let mut b2 = nodes[1].client().await;
    ok(b2.subscribe("count-a").await);
    let mut c1 = nodes[2].client().await;
    ok(c1.subscribe("count-b").await);
    ok(c1.subscribe_signed("private-count", None).await);
    let joined = c1.subscribe_signed("presence-count", Some(u2)).await;
    assert_eq!(presence_ids(&joined), sorted(&["u1", "u2"]), "{joined}");
    let mut c2 = nodes[2].client().await;
    ok(c2.subscribe("count-b").await);

    for client in [&mut a1, &mut b1] {
        let added = client.expect_event("pusher_internal:member_added").await;
        assert_eq!(data_of(&added), json!({"user_id": "u2"}));
    }

    let all: Vec<&TestServer> = nodes.iter().collect();
    counts_agree(
        &all,
        &Expected {
            channels: &[("count-a", 3), ("count-b", 2), ("presence-count", 2), ("private-count", 3)],
            vacant: &["never-used"],
        },
    )
    .await;

    // Leaves on several nodes: counts follow, and an emptied channel disappears everywhere.
    let unsubscribe = |channel: &str| json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
    b1.send(unsubscribe("count-a")).await;
    b2.close().await;
    c1.send(unsubscribe("count-b")).await;
    c2.send(unsubscribe("count-b")).await;
    c1.send(unsubscribe("private-count")).await;
    c1.send(unsubscribe("presence-count")).await;
    for client in [&mut c1, &mut c2] {
        client.expect_nothing_pending().await;
    }
    // u2 left; u1 (on A and B) sees it once on each socket.
    for client in [&mut a1, &mut b1] {
        let removed = client.expect_event("pusher_internal:member_removed").await;
        assert_eq!(data_of(&removed), json!({"user_id": "u2"}));
        client.expect_nothing_pending().await;
    }
    counts_agree(
        &all,
        &Expected { channels: &[("count-a", 1), ("presence-count", 1), ("private-count", 2)], vacant: &["count-b"] },
    )
    .await;

    // Node B stops: its subscriptions are withdrawn from the counts of the others.
    let b = nodes.remove(1);
    drop(b1);
    b.stop().await;
    let rest: Vec<&TestServer> = nodes.iter().collect();
    counts_agree(
        &rest,
        &Expected { channels: &[("count-a", 1), ("presence-count", 1), ("private-count", 1)], vacant: &["count-b"] },
    )
    .await;
    a1.expect_nothing_pending().await;
}

#[tokio::test]
async fn nodes_survive_a_redis_restart_and_tell_clients_to_refetch() {
    let mut redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("restart"), 3, &[]).await;
    let pids: Vec<u32> = nodes.iter().map(TestServer::pid).collect();

    // Per node: two clients on "live", one of them also on "private-live".
    let mut clients: Vec<(usize, TestClient, Vec<&str>)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..2 {
            let mut client = node.client().await;
            assert_eq!(client.subscribe("live").await["event"], "pusher_internal:subscription_succeeded");
            let mut channels = vec!["live"];
            if k == 0 {
                let joined = client.subscribe_signed("private-live", None).await;
                assert_eq!(joined["event"], "pusher_internal:subscription_succeeded", "{joined}");
                channels.push("private-live");
            }
            clients.push((n, client, channels));
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(publish_on(node, "live", "e", &i.to_string()).await, i as u64 + 1);
    }
    assert_eq!(publish_on(&nodes[1], "private-live", "e", "p").await, 1);
    let mut old_epochs = BTreeMap::new();
    for (n, client, channels) in &mut clients {
        // Three on "live", one on "private-live" if subscribed.
        for _ in 0..(3 + channels.len() - 1) {
            let frame = client.expect_event("e").await;
            assert!(frame["serial"].as_u64().is_some(), "node {n}: event without serial: {frame}");
        }
    }
    // The epochs before the restart, from a fresh subscriber per channel.
    let mut probe = nodes[0].client().await;
    for channel in ["live", "private-live"] {
        let joined = if channel.starts_with("private-") {
            probe.subscribe_signed(channel, None).await
        } else {
            probe.subscribe(channel).await
        };
        let (epoch, serial) = position(&joined);
        assert_eq!(serial, if channel == "live" { 3 } else { 1 });
        old_epochs.insert(channel, epoch);
    }
    drop(probe);

    let (redis_pid, redis_port) = (redis.pid(), redis.port());
    redis.restart().await;
    assert_ne!(redis.pid(), redis_pid, "a new redis-server, with none of the old data");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{redis_port}"), "on the same port");

    // Every client is told, per channel, that history was lost, with the new position.
    let mut new_positions: BTreeMap<&str, BTreeSet<(String, u64)>> = BTreeMap::new();
    for (n, client, channels) in &mut clients {
        let mut told: BTreeMap<String, Value> = BTreeMap::new();
        while told.len() < channels.len() {
            let frame = recv_within(client, READY_WITHIN).await;
            assert_eq!(frame["event"], "pusher_internal:subscription_succeeded", "node {n}: {frame}");
            assert_eq!(frame["recovered"], false, "node {n}: history was lost: {frame}");
            let channel = frame["channel"].as_str().unwrap().to_owned();
            assert!(told.insert(channel.clone(), frame).is_none(), "node {n}: told twice about {channel}");
        }
        for channel in channels.iter() {
            let (epoch, serial) = position(&told[*channel]);
            assert_ne!(epoch, old_epochs[channel], "node {n}: {channel} kept its epoch though Redis lost it");
            new_positions.entry(channel).or_default().insert((epoch, serial));
        }
    }
    for (channel, positions) in &new_positions {
        assert_eq!(positions.len(), 1, "{channel}: nodes disagree on the new position: {positions:?}");
    }
    for (n, node) in nodes.iter().enumerate() {
        wait_up(node).await;
        assert!(alive(pids[n]), "herald node {n} (pid {}) exited", pids[n]);
    }

    // A publish afterwards reaches every client, with the serial after the new position.
    for (channel, via) in [("live", 2), ("private-live", 0)] {
        let (_, serial) = new_positions[channel].iter().next().unwrap().clone();
        assert_eq!(publish_on(&nodes[via], channel, "after", "x").await, serial + 1, "{channel}");
        for (n, client, channels) in &mut clients {
            if channels.contains(&channel) {
                let frame = client.expect_event("after").await;
                assert_eq!(
                    (frame["channel"].as_str(), frame["serial"].as_u64()),
                    (Some(channel), Some(serial + 1)),
                    "node {n}"
                );
            }
        }
    }
    for (_, client, _) in &mut clients {
        client.expect_nothing_pending().await;
    }
    // And a client resuming on another node from the new position recovers.
    let (epoch, serial) = new_positions["live"].iter().next().unwrap().clone();
    let mut resumer = nodes[1].client().await;
    resumer
        .send(json!({"event": "pusher:subscribe", "data": {"channel": "live", "resume": {"epoch": epoch, "serial": serial}}}))
        .await;
    let resumed = resumer.expect_event("pusher_internal:subscription_succeeded").await;
    assert_eq!((resumed["recovered"].clone(), position(&resumed)), (json!(true), (epoch, serial + 1)));
    assert_eq!(resumer.expect_event("after").await["serial"], serial + 1);
    for (n, pid) in pids.iter().enumerate() {
        assert!(alive(*pid), "herald node {n} (pid {pid}) exited");
    }
}

#[tokio::test]
async fn deployments_with_different_prefixes_on_one_redis_never_meet() {
    let redis = RedisServer::start().await;
    let prefix_a = unique_prefix("a");
    let prefix_b = unique_prefix("b");
    // Deployment A by flags, deployment B by the [server] keys of the config file; two nodes each,
    // so that delivery inside a deployment has to go through Redis.
    let a = cluster(&redis, &prefix_a, 2, &[]).await;
    let config_b = format!(
        "[server]\nengine = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix_b}\"\n\n{}",
        redis.url(),
        default_config()
    );
    let mut b = Vec::new();
    for _ in 0..2 {
        let node = TestServer::with_config(&config_b).await;
        wait_up(&node).await;
        b.push(node);
    }
    let mut subscribers = Vec::new();
    for (deployment, nodes) in [("a", &a), ("b", &b)] {
        for node in nodes.iter() {
            let mut client = node.client().await;
            let joined = client.subscribe("shared").await;
            assert_eq!(position(&joined).1, 0, "{deployment}: {joined}");
            subscribers.push((deployment, client));
        }
    }

    assert_eq!(publish_on(&a[0], "shared", "e", "from a").await, 1);
    assert_eq!(publish_on(&b[1], "shared", "e", "from b").await, 1, "deployment b has its own serials");
    assert_eq!(publish_on(&a[1], "shared", "e", "from a again").await, 2);
    for (deployment, client) in &mut subscribers {
        let want: &[(u64, &str)] =
            if *deployment == "a" { &[(1, "from a"), (2, "from a again")] } else { &[(1, "from b")] };
        for (serial, data) in want {
            let frame = client.expect_event("e").await;
            assert_eq!(
                (frame["serial"].as_u64(), frame["data"].as_str()),
                (Some(*serial), Some(*data)),
                "{deployment}"
            );
        }
        client.expect_nothing_pending().await;
    }

    // A channel occupied only in deployment A is listed there and nowhere in B.
    let mut only_a = a[0].client().await;
    only_a.subscribe("only-a").await;
    eventually("only-a listed on A's other node", COUNTS_WITHIN, async || {
        let listed = get_json(&a[1], &format!("/apps/{APP_ID}/channels"), &[]).await?;
        if listed["channels"].get("only-a").is_some() { Ok(()) } else { Err(listed.to_string()) }
    })
    .await;
    // only-a is in Redis by now (A's other node lists it): B must never list it.
    for node in &b {
        eventually("deployment b lists only its own channels", COUNTS_WITHIN, async || {
            let listed = get_json(node, &format!("/apps/{APP_ID}/channels"), &[]).await?;
            if listed == json!({"channels": {"shared": {}}}) { Ok(()) } else { Err(listed.to_string()) }
        })
        .await;
    }
}

#[tokio::test]
async fn client_events_cross_nodes_and_skip_the_sender() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("client-events"), 3, &[]).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        let joined = client.subscribe_signed("private-chat", None).await;
        assert_eq!(joined["event"], "pusher_internal:subscription_succeeded", "{joined}");
        clients.push(client);
    }
    clients[0].send(json!({"event": "client-msg", "channel": "private-chat", "data": {"t": "hi"}})).await;
    for client in &mut clients[1..] {
        let frame = client.expect_event("client-msg").await;
        assert_eq!(frame, json!({"event": "client-msg", "channel": "private-chat", "data": {"t": "hi"}, "serial": 1}));
    }
    // The sender's next frame is the probe, not its own event echoed back.
    assert_eq!(publish_on(&nodes[1], "private-chat", "probe", "p").await, 2);
    for client in &mut clients {
        assert_eq!(client.expect_event("probe").await["serial"], 2);
        client.expect_nothing_pending().await;
    }

    // On presence channels the relayed event names its sender.
    let mut pa = nodes[0].client().await;
    let mut pb = nodes[2].client().await;
    let joined = pa.subscribe_signed("presence-chat", Some(r#"{"user_id":"pa"}"#)).await;
    assert_eq!(presence_ids(&joined), sorted(&["pa"]));
    wait_members(&nodes[2], "presence-chat", &["pa"]).await;
    let joined = pb.subscribe_signed("presence-chat", Some(r#"{"user_id":"pb"}"#)).await;
    assert_eq!(presence_ids(&joined), sorted(&["pa", "pb"]), "{joined}");
    assert_eq!(data_of(&pa.expect_event("pusher_internal:member_added").await), json!({"user_id": "pb"}));
    pa.send(json!({"event": "client-typing", "channel": "presence-chat", "data": {"on": true}})).await;
    let frame = pb.expect_event("client-typing").await;
    assert_eq!(
        frame,
        json!({"event": "client-typing", "channel": "presence-chat", "data": {"on": true}, "user_id": "pa", "serial": 1})
    );
    pa.expect_nothing_pending().await;
    pb.expect_nothing_pending().await;
}

#[tokio::test]
async fn server_to_user_events_and_terminate_reach_every_node() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("users"), 3, &[]).await;
    let mut tabs = Vec::new();
    for node in &nodes[..2] {
        let mut tab = node.client().await;
        tab.signin(r#"{"id":"u1"}"#).await;
        tab.expect_event("pusher:signin_success").await;
        tabs.push(tab);
    }
    let mut other = nodes[2].client().await;
    other.signin(r#"{"id":"u2"}"#).await;
    other.expect_event("pusher:signin_success").await;

    assert_eq!(publish_on(&nodes[2], "#server-to-user-u1", "note", "hi").await, 1);
    for (n, tab) in tabs.iter_mut().enumerate() {
        let note = tab.expect_event("note").await;
        assert_eq!(
            (note["channel"].as_str(), note["data"].as_str(), note["serial"].as_u64()),
            (Some("#server-to-user-u1"), Some("hi"), Some(1)),
            "u1's socket on node {n}"
        );
    }
    assert_eq!(publish_on(&nodes[0], "#server-to-user-u2", "note", "yo").await, 1);
    assert_eq!(other.expect_event("note").await["channel"], "#server-to-user-u2");
    for tab in &mut tabs {
        tab.expect_nothing_pending().await;
    }
    other.expect_nothing_pending().await;

    let path = format!("/apps/{APP_ID}/users/u1/terminate_connections");
    let (status, body) = nodes[2].api("POST", &path, &[], "{}").await;
    assert_eq!((status, body.trim()), (200, "{}"));
    for (n, tab) in tabs.iter_mut().enumerate() {
        assert_eq!(tab.expect_close().await, Closed::Code(4009), "u1's socket on node {n}");
    }
    other.expect_nothing_pending().await;
}

#[tokio::test]
async fn a_client_resumes_on_another_node_without_a_gap() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("resume"), 2, &[]).await;
    let mut first = nodes[0].client().await;
    let (epoch, _) = position(&first.subscribe("story").await);
    assert_eq!(publish_on(&nodes[1], "story", "e", "1").await, 1);
    assert_eq!(first.expect_event("e").await["serial"], 1);
    first.close().await;
    for i in 2..=4 {
        assert_eq!(publish_on(&nodes[i % 2], "story", "e", &i.to_string()).await, i as u64);
    }
    let mut again = nodes[1].client().await;
    again
        .send(
            json!({"event": "pusher:subscribe", "data": {"channel": "story", "resume": {"epoch": epoch, "serial": 1}}}),
        )
        .await;
    let resumed = again.expect_event("pusher_internal:subscription_succeeded").await;
    assert_eq!((resumed["recovered"].clone(), position(&resumed)), (json!(true), (epoch, 4)));
    for serial in 2..=4u64 {
        let frame = again.expect_event("e").await;
        assert_eq!(
            (frame["serial"].as_u64(), frame["data"].as_str()),
            (Some(serial), Some(serial.to_string().as_str()))
        );
    }
    again.expect_nothing_pending().await;
}

#[tokio::test]
async fn racing_publishers_on_different_nodes_give_one_order_everywhere() {
    const PER_NODE: u64 = 200;
    const TOTAL: u64 = 3 * PER_NODE;
    let redis = RedisServer::start().await;
    let nodes: Vec<std::sync::Arc<TestServer>> =
        cluster(&redis, &unique_prefix("race"), 3, &[]).await.into_iter().map(std::sync::Arc::new).collect();
    let mut readers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..2 {
            let mut client = node.client().await;
            assert_eq!(position(&client.subscribe("race").await).1, 0);
            readers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < TOTAL as usize {
                    let frame = client.recv().await;
                    assert_eq!(frame["event"], "e", "node {n}: {frame}");
                    seen.push((frame["serial"].as_u64().unwrap(), frame["data"].as_str().unwrap().to_owned()));
                }
                client.expect_nothing_pending().await;
                seen
            }));
        }
    }
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let node = node.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for i in 0..PER_NODE {
                    let data = format!("n{n}-{i}");
                    answered.push((publish_on(&node, "race", "e", &data).await, data));
                }
                answered
            })
        })
        .collect();
    // The serial each publish was answered with is the serial its event carries everywhere.
    let mut by_serial = BTreeMap::new();
    for publisher in publishers {
        let answered = publisher.await.unwrap();
        assert!(answered.windows(2).all(|w| w[0].0 < w[1].0), "one publisher's serials must increase: {answered:?}");
        for (serial, data) in answered {
            assert!(by_serial.insert(serial, data).is_none(), "serial {serial} given twice");
        }
    }
    let expected: Vec<(u64, String)> = by_serial.into_iter().collect();
    assert_eq!(expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=TOTAL).collect::<Vec<_>>());
    for (index, reader) in readers.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("reader timed out").unwrap();
        assert!(
            seen == expected,
            "subscriber {index} (node {}) saw another order than the publishers were told",
            index / 2
        );
    }
}

#[tokio::test]
async fn while_redis_is_down_nodes_answer_503_and_recover_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("outage"), 2, &[]).await;
    let pids: Vec<u32> = nodes.iter().map(TestServer::pid).collect();
    let mut clients = Vec::new();
    let mut old_epoch = String::new();
    for node in &nodes {
        let mut client = node.client().await;
        old_epoch = position(&client.subscribe("news").await).0;
        clients.push(client);
    }
    assert_eq!(publish_on(&nodes[0], "news", "e", "before").await, 1);
    for client in &mut clients {
        assert_eq!(client.expect_event("e").await["serial"], 1);
    }

    redis.kill().await;
    for node in &nodes {
        eventually(&format!("GET /up on {} answers 503 while Redis is down", node.addr), READY_WITHIN, async || {
            let (status, body) = node.http("GET", "/up", "").await;
            if status == 503 { Ok(()) } else { Err(format!("{status} {body}")) }
        })
        .await;
        // Refused at once, not held until Redis returns or the request deadline (30 s) passes.
        let started = Instant::now();
        let answer = publish_within(node, &json!({"name": "e", "channel": "news", "data": "lost"}), READY_WITHIN).await;
        let took = started.elapsed();
        let Some((status, body)) = answer else {
            panic!("publish while Redis is down: no answer within {READY_WITHIN:?}")
        };
        assert_eq!(status, 503, "a publish Redis cannot take is refused (after {took:?}): {body}");
        assert!(took < Duration::from_secs(2), "publish while Redis is down answered 503 only after {took:?}");
    }
    for (n, pid) in pids.iter().enumerate() {
        assert!(alive(*pid), "herald node {n} exited while Redis was down");
    }

    redis.revive().await;
    for node in &nodes {
        wait_up(node).await;
    }
    let mut new_positions = BTreeSet::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let frame = recv_within(client, READY_WITHIN).await;
        assert_eq!(frame["event"], "pusher_internal:subscription_succeeded", "node {n}: {frame}");
        assert_eq!(frame["recovered"], false, "node {n}: {frame}");
        let (epoch, serial) = position(&frame);
        assert_ne!(epoch, old_epoch, "node {n}: Redis lost the channel, so its epoch must change");
        new_positions.insert((epoch, serial));
    }
    assert_eq!(new_positions.len(), 1, "nodes disagree on the new position: {new_positions:?}");
    let (_, serial) = new_positions.pop_first().unwrap();
    assert_eq!(publish_on(&nodes[1], "news", "e", "after").await, serial + 1);
    for client in &mut clients {
        let frame = client.expect_event("e").await;
        assert_eq!((frame["serial"].as_u64(), frame["data"].as_str()), (Some(serial + 1), Some("after")));
        client.expect_nothing_pending().await;
    }
    for (n, pid) in pids.iter().enumerate() {
        assert!(alive(*pid), "herald node {n} exited");
    }
}

#[tokio::test]
async fn members_and_counts_are_rebuilt_after_redis_loses_them() {
    let mut redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("rebuild"), 2, &[]).await;
    let mut ua = nodes[0].client().await;
    ua.subscribe_signed("presence-r", Some(r#"{"user_id":"ua"}"#)).await;
    ua.subscribe("pub-r").await;
    wait_members(&nodes[1], "presence-r", &["ua"]).await;
    let mut ub = nodes[1].client().await;
    ub.subscribe_signed("presence-r", Some(r#"{"user_id":"ub"}"#)).await;
    ub.subscribe("pub-r").await;
    ua.expect_event("pusher_internal:member_added").await;
    let settled = async |nodes: &[TestServer]| {
        for node in nodes {
            wait_members(node, "presence-r", &["ua", "ub"]).await;
            eventually(&format!("pub-r count on {}", node.addr), COUNTS_WITHIN, async || {
                let path = format!("/apps/{APP_ID}/channels/pub-r");
                let info = get_json(node, &path, &[("info", "subscription_count")]).await?;
                if info["subscription_count"] == 2 { Ok(()) } else { Err(info.to_string()) }
            })
            .await;
        }
    };
    settled(&nodes).await;

    redis.restart().await;
    for node in &nodes {
        wait_up(node).await;
    }
    // Each node still has its sockets: the shared roster and counts must come back.
    settled(&nodes).await;
    for client in [&mut ua, &mut ub] {
        // Both channels were lost with Redis; what presence frames come with that is not checked here.
        let mut told = BTreeSet::new();
        while told.len() < 2 {
            let frame = recv_within(client, READY_WITHIN).await;
            if frame["event"] == "pusher_internal:subscription_succeeded" {
                assert_eq!(frame["recovered"], false, "{frame}");
                told.insert(frame["channel"].as_str().unwrap().to_owned());
            }
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_is_one_publish_whichever_node_gets_the_repeat() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("idem");
    let nodes = cluster(&redis, &prefix, 2, &[]).await;
    let mut watcher = nodes[1].client().await;
    watcher.subscribe("orders").await;
    let body = json!({"name": "paid", "channel": "orders", "data": "{}", "idempotency_key": "order-42"});
    let (status, first) = nodes[0].publish(body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, repeat) = nodes[1].publish(body).await;
    assert_eq!(status, 200, "{repeat}");
    let (first, repeat): (Value, Value) =
        (serde_json::from_str(&first).unwrap(), serde_json::from_str(&repeat).unwrap());
    assert_eq!(repeat["serials"], first["serials"], "the repeat answers with the first publish's serials");
    let other = json!({"name": "paid", "channel": "refunds", "data": "{}", "idempotency_key": "order-42"});
    assert_eq!(nodes[1].publish(other).await.0, 409, "the key names one publish");
    assert_eq!(watcher.expect_event("paid").await["serial"], 1);
    publish_on(&nodes[0], "orders", "probe", "{}").await;
    assert_eq!(watcher.expect_event("probe").await["serial"], 2, "the repeat was not delivered");
}

#[tokio::test]
async fn watchlists_see_users_online_on_any_node_and_offline_when_their_node_dies() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("watch");
    let a = node(&redis, &prefix, &[]).await;
    let b = node(&redis, &prefix, &["--node-lease-secs", "2"]).await;
    let mut watcher = a.client().await;
    watcher.signin(r#"{"id":"w","watchlist":["friend"]}"#).await;
    watcher.expect_event("pusher:signin_success").await;
    let initial = watcher.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&initial), json!({"events": [{"name": "offline", "user_ids": ["friend"]}]}));

    let mut friend = b.client().await;
    friend.signin(r#"{"id":"friend"}"#).await;
    friend.expect_event("pusher:signin_success").await;
    let online = watcher.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&online), json!({"events": [{"name": "online", "user_ids": ["friend"]}]}));

    // A watcher arriving later on node a is told at once that friend (on node b) is online.
    let mut late = a.client().await;
    late.signin(r#"{"id":"w2","watchlist":["friend"]}"#).await;
    late.expect_event("pusher:signin_success").await;
    let initial = late.expect_event("pusher_internal:watchlist_events").await;
    assert_eq!(data_of(&initial), json!({"events": [{"name": "online", "user_ids": ["friend"]}]}));

    // Node b dies with friend on it: offline within the lease.
    b.crash().await;
    let offline = recv_within(&mut watcher, Duration::from_secs(10)).await;
    assert_eq!(offline["event"], "pusher_internal:watchlist_events");
    assert_eq!(data_of(&offline), json!({"events": [{"name": "offline", "user_ids": ["friend"]}]}));
}

#[tokio::test]
async fn a_sockets_client_events_keep_their_order_across_nodes() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &unique_prefix("client-order"), 2, &[]).await;
    let mut sender = nodes[0].client().await;
    let mut receiver = nodes[1].client().await;
    for client in [&mut sender, &mut receiver] {
        let joined = client.subscribe_signed("private-ordered", None).await;
        assert_eq!(joined["event"], "pusher_internal:subscription_succeeded", "{joined}");
    }
    // Within the default budget of 10 client events per second.
    for i in 0..8 {
        sender.send(json!({"event": "client-step", "channel": "private-ordered", "data": {"i": i}})).await;
    }
    for i in 0..8u64 {
        let frame = receiver.expect_event("client-step").await;
        assert_eq!((frame["data"]["i"].as_u64(), frame["serial"].as_u64()), (Some(i), Some(i + 1)), "{frame}");
    }
}
