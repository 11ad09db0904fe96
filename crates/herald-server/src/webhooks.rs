//! Webhook wiring: the outbox each engine uses, and the HTTP client that posts webhooks.
//!
//! What to send, when, and how often to retry is decided in `herald_core::webhooks`; this module
//! only opens `data_dir/webhooks.sqlite3` and speaks HTTP/1.1 to `http://`
//! endpoints: one connection per request (`Connection: close`), status line read, body ignored.
//! No TLS, no redirects, no credentials in URLs: put a local proxy in front for anything fancier.

use std::sync::Arc;

use herald_core::Registry;
use herald_core::webhooks::{PostError, PostFuture, WebhookOutbox, WebhookPoster, WebhookRequest, Webhooks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ServeError;
use crate::config::ServerConfig;

/// Longest status line and headers read from an endpoint's answer.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Starts the webhook tasks of every app that has webhooks; their outbox is
/// `data_dir/webhooks.sqlite3`, on every engine: with Redis the engine decides which node tells a
/// change (once for the cluster), and that node queues and delivers it from its own outbox.
pub fn start(settings: &ServerConfig, registry: &Registry) -> Result<Vec<Webhooks>, ServeError> {
    if !registry.apps().any(|app| !app.config.webhooks.is_empty()) {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| ServeError::DataDir { path: settings.data_dir.display().to_string(), source })?;
    let path = settings.data_dir.join("webhooks.sqlite3");
    tracing::info!(path = %path.display(), "webhook outbox kept in SQLite");
    let outbox: Arc<dyn WebhookOutbox> = Arc::new(herald_sqlite::SqliteWebhooks::open(&path)?);
    let poster: Arc<dyn WebhookPoster> = Arc::new(HttpPoster);
    Ok(registry.apps().filter_map(|app| herald_core::webhooks::start(app, outbox.clone(), poster.clone())).collect())
}

/// Posts webhooks over plain HTTP/1.1.
#[derive(Debug, Default)]
pub struct HttpPoster;

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty() && !authority.contains('@')).then_some((authority, path))
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|version| version.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

impl WebhookPoster for HttpPoster {
    fn post<'a>(&'a self, request: &'a WebhookRequest) -> PostFuture<'a> {
        Box::pin(async move {
            let (authority, path) =
                split_url(&request.url).ok_or_else(|| PostError::Connect("not an http:// url".into()))?;
            let mut stream =
                tokio::net::TcpStream::connect(authority).await.map_err(|e| PostError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let slash = if path.starts_with('/') { "" } else { "/" };
            let head = format!(
                "POST {slash}{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 X-Pusher-Key: {}\r\nX-Pusher-Signature: {}\r\nUser-Agent: herald\r\nConnection: close\r\n\r\n",
                request.body.len(),
                request.key,
                request.signature,
            );
            let failed = |e: std::io::Error| PostError::Request(e.to_string());
            stream.write_all(head.as_bytes()).await.map_err(failed)?;
            stream.write_all(&request.body).await.map_err(failed)?;
            let mut answer = Vec::with_capacity(256);
            let mut buffer = [0u8; 1024];
            while !answer.contains(&b'\n') && answer.len() < MAX_RESPONSE_HEAD {
                let read = stream.read(&mut buffer).await.map_err(failed)?;
                if read == 0 {
                    break;
                }
                answer.extend_from_slice(&buffer[..read]);
            }
            status_of(&answer).ok_or_else(|| PostError::Request("not an HTTP response".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_target() {
        assert_eq!(split_url("http://127.0.0.1:9/a/b?c=1"), Some(("127.0.0.1:9", "/a/b?c=1")));
        assert_eq!(split_url("http://hooks.local"), Some(("hooks.local", "/")));
        assert_eq!(split_url("http://h?x=1"), Some(("h", "?x=1")));
        assert_eq!(split_url("https://h/"), None);
        assert_eq!(split_url("http://u:p@h/"), None);
    }

    /// The commented `[[apps.webhooks]]` example in the printed config shows the real defaults.
    #[test]
    fn the_printed_webhook_example_is_the_defaults() {
        let printed = crate::config::DEFAULT_CONFIG;
        let start = printed.find("# [[apps.webhooks]]").unwrap();
        let example: Vec<&str> = printed[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter(|line| !line.starts_with("# #"))
            .map(|line| line.trim_start_matches("# "))
            .collect();
        let toml = format!("[[apps]]\nid = \"1\"\n{}", example.join("\n"));
        let config = crate::Config::from_toml(&toml).unwrap();
        let expected = herald_core::webhooks::WebhookConfig {
            url: "http://127.0.0.1:8080/pusher/webhooks".into(),
            ..Default::default()
        };
        assert_eq!(config.apps[0].webhooks, [expected]);
        config.validate().unwrap();
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_of(b"HTTP/1.0 500 Oops\r\nX: y"), Some(500));
        assert_eq!(status_of(b"SSH-2.0\r\n"), None);
    }
}
