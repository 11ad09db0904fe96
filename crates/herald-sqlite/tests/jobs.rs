//! The job store contract on SQLite, and durability across a reopen.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;

use herald_core::jobs::conformance;
use herald_core::jobs::{JobState, JobStore};
use herald_sqlite::SqliteJobs;

fn temp_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-jobs-{:x}.sqlite3", rand::random::<u64>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_job_store_contract_holds_on_sqlite() {
    let path = temp_path();
    let store: Arc<dyn JobStore> = Arc::new(SqliteJobs::open(&path).unwrap());
    conformance::run_all(store).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn submitted_jobs_are_on_disk_before_submit_returns() {
    let path = temp_path();
    let store = SqliteJobs::open(&path).unwrap();
    let job = herald_core::jobs::NewJob {
        id: "j1".into(),
        queue: "work".into(),
        payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        priority: 0,
        run_at: 0,
        user_id: None,
        idempotency_key: None,
        max_attempts: 1,
        backoff_ms: 0,
        max_length: 10,
        now: 0,
    };
    store.submit("app", job).await.unwrap();
    // Another connection (as after a crash and restart) sees it at once.
    let reopened = SqliteJobs::open(&path).unwrap();
    let found = reopened.get("app", "j1").await.unwrap().unwrap();
    assert_eq!(found.state, JobState::Queued);
    drop((store, reopened));
    let _ = std::fs::remove_file(&path);
}
