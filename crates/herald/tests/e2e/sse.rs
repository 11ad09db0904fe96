//! Server-sent events, read with the real `curl -N`.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{KEY, SECRET, TestServer, hmac_hex, unix_now};

/// `curl -sN` on a URL, read line by line.
struct Curl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Curl {
    fn start(url: &str, headers: &[&str]) -> Self {
        let mut command = Command::new("curl");
        command.args(["-sN", url]).stdout(Stdio::piped()).kill_on_drop(true);
        for header in headers {
            command.args(["-H", header]);
        }
        let mut child = command.spawn().expect("curl is installed");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next SSE event: its `id:` (if any) and its `data:` parsed.
    async fn event(&mut self) -> (Option<String>, Value) {
        let mut id = None;
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("timed out waiting for an SSE line")
                .unwrap()
                .expect("stream ended");
            if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.to_owned());
            } else if let Some(data) = line.strip_prefix("data: ") {
                return (id, serde_json::from_str(data).unwrap());
            }
        }
    }

    /// Skips to the next event named `name`.
    async fn until(&mut self, name: &str) -> (Option<String>, Value) {
        loop {
            let (id, frame) = self.event().await;
            if frame["event"] == name {
                return (id, frame);
            }
        }
    }
}

impl Drop for Curl {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn curl_receives_events_and_resumes_with_last_event_id() {
    let server = TestServer::start().await;
    let url = format!("http://{}/sse/{KEY}?channels=news,alerts", server.addr);
    let mut first = Curl::start(&url, &[]);
    first.until("pusher_internal:subscription_succeeded").await;
    first.until("pusher_internal:subscription_succeeded").await;
    server.publish(json!({"name": "story", "channel": "news", "data": "1"})).await;
    let (id, story) = first.until("story").await;
    assert_eq!((story["data"].as_str(), story["serial"].as_u64()), (Some("1"), Some(1)));
    let id = id.expect("events carry an id");
    drop(first);

    server.publish(json!({"name": "story", "channel": "news", "data": "2"})).await;
    server.publish(json!({"name": "alert", "channel": "alerts", "data": "3"})).await;
    let mut again = Curl::start(&url, &[&format!("Last-Event-ID: {id}")]);
    let (_, joined) = again.until("pusher_internal:subscription_succeeded").await;
    assert_eq!(joined["recovered"], true);
    let (_, missed) = again.until("story").await;
    assert_eq!((missed["data"].as_str(), missed["serial"].as_u64()), (Some("2"), Some(2)));
    let (_, alert) = again.until("alert").await;
    assert_eq!(alert["serial"], 1);
}

#[tokio::test]
async fn private_channels_need_a_valid_unexpired_token() {
    let server = TestServer::start().await;
    let base = format!("http://{}/sse/{KEY}", server.addr);
    let (status, body) = server.http("GET", &format!("/sse/{KEY}?channels=private-inbox"), "").await;
    assert_eq!(status, 401, "{body}");
    let expires = unix_now() + 60;
    let auth = hmac_hex(SECRET, &format!("sse:{KEY}:{expires}:private-inbox"));
    let (status, _) =
        server.http("GET", &format!("/sse/{KEY}?channels=private-inbox&expires={expires}&auth=00{auth}"), "").await;
    assert_eq!(status, 401);
    let stale = unix_now() - 1;
    let stale_auth = hmac_hex(SECRET, &format!("sse:{KEY}:{stale}:private-inbox"));
    let (status, _) =
        server.http("GET", &format!("/sse/{KEY}?channels=private-inbox&expires={stale}&auth={stale_auth}"), "").await;
    assert_eq!(status, 401);
    let (status, _) = server.http("GET", "/sse/no-such-key?channels=a", "").await;
    assert_eq!(status, 404);

    let mut stream = Curl::start(&format!("{base}?channels=private-inbox&expires={expires}&auth={auth}"), &[]);
    stream.until("pusher_internal:subscription_succeeded").await;
    server.publish(json!({"name": "mail", "channel": "private-inbox", "data": "hi"})).await;
    assert_eq!(stream.until("mail").await.1["data"], "hi");
}
