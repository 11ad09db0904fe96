//! `herald bench`: a Pusher-protocol load generator for Herald or any Pusher-compatible server.
//!
//! Scenarios: `idle` (many subscribed connections; server memory per connection) and `fanout`
//! (many subscribers on one channel, a publisher at a fixed rate over the signed HTTP API;
//! latency from timestamps in the payload, loss) and `jobs` (jobs per second through the job routes). Connections are spread over several loopback
//! source addresses so that one run can exceed the ephemeral-port range. It prints a table and one
//! JSON line, so runs can be compared by script.

mod client;
mod fanout;
mod idle;
mod jobs;
mod report;

use anyhow::Context;

use crate::cli::{BenchArgs, BenchScenario};

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match &args.scenario {
            BenchScenario::Idle { connections } => idle::run(&args, *connections).await,
            BenchScenario::Fanout { subscribers, rate, seconds, payload } => {
                fanout::run(&args, *subscribers, *rate, *seconds, *payload).await
            }
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

/// Raises the soft open-files limit to the hard limit (20,000 on the CI machines).
fn raise_fd_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open-files limit: {error}");
    }
}
