//! Admission control (docs/limits.md): connections per client address (HTTP 429), behind trusted
//! proxies the address they forward, the node's
//! new-connection rate (HTTP 503 with `Retry-After`), connections that never subscribe (4009), and
//! the refusal counters on `/metrics`. Every wait is for an answer, with a deadline; nothing sleeps
//! in place of an event.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::{self, http::Response};

use crate::cluster::eventually;
use crate::support::{Closed, KEY, TestServer, default_config};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one WebSocket handshake ended.
enum Handshake {
    Open(Box<Socket>),
    /// Refused before the upgrade: the HTTP status and `Retry-After` in seconds.
    Refused(u16, Option<u64>),
}

/// A raw handshake from 127.0.0.1 (no frame read).
async fn handshake(server: &TestServer) -> Handshake {
    let url = format!("ws://{}/app/{KEY}?protocol=7", server.addr);
    match tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((socket, _))) => Handshake::Open(Box::new(socket)),
        Ok(Err(tungstenite::Error::Http(response))) => refused(&response),
        Ok(Err(error)) => panic!("handshake failed: {error}"),
        Err(_) => panic!("handshake timed out"),
    }
}

fn refused(response: &Response<Option<Vec<u8>>>) -> Handshake {
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    Handshake::Refused(response.status().as_u16(), retry_after)
}

/// The value of one series on `/metrics`.
async fn metric(server: &TestServer, series: &str) -> u64 {
    let (status, page) = server.http("GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let line = page.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{page}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn config(server: &str) -> String {
    format!("[server]\n{server}\n{}", default_config())
}

const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn one_address_holds_at_most_its_limit_while_another_connects_and_the_count_never_drifts() {
    let server =
        TestServer::with_config(&config("max_connections_per_ip = 100\nmax_new_connections_per_sec = 0")).await;
    let mut held = Vec::new();
    let mut refusals = 0;
    let mut other = None;
    for attempt in 0..2000 {
        match handshake(&server).await {
            Handshake::Open(socket) => held.push(socket),
            Handshake::Refused(status, retry_after) => {
                assert_eq!(status, 429, "attempt {attempt}");
                assert!(retry_after.is_some_and(|s| (1..=5).contains(&s)), "Retry-After {retry_after:?}");
                refusals += 1;
            }
        }
        if attempt == 1000 {
            // Meanwhile a client from another address is served as usual.
            let mut client = server.client_from(OTHER_ADDRESS).await;
            let answer = client.subscribe("room").await;
            assert_eq!(answer["event"], "pusher_internal:subscription_succeeded");
            other = Some(client);
        }
    }
    assert_eq!((held.len(), refusals), (100, 1900));
    let mut other = other.unwrap();
    server.publish(json!({"name": "still-served", "channel": "room", "data": "1"})).await;
    other.expect_event("still-served").await;
    assert_eq!(metric(&server, "herald_connections_refused_total{reason=\"per_ip\"}").await, 1900);
    assert_eq!(metric(&server, "herald_connections_refused_total{reason=\"rate\"}").await, 0);

    // Closing gives every place back: the address gets exactly its 100 again, and no more.
    for mut socket in held.drain(..) {
        let _ = socket.close(None).await;
    }
    let mut again = Vec::new();
    eventually("the address has its 100 places back", Duration::from_secs(10), async || {
        while again.len() < 100 {
            match handshake(&server).await {
                Handshake::Open(socket) => again.push(socket),
                Handshake::Refused(status, _) => return Err(format!("{status} with {} open", again.len())),
            }
        }
        Ok(())
    })
    .await;
    assert!(matches!(handshake(&server).await, Handshake::Refused(429, _)), "the 101st is refused again");
    other.expect_nothing_pending().await;
}

/// A handshake from `source` carrying `X-Forwarded-For: forwarded` (none when empty).
async fn handshake_forwarded(server: &TestServer, source: IpAddr, forwarded: &str) -> Handshake {
    let headers: &[(&str, &str)] = if forwarded.is_empty() { &[] } else { &[("x-forwarded-for", forwarded)] };
    match server.handshake_from(source, headers).await {
        Ok(socket) => Handshake::Open(Box::new(socket)),
        Err(tungstenite::Error::Http(response)) => refused(&response),
        Err(error) => panic!("handshake failed: {error}"),
    }
}

/// Opens exactly `limit` connections from `source` forwarding `forwarded`, then sees the next refused.
async fn fill(server: &TestServer, source: IpAddr, forwarded: &str, limit: usize) -> Vec<Box<Socket>> {
    let mut held = Vec::new();
    for n in 0..limit {
        match handshake_forwarded(server, source, forwarded).await {
            Handshake::Open(socket) => held.push(socket),
            Handshake::Refused(status, _) => panic!("{source} forwarding {forwarded:?}: #{n} refused with {status}"),
        }
    }
    let next = handshake_forwarded(server, source, forwarded).await;
    assert!(matches!(next, Handshake::Refused(429, _)), "{source} forwarding {forwarded:?}: #{limit} not refused");
    held
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit_and_others_cannot_spoof_one() {
    const LIMIT: usize = 3;
    let settings =
        format!("max_connections_per_ip = {LIMIT}\nmax_new_connections_per_sec = 0\ntrusted_proxies = [\"127.0.0.1\"]");
    let server = TestServer::with_config(&config(&settings)).await;
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (client_a, client_b) = ("203.0.113.1", "198.51.100.2");

    // Through the proxy, client A holds its limit and no more, on every transport.
    let held_a = fill(&server, proxy, client_a, LIMIT).await;
    let sse = format!("/sse/{KEY}?channels=room");
    let (status, _, body) = server.request_with_head("GET", &sse, &[("X-Forwarded-For", client_a)]).await;
    assert_eq!(status, 429, "an SSE stream for A counts against A: {body}");
    // Client B, through the same proxy, is another address, even if it claims to be A on the left.
    let held_b = fill(&server, proxy, &format!("{client_a}, {client_b}"), LIMIT).await;
    // The proxy's own requests (no header) are counted under the proxy.
    let held_proxy = fill(&server, proxy, "", LIMIT).await;

    // From a peer that is not a trusted proxy the header is ignored: every spoofed address counts
    // under the peer, 127.0.0.2, which is refused past its limit whatever it claims.
    let mut held_other = Vec::new();
    for n in 0..LIMIT {
        match handshake_forwarded(&server, OTHER_ADDRESS, &format!("192.0.2.{n}")).await {
            Handshake::Open(socket) => held_other.push(socket),
            Handshake::Refused(status, _) => panic!("untrusted #{n} refused with {status}"),
        }
    }
    let spoofed = handshake_forwarded(&server, OTHER_ADDRESS, "192.0.2.200").await;
    assert!(matches!(spoofed, Handshake::Refused(429, _)), "a spoofed header gave 127.0.0.2 a new address");
    assert_eq!(metric(&server, "herald_connections_refused_total{reason=\"per_ip\"}").await, 5);

    // A's places come back under the same key they were taken for.
    for mut socket in held_a {
        let _ = socket.close(None).await;
    }
    let mut again = Vec::new();
    eventually("A has its places back", Duration::from_secs(10), async || {
        while again.len() < LIMIT {
            match handshake_forwarded(&server, proxy, client_a).await {
                Handshake::Open(socket) => again.push(socket),
                Handshake::Refused(status, _) => return Err(format!("{status} with {} open", again.len())),
            }
        }
        Ok(())
    })
    .await;
    assert!(matches!(handshake_forwarded(&server, proxy, client_a).await, Handshake::Refused(429, _)));
    drop((held_b, held_proxy, held_other));
}

#[tokio::test]
async fn sse_streams_count_against_the_same_address_limit() {
    let server = TestServer::with_config(&config("max_connections_per_ip = 1")).await;
    let mut held = server.client().await;
    let (status, body) = server.http("GET", &format!("/sse/{KEY}?channels=room"), "").await;
    assert_eq!(status, 429, "{body}");
    held.expect_nothing_pending().await;
    assert_eq!(metric(&server, "herald_connections_refused_total{reason=\"per_ip\"}").await, 1);
}

#[tokio::test]
async fn past_the_burst_handshakes_get_503_with_retry_after_until_the_bucket_refills() {
    let server =
        TestServer::with_config(&config("max_new_connections_per_sec = 1\nmax_new_connections_burst = 20")).await;
    let mut held = Vec::new();
    for n in 0..20 {
        match handshake(&server).await {
            Handshake::Open(socket) => held.push(socket),
            Handshake::Refused(status, _) => panic!("connection {n} of the burst refused with {status}"),
        }
    }
    // The 21st comes well within a second of the first: the bucket has not refilled a token.
    match handshake(&server).await {
        Handshake::Refused(status, retry_after) => {
            assert_eq!(status, 503);
            assert!(retry_after.is_some_and(|s| (1..=5).contains(&s)), "Retry-After {retry_after:?}");
        }
        Handshake::Open(_) => panic!("the 21st connection of the burst was accepted"),
    }
    eventually("the bucket refills", Duration::from_secs(5), async || match handshake(&server).await {
        Handshake::Open(socket) => {
            held.push(socket);
            Ok(())
        }
        Handshake::Refused(status, _) => Err(format!("still {status}")),
    })
    .await;
    assert!(metric(&server, "herald_connections_refused_total{reason=\"rate\"}").await >= 1);
    assert_eq!(held.len(), 21);
}

#[tokio::test]
async fn a_connection_that_never_subscribes_is_closed_with_4009_and_a_subscribed_one_stays() {
    let server = TestServer::with_config(&config("subscribe_within_secs = 1")).await;
    let mut subscribed = server.client().await;
    subscribed.subscribe("room").await;
    let mut idle = server.client().await;
    let message = idle.expect_error(4009).await;
    assert!(message.contains("subscription"), "{message}");
    assert_eq!(idle.expect_close().await, Closed::Code(4009));
    // The subscribed connection opened first, so its deadline has passed too.
    subscribed.expect_nothing_pending().await;
    assert_eq!(metric(&server, "herald_connections_closed_total{app=\"1\",reason=\"4009\"}").await, 1);
}

#[tokio::test]
async fn app_quota_refusals_are_counted() {
    let server = TestServer::with_config(&format!("{}max_connections = 1\n", default_config())).await;
    let _first = server.client().await;
    let mut second = server.connect(KEY, "protocol=7").await;
    assert_eq!(second.expect_close().await, Closed::Code(4004));
    assert_eq!(metric(&server, "herald_connections_refused_total{reason=\"app_limit\"}").await, 1);
}
