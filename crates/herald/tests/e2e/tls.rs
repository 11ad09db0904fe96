//! TLS termination: with `--tls-cert`/`--tls-key` one listener serves `wss://` and `https://`; a
//! client that does not speak TLS is dropped without disturbing anyone else. The certificate is
//! made here (rcgen) and trusted by this client only.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{APP_ID, KEY, SECRET, TestServer, default_config, signed_query, unix_now};

struct Tls {
    connector: TlsConnector,
    server: TestServer,
}

impl Tls {
    async fn start() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let dir = TestServer::fresh_dir();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
        let server = TestServer::in_dir(&dir, &default_config(), &args).await;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(certified.cert.der().to_vec())).unwrap();
        let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        Self { connector: TlsConnector::from(Arc::new(config)), server }
    }

    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(&self.server.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        self.connector.connect(name, tcp).await.expect("TLS handshake")
    }

    /// One HTTPS request; returns status and body.
    async fn https(&self, method: &str, target: &str, body: &str) -> (u16, String) {
        let mut stream = self.connect().await;
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // A TLS peer may end without close_notify after `Connection: close`; what was read counts.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

async fn next_event(socket: &mut tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>, event: &str) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["event"] == event {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn wss_and_https_share_the_tls_listener_and_plain_clients_are_dropped() {
    let tls = Tls::start().await;

    // A client speaking plain HTTP to the TLS port gets no answer it could mistake for one.
    let mut plain = TcpStream::connect(&tls.server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200"), "plain HTTP was answered: {answer:?}");

    assert_eq!(tls.https("GET", "/healthz", "").await.0, 200);

    let url = format!("wss://127.0.0.1/app/{KEY}?protocol=7&client=rust&version=1");
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls.connect().await).await.expect("wss upgrade");
    next_event(&mut socket, "pusher:connection_established").await;
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "tls-room"}});
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    next_event(&mut socket, "pusher_internal:subscription_succeeded").await;

    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name": "hello", "channel": "tls-room", "data": "{\"over\":\"tls\"}"}).to_string();
    let query = signed_query("POST", &path, &[], &body, KEY, SECRET, unix_now());
    let (status, answer) = tls.https("POST", &format!("{path}?{query}"), &body).await;
    assert_eq!(status, 200, "{answer}");
    let event = next_event(&mut socket, "hello").await;
    assert_eq!(event["data"], "{\"over\":\"tls\"}");
}

#[tokio::test]
async fn a_certificate_that_cannot_be_read_stops_the_server_with_its_path() {
    let dir = TestServer::fresh_dir();
    let missing = dir.join("no-such-cert.pem");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-cert.pem"), "{stderr}");
}
