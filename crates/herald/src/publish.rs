//! `herald publish`: send one event through the signed HTTP API, for quickstarts and scripts.
//!
//! It signs exactly as the Pusher SDKs do (reusing `herald-protocol`) and speaks plain HTTP/1.1 to
//! an `http://` URL; for TLS or anything fancier, use an SDK.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use herald_core::AppConfig;
use herald_protocol::Secret;
use herald_protocol::request_signature::sign_post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::PublishArgs;

pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = runtime.block_on(send(&args))?;
    println!("{}", body.trim_end());
    if status != 200 {
        bail!("server answered HTTP {status}");
    }
    Ok(())
}

async fn send(args: &PublishArgs) -> anyhow::Result<(u16, String)> {
    let host =
        args.url.strip_prefix("http://").context("--url must start with http://")?.trim_end_matches('/').to_owned();
    let app = AppConfig::new(&args.app_id, &args.key, &args.secret);
    let body = serde_json::json!({ "name": args.event, "channels": args.channels, "data": args.data }).to_string();
    let path = format!("/apps/{}/events", app.id);
    let query = signed_query(&path, &body, &app.key, &app.secret);
    let request = format!(
        "POST {path}?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream =
        tokio::net::TcpStream::connect(&host).await.with_context(|| format!("cannot connect to {host}"))?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.get(9..12).and_then(|s| s.parse().ok()).context("not an HTTP response")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn signed_query(path: &str, body: &str, key: &str, secret: &Secret) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    sign_post(path, body.as_bytes(), key, secret, now)
}
