//! `bench max-throughput`: N subscribers on one channel; the publish rate goes up step by step
//! until the subscribers stop keeping up, and the last step they kept up with is the figure.
//!
//! Each step publishes for a fixed time, then sends a `step-end` marker; every subscriber reports
//! its tally for the step when the marker arrives, so the next step starts with empty queues. A
//! step is sustained when nothing was lost, duplicated or out of order, no subscriber was closed,
//! p99 stayed under the threshold and the achieved deliveries/s (deliveries over the time from the
//! step's first publish to its last marker received) reached the given share of the offered ones.
//! It does not search between two steps: give `--rates` (or a smaller `--factor`) for a finer
//! answer.

use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::CpuMeter;
use super::client::{Publisher, Socket, connect_subscribed, now_micros};
use super::delivery::{self, Received, TICK};
use super::report::{self, Latency};
use crate::cli::{BenchArgs, MaxThroughputArgs};

const CHANNEL: &str = "bench-max-throughput";
const STEP_END: &str = "step-end";

pub async fn run(args: &BenchArgs, options: &MaxThroughputArgs) -> anyhow::Result<()> {
    let rates = steps(options)?;
    let subscribers = options.subscribers;
    let sockets = connect_subscribed(args, subscribers, |_| CHANNEL.to_owned()).await?;
    let (reports, mut incoming) = mpsc::unbounded_channel();
    let receivers: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(receive_steps(ws, reports.clone()))).collect();
    drop(reports);
    eprintln!("  {subscribers} subscribers ready; steps (events/s): {rates:?}, {} s each", options.step_seconds);
    let mut publisher = Publisher::connect(args).await?;
    let padding = "x".repeat(options.payload);
    let mut alive = subscribers;
    let mut results: Vec<Step> = Vec::new();
    for (index, &rate) in rates.iter().enumerate() {
        let step = index as u64;
        let cpu = CpuMeter::start(args)?;
        let start_us = now_micros();
        let total = u64::from(rate) * options.step_seconds;
        let publish_seconds = publisher
            .publish_paced(TICK, f64::from(rate), total, options.batch, |seq| {
                (CHANNEL.to_owned(), json!({"t": now_micros(), "step": step, "seq": seq, "pad": padding}).to_string())
            })
            .await?;
        publisher.publish(CHANNEL, STEP_END, &json!({ "step": step }).to_string()).await?;
        let tally = collect_step(&mut incoming, step, alive, Duration::from_secs(options.drain_seconds)).await;
        let (server_cpu, generator_cpu) = cpu.stop()?;
        let result =
            Step::judge(rate, total, alive, publish_seconds, start_us, tally, server_cpu, generator_cpu, options);
        alive -= result.closed as usize;
        eprintln!("  step {}: {}", index + 1, result.row().join("  "));
        let sustained = result.failures.is_empty();
        results.push(result);
        if !sustained {
            break;
        }
    }
    for receiver in receivers {
        receiver.abort();
    }
    summarize(subscribers, &rates, &results);
    Ok(())
}

/// The rates to try, in order.
fn steps(options: &MaxThroughputArgs) -> anyhow::Result<Vec<u32>> {
    if !options.rates.is_empty() {
        if options.rates.contains(&0) {
            bail!("--rates must all be above 0");
        }
        return Ok(options.rates.clone());
    }
    if options.start_rate == 0 || options.factor <= 1.0 {
        bail!("--start-rate must be above 0 and --factor above 1");
    }
    let mut rates = Vec::new();
    let mut rate = options.start_rate;
    while rate <= options.max_rate && rates.len() < 64 {
        rates.push(rate);
        rate = ((f64::from(rate) * options.factor).ceil() as u32).max(rate + 1);
    }
    Ok(rates)
}

/// What one subscriber received in one step; `end_us` is when the step's marker arrived, or `None`
/// if the connection ended first.
struct StepReport {
    step: u64,
    received: Received,
    end_us: Option<u64>,
}

async fn receive_steps(mut ws: Socket, reports: mpsc::UnboundedSender<StepReport>) {
    let mut step = 0;
    let mut received = Received::default();
    while let Some(message) = ws.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(_) => break,
        };
        let now = now_micros();
        match delivery::parse(text.as_str()) {
            Some((event, data)) if event == TICK => received.record(&data, now),
            Some((event, data)) if event == STEP_END => {
                let finished = data["step"].as_u64().unwrap_or(step);
                let tally = std::mem::take(&mut received);
                let _ = reports.send(StepReport { step: finished, received: tally, end_us: Some(now) });
                step = finished + 1;
            }
            _ => {}
        }
    }
    received.closed = 1;
    let _ = reports.send(StepReport { step, received, end_us: None });
}

/// Every subscriber's tally for one step, and when the last marker arrived.
struct StepTally {
    received: Received,
    reported: usize,
    last_end_us: Option<u64>,
}

async fn collect_step(
    incoming: &mut mpsc::UnboundedReceiver<StepReport>,
    step: u64,
    alive: usize,
    drain: Duration,
) -> StepTally {
    let until = tokio::time::Instant::now() + drain;
    let mut tally = StepTally { received: Received::default(), reported: 0, last_end_us: None };
    while tally.reported < alive {
        let Ok(Some(report)) = tokio::time::timeout_at(until, incoming.recv()).await else { break };
        if report.step != step {
            continue; // a late report from an earlier step cannot happen: that step ended the run
        }
        tally.received.merge(report.received);
        tally.reported += 1;
        tally.last_end_us = tally.last_end_us.max(report.end_us);
    }
    tally
}

/// One step's figures and why it was not sustained (empty when it was).
struct Step {
    rate: u32,
    offered_per_sec: f64,
    achieved_per_sec: f64,
    latency: Latency,
    delivered: u64,
    lost: u64,
    closed: u64,
    server_us: Option<f64>,
    generator_us: Option<f64>,
    generator_cpu: f64,
    failures: Vec<String>,
}

impl Step {
    #[allow(clippy::too_many_arguments)] // one step's measurements, taken in one place
    fn judge(
        rate: u32,
        total: u64,
        subscribers: usize,
        publish_seconds: f64,
        start_us: u64,
        mut tally: StepTally,
        server_cpu: Option<f64>,
        generator_cpu: f64,
        options: &MaxThroughputArgs,
    ) -> Self {
        let received = &mut tally.received;
        let expected = total * subscribers as u64;
        let delivered = received.delivered();
        let lost = expected - delivered.min(expected);
        let latency = Latency::of(&mut received.latencies_us);
        let offered_per_sec = expected as f64 / publish_seconds.max(1e-6);
        let elapsed = tally.last_end_us.map_or(f64::INFINITY, |end| end.saturating_sub(start_us) as f64 / 1e6);
        let achieved_per_sec = delivered as f64 / elapsed.max(1e-6);
        let mut failures = Vec::new();
        let planned = total as f64 / f64::from(rate);
        if publish_seconds > planned * 1.1 + 0.1 {
            failures.push(format!("publisher sent only {:.0}/s", total as f64 / publish_seconds));
        }
        if lost > 0 || tally.reported < subscribers {
            failures.push(format!("{lost} lost, {} subscribers late", subscribers - tally.reported));
        }
        if received.gaps + received.duplicates > 0 {
            failures.push(format!("{} gaps, {} dups", received.gaps, received.duplicates));
        }
        if received.closed > 0 {
            failures.push(format!("{} subscribers closed", received.closed));
        }
        if latency.p99 > options.max_p99_ms {
            failures.push(format!("p99 {:.1} ms > {} ms", latency.p99, options.max_p99_ms));
        }
        if achieved_per_sec < offered_per_sec * options.min_ratio {
            failures.push(format!("achieved {:.0}% of offered", 100.0 * achieved_per_sec / offered_per_sec));
        }
        Self {
            rate,
            offered_per_sec,
            achieved_per_sec,
            latency,
            delivered,
            lost,
            closed: received.closed,
            server_us: report::per_delivery_us(server_cpu, delivered),
            generator_us: report::per_delivery_us(Some(generator_cpu), delivered),
            generator_cpu,
            failures,
        }
    }

    fn row(&self) -> Vec<String> {
        let cpu = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        vec![
            self.rate.to_string(),
            format!("{:.0}", self.offered_per_sec),
            format!("{:.0}", self.achieved_per_sec),
            format!("{:.2}", self.latency.p50),
            format!("{:.2}", self.latency.p99),
            self.lost.to_string(),
            cpu(self.server_us),
            cpu(self.generator_us),
            if self.failures.is_empty() { "sustained".to_owned() } else { self.failures.join("; ") },
        ]
    }

    fn json(&self) -> Value {
        json!({"rate": self.rate, "offered_per_sec": self.offered_per_sec, "deliveries_per_sec": self.achieved_per_sec,
               "delivered": self.delivered, "lost": self.lost, "closed": self.closed, "p50_ms": self.latency.p50,
               "p90_ms": self.latency.p90, "p99_ms": self.latency.p99, "p999_ms": self.latency.p999,
               "max_ms": self.latency.max, "server_cpu_us_per_delivery": self.server_us,
               "generator_cpu_seconds": self.generator_cpu, "generator_cpu_us_per_delivery": self.generator_us,
               "sustained": self.failures.is_empty(), "failures": self.failures})
    }
}

fn summarize(subscribers: usize, rates: &[u32], results: &[Step]) {
    println!("\nmax-throughput steps ({subscribers} subscribers)");
    report::table(
        &["events/s", "offered/s", "achieved/s", "p50 ms", "p99 ms", "lost", "server µs", "generator µs", "verdict"],
        &results.iter().map(Step::row).collect::<Vec<_>>(),
    );
    let best = results.iter().rev().find(|s| s.failures.is_empty());
    let stopped_by = match results.last() {
        Some(last) if !last.failures.is_empty() => format!("{}/s: {}", last.rate, last.failures.join("; ")),
        _ => format!("every step sustained (up to {}/s); raise --max-rate", rates.last().copied().unwrap_or(0)),
    };
    let figure = |f: fn(&Step) -> String| best.map_or_else(|| "none sustained".to_owned(), f);
    report::print(
        "max-throughput",
        &[
            ("subscribers", subscribers.to_string()),
            ("last sustained rate", figure(|s| format!("{} events/s", s.rate))),
            ("sustained deliveries/s", figure(|s| format!("{:.0}", s.achieved_per_sec))),
            ("latency p50/p99 there", figure(|s| format!("{:.2} / {:.2} ms", s.latency.p50, s.latency.p99))),
            ("server CPU per delivery there", figure(|s| report::micros(s.server_us, "(give --server-pid)"))),
            ("generator CPU per delivery there", figure(|s| report::micros(s.generator_us, "-"))),
            ("stopped by", stopped_by.clone()),
        ],
        json!({"scenario": "max-throughput", "subscribers": subscribers,
               "sustained_rate": best.map(|s| s.rate),
               "sustained_deliveries_per_sec": best.map(|s| s.achieved_per_sec),
               "p50_ms": best.map(|s| s.latency.p50), "p99_ms": best.map(|s| s.latency.p99),
               "server_cpu_us_per_delivery": best.and_then(|s| s.server_us),
               "generator_cpu_us_per_delivery": best.and_then(|s| s.generator_us),
               "stopped_by": stopped_by, "steps": results.iter().map(Step::json).collect::<Vec<_>>()}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> MaxThroughputArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["herald", "bench", "max-throughput"].iter().chain(args)).unwrap();
        let crate::cli::Command::Bench(bench) = cli.command else { panic!("not bench") };
        let crate::cli::BenchScenario::MaxThroughput(options) = bench.scenario else { panic!("not max-throughput") };
        options
    }

    #[test]
    fn steps_double_up_to_the_maximum_or_follow_the_list() {
        let check = |args: &[&str], expected: &[u32]| assert_eq!(steps(&options(args)).unwrap(), expected);
        check(&["--start-rate", "25", "--max-rate", "200"], &[25, 50, 100, 200]);
        check(&["--start-rate", "10", "--factor", "1.5", "--max-rate", "40"], &[10, 15, 23, 35]);
        check(&["--rates", "5,7,9"], &[5, 7, 9]);
        assert!(steps(&options(&["--factor", "1"])).is_err());
    }
}
