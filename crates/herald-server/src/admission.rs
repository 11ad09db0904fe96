//! Admission control: whether this node takes a new connection, decided before the WebSocket upgrade.
//!
//! Two node-wide checks run once per connection, never per message: a token bucket on new
//! connections per second (`max_new_connections_per_sec`, burst `max_new_connections_burst`; over
//! it: HTTP 503 with a jittered `Retry-After`) and a count of open connections per client address
//! (`max_connections_per_ip`; over it: HTTP 429). Refusing before the upgrade costs one short HTTP
//! answer and no session; pusher-js sees a failed handshake and retries with back-off. An admitted
//! connection holds an [`IpSlot`] that gives its place back when dropped, so the per-address count
//! cannot drift, whatever ends the connection. Refusals are counted by reason (this module's and the
//! apps' `max_connections`, 4004), never labelled by address.
//!
//! The client's address is the TCP peer's, unless the peer is one of `trusted_proxies`: then it is
//! read from `X-Forwarded-For`, from the right, skipping trusted proxies ([`TrustedProxies`]). Only
//! that header is read, not `Forwarded` (RFC 7239): a proxy overwrites or appends to the one it
//! sets and passes the other on as the client sent it, so believing both would let a client name
//! its own address.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::rate_limit::TokenBucket;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{IpNet, ServerConfig};
use crate::state::AppState;

/// An `X-Forwarded-For` entry longer than this is not an address: the peer is the client.
const MAX_FORWARDED_ENTRY_BYTES: usize = 64;
/// Entries of `X-Forwarded-For` looked at, from the right, before giving up (the peer is the client).
const MAX_FORWARDED_HOPS: usize = 16;

/// Why a connection was turned away; the label of `herald_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// Over the node's new-connection rate (HTTP 503).
    Rate,
    /// Over the connections one address may hold (HTTP 429).
    PerIp,
    /// Over an app's `max_connections` (close 4004, after the upgrade).
    AppLimit,
}

impl RefusedReason {
    pub const ALL: [Self; 3] = [Self::Rate, Self::PerIp, Self::AppLimit];

    pub fn label(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::PerIp => "per_ip",
            Self::AppLimit => "app_limit",
        }
    }
}

/// A connection refused before its upgrade; answers with its own status and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this node is taking too many new connections; retry after {retry_after_secs} s")]
    Rate { retry_after_secs: u64 },
    #[error("too many connections from this address; retry after {retry_after_secs} s")]
    PerIp { retry_after_secs: u64 },
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Rate { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::PerIp { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn reason(self) -> RefusedReason {
        match self {
            Self::Rate { .. } => RefusedReason::Rate,
            Self::PerIp { .. } => RefusedReason::PerIp,
        }
    }

    fn retry_after_secs(self) -> u64 {
        match self {
            Self::Rate { retry_after_secs } | Self::PerIp { retry_after_secs } => retry_after_secs,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let retry_after = HeaderValue::from(self.retry_after_secs());
        (self.status(), [(header::RETRY_AFTER, retry_after)], format!("{self}\n")).into_response()
    }
}

/// The node's admission state: the rate bucket, open connections per address, refusal counts.
#[derive(Debug)]
pub struct Admission {
    /// `None` when the rate limit is off.
    rate: Option<Mutex<TokenBucket>>,
    /// 0: no per-address limit (and no counting).
    per_ip_limit: u32,
    per_ip: Arc<Mutex<HashMap<IpAddr, u32>>>,
    trusted: TrustedProxies,
    refused: [AtomicU64; 3],
    /// Turns into `Retry-After` jitter.
    refusals_seen: AtomicU64,
}

impl Admission {
    pub fn new(settings: &ServerConfig, now: Instant) -> Self {
        let rate = (settings.max_new_connections_per_sec > 0).then(|| {
            let burst = settings.max_new_connections_burst.max(1);
            Mutex::new(TokenBucket::with_burst(settings.max_new_connections_per_sec, burst, now))
        });
        Self {
            rate,
            per_ip_limit: settings.max_connections_per_ip,
            per_ip: Arc::default(),
            trusted: TrustedProxies(settings.trusted_proxies.clone()),
            refused: Default::default(),
            refusals_seen: AtomicU64::new(0),
        }
    }

    /// Admits a new connection from `ip` (unknown: only the rate applies) or says why not. The
    /// returned slot must live as long as the connection.
    pub fn admit(&self, ip: Option<IpAddr>, now: Instant) -> Result<Option<IpSlot>, Refusal> {
        // The address first: a client at its cap must not spend the node's rate budget.
        let slot = match ip.filter(|_| self.per_ip_limit > 0) {
            Some(ip) => Some(self.take_ip_slot(ip.to_canonical()).ok_or_else(|| self.refuse(RefusedReason::PerIp))?),
            None => None,
        };
        if let Some(rate) = &self.rate
            && !rate.lock().try_take(now)
        {
            return Err(self.refuse(RefusedReason::Rate));
        }
        Ok(slot)
    }

    /// The client's address for a request from `peer`: see [`TrustedProxies::client_ip`].
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted.client_ip(peer, headers)
    }

    /// Counts a refusal made elsewhere (an app's `max_connections`).
    pub fn count(&self, reason: RefusedReason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by reason.
    pub fn refused(&self) -> [(RefusedReason, u64); 3] {
        RefusedReason::ALL.map(|reason| (reason, self.refused[reason as usize].load(Ordering::Relaxed)))
    }

    /// Connections now counted against `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> u32 {
        self.per_ip.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn take_ip_slot(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.per_ip.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_ip_limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { counts: self.per_ip.clone(), ip })
    }

    fn refuse(&self, reason: RefusedReason) -> Refusal {
        self.count(reason);
        // 1..=5 s, spread so that refused clients do not all come back in the same second.
        let seen = self.refusals_seen.fetch_add(1, Ordering::Relaxed);
        let retry_after_secs = 1 + crate::state::spread(seen) % 5;
        match reason {
            RefusedReason::PerIp => Refusal::PerIp { retry_after_secs },
            RefusedReason::Rate | RefusedReason::AppLimit => Refusal::Rate { retry_after_secs },
        }
    }
}

/// One admitted connection's place in its address's count; dropping it gives the place back.
#[derive(Debug)]
pub struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.counts.lock().entry(self.ip) {
            match *entry.get() {
                0 | 1 => {
                    entry.remove();
                }
                _ => *entry.get_mut() -= 1,
            }
        }
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`; empty: none).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address (canonical: IPv4-mapped addresses as IPv4). From an untrusted `peer`,
    /// the peer itself, whatever its headers say. From a trusted one, the rightmost entry of
    /// `X-Forwarded-For` that is not itself a trusted proxy; the peer again when the header is
    /// missing, malformed where it is read, all trusted, or past the bounds read.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        self.forwarded_client(headers).unwrap_or(peer)
    }

    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        // Several lines are one list, in order: the last line holds the rightmost entries. Only
        // the entries read are decoded, from the right, and only so many: whatever a client put
        // further left (a huge or non-UTF-8 prefix) cannot make the proxy's appended address
        // unreadable.
        let mut hops = 0;
        for line in headers.get_all("x-forwarded-for").iter().rev() {
            for entry in line.as_bytes().rsplit(|byte| *byte == b',') {
                hops += 1;
                if hops > MAX_FORWARDED_HOPS || entry.len() > MAX_FORWARDED_ENTRY_BYTES {
                    return None;
                }
                let ip = forwarded_address(std::str::from_utf8(entry).ok()?)?;
                if !self.contains(ip) {
                    return Some(ip);
                }
            }
        }
        None
    }
}

/// One `X-Forwarded-For` entry: an address, bare or with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`, `[2001:db8::1]`), in canonical form. Anything else (`unknown`, an empty
/// entry, a name) is `None`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))
        .or_else(|| Some(IpAddr::V6(entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?)))?;
    Some(ip.to_canonical())
}

/// The client's address: the TCP peer's, or the one a trusted proxy forwarded
/// ([`TrustedProxies::client_ip`]); `None` when served without our listener, which supplies the
/// peer. Every transport takes it from here, and the slot it admits keeps it, so a connection's
/// place is taken and given back under the same address.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(Self(peer.map(|peer| state.admission.client_ip(peer, &parts.headers))))
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Duration;

    use super::*;

    fn admission(rate: u32, burst: u32, per_ip: u32) -> Admission {
        let settings = ServerConfig {
            max_new_connections_per_sec: rate,
            max_new_connections_burst: burst,
            max_connections_per_ip: per_ip,
            ..ServerConfig::default()
        };
        Admission::new(&settings, Instant::now())
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_places_back_when_connections_end() {
        let admission = admission(0, 0, 3);
        let now = Instant::now();
        let held: Vec<_> = (0..3).map(|_| admission.admit(A, now).unwrap()).collect();
        let refusal = admission.admit(A, now).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(admission.admit(B, now).is_ok(), "another address is not affected");
        drop(held);
        assert_eq!(admission.connections_from(A.unwrap()), 0, "the count does not drift");
        assert!(admission.per_ip.lock().is_empty(), "and no entry is left behind");
        assert!(admission.admit(A, now).is_ok());
        assert_eq!(admission.refused()[1], (RefusedReason::PerIp, 1));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let admission = admission(0, 0, 1);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let _held = admission.admit(A, Instant::now()).unwrap();
        assert!(admission.admit(Some(mapped), Instant::now()).is_err());
    }

    #[test]
    fn the_rate_refuses_past_the_burst_with_a_jittered_retry_after_then_refills() {
        let admission = admission(10, 20, 0);
        let now = Instant::now();
        assert_eq!((0..20).filter(|_| admission.admit(A, now).is_ok()).count(), 20);
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let refusal = admission.admit(A, now).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
            waits.insert(refusal.retry_after_secs());
        }
        assert!(waits.iter().all(|w| (1..=5).contains(w)) && waits.len() > 1, "{waits:?}");
        assert!(admission.admit(A, now + Duration::from_millis(100)).is_ok());
        assert_eq!(admission.refused()[0], (RefusedReason::Rate, 50));
    }

    #[test]
    fn a_connection_refused_for_its_rate_gives_its_address_place_back() {
        let admission = admission(1, 1, 5);
        let now = Instant::now();
        let _first = admission.admit(A, now).unwrap();
        assert!(admission.admit(A, now).is_err());
        assert_eq!(admission.connections_from(A.unwrap()), 1);
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|net| net.parse().unwrap()).collect())
    }

    /// The client address a request from `peer` with these `X-Forwarded-For` lines resolves to,
    /// behind proxies 127.0.0.1, 10.0.0.0/8 and ::1.
    fn resolve(peer: &str, forwarded: &[&[u8]]) -> String {
        let mut headers = HeaderMap::new();
        for line in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(line).unwrap());
        }
        proxies(&["127.0.0.1", "10.0.0.0/8", "::1"]).client_ip(peer.parse().unwrap(), &headers).to_string()
    }

    #[test]
    fn a_trusted_proxy_forwards_the_rightmost_untrusted_address() {
        for (peer, forwarded, client) in [
            // No header, or no proxy: the peer.
            ("127.0.0.1", &[][..], "127.0.0.1"),
            ("192.0.2.9", &[&b"198.51.100.1"[..]][..], "192.0.2.9"),
            ("::ffff:192.0.2.9", &[&b"198.51.100.1"[..]], "192.0.2.9"),
            // From a trusted proxy: the rightmost address that is not a proxy itself.
            ("127.0.0.1", &[b"198.51.100.1"], "198.51.100.1"),
            ("::ffff:127.0.0.1", &[b"198.51.100.1"], "198.51.100.1"),
            ("::1", &[b"2001:db8::7"], "2001:db8::7"),
            ("127.0.0.1", &[b"203.0.113.66, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),
            ("127.0.0.1", &[b"198.51.100.1,10.1.2.3,::1,127.0.0.1"], "198.51.100.1"),
            ("127.0.0.1", &[b"::ffff:198.51.100.1"], "198.51.100.1"),
            ("127.0.0.1", &[b"198.51.100.1:4711"], "198.51.100.1"),
            ("127.0.0.1", &[b"[2001:db8::7]:4711"], "2001:db8::7"),
            ("127.0.0.1", &[b"[2001:db8::7]"], "2001:db8::7"),
            ("127.0.0.1", &[b" \t198.51.100.1 \t"], "198.51.100.1"),
            // Several lines are one list; the last is rightmost.
            ("127.0.0.1", &[b"203.0.113.66", b"198.51.100.1, 10.0.0.1"], "198.51.100.1"),
            ("127.0.0.1", &[b"203.0.113.66", b"10.0.0.1"], "203.0.113.66"),
            // What a client wrote left of the real address is never read, garbage or not.
            ("127.0.0.1", &[b"unknown, 1.2.3.4:x, 198.51.100.1"], "198.51.100.1"),
            // Malformed where it is read, or only proxies: the peer.
            ("127.0.0.1", &[b"198.51.100.1, unknown"], "127.0.0.1"),
            ("127.0.0.1", &[b"198.51.100.1,"], "127.0.0.1"),
            ("127.0.0.1", &[b""], "127.0.0.1"),
            ("127.0.0.1", &[b"198.51.100.1, example.com"], "127.0.0.1"),
            ("127.0.0.1", &[b"198.51.100.1, 10.0.0.1/8"], "127.0.0.1"),
            ("127.0.0.1", &[b"198.51.100.1, fe80::1%eth0"], "127.0.0.1"),
            ("127.0.0.1", &[b"198.51.100.1", b"\xff"], "127.0.0.1"),
            ("127.0.0.1", &[b"10.0.0.1, 127.0.0.1, ::1"], "127.0.0.1"),
        ] {
            assert_eq!(resolve(peer, forwarded), client, "{peer} forwarding {forwarded:?}");
        }
    }

    #[test]
    fn forwarded_headers_are_read_only_so_far() {
        // 15 proxies then the client: found. One more proxy hop: past the bound, the peer.
        let hops = |n: usize| format!("198.51.100.1{}", ", 10.0.0.1".repeat(n));
        assert_eq!(resolve("127.0.0.1", &[hops(15).as_bytes()]), "198.51.100.1");
        assert_eq!(resolve("127.0.0.1", &[hops(16).as_bytes()]), "127.0.0.1");
        // A long or non-UTF-8 prefix the client wrote cannot hide the address its proxy appended.
        let long = format!("{}198.51.100.1", "1.1.1.1,".repeat(4096));
        assert_eq!(resolve("127.0.0.1", &[long.as_bytes()]), "198.51.100.1");
        assert_eq!(resolve("127.0.0.1", &[b"\xff\xfe, 198.51.100.1"]), "198.51.100.1");
        // An entry too long to be an address, where it is read: the peer.
        let huge_entry = format!("198.51.100.1, {}", "9".repeat(MAX_FORWARDED_ENTRY_BYTES + 1));
        assert_eq!(resolve("127.0.0.1", &[huge_entry.as_bytes()]), "127.0.0.1");
    }

    #[test]
    fn no_trusted_proxies_means_no_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(TrustedProxies::default().client_ip(peer, &headers), peer);
        assert_eq!(proxies(&["127.0.0.0/8"]).client_ip(peer, &headers).to_string(), "198.51.100.1");
        assert_eq!(proxies(&["0.0.0.0/0"]).client_ip(peer, &headers), peer, "every address a proxy: none found");
        assert_eq!(proxies(&["::/0"]).client_ip(peer, &headers), peer, "an IPv6 range holds no IPv4 peer");
    }

    #[test]
    fn a_forwarded_client_holds_its_own_slot_and_gives_it_back() {
        let settings = ServerConfig {
            max_connections_per_ip: 1,
            max_new_connections_per_sec: 0,
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..ServerConfig::default()
        };
        let admission = Admission::new(&settings, Instant::now());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let client = admission.client_ip(proxy, &headers);
        let held = admission.admit(Some(client), Instant::now()).unwrap();
        assert!(admission.admit(Some(client), Instant::now()).is_err());
        assert!(admission.admit(Some(proxy), Instant::now()).is_ok(), "the proxy's own count is apart");
        assert_eq!(admission.connections_from("198.51.100.1".parse().unwrap()), 1);
        drop(held);
        assert_eq!(admission.connections_from("198.51.100.1".parse().unwrap()), 0);
    }

    #[test]
    fn refusals_answer_with_their_status_and_retry_after() {
        let response = Refusal::Rate { retry_after_secs: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
