//! `bench jobs`: jobs per second through submit → claim → finish over the signed HTTP API.
//!
//! Submitters and workers run at once: `workers` tasks claim (without waiting) and finish while
//! the same number of submitters push `jobs` jobs into the queue. The figure is jobs finished per
//! second of wall time, from the first submit to the last finish. Each request is its own HTTP/1.1
//! connection, as a simple worker in any language would make it, so the figure includes connection
//! setup. The queue must exist on the server (`[[apps.queues]]`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{cpu_seconds, report};
use crate::api_client::ApiClient;
use crate::cli::BenchArgs;

pub async fn run(args: &BenchArgs, jobs: usize, workers: usize, queue: &str) -> anyhow::Result<()> {
    let client = Arc::new(ApiClient::new(&format!("http://{}", args.target), &args.app_id, &args.key, &args.secret)?);
    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (submitter, next, name) = (client.clone(), next.clone(), queue.to_owned());
        tasks.push(tokio::spawn(async move { submit_until_done(&submitter, &next, jobs, &name).await }));
        let (worker, finished, name) = (client.clone(), finished.clone(), queue.to_owned());
        tasks.push(tokio::spawn(async move { work_until_done(&worker, &finished, jobs, &name).await }));
    }
    for task in tasks {
        task.await.context("bench task panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let rate = jobs as f64 / elapsed;
    let mut rows = vec![
        ("jobs", jobs.to_string()),
        ("workers", workers.to_string()),
        ("wall time", format!("{elapsed:.2} s")),
        ("jobs/s (submit → claim → finish)", format!("{rate:.0}")),
    ];
    if let Some(cpu) = server_cpu {
        rows.push(("server CPU per job", format!("{:.0} µs", cpu * 1e6 / jobs as f64)));
    }
    let json = json!({
        "scenario": "jobs", "jobs": jobs, "workers": workers, "seconds": elapsed,
        "jobs_per_second": rate, "server_cpu_seconds": server_cpu,
    });
    report::print("bench jobs", &rows, json);
    Ok(())
}

async fn submit_until_done(client: &ApiClient, next: &AtomicUsize, jobs: usize, queue: &str) -> anyhow::Result<()> {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs {
            return Ok(());
        }
        let body = json!({ "payload": { "n": i } }).to_string();
        let (status, answer) = client.request("POST", &format!("/queues/{queue}/jobs"), &[], &body).await?;
        if status != 201 {
            bail!("submit answered {status}: {answer}");
        }
    }
}

async fn work_until_done(client: &ApiClient, finished: &AtomicUsize, jobs: usize, queue: &str) -> anyhow::Result<()> {
    while finished.load(Ordering::Relaxed) < jobs {
        let (status, answer) = client.request("POST", &format!("/queues/{queue}/claim"), &[], "{}").await?;
        match status {
            204 => tokio::task::yield_now().await,
            200 => {
                let job: Value = serde_json::from_str(&answer)?;
                let id = job["job"]["id"].as_str().context("claim without a job id")?;
                let body = json!({ "lease": job["job"]["lease"], "result": { "ok": true } }).to_string();
                let (status, answer) = client.request("POST", &format!("/jobs/{id}/finish"), &[], &body).await?;
                if status != 200 {
                    bail!("finish answered {status}: {answer}");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
            other => bail!("claim answered {other}: {answer}"),
        }
    }
    Ok(())
}
