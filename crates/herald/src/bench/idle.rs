//! `bench idle`: hold N subscribed connections and report the server's memory per connection.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::client::connect_subscribed;
use super::{report, rss_bytes};
use crate::cli::BenchArgs;

pub async fn run(args: &BenchArgs, connections: usize, hold_secs: u64) -> anyhow::Result<()> {
    let pid = args.server_pid.context("bench idle needs --server-pid to read the server's memory")?;
    let before = rss_bytes(pid)?;
    let start = Instant::now();
    let sockets = connect_subscribed(args, connections, |i| format!("idle-{}", i % 1000)).await?;
    let connect_secs = start.elapsed().as_secs_f64();
    // Held, also so that the allocator and the kernel settle before the measure.
    tokio::time::sleep(std::time::Duration::from_secs(hold_secs)).await;
    let after = rss_bytes(pid)?;
    let per_connection = after.saturating_sub(before) as f64 / connections as f64;
    report::print(
        "idle",
        &[
            ("connections", connections.to_string()),
            ("connect rate", format!("{:.0}/s", connections as f64 / connect_secs)),
            ("server RSS before", format!("{:.1} MiB", before as f64 / 1048576.0)),
            ("server RSS after", format!("{:.1} MiB", after as f64 / 1048576.0)),
            ("per connection", format!("{:.2} KiB", per_connection / 1024.0)),
        ],
        json!({"scenario": "idle", "connections": connections, "connect_per_sec": connections as f64 / connect_secs,
               "rss_before": before, "rss_after": after, "bytes_per_connection": per_connection}),
    );
    drop(sockets);
    Ok(())
}
