//! The test toolkit: a real `herald` process, WebSocket clients, and a signed HTTP client.
//!
//! Signing here is written independently of `herald-protocol` (the Node suite adds a third,
//! the official SDK), so a bug in the server's signature code cannot hide behind the same bug here.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const APP_ID: &str = "1";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
const TIMEOUT: Duration = Duration::from_secs(5);

/// The config most tests use: one app with Pusher's defaults.
pub fn default_config() -> String {
    format!("[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n")
}

pub struct TestServer {
    child: Child,
    pub addr: String,
    dir: PathBuf,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(&default_config()).await
    }

    pub async fn with_config(toml: &str) -> Self {
        Self::with_args(toml, &[]).await
    }

    pub async fn with_args(toml: &str, extra: &[&str]) -> Self {
        Self::in_dir(&Self::fresh_dir(), toml, extra).await
    }

    /// A new empty directory for one server's config and data.
    pub fn fresh_dir() -> PathBuf {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("herald-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A server whose config and data live in `dir` (kept when the server stops, so that another
    /// server can start on the same data).
    pub async fn in_dir(dir: &std::path::Path, toml: &str, extra: &[&str]) -> Self {
        let dir = dir.to_path_buf();
        let config = dir.join("herald.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("HERALD_LOG", std::env::var("HERALD_E2E_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let address = line.strip_prefix("listening on http://");
                if let Some(addr) = address.or_else(|| line.strip_prefix("listening on https://")) {
                    return addr.to_owned();
                }
            }
            panic!("herald exited before listening")
        })
        .await
        .expect("herald did not start in time");
        Self { child, addr, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub async fn client(&self) -> TestClient {
        let mut client = self.connect(KEY, "protocol=7&client=rust&version=1").await;
        let established = client.expect_event("pusher:connection_established").await;
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        client.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        client
    }

    /// A connected client whose TCP socket is bound to `source` (another loopback address, such as
    /// 127.0.0.2, is another client address to the server).
    pub async fn client_from(&self, source: std::net::IpAddr) -> TestClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(self.addr.parse().unwrap()).await.unwrap();
        let url = format!("ws://{}/app/{KEY}?protocol=7", self.addr);
        let (ws, _) =
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("websocket connect");
        let mut client = TestClient { ws, socket_id: String::new() };
        let established = client.expect_event("pusher:connection_established").await;
        client.socket_id = data_of(&established)["socket_id"].as_str().unwrap().to_owned();
        client
    }

    /// A raw WebSocket handshake to the test app from `source` with extra request headers (such as
    /// `X-Forwarded-For`), nothing read yet: the socket, or how the handshake failed (a refusal
    /// before the upgrade is `tungstenite::Error::Http` with the response).
    pub async fn handshake_from(
        &self,
        source: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(self.addr.parse().unwrap()).await.unwrap();
        let mut request = format!("ws://{}/app/{KEY}?protocol=7", self.addr).into_client_request().unwrap();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().append(name, HeaderValue::from_str(value).unwrap());
        }
        let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        tokio::time::timeout(TIMEOUT, handshake).await.expect("handshake timed out").map(|(ws, _)| ws)
    }

    /// A raw connection: nothing read yet.
    pub async fn connect(&self, key: &str, query: &str) -> TestClient {
        let url = format!("ws://{}/app/{key}?{query}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        TestClient { ws, socket_id: String::new() }
    }

    /// A signed API request with the test app's credentials.
    pub async fn api(&self, method: &str, path: &str, params: &[(&str, &str)], body: &str) -> (u16, String) {
        self.api_signed(method, path, params, body, KEY, SECRET, unix_now()).await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn api_signed(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
        key: &str,
        secret: &str,
        timestamp: u64,
    ) -> (u16, String) {
        let query = signed_query(method, path, params, body, key, secret, timestamp);
        self.http(method, &format!("{path}?{query}"), body).await
    }

    pub async fn publish(&self, body: Value) -> (u16, String) {
        self.api("POST", &format!("/apps/{APP_ID}/events"), &[], &body.to_string()).await
    }

    /// A signed API request that may take up to `within` (for servers under deliberate load).
    pub async fn api_within(&self, method: &str, path: &str, body: &str, within: Duration) -> (u16, String) {
        let query = signed_query(method, path, &[], body, KEY, SECRET, unix_now());
        self.http_within(method, &format!("{path}?{query}"), body, within).await
    }

    /// A plain HTTP/1.1 GET; returns status, the response head (status line and headers, as sent)
    /// and body.
    pub async fn get_with_head(&self, target: &str) -> (u16, String, String) {
        self.request_with_head("GET", target, &[]).await
    }

    /// A bodyless request with extra headers; returns status, the response head and the body.
    pub async fn request_with_head(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.addr).await.unwrap();
        let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response)).await.unwrap().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (response[9..12].parse().unwrap(), head.to_owned(), decode_chunked(body))
    }

    /// A plain HTTP/1.1 request; returns status and body.
    pub async fn http(&self, method: &str, target: &str, body: &str) -> (u16, String) {
        self.http_within(method, target, body, TIMEOUT).await
    }

    async fn http_within(&self, method: &str, target: &str, body: &str, within: Duration) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).await.unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(within, stream.read_to_string(&mut response)).await.unwrap().unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, decode_chunked(&body))
    }
}

impl TestServer {
    /// Stops the server with SIGTERM and waits for it to exit; keeps its directory.
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "herald exited with {status}");
        self.dir = PathBuf::new();
    }

    /// Kills the server with SIGKILL, as a crash would; keeps its directory.
    pub async fn crash(mut self) {
        self.child.kill().await.unwrap();
        self.dir = PathBuf::new();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Undoes chunked transfer encoding if the body looks chunked.
fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { return body.to_owned() };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_owned() };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn signed_query(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
    key: &str,
    secret: &str,
    timestamp: u64,
) -> String {
    let timestamp = timestamp.to_string();
    let md5 = hex::encode(Md5::digest(body.as_bytes()));
    let mut pairs: Vec<(&str, &str)> = vec![("auth_key", key), ("auth_timestamp", &timestamp), ("auth_version", "1.0")];
    if !body.is_empty() {
        pairs.push(("body_md5", &md5));
    }
    pairs.extend_from_slice(params);
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");
    let signature = hmac_hex(secret, &format!("{method}\n{path}\n{query}"));
    format!("{query}&auth_signature={signature}")
}

pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    WithoutCode,
}

impl TestClient {
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame, parsed. Panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => {}
            }
        }
    }

    pub async fn expect_event(&mut self, event: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        frame
    }

    /// Expects `pusher:error` with this code; returns the message.
    pub async fn expect_error(&mut self, code: u16) -> String {
        let frame = self.expect_event("pusher:error").await;
        let data = data_of(&frame);
        assert_eq!(data["code"], code, "unexpected error {frame}");
        data["message"].as_str().unwrap().to_owned()
    }

    /// Waits for the server's close frame, skipping any text frames before it.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next()).await.expect("timed out waiting for close");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return Closed::Code(u16::from(frame.code)),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Closed::WithoutCode,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Proves nothing is queued for this client: a ping's pong is the very next frame.
    pub async fn expect_nothing_pending(&mut self) {
        self.send(serde_json::json!({"event": "pusher:ping", "data": {}})).await;
        self.expect_event("pusher:pong").await;
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}})).await;
        self.recv().await
    }

    pub async fn subscribe_signed(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let message = match channel_data {
            Some(data) => format!("{}:{channel}:{data}", self.socket_id),
            None => format!("{}:{channel}", self.socket_id),
        };
        let auth = format!("{KEY}:{}", hmac_hex(SECRET, &message));
        let mut data = serde_json::json!({"channel": channel, "auth": auth});
        if let Some(channel_data) = channel_data {
            data["channel_data"] = Value::String(channel_data.to_owned());
        }
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": data})).await;
        self.recv().await
    }

    pub async fn signin(&mut self, user_data: &str) {
        let auth = format!("{KEY}:{}", hmac_hex(SECRET, &format!("{}::user::{user_data}", self.socket_id)));
        self.send(serde_json::json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})).await;
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// A frame's `data`, parsed if it is a JSON string.
pub fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        other => other.clone(),
    }
}
