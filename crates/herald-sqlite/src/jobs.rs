//! Jobs kept in SQLite: the embedded engine's [`JobStore`].
//!
//! One thread owns the connection; every call is one `IMMEDIATE` transaction, so a claim cannot
//! hand one job to two workers and a submit is on disk (WAL, `synchronous=NORMAL`: it survives a
//! killed process) before it is acknowledged. Ready jobs are found through an index on
//! (app, queue, state, priority, run_at), expired leases through one on (state, lease_until).

use std::path::Path;

use herald_core::jobs::{Job, JobError, JobFuture, JobState, JobStore, NewJob, Outcome, QueueCounts, backoff_ms};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::value::RawValue;

use crate::OpenError;
use crate::transactor::Transactor;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS jobs (
        app TEXT NOT NULL, id TEXT NOT NULL, queue TEXT NOT NULL, state TEXT NOT NULL,
        priority INTEGER NOT NULL, payload TEXT NOT NULL, user_id TEXT, idempotency_key TEXT,
        attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, backoff_ms INTEGER NOT NULL,
        run_at INTEGER NOT NULL, lease TEXT, lease_until INTEGER,
        progress TEXT, result TEXT, error TEXT,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (app, id));
    CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (app, queue, state, priority DESC, run_at, created_at);
    CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_until);
    CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (app, queue, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
";

const COLUMNS: &str = "id, queue, state, priority, payload, user_id, attempts, max_attempts, run_at, lease, \
                       lease_until, progress, result, error, created_at, updated_at, version, app, backoff_ms";

/// Jobs in one SQLite file.
#[derive(Debug)]
pub struct SqliteJobs {
    store: Transactor,
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

fn job_of(row: &Row<'_>) -> rusqlite::Result<Job> {
    let state: String = row.get(2)?;
    Ok(Job {
        id: row.get(0)?,
        queue: row.get(1)?,
        state: JobState::parse(&state).unwrap_or(JobState::Dead),
        priority: row.get(3)?,
        payload: raw(row.get(4)?),
        user_id: row.get(5)?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        run_at: row.get(8)?,
        lease: row.get(9)?,
        lease_until: row.get(10)?,
        progress: row.get::<_, Option<String>>(11)?.map(raw),
        result: row.get::<_, Option<String>>(12)?.map(raw),
        error: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        version: row.get(16)?,
    })
}

fn unavailable(error: rusqlite::Error) -> JobError {
    JobError::Unavailable(error.to_string())
}

fn get(conn: &Connection, app: &str, id: &str) -> Result<Option<Job>, JobError> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE app = ?1 AND id = ?2"), params![app, id], job_of)
        .optional()
        .map_err(unavailable)
}

fn existing(conn: &Connection, app: &str, id: &str) -> Result<Job, JobError> {
    get(conn, app, id)?.ok_or_else(|| JobError::UnknownJob(id.to_owned()))
}

/// The job, if it is running under `lease`.
fn leased(conn: &Connection, app: &str, id: &str, lease: &str) -> Result<Job, JobError> {
    let job = existing(conn, app, id)?;
    if job.state != JobState::Running || job.lease.as_deref() != Some(lease) {
        return Err(JobError::LeaseMismatch);
    }
    Ok(job)
}

fn lease_token() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

impl SqliteJobs {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Ok(Self { store: Transactor::open(path, SCHEMA, "herald-jobs")? })
    }

    /// Runs `op` in one immediate transaction on the store's thread.
    fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, JobError> + Send + 'static,
    ) -> JobFuture<'_, T> {
        Box::pin(self.store.call(op, JobError::Unavailable))
    }
}

impl JobStore for SqliteJobs {
    fn submit(&self, app: &str, job: NewJob) -> JobFuture<'_, (Job, bool)> {
        let app = app.to_owned();
        self.call(move |conn| {
            if let Some(key) = &job.idempotency_key {
                let sql = format!("SELECT {COLUMNS} FROM jobs WHERE app = ?1 AND queue = ?2 AND idempotency_key = ?3");
                let found =
                    conn.query_row(&sql, params![app, job.queue, key], job_of).optional().map_err(unavailable)?;
                if let Some(found) = found {
                    return Ok((found, true));
                }
            }
            let waiting: u64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE app = ?1 AND queue = ?2 AND state IN ('queued', 'running')",
                    params![app, job.queue],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            if waiting >= job.max_length as u64 {
                return Err(JobError::QueueFull { max: job.max_length });
            }
            conn.execute(
                "INSERT INTO jobs (app, id, queue, state, priority, payload, user_id, idempotency_key, attempts,
                    max_attempts, backoff_ms, run_at, created_at, updated_at, version)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?11, 1)",
                params![
                    app,
                    job.id,
                    job.queue,
                    job.priority,
                    job.payload.get(),
                    job.user_id,
                    job.idempotency_key,
                    job.max_attempts,
                    job.backoff_ms,
                    job.run_at,
                    job.now
                ],
            )
            .map_err(unavailable)?;
            Ok((existing(conn, &app, &job.id)?, false))
        })
    }

    fn claim(&self, app: &str, queue: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Option<Job>> {
        let (app, queue) = (app.to_owned(), queue.to_owned());
        self.call(move |conn| {
            let id: Option<String> = conn
                .query_row(
                    "SELECT id FROM jobs WHERE app = ?1 AND queue = ?2 AND state = 'queued' AND run_at <= ?3
                     ORDER BY priority DESC, run_at, created_at LIMIT 1",
                    params![app, queue, now],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            let Some(id) = id else { return Ok(None) };
            conn.execute(
                "UPDATE jobs SET version = version + 1, state = 'running', attempts = attempts + 1, lease = ?3, lease_until = ?4,
                    updated_at = ?5 WHERE app = ?1 AND id = ?2",
                params![app, id, lease_token(), now + lease_ms, now],
            )
            .map_err(unavailable)?;
            get(conn, &app, &id)
        })
    }

    fn extend(&self, app: &str, id: &str, lease: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Job> {
        let (app, id, lease) = (app.to_owned(), id.to_owned(), lease.to_owned());
        self.call(move |conn| {
            leased(conn, &app, &id, &lease)?;
            conn.execute(
                "UPDATE jobs SET version = version + 1, lease_until = ?3, updated_at = ?4 WHERE app = ?1 AND id = ?2",
                params![app, id, now + lease_ms, now],
            )
            .map_err(unavailable)?;
            existing(conn, &app, &id)
        })
    }

    fn progress(&self, app: &str, id: &str, lease: &str, progress: Box<RawValue>, now: u64) -> JobFuture<'_, Job> {
        let (app, id, lease) = (app.to_owned(), id.to_owned(), lease.to_owned());
        self.call(move |conn| {
            leased(conn, &app, &id, &lease)?;
            conn.execute(
                "UPDATE jobs SET version = version + 1, progress = ?3, updated_at = ?4 WHERE app = ?1 AND id = ?2",
                params![app, id, progress.get(), now],
            )
            .map_err(unavailable)?;
            existing(conn, &app, &id)
        })
    }

    fn finish(&self, app: &str, id: &str, lease: &str, outcome: Outcome, now: u64) -> JobFuture<'_, Job> {
        let (app, id, lease) = (app.to_owned(), id.to_owned(), lease.to_owned());
        self.call(move |conn| {
            let job = leased(conn, &app, &id, &lease)?;
            let backoff: u64 = conn
                .query_row("SELECT backoff_ms FROM jobs WHERE app = ?1 AND id = ?2", params![app, id], |r| r.get(0))
                .map_err(unavailable)?;
            let (state, result, error, run_at) = match outcome {
                Outcome::Succeeded { result } => (JobState::Succeeded, Some(result.get().to_owned()), None, job.run_at),
                Outcome::Failed { error, retry: true } if job.attempts < job.max_attempts => {
                    (JobState::Queued, None, Some(error), now + backoff_ms(backoff, job.attempts))
                }
                Outcome::Failed { error, retry: true } => (JobState::Dead, None, Some(error), job.run_at),
                Outcome::Failed { error, retry: false } => (JobState::Failed, None, Some(error), job.run_at),
            };
            conn.execute(
                "UPDATE jobs SET version = version + 1, state = ?3, result = ?4, error = ?5, run_at = ?6, lease = NULL, lease_until = NULL,
                    progress = CASE WHEN ?3 = 'queued' THEN NULL ELSE progress END, updated_at = ?7 WHERE app = ?1 AND id = ?2",
                params![app, id, state.as_str(), result, error, run_at, now],
            )
            .map_err(unavailable)?;
            existing(conn, &app, &id)
        })
    }

    fn cancel(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            let job = existing(conn, &app, &id)?;
            if job.state.is_finished() {
                return Err(JobError::WrongState(job.state.as_str()));
            }
            conn.execute(
                "UPDATE jobs SET version = version + 1, state = 'cancelled', lease = NULL, lease_until = NULL, updated_at = ?3
                 WHERE app = ?1 AND id = ?2",
                params![app, id, now],
            )
            .map_err(unavailable)?;
            existing(conn, &app, &id)
        })
    }

    fn requeue(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            let job = existing(conn, &app, &id)?;
            if !matches!(job.state, JobState::Dead | JobState::Failed) {
                return Err(JobError::WrongState(job.state.as_str()));
            }
            conn.execute(
                "UPDATE jobs SET version = version + 1, state = 'queued', attempts = 0, run_at = ?3, error = NULL, progress = NULL, updated_at = ?3
                 WHERE app = ?1 AND id = ?2",
                params![app, id, now],
            )
            .map_err(unavailable)?;
            existing(conn, &app, &id)
        })
    }

    fn get(&self, app: &str, id: &str) -> JobFuture<'_, Option<Job>> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| get(conn, &app, &id))
    }

    fn counts(&self, app: &str, queue: &str) -> JobFuture<'_, QueueCounts> {
        let (app, queue) = (app.to_owned(), queue.to_owned());
        self.call(move |conn| {
            let mut statement = conn
                .prepare("SELECT state, COUNT(*) FROM jobs WHERE app = ?1 AND queue = ?2 GROUP BY state")
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![app, queue], |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)))
                .map_err(unavailable)?;
            let mut counts = QueueCounts::default();
            for row in rows {
                let (state, n) = row.map_err(unavailable)?;
                if let Some(state) = JobState::parse(&state) {
                    counts.add(state, n);
                }
            }
            Ok(counts)
        })
    }

    fn list(&self, app: &str, queue: &str, state: JobState, limit: usize) -> JobFuture<'_, Vec<Job>> {
        let (app, queue) = (app.to_owned(), queue.to_owned());
        self.call(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE app = ?1 AND queue = ?2 AND state = ?3 ORDER BY created_at LIMIT ?4"
            );
            let mut statement = conn.prepare(&sql).map_err(unavailable)?;
            let rows =
                statement.query_map(params![app, queue, state.as_str(), limit as u64], job_of).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    fn expire(&self, now: u64) -> JobFuture<'_, Vec<(String, Job)>> {
        self.call(move |conn| {
            let mut statement = conn
                .prepare("SELECT app, id FROM jobs WHERE state = 'running' AND lease_until < ?1")
                .map_err(unavailable)?;
            let expired = statement
                .query_map(params![now], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let mut changed = Vec::with_capacity(expired.len());
            for (app, id) in expired {
                conn.execute(
                    "UPDATE jobs SET version = version + 1, state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                        progress = CASE WHEN attempts >= max_attempts THEN progress ELSE NULL END,
                        error = 'lease expired', lease = NULL, lease_until = NULL, run_at = ?3, updated_at = ?3
                     WHERE app = ?1 AND id = ?2",
                    params![app, id, now],
                )
                .map_err(unavailable)?;
                let job = existing(conn, &app, &id)?;
                changed.push((app, job));
            }
            Ok(changed)
        })
    }

    fn prune(&self, app: &str, queue: &str, finished_before: u64) -> JobFuture<'_, u64> {
        let (app, queue) = (app.to_owned(), queue.to_owned());
        self.call(move |conn| {
            let deleted = conn
                .execute(
                    "DELETE FROM jobs WHERE app = ?1 AND queue = ?2
                     AND state IN ('succeeded', 'failed', 'dead', 'cancelled') AND updated_at < ?3",
                    params![app, queue, finished_before],
                )
                .map_err(unavailable)?;
            Ok(deleted as u64)
        })
    }
}
