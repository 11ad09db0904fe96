//! `bench fanout`: N subscribers on one channel, one publisher at a fixed rate.
//!
//! Each event carries its send time and a sequence number; every subscriber checks order, loss and
//! duplicates and records publish→receive latency. An `end` event closes the run.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Publisher, Socket, connect, now_micros, subscribe};
use super::{cpu_seconds, report};
use crate::cli::BenchArgs;

const CHANNEL: &str = "bench-fanout";

#[derive(Default)]
struct Received {
    latencies_us: Vec<u64>,
    out_of_order: u64,
    duplicates: u64,
    next_seq: u64,
}

pub async fn run(args: &BenchArgs, subscribers: usize, rate: u32, seconds: u64, payload: usize) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(subscribers);
    for chunk in (0..subscribers).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(chunk.iter().map(|&i| async move {
            let (mut ws, _) = connect(args, i).await?;
            subscribe(&mut ws, CHANNEL).await?;
            anyhow::Ok(ws)
        }))
        .await;
        for ws in opened {
            sockets.push(ws.context("connection failed")?);
        }
    }
    eprintln!("  {subscribers} subscribers ready; publishing {rate}/s for {seconds} s");
    let receivers: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(receive(ws))).collect();
    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let total = u64::from(rate) * seconds;
    let mut publisher = Publisher::connect(args).await?;
    let padding = "x".repeat(payload);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let started = std::time::Instant::now();
    for seq in 0..total {
        ticker.tick().await;
        let data = json!({"t": now_micros(), "seq": seq, "pad": padding}).to_string();
        publisher.publish(CHANNEL, "tick", &data).await?;
    }
    publisher.publish(CHANNEL, "end", "{}").await?;
    let mut all = Received::default();
    for receiver in receivers {
        let received = tokio::time::timeout(Duration::from_secs(30), receiver).await.context("subscriber stuck")??;
        all.latencies_us.extend(received.latencies_us);
        all.out_of_order += received.out_of_order;
        all.duplicates += received.duplicates;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, args.server_pid) {
        (Some(before), Some(pid)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    summarize(&mut all, subscribers, total, wall, cpu);
    Ok(())
}

async fn receive(mut ws: Socket) -> Received {
    let mut received = Received::default();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else { continue };
        let now = now_micros();
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        match frame["event"].as_str() {
            Some("end") => break,
            Some("tick") => {}
            _ => continue,
        }
        let Some(data) = frame["data"].as_str().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()) else {
            continue;
        };
        let (sent, seq) = (data["t"].as_u64().unwrap_or(now), data["seq"].as_u64().unwrap_or(0));
        received.latencies_us.push(now.saturating_sub(sent));
        if seq < received.next_seq {
            received.duplicates += 1;
        } else if seq > received.next_seq {
            received.out_of_order += 1;
        }
        received.next_seq = received.next_seq.max(seq + 1);
    }
    received
}

fn summarize(all: &mut Received, subscribers: usize, published: u64, wall: f64, cpu: Option<f64>) {
    all.latencies_us.sort_unstable();
    let expected = published * subscribers as u64;
    let delivered = all.latencies_us.len() as u64;
    let q = |p| report::quantile(&all.latencies_us, p) as f64 / 1000.0;
    let cpu_per_delivery = cpu.map(|c| c * 1e6 / delivered.max(1) as f64);
    report::print(
        "fanout",
        &[
            ("subscribers", subscribers.to_string()),
            ("events published", published.to_string()),
            ("deliveries", format!("{delivered} of {expected}")),
            ("deliveries/s", format!("{:.0}", delivered as f64 / wall)),
            ("latency p50/p90/p99", format!("{:.2} / {:.2} / {:.2} ms", q(0.5), q(0.9), q(0.99))),
            ("latency p99.9/max", format!("{:.2} / {:.2} ms", q(0.999), q(1.0))),
            (
                "lost / gaps / dups",
                format!("{} / {} / {}", expected - delivered.min(expected), all.out_of_order, all.duplicates),
            ),
            (
                "server CPU per delivery",
                cpu_per_delivery.map_or("(give --server-pid)".into(), |c| format!("{c:.2} µs")),
            ),
        ],
        json!({"scenario": "fanout", "subscribers": subscribers, "published": published, "delivered": delivered,
               "deliveries_per_sec": delivered as f64 / wall, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99),
               "p999_ms": q(0.999), "max_ms": q(1.0), "lost": expected - delivered.min(expected),
               "gaps": all.out_of_order, "duplicates": all.duplicates, "server_cpu_us_per_delivery": cpu_per_delivery}),
    );
}
