//! Bench connections: WebSocket clients bound to spread loopback source addresses, and a signed
//! HTTP publisher.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::Secret;
use herald_protocol::request_signature::sign_post;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::BenchArgs;

pub type Socket = WebSocketStream<TcpStream>;

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
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    let established = next_text(&mut ws).await?;
    let frame: serde_json::Value = serde_json::from_str(&established)?;
    let data: serde_json::Value = serde_json::from_str(frame["data"].as_str().unwrap_or("{}"))?;
    let socket_id = data["socket_id"].as_str().context("no socket_id in connection_established")?.to_owned();
    Ok((ws, socket_id))
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

    pub async fn publish(&mut self, channel: &str, event: &str, data: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({"name": event, "channel": channel, "data": data}).to_string();
        let path = format!("/apps/{}/events", self.args.app_id);
        let query = sign(&path, &body, &self.args.key, &Secret::new(self.args.secret.clone()));
        let request = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.args.target,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
        }
        let mut response = vec![0; length];
        self.stream.read_exact(&mut response).await?;
        if !status.contains(" 200 ") {
            bail!("publish failed: {} {}", status.trim(), String::from_utf8_lossy(&response));
        }
        Ok(())
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
