//! Durable jobs: queues for slow work, claimed by workers over HTTP, with every change pushed to
//! the user who asked.
//!
//! A job is stored before submit answers, and a claim gives the worker a lease: a worker that dies
//! loses only its lease, after which the job is handed out again (at-least-once), until its
//! attempts run out and it is kept as `dead` for inspection. The storage is a [`JobStore`] (SQLite
//! on the embedded engine); the rules that do not depend on storage (which queue exists, payload
//! validation, long-poll claims, pushing `herald:job_update` on the user stream) live in
//! [`service`], so every store behaves the same.

pub mod conformance;
pub mod service;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A queue as declared under `[[apps.queues]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    /// A JSON Schema (as JSON text) every payload must satisfy.
    pub schema: Option<String>,
    /// How long a claim holds a job before it is handed out again.
    pub lease_secs: u64,
    /// Claims a job gets before it is `dead`.
    pub max_attempts: u32,
    /// Wait before a failed job is retried; doubled on every further attempt.
    pub retry_backoff_secs: u64,
    /// Whether signed-in clients may submit with `herald:job_submit`.
    pub client_submit: bool,
    /// Jobs waiting or running at most; submits beyond are refused.
    pub max_length: usize,
    /// How long finished jobs (succeeded, failed, cancelled, dead) are kept.
    pub retain_finished_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            schema: None,
            lease_secs: 30,
            max_attempts: 3,
            retry_backoff_secs: 5,
            client_submit: false,
            max_length: 10_000,
            retain_finished_secs: 24 * 60 * 60,
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Failed for good (the worker said not to retry).
    Failed,
    /// Out of attempts.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [Self; 6] =
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Dead, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Dead | Self::Cancelled)
    }
}

/// A job as stored. JSON fields (`payload`, `progress`, `result`) are kept as JSON text.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub priority: i64,
    pub payload: Box<RawValue>,
    pub user_id: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Unix ms before which it is not handed out.
    pub run_at: u64,
    /// The current claim's token (only while running); workers quote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub lease_until: Option<u64>,
    pub progress: Option<Box<RawValue>>,
    pub result: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Counts the job's changes: 1 when submitted, +1 on each. Updates published by different
    /// nodes (or racing requests) can arrive out of order; a reader keeps the highest version.
    pub version: u64,
}

impl Job {
    /// The job as its user sees it: no lease token.
    pub fn public(&self) -> Self {
        Self { lease: None, ..self.clone() }
    }
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub queue: String,
    pub payload: Box<RawValue>,
    pub priority: i64,
    pub run_at: u64,
    pub user_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    /// Refuse when this many jobs of the queue are queued or running.
    pub max_length: usize,
    pub now: u64,
}

/// How a worker ends a claim.
#[derive(Clone, Debug)]
pub enum Outcome {
    Succeeded {
        result: Box<RawValue>,
    },
    /// `retry`: back to the queue after the backoff while attempts remain (else `dead`);
    /// otherwise `failed` for good.
    Failed {
        error: String,
        retry: bool,
    },
}

/// Jobs per state in one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl QueueCounts {
    pub fn add(&mut self, state: JobState, n: u64) {
        *self.slot(state) += n;
    }

    /// How many jobs are in `state`.
    pub fn get(&self, state: JobState) -> u64 {
        *self.clone().slot(state)
    }

    fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }
}

/// Why a job operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("no queue named {0:?}")]
    UnknownQueue(String),
    #[error("no job {0:?}")]
    UnknownJob(String),
    #[error("payload does not match the queue's schema: {}", .0.join("; "))]
    InvalidPayload(Vec<String>),
    #[error("queue is full ({max} jobs waiting or running)")]
    QueueFull { max: usize },
    #[error("this queue does not accept jobs from clients")]
    ClientSubmitNotAllowed,
    #[error("the lease does not match: the job was handed to another worker or is no longer running")]
    LeaseMismatch,
    #[error("the job is {0}")]
    WrongState(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("job store unavailable: {0}")]
    Unavailable(String),
}

/// What a store's calls return.
pub type JobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JobError>> + Send + 'a>>;

/// Where jobs are kept. Every call is one atomic change; `now` is unix ms, passed in so the
/// conformance checks can move time.
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Stores a new job; with an idempotency key already used in the queue, returns that job and
    /// `true` instead.
    fn submit(&self, app: &str, job: NewJob) -> JobFuture<'_, (Job, bool)>;
    /// Hands out the most urgent ready job of `queue` with a new lease, counting an attempt.
    fn claim(&self, app: &str, queue: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Option<Job>>;
    fn extend(&self, app: &str, id: &str, lease: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Job>;
    fn progress(&self, app: &str, id: &str, lease: &str, progress: Box<RawValue>, now: u64) -> JobFuture<'_, Job>;
    fn finish(&self, app: &str, id: &str, lease: &str, outcome: Outcome, now: u64) -> JobFuture<'_, Job>;
    /// Cancels a queued or running job.
    fn cancel(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job>;
    /// Puts a dead or failed job back in its queue with its attempts reset.
    fn requeue(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job>;
    fn get(&self, app: &str, id: &str) -> JobFuture<'_, Option<Job>>;
    fn counts(&self, app: &str, queue: &str) -> JobFuture<'_, QueueCounts>;
    /// Jobs of `queue` in `state`, oldest first, at most `limit`.
    fn list(&self, app: &str, queue: &str, state: JobState, limit: usize) -> JobFuture<'_, Vec<Job>>;
    /// Takes back every claim (of every app) whose lease ran out: requeued, or dead when out of
    /// attempts. Returns each changed job with its app.
    fn expire(&self, now: u64) -> JobFuture<'_, Vec<(String, Job)>>;
    /// Deletes the queue's jobs that finished before `finished_before`; returns how many.
    fn prune(&self, app: &str, queue: &str, finished_before: u64) -> JobFuture<'_, u64>;
}

/// Backoff before attempt `attempts + 1` after a failure.
pub fn backoff_ms(base_ms: u64, attempts: u32) -> u64 {
    base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
}

/// A new job id: time-ordered, unguessable enough to be shown to its user.
pub fn new_id(now: u64) -> String {
    format!("j{now:012x}{:016x}", rand::random::<u64>())
}
