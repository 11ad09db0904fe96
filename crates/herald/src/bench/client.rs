//! Bench connections: WebSocket clients bound to spread loopback source addresses, and a signed
//! HTTP publisher.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::Secret;
use herald_protocol::request_signature::sign_post;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cli::BenchArgs;

pub type Socket = WebSocketStream<TcpStream>;

/// Bytes each bench connection reads at most per read call.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Opens connection number `index`, from source address 127.0.0.(1 + index % spread).
pub async fn connect(args: &BenchArgs, index: usize) -> anyhow::Result<(Socket, String)> {
    let server: SocketAddr = args.target.parse().context("--target must be HOST:PORT")?;
    let socket = TcpSocket::new_v4()?;
    if server.ip().is_loopback() {
        let last = 1 + (index % usize::from(args.source_addresses.max(1))) as u8;
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/app/{}?protocol=7&client=herald-bench&version=1", args.target, args.key);
    // tungstenite's default 128 KiB read buffer is zeroed before every read: 40% of the
    // generator's CPU at 1,000 subscribers. Frames here are a few hundred bytes.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let established = next_text(&mut ws).await?;
    let frame: serde_json::Value = serde_json::from_str(&established)?;
    let data: serde_json::Value = serde_json::from_str(frame["data"].as_str().unwrap_or("{}"))?;
    let socket_id = data["socket_id"].as_str().context("no socket_id in connection_established")?.to_owned();
    Ok((ws, socket_id))
}

/// Opens `count` connections, 200 at a time, connection `i` subscribed to `channel(i)`; says how
/// far it got every 5,000. Each connection must be subscribed within 10 seconds.
pub async fn connect_subscribed(
    args: &BenchArgs,
    count: usize,
    channel: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Socket>> {
    const AT_ONCE: usize = 200;
    let mut sockets = Vec::with_capacity(count);
    for start in (0..count).step_by(AT_ONCE) {
        let end = (start + AT_ONCE).min(count);
        let opened = futures_util::future::join_all((start..end).map(|i| {
            let channel = channel(i);
            let open = async move {
                let (mut ws, _) = connect(args, i).await?;
                subscribe(&mut ws, &channel).await?;
                anyhow::Ok(ws)
            };
            async move { tokio::time::timeout(Duration::from_secs(10), open).await.context("connect timed out")? }
        }))
        .await;
        for ws in opened {
            sockets.push(ws.context("connection failed")?);
        }
        if end % 5000 < AT_ONCE || end == count {
            eprintln!("  {end}/{count} connected");
        }
    }
    Ok(sockets)
}

pub async fn subscribe(ws: &mut Socket, channel: &str) -> anyhow::Result<()> {
    let frame = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    ws.send(Message::text(frame.to_string())).await?;
    let reply = next_text(ws).await?;
    if !reply.contains("subscription_succeeded") {
        bail!("subscribe refused: {reply}");
    }
    Ok(())
}

pub async fn next_text(ws: &mut Socket) -> anyhow::Result<String> {
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) => return Ok(text.to_string()),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
    bail!("connection ended")
}

/// A keep-alive HTTP/1.1 connection that publishes signed events.
pub struct Publisher {
    stream: BufReader<TcpStream>,
    args: BenchArgs,
}

impl Publisher {
    pub async fn connect(args: &BenchArgs) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(&args.target).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::new(stream), args: args.clone() })
    }

    /// Publishes one event to one channel (`POST /apps/{id}/events`).
    pub async fn publish(&mut self, channel: &str, event: &str, data: &str) -> anyhow::Result<()> {
        self.publish_to(&[channel], event, data).await
    }

    /// Publishes one event to several channels at once (at most the server's per-publish limit,
    /// 100 on Herald and Pusher).
    pub async fn publish_to(&mut self, channels: &[&str], event: &str, data: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({"name": event, "channels": channels, "data": data}).to_string();
        self.post("events", &body).await
    }

    /// Publishes several events named `event` in one request (`POST /apps/{id}/batch_events`),
    /// each `(channel, data)`; at most the server's batch limit (10 on Herald's and Pusher's
    /// defaults).
    pub async fn publish_batch(&mut self, event: &str, events: &[(String, String)]) -> anyhow::Result<()> {
        let batch: Vec<_> = events
            .iter()
            .map(|(channel, data)| serde_json::json!({"channel": channel, "name": event, "data": data}))
            .collect();
        self.post("batch_events", &serde_json::json!({ "batch": batch }).to_string()).await
    }

    /// Publishes `total` events named `event` at `rate` per second, whatever is due at once (up to
    /// `batch`) in one batch_events request. `make(i)` gives event `i`'s `(channel, data)` when it
    /// is sent, so a timestamp in it is fresh. Says how far it got every 5 seconds. Returns the
    /// seconds it took: more than `total / rate` when the publisher could not keep up.
    pub async fn publish_paced(
        &mut self,
        event: &str,
        rate: f64,
        total: u64,
        batch: usize,
        mut make: impl FnMut(u64) -> (String, String),
    ) -> anyhow::Result<f64> {
        let started = tokio::time::Instant::now();
        let mut progress = started;
        let (mut sent, batch) = (0u64, batch.max(1) as u64);
        while sent < total {
            let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
            if due <= sent {
                tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / rate)).await;
                continue;
            }
            let events: Vec<_> = (sent..sent + (due - sent).min(batch)).map(&mut make).collect();
            self.publish_batch(event, &events).await?;
            sent += events.len() as u64;
            if progress.elapsed() >= Duration::from_secs(5) {
                progress = tokio::time::Instant::now();
                eprintln!("  {:.0} s: {sent} of {total} events sent", started.elapsed().as_secs_f64());
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }

    async fn post(&mut self, route: &str, body: &str) -> anyhow::Result<()> {
        let path = format!("/apps/{}/{route}", self.args.app_id);
        let query = sign(&path, body, &self.args.key, &Secret::new(self.args.secret.clone()));
        let request = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.args.target,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let line = line.to_ascii_lowercase();
            if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            chunked |= line.starts_with("transfer-encoding:") && line.contains("chunked");
            close |= line.starts_with("connection:") && line.contains("close");
        }
        let response = if chunked { self.read_chunked().await? } else { self.read_body(length).await? };
        if close {
            // Some servers (Sockudo) end the connection after every answer: open the next one now.
            *self = Self::connect(&self.args).await?;
        }
        if !status.contains(" 200 ") {
            bail!("publish failed: {} {}", status.trim(), String::from_utf8_lossy(&response));
        }
        Ok(())
    }

    async fn read_body(&mut self, length: usize) -> anyhow::Result<Vec<u8>> {
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(body)
    }

    /// A `Transfer-Encoding: chunked` body (some servers answer that way).
    async fn read_chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            self.stream.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .context("bad chunk size in a publish answer")?;
            let mut chunk = vec![0; size + 2]; // the chunk and its CRLF
            self.stream.read_exact(&mut chunk).await?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

fn sign(path: &str, body: &str, key: &str, secret: &Secret) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    sign_post(path, body.as_bytes(), key, secret, now)
}

/// Microseconds since the Unix epoch, the clock shared by publisher and subscribers.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
