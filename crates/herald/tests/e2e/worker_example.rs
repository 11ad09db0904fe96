//! The example job worker (`crates/herald/examples/job_worker.rs`) against the real binary: it
//! finishes jobs with the right results, fails a payload it cannot use for good, drops a job whose
//! lease went stale under it, and stops at once on Ctrl-C while it waits.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::support::{APP_ID, KEY, SECRET, TestServer};

/// Longest one worker run may take; the jobs here need a few seconds at most.
const WORKER_TIMEOUT: Duration = Duration::from_secs(60);

fn config() -> String {
    // Only the field is required, so that a payload of the wrong shape reaches the worker.
    format!(
        "[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         [[apps.queues]]\nname = \"reports\"\nlease_secs = 30\nretry_backoff_secs = 1\n\
         schema = '{{\"type\":\"object\",\"required\":[\"numbers\"]}}'\n"
    )
}

/// The example's binary, next to the `herald` binary these tests run. `--test e2e` does not build
/// examples, so it is built here once (a no-op when it is fresh); `HERALD_JOB_WORKER` names a
/// prebuilt one instead.
async fn job_worker() -> &'static Path {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if let Some(path) = std::env::var_os("HERALD_JOB_WORKER") {
                return PathBuf::from(path);
            }
            let profile_dir = Path::new(env!("CARGO_BIN_EXE_herald")).parent().unwrap();
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev",
                Some(name) => name,
                None => panic!("no profile directory in {}", profile_dir.display()),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let build = Command::new(cargo)
                .args(["build", "--quiet", "-p", "herald", "--example", "job_worker", "--profile", profile])
                .kill_on_drop(true)
                .status();
            let status = tokio::time::timeout(Duration::from_secs(600), build)
                .await
                .expect("building the job_worker example took over 10 minutes")
                .expect("run cargo");
            assert!(status.success(), "cargo build --example job_worker failed");
            let path = profile_dir.join("examples").join(format!("job_worker{}", std::env::consts::EXE_SUFFIX));
            assert!(path.exists(), "built, but not at {} (set HERALD_JOB_WORKER)", path.display());
            path
        })
        .await
}

/// The worker, pointed at `server` with the test app's credentials, plus `args`.
async fn worker(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(job_worker().await);
    command
        .args(["--url", &format!("http://{}", server.addr), "--app-id", APP_ID, "--key", KEY, "--secret", SECRET])
        .args(["--queue", "reports"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the worker to its end; fails the test if it takes over [`WORKER_TIMEOUT`].
async fn run_worker(server: &TestServer, args: &[&str]) -> Output {
    let output = worker(server, args).await.output();
    tokio::time::timeout(WORKER_TIMEOUT, output).await.expect("the worker did not finish in time").unwrap()
}

async fn api(server: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = if method == "GET" { String::new() } else { body.to_string() };
    let (status, answer) = server.api(method, &format!("/apps/{APP_ID}{path}"), &[], &text).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
}

async fn submit(server: &TestServer, payload: Value) -> String {
    let (status, body) = api(server, "POST", "/queues/reports/jobs", json!({ "payload": payload })).await;
    assert_eq!(status, 201, "{body}");
    body["job"]["id"].as_str().unwrap().to_owned()
}

async fn job(server: &TestServer, id: &str) -> Value {
    let (status, body) = api(server, "GET", &format!("/jobs/{id}"), Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body["job"].clone()
}

fn log_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_example_worker_finishes_each_job_with_its_sum_after_two_progress_reports() {
    let server = TestServer::with_config(&config()).await;
    let cases = [
        (json!([1, 2, 3]), json!(6)),
        (json!([10, 20, 30, 40]), json!(100)),
        (json!([]), json!(0)),
        (json!([7]), json!(7)),
        (json!([-5, 2.5, 100]), json!(97.5)),
    ];
    let mut ids = Vec::new();
    for (numbers, _) in &cases {
        ids.push(submit(&server, json!({ "numbers": numbers })).await);
    }
    let output = run_worker(&server, &["--max-jobs", "5", "--step-secs", "0"]).await;
    assert!(output.status.success(), "worker: {}\n{}", output.status, log_of(&output));
    for (id, (numbers, sum)) in ids.iter().zip(&cases) {
        let count = numbers.as_array().unwrap().len();
        let job = job(&server, id).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", log_of(&output));
        assert_eq!(job["result"], json!({ "sum": sum, "count": count }), "{job}");
        assert_eq!(job["progress"], json!({ "done": count, "total": count }), "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["version"], 5, "submit, claim, two progress reports, finish: {job}");
    }
    let (_, queue) = api(&server, "GET", "/queues/reports", Value::Null).await;
    assert_eq!(
        (&queue["counts"]["succeeded"], &queue["counts"]["queued"], &queue["counts"]["running"]),
        (&json!(5), &json!(0), &json!(0)),
        "{queue}"
    );
}

#[tokio::test]
async fn the_example_worker_fails_a_payload_it_cannot_use_for_good() {
    let server = TestServer::with_config(&config()).await;
    let id = submit(&server, json!({ "numbers": "one, two" })).await;
    let output = run_worker(&server, &["--max-jobs", "1", "--step-secs", "0"]).await;
    assert!(output.status.success(), "worker: {}\n{}", output.status, log_of(&output));
    let job = job(&server, &id).await;
    assert_eq!((&job["state"], &job["attempts"]), (&json!("failed"), &json!(1)), "not retried: {job}");
    assert!(job["error"].as_str().unwrap_or_default().contains("numbers"), "{job}");
}

#[tokio::test]
async fn the_example_worker_drops_a_job_whose_lease_went_stale_and_carries_on() {
    let server = TestServer::with_config(&config()).await;
    let cancelled = submit(&server, json!({ "numbers": [1, 2] })).await;
    let mut child =
        worker(&server, &["--max-jobs", "2", "--step-secs", "1"]).await.stderr(Stdio::piped()).spawn().unwrap();
    // The worker is in its first second of work on the job: cancel it under the worker, whose
    // next report then gets 409.
    tokio::time::timeout(Duration::from_secs(10), async {
        while job(&server, &cancelled).await["state"] != "running" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker did not claim the job");
    let (status, body) = api(&server, "POST", &format!("/jobs/{cancelled}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let next = submit(&server, json!({ "numbers": [3, 4] })).await;

    let mut log = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(WORKER_TIMEOUT, async {
        stderr.read_to_string(&mut log).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("the worker did not finish in time");
    assert!(status.success(), "worker: {status}\n{log}");
    assert!(log.contains("lease lost"), "{log}");
    let dropped = job(&server, &cancelled).await;
    assert_eq!((&dropped["state"], &dropped["result"]), (&json!("cancelled"), &Value::Null), "{dropped}");
    let done = job(&server, &next).await;
    assert_eq!((&done["state"], &done["result"]), (&json!("succeeded"), &json!({"sum": 7, "count": 2})), "{done}");
}

#[tokio::test]
async fn ctrl_c_stops_a_waiting_example_worker_at_once() {
    let server = TestServer::with_config(&config()).await;
    let mut child = worker(&server, &[]).await.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap();
    assert!(first.as_deref().unwrap_or_default().contains("claiming from queue"), "{first:?}");
    tokio::time::sleep(Duration::from_millis(300)).await; // inside the claim's long-poll now
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .expect("the worker did not stop within 3 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
}
