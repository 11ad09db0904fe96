//! The rules of jobs that do not depend on where they are stored.
//!
//! An app's queues are compiled once (their JSON Schemas included). Every call checks the queue
//! and the input, asks the store for one atomic change, and then tells the job's user: each new
//! state is published as `herald:job_update` on `#server-to-user-<id>`, so it has a serial, is kept
//! in history and is replayed to a client that resumes after being offline. Claims long-poll: a
//! waiting worker is woken by a submit on this node, and looks again every second for delayed jobs
//! and jobs submitted on other nodes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use herald_protocol::ChannelName;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::{Job, JobError, JobState, JobStore, NewJob, Outcome, QueueConfig, QueueCounts, new_id};
use crate::app::App;
use crate::publish::Publish;

/// Longest a claim may wait for a job.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting claim looks again without being woken.
const CLAIM_POLL: Duration = Duration::from_secs(1);
/// Largest progress report, in bytes of JSON.
pub const MAX_PROGRESS_BYTES: usize = 4096;

/// An app's queues and where their jobs are kept.
#[derive(Default)]
pub struct AppJobs {
    queues: HashMap<String, Arc<Queue>>,
    store: OnceLock<Arc<dyn JobStore>>,
}

impl std::fmt::Debug for AppJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppJobs").field("queues", &self.queues.keys().collect::<Vec<_>>()).finish()
    }
}

struct Queue {
    config: QueueConfig,
    schema: Option<jsonschema::Validator>,
    ready: Notify,
}

/// A queue declaration that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    #[error("queue name {0:?} must be 1 to 100 characters from [A-Za-z0-9_.-]")]
    Name(String),
    #[error("queue {0:?} is declared twice")]
    Duplicate(String),
    #[error("queue {queue:?}: schema is not a valid JSON Schema: {reason}")]
    Schema { queue: String, reason: String },
    #[error("queue {0:?}: lease_secs, max_attempts and max_length must be greater than 0")]
    Zero(String),
}

impl AppJobs {
    pub fn new(queues: &[QueueConfig]) -> Result<Self, QueueConfigError> {
        let mut compiled = HashMap::new();
        for config in queues {
            let name = &config.name;
            let valid_name = (1..=100).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid_name {
                return Err(QueueConfigError::Name(name.clone()));
            }
            if config.lease_secs == 0 || config.max_attempts == 0 || config.max_length == 0 {
                return Err(QueueConfigError::Zero(name.clone()));
            }
            let schema_error = |reason: String| QueueConfigError::Schema { queue: name.clone(), reason };
            let schema = match &config.schema {
                None => None,
                Some(text) => {
                    let value: serde_json::Value =
                        serde_json::from_str(text).map_err(|e| schema_error(e.to_string()))?;
                    Some(jsonschema::validator_for(&value).map_err(|e| schema_error(e.to_string()))?)
                }
            };
            let queue = Queue { config: config.clone(), schema, ready: Notify::new() };
            if compiled.insert(name.clone(), Arc::new(queue)).is_some() {
                return Err(QueueConfigError::Duplicate(name.clone()));
            }
        }
        Ok(Self { queues: compiled, store: OnceLock::new() })
    }

    fn queue(&self, name: &str) -> Result<&Arc<Queue>, JobError> {
        self.queues.get(name).ok_or_else(|| JobError::UnknownQueue(name.to_owned()))
    }

    fn store(&self) -> Result<&Arc<dyn JobStore>, JobError> {
        self.store.get().ok_or_else(|| JobError::Unavailable("no job store is configured".into()))
    }
}

/// A submit, from a backend or a signed-in client.
#[derive(Debug, Clone)]
pub struct SubmitJob {
    pub payload: Box<RawValue>,
    pub priority: i64,
    pub delay: Duration,
    /// The user told about every change.
    pub user_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Sent by a client (`herald:job_submit`): the queue must allow it.
    pub from_client: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Every failing location and why, e.g. `/from: "x" is not of type "integer"`.
fn schema_errors(schema: &jsonschema::Validator, payload: &RawValue) -> Result<(), JobError> {
    let value: serde_json::Value =
        serde_json::from_str(payload.get()).map_err(|e| JobError::Invalid(format!("payload is not JSON: {e}")))?;
    let errors: Vec<String> = schema
        .iter_errors(&value)
        .take(20)
        .map(|error| {
            let path = error.instance_path().to_string();
            format!("{}: {error}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(JobError::InvalidPayload(errors)) }
}

impl App {
    /// Keeps this app's jobs in `store`.
    pub fn attach_job_store(&self, store: Arc<dyn JobStore>) {
        let _ = self.jobs.store.set(store);
    }

    pub fn has_queues(&self) -> bool {
        !self.jobs.queues.is_empty()
    }

    /// Validates and stores a job; tells its user it is queued. Returns the job and whether it
    /// is a repeat of an earlier submit with the same idempotency key.
    pub async fn submit_job(&self, queue_name: &str, submit: SubmitJob) -> Result<(Job, bool), JobError> {
        let (job, repeated) = self.store_job(queue_name, submit).await?;
        if !repeated {
            self.announce_submitted(&job).await;
        }
        Ok((job, repeated))
    }

    /// Tells the user a job is queued, then wakes this node's waiting workers: on one node the
    /// `queued` update is published before any `running` one.
    pub(crate) async fn announce_submitted(&self, job: &Job) {
        self.announce_job(job).await;
        if let Ok(queue) = self.jobs.queue(&job.queue) {
            queue.ready.notify_waiters();
        }
    }

    /// [`App::submit_job`] without telling anyone, for a caller that answers first.
    pub(crate) async fn store_job(&self, queue_name: &str, submit: SubmitJob) -> Result<(Job, bool), JobError> {
        let queue = self.jobs.queue(queue_name)?;
        if submit.from_client && !queue.config.client_submit {
            return Err(JobError::ClientSubmitNotAllowed);
        }
        if submit.payload.get().len() > self.config.max_payload_bytes {
            return Err(JobError::Invalid(format!("payload is larger than {} bytes", self.config.max_payload_bytes)));
        }
        if let Some(user_id) = &submit.user_id {
            ChannelName::parse(&format!("#server-to-user-{user_id}"), usize::MAX)
                .map_err(|_| JobError::Invalid("user_id must be 1 to 128 characters from [A-Za-z0-9_-=@,.;]".into()))?;
        }
        if submit.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
            return Err(JobError::Invalid("idempotency_key must be 1 to 200 characters".into()));
        }
        if let Some(schema) = &queue.schema {
            schema_errors(schema, &submit.payload)?;
        }
        let now = now_ms();
        let job = NewJob {
            id: new_id(now),
            queue: queue_name.to_owned(),
            payload: submit.payload,
            priority: submit.priority,
            run_at: now + submit.delay.as_millis() as u64,
            user_id: submit.user_id,
            idempotency_key: submit.idempotency_key,
            max_attempts: queue.config.max_attempts,
            backoff_ms: queue.config.retry_backoff_secs * 1000,
            max_length: queue.config.max_length,
            now,
        };
        self.jobs.store()?.submit(self.id(), job).await
    }

    /// Hands out the next ready job of the queue, waiting up to `wait` for one.
    pub async fn claim_job(&self, queue_name: &str, wait: Duration) -> Result<Option<Job>, JobError> {
        let queue = self.jobs.queue(queue_name)?.clone();
        let store = self.jobs.store()?;
        let lease_ms = queue.config.lease_secs * 1000;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_CLAIM_WAIT);
        loop {
            let woken = queue.ready.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(job) = store.claim(self.id(), queue_name, lease_ms, now_ms()).await? {
                self.announce_job(&job).await;
                return Ok(Some(job));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout(CLAIM_POLL.min(deadline - now), woken).await;
        }
    }

    /// Extends a claim by the queue's lease time (or `lease_secs`).
    pub async fn extend_job(&self, id: &str, lease: &str, lease_secs: Option<u64>) -> Result<Job, JobError> {
        let job = self.job_of_app(id).await?;
        let queue = self.jobs.queue(&job.queue)?;
        let lease_ms = lease_secs.unwrap_or(queue.config.lease_secs).clamp(1, 24 * 60 * 60) * 1000;
        self.jobs.store()?.extend(self.id(), id, lease, lease_ms, now_ms()).await
    }

    pub async fn job_progress(&self, id: &str, lease: &str, progress: Box<RawValue>) -> Result<Job, JobError> {
        if progress.get().len() > MAX_PROGRESS_BYTES {
            return Err(JobError::Invalid(format!("progress is larger than {MAX_PROGRESS_BYTES} bytes")));
        }
        let job = self.jobs.store()?.progress(self.id(), id, lease, progress, now_ms()).await?;
        self.announce_job(&job).await;
        Ok(job)
    }

    pub async fn finish_job(&self, id: &str, lease: &str, outcome: Outcome) -> Result<Job, JobError> {
        if let Outcome::Succeeded { result } = &outcome
            && result.get().len() > self.config.max_payload_bytes
        {
            return Err(JobError::Invalid(format!("result is larger than {} bytes", self.config.max_payload_bytes)));
        }
        let job = self.jobs.store()?.finish(self.id(), id, lease, outcome, now_ms()).await?;
        if job.state == JobState::Queued {
            self.wake_later(&job);
        }
        self.announce_job(&job).await;
        Ok(job)
    }

    pub async fn cancel_job(&self, id: &str) -> Result<Job, JobError> {
        let job = self.jobs.store()?.cancel(self.id(), id, now_ms()).await?;
        self.announce_job(&job).await;
        Ok(job)
    }

    pub async fn requeue_job(&self, id: &str) -> Result<Job, JobError> {
        let job = self.jobs.store()?.requeue(self.id(), id, now_ms()).await?;
        if let Ok(queue) = self.jobs.queue(&job.queue) {
            queue.ready.notify_waiters();
        }
        self.announce_job(&job).await;
        Ok(job)
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, JobError> {
        self.jobs.store()?.get(self.id(), id).await
    }

    async fn job_of_app(&self, id: &str) -> Result<Job, JobError> {
        self.job(id).await?.ok_or_else(|| JobError::UnknownJob(id.to_owned()))
    }

    pub async fn queue_counts(&self, queue: &str) -> Result<QueueCounts, JobError> {
        self.jobs.queue(queue)?;
        self.jobs.store()?.counts(self.id(), queue).await
    }

    pub async fn list_jobs(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<Job>, JobError> {
        self.jobs.queue(queue)?;
        self.jobs.store()?.list(self.id(), queue, state, limit.clamp(1, 1000)).await
    }

    /// Names and settings of this app's queues.
    pub fn queues(&self) -> impl Iterator<Item = &QueueConfig> {
        self.jobs.queues.values().map(|q| &q.config)
    }

    /// Deletes finished jobs past their queue's retention.
    pub async fn prune_jobs(&self) {
        let Ok(store) = self.jobs.store() else { return };
        for queue in self.jobs.queues.values() {
            let before = now_ms().saturating_sub(queue.config.retain_finished_secs * 1000);
            if let Err(error) = store.prune(self.id(), &queue.config.name, before).await {
                tracing::warn!(app = %self.id(), queue = %queue.config.name, "finished jobs not pruned: {error}");
            }
        }
    }

    /// A job whose state changed outside a request (a lease ran out): tell its user and wake
    /// waiting workers.
    pub async fn job_changed(&self, job: &Job) {
        if job.state == JobState::Queued
            && let Ok(queue) = self.jobs.queue(&job.queue)
        {
            queue.ready.notify_waiters();
        }
        self.announce_job(job).await;
    }

    /// Wakes the queue's waiting workers when a retried job becomes ready.
    fn wake_later(&self, job: &Job) {
        let Ok(queue) = self.jobs.queue(&job.queue) else { return };
        let queue = queue.clone();
        let delay = Duration::from_millis(job.run_at.saturating_sub(now_ms()));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.ready.notify_waiters();
        });
    }

    /// Publishes the job's new state on its user's stream.
    pub(crate) async fn announce_job(&self, job: &Job) {
        let Some(user_id) = &job.user_id else { return };
        let Ok(data) = serde_json::to_string(&job.public()) else { return };
        let channels = [ChannelName::server_to_user(user_id)];
        let publish = Publish {
            event: "herald:job_update",
            channels: &channels,
            data: &data,
            exclude: None,
            idempotency_key: None,
            count_unread: false,
        };
        if let Err(error) = self.publish(&publish, tokio::time::Instant::now()).await {
            tracing::warn!(app = %self.id(), job = %job.id, "job update not published: {error}");
        }
    }
}
