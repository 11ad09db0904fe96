//! `herald bench`: a Pusher-protocol load generator for Herald or any Pusher-compatible server.
//!
//! Scenarios: `idle` (many subscribed connections; server memory per connection), `fanout` (many
//! subscribers on one channel, a publisher at a fixed rate over the signed HTTP API; latency from
//! timestamps in the payload, loss), `max-throughput` (the same, stepping the rate up until the
//! subscribers stop keeping up), `many-channels` (one channel per connection, events to random
//! channels) and `jobs` (jobs per second through the job routes). Connections are spread over
//! several loopback source addresses so that one run can exceed the ephemeral-port range. It
//! prints a table and one JSON line, so runs can be compared by script.
//!
//! It only talks to loopback addresses (a target elsewhere is refused before anything is sent),
//! and every scenario ends by itself: fixed durations, bounded step lists, and deadlines on
//! connecting and draining.

mod client;
mod delivery;
mod fanout;
mod idle;
mod jobs;
mod many_channels;
mod max_throughput;
mod report;

use std::net::ToSocketAddrs;

use anyhow::{Context, bail};

use crate::cli::{BenchArgs, BenchScenario};

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    require_loopback(&args.target)?;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match &args.scenario {
            BenchScenario::Idle { connections, hold_secs } => idle::run(&args, *connections, *hold_secs).await,
            BenchScenario::Fanout { subscribers, rate, seconds, payload } => {
                fanout::run(&args, *subscribers, *rate, *seconds, *payload).await
            }
            BenchScenario::MaxThroughput(options) => max_throughput::run(&args, options).await,
            BenchScenario::ManyChannels(options) => many_channels::run(&args, options).await,
            BenchScenario::Jobs { jobs, workers, queue } => jobs::run(&args, *jobs, *workers, queue).await,
        }
    })
}

/// Server memory from `/proc/<pid>/status` (VmRSS), in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("server pid not readable")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?;
    Ok(kib * 1024)
}

/// Server CPU time (user + system) from `/proc/<pid>/stat`, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("server pid not readable")?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("bad stat")?.parse::<f64>()? + fields.get(12).context("bad stat")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Refuses a target that is not on this machine's loopback: the bench is a load generator and never
/// sends traffic anywhere else.
fn require_loopback(target: &str) -> anyhow::Result<()> {
    let addresses: Vec<_> = target.to_socket_addrs().context("--target must be HOST:PORT")?.collect();
    if addresses.is_empty() || addresses.iter().any(|a| !a.ip().is_loopback()) {
        bail!("--target {target} is not a loopback address; herald bench only loads servers on this machine");
    }
    Ok(())
}

/// CPU seconds used by the server (with `--server-pid`) and by this process, between `start` and
/// `stop`.
pub(crate) struct CpuMeter {
    server: Option<(u32, f64)>,
    generator: f64,
}

impl CpuMeter {
    pub fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        let server = args.server_pid.map(|pid| cpu_seconds(pid).map(|cpu| (pid, cpu))).transpose()?;
        Ok(Self { server, generator: cpu_seconds(std::process::id())? })
    }

    /// `(server seconds, generator seconds)` since `start`.
    pub fn stop(&self) -> anyhow::Result<(Option<f64>, f64)> {
        let server = self.server.map(|(pid, before)| cpu_seconds(pid).map(|now| now - before)).transpose()?;
        Ok((server, cpu_seconds(std::process::id())? - self.generator))
    }
}

/// Raises the soft open-files limit to the hard limit (20,000 on the CI machines).
fn raise_fd_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open-files limit: {error}");
    }
}
