//! The job store contract as executable checks; every store's tests run [`run_all`].
//!
//! Time is passed in (`now`), so leases and backoffs are checked without waiting. Each check uses
//! its own app id, so checks can share one store.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Job, JobError, JobState, JobStore, NewJob, Outcome, QueueCounts};

const T0: u64 = 1_700_000_000_000;

fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).expect("test JSON")
}

fn new_job(id: &str, now: u64) -> NewJob {
    NewJob {
        id: id.to_owned(),
        queue: "work".into(),
        payload: json(r#"{"n":1}"#),
        priority: 0,
        run_at: now,
        user_id: Some("u1".into()),
        idempotency_key: None,
        max_attempts: 2,
        backoff_ms: 1000,
        max_length: 1000,
        now,
    }
}

async fn submit(store: &dyn JobStore, app: &str, job: NewJob) -> Job {
    store.submit(app, job).await.expect("submit").0
}

async fn claim(store: &dyn JobStore, app: &str, now: u64) -> Option<Job> {
    store.claim(app, "work", 10_000, now).await.expect("claim")
}

/// Submit, claim, progress, finish; and only the lease holder may report.
pub async fn a_job_runs_from_submit_to_success(store: &dyn JobStore) {
    let app = "lifecycle";
    let job = submit(store, app, new_job("j1", T0)).await;
    assert_eq!((job.state, job.attempts, job.user_id.as_deref()), (JobState::Queued, 0, Some("u1")));
    let claimed = claim(store, app, T0).await.expect("a ready job");
    assert_eq!((claimed.id.as_str(), claimed.state, claimed.attempts), ("j1", JobState::Running, 1));
    let lease = claimed.lease.clone().expect("a lease");
    assert_eq!(claimed.lease_until, Some(T0 + 10_000));
    assert!(claim(store, app, T0).await.is_none(), "a running job is not handed out twice");
    let wrong = store.progress(app, "j1", "not-the-lease", json("1"), T0).await;
    assert_eq!(wrong.err(), Some(JobError::LeaseMismatch));
    let progressed = store.progress(app, "j1", &lease, json(r#"{"pct":50}"#), T0 + 1).await.expect("progress");
    assert_eq!(progressed.progress.as_ref().map(|p| p.get()), Some(r#"{"pct":50}"#));
    let extended = store.extend(app, "j1", &lease, 60_000, T0 + 2).await.expect("extend");
    assert_eq!(extended.lease_until, Some(T0 + 2 + 60_000));
    let done = store.finish(app, "j1", &lease, Outcome::Succeeded { result: json(r#"{"ok":true}"#) }, T0 + 3);
    let done = done.await.expect("finish");
    assert_eq!((done.state, done.result.as_ref().map(|r| r.get())), (JobState::Succeeded, Some(r#"{"ok":true}"#)));
    let versions = [job.version, claimed.version, progressed.version, extended.version, done.version];
    assert_eq!(versions, [1, 2, 3, 4, 5], "every change bumps the version");
    let again = store.finish(app, "j1", &lease, Outcome::Succeeded { result: json("1") }, T0 + 4).await;
    assert_eq!(again.err(), Some(JobError::LeaseMismatch), "a finished job cannot be finished again");
    let fetched = store.get(app, "j1").await.expect("get").expect("kept");
    assert_eq!(fetched.state, JobState::Succeeded);
    assert!(store.get(app, "nope").await.expect("get").is_none());
}

/// A lease that runs out puts the job back; out of attempts it is dead; a stale worker is refused.
pub async fn expired_leases_requeue_then_kill(store: &dyn JobStore) {
    let app = "leases";
    submit(store, app, new_job("j1", T0)).await;
    let first = claim(store, app, T0).await.expect("claim");
    let stale_lease = first.lease.clone().expect("lease");
    store.progress(app, "j1", &stale_lease, json(r#"{"pct":25}"#), T0 + 1).await.expect("progress");
    let expired = store.expire(T0 + 5_000).await.expect("expire");
    assert!(expired.iter().all(|(a, _)| a != app), "a live lease is kept");
    let expired = store.expire(T0 + 10_001).await.expect("expire");
    let mine: Vec<&Job> = expired.iter().filter(|(a, _)| a == app).map(|(_, j)| j).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].state, mine[0].attempts), (JobState::Queued, 1));
    assert!(mine[0].progress.is_none(), "a lost attempt's progress is not the next one's");
    let second = claim(store, app, T0 + 10_002).await.expect("claimed again");
    assert_eq!(second.attempts, 2);
    let stale = store.finish(app, "j1", &stale_lease, Outcome::Succeeded { result: json("1") }, T0 + 10_003).await;
    assert_eq!(stale.err(), Some(JobError::LeaseMismatch), "the first worker lost its lease");
    let expired = store.expire(T0 + 30_000).await.expect("expire");
    let dead = expired.iter().find(|(a, _)| a == app).map(|(_, j)| j.state);
    assert_eq!(dead, Some(JobState::Dead), "out of attempts");
    assert!(claim(store, app, T0 + 30_001).await.is_none());
    let requeued = store.requeue(app, "j1", T0 + 30_002).await.expect("requeue");
    assert_eq!((requeued.state, requeued.attempts), (JobState::Queued, 0));
}

/// A retried failure waits for its backoff; a final failure stays failed until requeued.
pub async fn failures_retry_after_backoff(store: &dyn JobStore) {
    let app = "failures";
    submit(store, app, new_job("j1", T0)).await;
    let job = claim(store, app, T0).await.expect("claim");
    let lease = job.lease.expect("lease");
    store.progress(app, "j1", &lease, json(r#"{"pct":25}"#), T0).await.expect("progress");
    let failed = store.finish(app, "j1", &lease, Outcome::Failed { error: "boom".into(), retry: true }, T0 + 1);
    let failed = failed.await.expect("fail");
    assert_eq!((failed.state, failed.error.as_deref(), failed.run_at), (JobState::Queued, Some("boom"), T0 + 1 + 1000));
    assert!(failed.progress.is_none(), "a retry starts without the failed attempt's progress");
    assert!(claim(store, app, T0 + 500).await.is_none(), "not before the backoff");
    let job = claim(store, app, T0 + 1001).await.expect("after the backoff");
    let lease = job.lease.expect("lease");
    let last = store.finish(app, "j1", &lease, Outcome::Failed { error: "again".into(), retry: true }, T0 + 1002);
    assert_eq!(last.await.expect("fail").state, JobState::Dead, "out of attempts");

    submit(store, app, new_job("j2", T0)).await;
    let job = claim(store, app, T0 + 2000).await.expect("claim");
    let lease = job.lease.expect("lease");
    let final_failure =
        store.finish(app, "j2", &lease, Outcome::Failed { error: "bad input".into(), retry: false }, T0);
    assert_eq!(final_failure.await.expect("fail").state, JobState::Failed);
}

/// Priority first, then readiness; delayed jobs wait.
pub async fn claims_take_the_most_urgent_ready_job(store: &dyn JobStore) {
    let app = "order";
    submit(store, app, NewJob { priority: 0, ..new_job("low", T0) }).await;
    submit(store, app, NewJob { priority: 5, ..new_job("high", T0 + 1) }).await;
    submit(store, app, NewJob { priority: 9, run_at: T0 + 60_000, ..new_job("later", T0 + 2) }).await;
    let order: Vec<String> =
        [claim(store, app, T0 + 10).await, claim(store, app, T0 + 10).await, claim(store, app, T0 + 10).await]
            .into_iter()
            .map(|j| j.map(|j| j.id).unwrap_or_default())
            .collect();
    assert_eq!(order, vec!["high".to_owned(), "low".to_owned(), String::new()]);
    assert_eq!(claim(store, app, T0 + 60_000).await.map(|j| j.id), Some("later".to_owned()));
}

/// Idempotency keys, queue length, cancel, counts and listing; apps never see each other's jobs.
pub async fn keys_limits_cancel_and_counts(store: &dyn JobStore) {
    let app = "limits";
    let keyed = NewJob { idempotency_key: Some("k".into()), ..new_job("a", T0) };
    let (first, repeated) = store.submit(app, keyed.clone()).await.expect("submit");
    assert!(!repeated);
    let (second, repeated) = store.submit(app, NewJob { id: "b".into(), ..keyed }).await.expect("submit");
    assert!(repeated, "the same key gives the same job");
    assert_eq!(second.id, first.id);
    submit(store, app, NewJob { max_length: 2, ..new_job("c", T0) }).await;
    let full = store.submit(app, NewJob { max_length: 2, ..new_job("d", T0) }).await;
    assert_eq!(full.err(), Some(JobError::QueueFull { max: 2 }));
    let cancelled = store.cancel(app, "c", T0).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(store.cancel(app, "c", T0).await.err(), Some(JobError::WrongState("cancelled")));
    assert_eq!(store.cancel(app, "zzz", T0).await.err(), Some(JobError::UnknownJob("zzz".into())));
    let counts = store.counts(app, "work").await.expect("counts");
    assert_eq!(counts, QueueCounts { queued: 1, cancelled: 1, ..QueueCounts::default() });
    let listed = store.list(app, "work", JobState::Queued, 10).await.expect("list");
    assert_eq!(listed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
    assert!(store.get("another-app", "a").await.expect("get").is_none(), "apps are isolated");
    assert!(store.claim("another-app", "work", 1000, T0).await.expect("claim").is_none());
    assert_eq!(store.prune(app, "work", T0 + 1).await.expect("prune"), 1, "the cancelled job is pruned");
}

/// Many workers claiming at once never get the same job.
pub async fn concurrent_claims_hand_out_each_job_once(store: Arc<dyn JobStore>) {
    let app = "race";
    for i in 0..100 {
        submit(&*store, app, new_job(&format!("j{i:03}"), T0)).await;
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = store.claim(app, "work", 10_000, T0).await.expect("claim") {
                    mine.push(job.id);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (100, 100), "each job claimed exactly once");
}

pub async fn run_all(store: Arc<dyn JobStore>) {
    a_job_runs_from_submit_to_success(&*store).await;
    expired_leases_requeue_then_kill(&*store).await;
    failures_retry_after_backoff(&*store).await;
    claims_take_the_most_urgent_ready_job(&*store).await;
    keys_limits_cancel_and_counts(&*store).await;
    concurrent_claims_hand_out_each_job_once(store).await;
}
