//! A Herald job worker in Rust: claim a job, report progress, finish it with a result.
//!
//! It shows the whole worker side of Herald's durable jobs with nothing but tokio, a few lines of
//! HTTP/1.1 and `herald-protocol`'s request signer, so it can be read as a recipe for a worker in
//! any language (`examples/worker-python` is the same worker in Python). The "work" is a
//! stand-in: it sums `payload.numbers` in two halves, reporting progress after each, and finishes
//! with `{"sum": .., "count": ..}`.
//!
//! Run a server whose app has a queue (see `examples/worker-python/README.md` for the TOML), then:
//!
//! ```text
//! cargo run --example job_worker -- --queue reports
//! herald jobs submit --queue reports --payload '{"numbers":[1,2,3]}' --user ann
//! ```
//!
//! Flags (and environment variables): `--url` (`HERALD_URL`, default `http://127.0.0.1:6001`),
//! `--app-id`, `--key`, `--secret` (`HERALD_APP_ID`, `HERALD_APP_KEY`, `HERALD_APP_SECRET`,
//! defaulting to the development app), `--queue` (`HERALD_QUEUE`, default `reports`),
//! `--max-jobs N` (exit after N jobs) and `--step-secs S` (how long each half of the work takes).
//!
//! What it handles: a 204 from a claim (nothing within the wait) claims again; a 409 on a report
//! means the lease is stale (the job went back to the queue, or was cancelled) and the job is
//! dropped; network errors, 429 and 5xx are retried with exponential backoff, a report only while
//! its lease lasts; a payload the work cannot use is failed for good (`retry: false`). Ctrl-C or
//! SIGTERM stops it at once while it waits for a job, and after the current job otherwise; a second
//! one quits at once. A claim refused with another 4xx (bad credentials, unknown queue) is a
//! configuration error: it exits with status 2.

use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use herald_protocol::Secret;
use herald_protocol::request_signature::sign;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long one claim waits for a job (the server caps it at 25 s).
const CLAIM_WAIT_SECS: u64 = 20;
/// How long a report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A Herald job worker (plain signed HTTP).
#[derive(Debug, Parser)]
struct Args {
    /// Herald's base URL (http only).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:6001")]
    url: String,
    #[arg(long, env = "HERALD_APP_ID", default_value = "1")]
    app_id: String,
    #[arg(long, env = "HERALD_APP_KEY", default_value = "herald-dev-key")]
    key: String,
    #[arg(long, env = "HERALD_APP_SECRET", default_value = "herald-dev-secret", hide_default_value = true)]
    secret: String,
    /// The queue to work on.
    #[arg(long, env = "HERALD_QUEUE", default_value = "reports")]
    queue: String,
    /// Exit after this many jobs (finished, failed or dropped); default: run until stopped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_jobs: Option<u64>,
    /// Seconds each half of the stand-in work takes.
    #[arg(long, value_name = "S", default_value = "0.5", value_parser = parse_secs)]
    step_secs: Duration,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log(format_args!("error: {error:#}"));
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let api = Api::new(&args)?;
    let mut signals = StopSignals::listen().context("cannot listen for Ctrl-C")?;
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        signals.next().await;
        log(format_args!("stopping (a job in progress is finished first; again to quit now)"));
        let _ = stop_tx.send(true);
        signals.next().await;
        log(format_args!("quitting now; the job comes back to the queue when its lease runs out"));
        std::process::exit(130);
    });

    log(format_args!("claiming from queue {:?} at {} (app {})", args.queue, api.host, api.app_id));
    let claim_path = format!("/queues/{}/claim", args.queue);
    let claim_body = json!({ "wait_secs": CLAIM_WAIT_SECS });
    let claim_timeout = Duration::from_secs(CLAIM_WAIT_SECS + 10);
    let mut backoff = Backoff::default();
    let mut handled = 0;
    while !*stop.borrow() && args.max_jobs.is_none_or(|max| handled < max) {
        let answer = tokio::select! {
            answer = api.call("POST", &claim_path, Some(&claim_body), claim_timeout) => answer,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match answer {
            Ok(Some(answer)) => {
                backoff.reset();
                match Job::from_claim(&answer) {
                    Some(job) => {
                        handle(&api, job, args.step_secs).await;
                        handled += 1;
                    }
                    None => log(format_args!("a claim answered something that is not a job: {answer}")),
                }
            }
            Ok(None) => backoff.reset(), // 204: nothing arrived within the wait
            Err(ApiError::Refused(status, text)) => {
                bail!("claim refused with HTTP {status} ({text}); check the URL, app id, key, secret and queue")
            }
            Err(error) => {
                let pause = backoff.next_pause();
                log(format_args!("claim failed ({error}); retrying in {pause:.1?}"));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        }
    }
    log(format_args!("stopping after {handled} job(s)"));
    Ok(())
}

/// Works on one claimed job and reports how it ended. Nothing here stops the worker: a job that
/// cannot be reported on is dropped (if it is still this worker's, the queue hands it out again
/// when the lease runs out).
async fn handle(api: &Api, mut job: Job, step: Duration) {
    log(format_args!("job {}: claimed (attempt {}), payload {}", job.id, job.attempts, job.payload));
    let ended = match work(api, &mut job, step).await {
        Ok(result) => {
            let text = result.to_string();
            job.report(api, "finish", json!({ "lease": job.lease, "result": result }))
                .await
                .map(|()| format!("finished with {text}"))
        }
        Err(WorkError::BadPayload(why)) => job
            .report(api, "fail", json!({ "lease": job.lease, "error": why, "retry": false }))
            .await
            .map(|()| format!("failed for good: {why}")),
        Err(WorkError::Api(error)) => Err(error),
    };
    match ended {
        Ok(what) => log(format_args!("job {}: {what}", job.id)),
        Err(ApiError::StaleLease(why)) => log(format_args!(
            "job {}: lease lost, dropping the job (another worker has it, or it was cancelled): {why}",
            job.id
        )),
        Err(error) => log(format_args!("job {}: report failed, dropping the job: {error}", job.id)),
    }
}

/// Why the work stopped short of a result.
enum WorkError {
    /// Retrying will not help: fail the job for good.
    BadPayload(String),
    /// A progress or extend report failed.
    Api(ApiError),
}

impl From<ApiError> for WorkError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

/// The stand-in for real work: sums `payload.numbers` in two halves, reporting progress after each.
async fn work(api: &Api, job: &mut Job, step: Duration) -> Result<Value, WorkError> {
    let numbers = job
        .payload
        .get("numbers")
        .and_then(Value::as_array)
        .filter(|numbers| numbers.iter().all(Value::is_number))
        .cloned()
        .ok_or_else(|| WorkError::BadPayload(r#"the payload must be {"numbers": [<number>, ...]}"#.to_owned()))?;
    let total = numbers.len();
    for done in [total / 2, total] {
        job.keep_alive(api, step).await?;
        tokio::time::sleep(step).await; // pretend this is slow
        job.report(api, "progress", json!({ "lease": job.lease, "progress": { "done": done, "total": total } }))
            .await?;
    }
    Ok(json!({ "sum": sum(&numbers), "count": total }))
}

/// Integers sum as integers (`[1, 2, 3]` gives `6`, not `6.0`); anything else as floats.
fn sum(numbers: &[Value]) -> Value {
    match numbers.iter().try_fold(0_i64, |total, n| total.checked_add(n.as_i64()?)) {
        Some(total) => json!(total),
        None => json!(numbers.iter().filter_map(Value::as_f64).sum::<f64>()),
    }
}

/// A claimed job: what to work on, and the lease every report quotes.
struct Job {
    id: String,
    payload: Value,
    attempts: u64,
    lease: String,
    lease_until_ms: u64,
}

impl Job {
    /// The job in a claim's answer, `{"job": {...}}`; `None` if it lacks an id or a lease.
    fn from_claim(answer: &Value) -> Option<Self> {
        let job = answer.get("job")?;
        Some(Self {
            id: job.get("id")?.as_str()?.to_owned(),
            payload: job.get("payload").cloned().unwrap_or(Value::Null),
            attempts: job["attempts"].as_u64().unwrap_or(1),
            lease: job.get("lease")?.as_str()?.to_owned(),
            lease_until_ms: job["lease_until"].as_u64().unwrap_or(0),
        })
    }

    fn lease_left(&self) -> Duration {
        Duration::from_millis(self.lease_until_ms.saturating_sub(unix_ms()))
    }

    /// Extends the lease if it would run out within `needed` (plus a margin).
    async fn keep_alive(&mut self, api: &Api, needed: Duration) -> Result<(), ApiError> {
        if self.lease_left() < needed + Duration::from_secs(5) {
            self.report(api, "extend", json!({ "lease": self.lease })).await?;
        }
        Ok(())
    }

    /// POSTs `/jobs/{id}/{action}`, retrying network errors, 429 and 5xx while the lease lasts.
    /// (A retried finish whose first try did land is answered 409: the job is no longer running.)
    async fn report(&mut self, api: &Api, action: &str, body: Value) -> Result<(), ApiError> {
        let path = format!("/jobs/{}/{action}", self.id);
        let mut backoff = Backoff::default();
        loop {
            match api.call("POST", &path, Some(&body), REPORT_TIMEOUT).await {
                Ok(answer) => {
                    if let Some(until) = answer.as_ref().and_then(|a| a["job"]["lease_until"].as_u64()) {
                        self.lease_until_ms = until;
                    }
                    return Ok(());
                }
                Err(ApiError::Transient(why)) => {
                    let pause = backoff.next_pause();
                    if pause >= self.lease_left() {
                        return Err(ApiError::StaleLease(format!(
                            "{action} kept failing until the lease ran out: {why}"
                        )));
                    }
                    log(format_args!("job {}: {action} failed ({why}); retrying in {pause:.1?}", self.id));
                    tokio::time::sleep(pause).await;
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// How a request went wrong.
#[derive(Debug)]
enum ApiError {
    /// A network error, a timeout, 429 or 5xx: worth retrying after a pause.
    Transient(String),
    /// 409: the lease is stale (the job went back to the queue and another worker has it, or it
    /// was cancelled). The newer attempt owns the job.
    StaleLease(String),
    /// Any other 4xx: retrying will not change the answer.
    Refused(u16, String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transient(why) => write!(f, "{why}"),
            Self::StaleLease(why) => write!(f, "stale lease: {why}"),
            Self::Refused(status, text) => write!(f, "HTTP {status}: {text}"),
        }
    }
}

/// Signed requests to one app's HTTP API, over plain HTTP/1.1 (one connection per request).
struct Api {
    host: String,
    app_id: String,
    key: String,
    secret: Secret,
}

impl Api {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let host = args.url.strip_prefix("http://").context("--url must start with http://")?.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            bail!("--url must be http://HOST:PORT, without a path");
        }
        Ok(Self {
            host: host.to_owned(),
            app_id: args.app_id.clone(),
            key: args.key.clone(),
            secret: Secret::new(&args.secret),
        })
    }

    /// Sends a signed request to `/apps/{id}{path}`; the answer's JSON (`None` for 204 or an empty
    /// body), or how it failed.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, ApiError> {
        let path = format!("/apps/{}{path}", self.app_id);
        let body = body.map(Value::to_string).unwrap_or_default();
        let query = sign(method, &path, &[], body.as_bytes(), &self.key, &self.secret, unix_ms() / 1000);
        let request = format!(
            "{method} {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let response = tokio::time::timeout(timeout, self.exchange(&request))
            .await
            .map_err(|_| ApiError::Transient(format!("no answer within {timeout:?}")))?
            .map_err(|e| ApiError::Transient(format!("{}: {e}", self.host)))?;
        let (status, text) =
            parse_response(&response).ok_or_else(|| ApiError::Transient("not an HTTP response".to_owned()))?;
        match status {
            409 => Err(ApiError::StaleLease(text)),
            429 | 500.. => Err(ApiError::Transient(format!("HTTP {status}: {text}"))),
            400.. => Err(ApiError::Refused(status, text)),
            _ if text.is_empty() => Ok(None),
            _ => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ApiError::Transient(format!("HTTP {status} with a body that is not JSON ({e})"))),
        }
    }

    async fn exchange(&self, request: &str) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(&self.host).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok(response)
    }
}

/// The status and body of a whole HTTP/1.1 response (chunked or not); `None` if it is not one.
fn parse_response(response: &[u8]) -> Option<(u16, String)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(response.get(..split)?).ok()?;
    let body = response.get(split + 4..)?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Some((status, String::from_utf8_lossy(&body).trim_end().to_owned()))
}

/// Undoes chunked transfer encoding; `None` if the body is cut short or malformed.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(rest.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        let data = rest.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        rest = data.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// Exponential backoff, 0.5 s doubling up to [`MAX_BACKOFF`], with jitter so that workers that
/// lost the server together do not all come back at the same instant.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_pause(&mut self) -> Duration {
        let base = Duration::from_millis(500).saturating_mul(1 << self.failures.min(10)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        // Jitter in [50 %, 100 %) of the base, from the clock's nanoseconds: good enough here.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Ctrl-C and (on Unix) SIGTERM, heard from the moment [`StopSignals::listen`] returns.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next one.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn log(message: fmt::Arguments<'_>) {
    eprintln!("[job_worker {}] {message}", std::process::id());
}
