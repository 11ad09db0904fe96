//! `bench fanout`: N subscribers on one channel, one publisher at a fixed rate.
//!
//! Each event carries its send time and a sequence number; every subscriber checks order, loss and
//! duplicates and records publish→receive latency. An `end` event closes the run; subscribers
//! that have not seen it 30 seconds after the last publish are stopped and counted as loss.

use std::time::Duration;

use serde_json::json;

use super::CpuMeter;
use super::client::{Publisher, connect_subscribed, now_micros};
use super::delivery::{self, END, TICK};
use super::report::{self, Latency};
use crate::cli::BenchArgs;

const CHANNEL: &str = "bench-fanout";

pub async fn run(args: &BenchArgs, subscribers: usize, rate: u32, seconds: u64, payload: usize) -> anyhow::Result<()> {
    let sockets = connect_subscribed(args, subscribers, |_| CHANNEL.to_owned()).await?;
    eprintln!("  {subscribers} subscribers ready; publishing {rate}/s for {seconds} s");
    let receivers: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(delivery::receive_until_end(ws))).collect();
    let cpu = CpuMeter::start(args)?;
    let total = u64::from(rate) * seconds;
    let mut publisher = Publisher::connect(args).await?;
    let padding = "x".repeat(payload);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let started = std::time::Instant::now();
    for seq in 0..total {
        ticker.tick().await;
        let data = json!({"t": now_micros(), "seq": seq, "pad": padding}).to_string();
        publisher.publish(CHANNEL, TICK, &data).await?;
    }
    publisher.publish(CHANNEL, END, "{}").await?;
    let (mut all, stuck) = delivery::collect(receivers, Duration::from_secs(30)).await;
    let wall = started.elapsed().as_secs_f64();
    let (server_cpu, generator_cpu) = cpu.stop()?;
    summarize(&mut all, stuck, subscribers, total, wall, server_cpu, generator_cpu);
    Ok(())
}

fn summarize(
    all: &mut delivery::Received,
    stuck: usize,
    subscribers: usize,
    published: u64,
    wall: f64,
    server_cpu: Option<f64>,
    generator_cpu: f64,
) {
    let latency = Latency::of(&mut all.latencies_us);
    let expected = published * subscribers as u64;
    let delivered = all.delivered();
    let lost = expected - delivered.min(expected);
    let server_us = report::per_delivery_us(server_cpu, delivered);
    let generator_us = report::per_delivery_us(Some(generator_cpu), delivered);
    report::print(
        "fanout",
        &[
            ("subscribers", subscribers.to_string()),
            ("events published", published.to_string()),
            ("deliveries", format!("{delivered} of {expected}")),
            ("deliveries/s", format!("{:.0}", delivered as f64 / wall)),
            ("latency p50/p90/p99", format!("{:.2} / {:.2} / {:.2} ms", latency.p50, latency.p90, latency.p99)),
            ("latency p99.9/max", format!("{:.2} / {:.2} ms", latency.p999, latency.max)),
            ("lost / gaps / dups", format!("{lost} / {} / {}", all.gaps, all.duplicates)),
            ("subscribers closed / stuck", format!("{} / {stuck}", all.closed)),
            ("server CPU per delivery", report::micros(server_us, "(give --server-pid)")),
            ("generator CPU", format!("{generator_cpu:.2} s, {}", report::micros(generator_us, "") + " per delivery")),
        ],
        json!({"scenario": "fanout", "subscribers": subscribers, "published": published, "delivered": delivered,
               "deliveries_per_sec": delivered as f64 / wall, "p50_ms": latency.p50, "p90_ms": latency.p90,
               "p99_ms": latency.p99, "p999_ms": latency.p999, "max_ms": latency.max, "lost": lost,
               "gaps": all.gaps, "duplicates": all.duplicates, "closed": all.closed, "stuck": stuck,
               "seconds": wall, "server_cpu_seconds": server_cpu, "server_cpu_us_per_delivery": server_us,
               "generator_cpu_seconds": generator_cpu, "generator_cpu_us_per_delivery": generator_us}),
    );
}
