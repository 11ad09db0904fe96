//! `bench many-channels`: N connections, each subscribed to its own channel; a publisher sends to
//! random channels at a fixed total rate.
//!
//! This is the chat-like shape (many small channels, one subscriber each) rather than fan-out:
//! per-event work dominates, not per-recipient work. Each event carries its send time and its
//! channel's sequence number, so every subscriber checks order, loss and duplicates. Channels are
//! picked with a small xorshift generator seeded from the clock; the run does not need to be
//! repeatable event for event, only in its totals.

use std::time::Duration;

use serde_json::json;

use super::CpuMeter;
use super::client::{Publisher, connect_subscribed, now_micros};
use super::delivery::{self, END, TICK};
use super::report::{self, Latency};
use crate::cli::{BenchArgs, ManyChannelsArgs};

/// Channels one `end` publish names (Herald's and Pusher's limit).
const CHANNELS_PER_PUBLISH: usize = 100;

pub async fn run(args: &BenchArgs, options: &ManyChannelsArgs) -> anyhow::Result<()> {
    let connections = options.connections.max(1);
    let sockets = connect_subscribed(args, connections, channel).await?;
    eprintln!(
        "  {connections} connections ready, one channel each; publishing {}/s for {} s",
        options.rate, options.seconds
    );
    let receivers: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(delivery::receive_until_end(ws))).collect();
    let cpu = CpuMeter::start(args)?;
    let started = std::time::Instant::now();
    let total = u64::from(options.rate) * options.seconds;
    let mut publisher = Publisher::connect(args).await?;
    let padding = "x".repeat(options.payload);
    let mut random = XorShift::new(now_micros());
    let mut next_seq = vec![0u64; connections];
    let publish_seconds = publisher
        .publish_paced(TICK, f64::from(options.rate.max(1)), total, options.batch, |_| {
            let target = random.below(connections);
            let seq = next_seq[target];
            next_seq[target] += 1;
            (channel(target), json!({"t": now_micros(), "seq": seq, "pad": padding}).to_string())
        })
        .await?;
    let names: Vec<String> = (0..connections).map(channel).collect();
    for chunk in names.chunks(CHANNELS_PER_PUBLISH) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        publisher.publish_to(&chunk, END, "{}").await?;
    }
    let (mut all, stuck) = delivery::collect(receivers, Duration::from_secs(30)).await;
    let wall = started.elapsed().as_secs_f64();
    let (server_cpu, generator_cpu) = cpu.stop()?;

    let latency = Latency::of(&mut all.latencies_us);
    let delivered = all.delivered();
    let lost = total - delivered.min(total);
    let server_us = report::per_delivery_us(server_cpu, delivered);
    let generator_us = report::per_delivery_us(Some(generator_cpu), delivered);
    report::print(
        "many-channels",
        &[
            ("connections (one channel each)", connections.to_string()),
            ("events published", format!("{total} in {publish_seconds:.2} s")),
            ("deliveries", format!("{delivered} of {total}")),
            ("deliveries/s", format!("{:.0}", delivered as f64 / publish_seconds.max(1e-6))),
            ("latency p50/p90/p99", format!("{:.2} / {:.2} / {:.2} ms", latency.p50, latency.p90, latency.p99)),
            ("latency p99.9/max", format!("{:.2} / {:.2} ms", latency.p999, latency.max)),
            ("lost / gaps / dups", format!("{lost} / {} / {}", all.gaps, all.duplicates)),
            ("subscribers closed / stuck", format!("{} / {stuck}", all.closed)),
            ("server CPU per delivery", report::micros(server_us, "(give --server-pid)")),
            ("generator CPU", format!("{generator_cpu:.2} s, {} per delivery", report::micros(generator_us, "-"))),
        ],
        json!({"scenario": "many-channels", "connections": connections, "rate": options.rate,
               "published": total, "delivered": delivered,
               "deliveries_per_sec": delivered as f64 / publish_seconds.max(1e-6),
               "p50_ms": latency.p50, "p90_ms": latency.p90, "p99_ms": latency.p99, "p999_ms": latency.p999,
               "max_ms": latency.max, "lost": lost, "gaps": all.gaps, "duplicates": all.duplicates,
               "closed": all.closed, "stuck": stuck, "seconds": wall, "server_cpu_seconds": server_cpu,
               "server_cpu_us_per_delivery": server_us, "generator_cpu_seconds": generator_cpu,
               "generator_cpu_us_per_delivery": generator_us}),
    );
    Ok(())
}

fn channel(index: usize) -> String {
    format!("bench-mc-{index}")
}

/// xorshift64: fast, good enough to spread events over channels.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn random_channels_cover_every_channel_roughly_evenly() {
        let mut random = XorShift::new(42);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[random.below(10)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
