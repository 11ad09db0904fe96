//! A minimal client for Herald's signed HTTP API, for the CLI (`publish`, `jobs`, `webhooks`).
//!
//! It signs exactly as the Pusher SDKs do (reusing `herald-protocol`) and speaks plain HTTP/1.1 to
//! an `http://` URL; for TLS or anything fancier, use an SDK.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use herald_protocol::Secret;
use herald_protocol::request_signature::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the API is and whose credentials to sign with.
pub struct ApiClient {
    host: String,
    pub app_id: String,
    key: String,
    secret: Secret,
}

impl ApiClient {
    pub fn from_args(args: &crate::cli::ApiArgs) -> anyhow::Result<Self> {
        Self::new(&args.url, &args.app_id, &args.key, &args.secret)
    }

    pub fn new(url: &str, app_id: &str, key: &str, secret: &str) -> anyhow::Result<Self> {
        let host = url.strip_prefix("http://").context("--url must start with http://")?.trim_end_matches('/');
        Ok(Self { host: host.to_owned(), app_id: app_id.to_owned(), key: key.to_owned(), secret: Secret::new(secret) })
    }

    /// Sends a signed request to `/apps/{id}{path}`; returns the status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let path = format!("/apps/{}{path}", self.app_id);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let query = sign(method, &path, params, body.as_bytes(), &self.key, &self.secret, now);
        let request = format!(
            "{method} {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(&self.host)
            .await
            .with_context(|| format!("cannot connect to {}", self.host))?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.get(9..12).and_then(|s| s.parse().ok()).context("not an HTTP response")?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, dechunk(&body)))
    }
}

/// Undoes chunked transfer encoding when the body is chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { return body.to_owned() };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_owned() };
        if size == 0 {
            return out;
        }
        let Some(chunk) = after.get(..size) else { return body.to_owned() };
        out.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// Prints an answer for a person (JSON pretty-printed, anything else as it came) and fails on a
/// status outside 2xx, so scripts can test the exit code.
pub fn print_answer(status: u16, body: &str) -> anyhow::Result<()> {
    let pretty = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.trim_end().to_owned());
    println!("{pretty}");
    if !(200..300).contains(&status) {
        bail!("server answered HTTP {status}");
    }
    Ok(())
}
