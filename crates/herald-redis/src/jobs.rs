//! Jobs kept in Redis: the Redis engine's [`JobStore`], shared by every node.
//!
//! A queue's keys share one hash tag, `{<app>:q:<queue>}`, so each change is one Lua script in one
//! slot: a job is a hash; a sorted set per state holds its ids (queued by creation, running by lease
//! expiry, finished by last change); `delayed` holds queued jobs by `run_at` and `ready` the due
//! ones by priority. A claim first moves due jobs to `ready`, then pops the most urgent, so two
//! nodes can never hand out one job twice. Outside the queue's slot there is only an id → queue map
//! per app (to find a job by id) and the set of queues (for the lease sweep).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use herald_core::jobs::{Job, JobError, JobFuture, JobState, JobStore, NewJob, Outcome, QueueCounts};
use redis::{Script, Value};
use serde_json::value::RawValue;

use crate::Inner;

/// Helpers every job script starts with: `T` is the queue's tag.
const PRELUDE: &str = r"
local T = ARGV[1]
local function jk(id) return T .. ':job:' .. id end
local function bump(id) redis.call('HINCRBY', jk(id), 'version', 1) end
local function move(id, from, to, score)
  redis.call('ZREM', T .. ':s:' .. from, id)
  redis.call('ZADD', T .. ':s:' .. to, score, id)
end
local function leased(id, lease)
  local job = jk(id)
  if redis.call('EXISTS', job) == 0 then return 'unknown' end
  if redis.call('HGET', job, 'state') ~= 'running' or redis.call('HGET', job, 'lease') ~= lease then
    return 'lease'
  end
  return nil
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// ARGV: tag, id, queue, priority, payload, user, key, max_attempts, backoff, run_at, now, max_length.
static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if ARGV[7] ~= '' then
  local existing = redis.call('HGET', T .. ':idem', ARGV[7])
  if existing then return {1, redis.call('HGETALL', jk(existing))} end
end
if redis.call('ZCARD', T .. ':s:queued') + redis.call('ZCARD', T .. ':s:running') >= tonumber(ARGV[12]) then
  return {2}
end
local id = ARGV[2]
redis.call('HSET', jk(id), 'id', id, 'queue', ARGV[3], 'state', 'queued', 'priority', ARGV[4],
  'payload', ARGV[5], 'user_id', ARGV[6], 'idem', ARGV[7], 'attempts', 0, 'max_attempts', ARGV[8],
  'backoff_ms', ARGV[9], 'run_at', ARGV[10], 'lease', '', 'lease_until', '', 'progress', '',
  'result', '', 'error', '', 'created_at', ARGV[11], 'updated_at', ARGV[11], 'version', 1)
redis.call('ZADD', T .. ':s:queued', ARGV[11], id)
redis.call('ZADD', T .. ':delayed', ARGV[10], id)
if ARGV[7] ~= '' then redis.call('HSET', T .. ':idem', ARGV[7], id) end
return {0, redis.call('HGETALL', jk(id))}
",
    )
});

/// ARGV: tag, now, lease ms, lease token.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local now = tonumber(ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', T .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)) do
  local priority = tonumber(redis.call('HGET', jk(id), 'priority')) or 0
  local run_at = tonumber(redis.call('HGET', jk(id), 'run_at')) or 0
  redis.call('ZREM', T .. ':delayed', id)
  redis.call('ZADD', T .. ':ready', (1000 - priority) * 1e13 + run_at, id)
end
local top = redis.call('ZPOPMIN', T .. ':ready')
if #top == 0 then return false end
local id = top[1]
local lease_until = now + tonumber(ARGV[3])
redis.call('HINCRBY', jk(id), 'attempts', 1)
bump(id)
redis.call('HSET', jk(id), 'state', 'running', 'lease', ARGV[4], 'lease_until', lease_until, 'updated_at', now)
move(id, 'queued', 'running', lease_until)
return redis.call('HGETALL', jk(id))
",
    )
});

/// ARGV: tag, id, lease, now, field ('lease_until' or 'progress'), value.
static REPORT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local id = ARGV[2]
local refused = leased(id, ARGV[3])
if refused then return {refused} end
redis.call('HSET', jk(id), ARGV[5], ARGV[6], 'updated_at', ARGV[4])
bump(id)
if ARGV[5] == 'lease_until' then redis.call('ZADD', T .. ':s:running', ARGV[6], id) end
return {'ok', redis.call('HGETALL', jk(id))}
",
    )
});

/// ARGV: tag, id, lease, now, outcome ('succeeded', 'retry' or 'failed'), result, error.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local id = ARGV[2]
local refused = leased(id, ARGV[3])
if refused then return {refused} end
local now = tonumber(ARGV[4])
local job = jk(id)
bump(id)
local state = ARGV[5]
if state == 'retry' then
  local attempts = tonumber(redis.call('HGET', job, 'attempts'))
  if attempts < tonumber(redis.call('HGET', job, 'max_attempts')) then
    local backoff = tonumber(redis.call('HGET', job, 'backoff_ms')) * math.pow(2, math.min(attempts - 1, 20))
    local run_at = now + backoff
    redis.call('HSET', job, 'state', 'queued', 'run_at', run_at, 'error', ARGV[7], 'lease', '', 'lease_until', '', 'progress', '',
      'updated_at', now)
    move(id, 'running', 'queued', tonumber(redis.call('HGET', job, 'created_at')))
    redis.call('ZADD', T .. ':delayed', run_at, id)
    return {'ok', redis.call('HGETALL', job)}
  end
  state = 'dead'
end
redis.call('HSET', job, 'state', state, 'result', ARGV[6], 'error', ARGV[7], 'lease', '', 'lease_until', '', 'updated_at', now)
move(id, 'running', state, now)
return {'ok', redis.call('HGETALL', job)}
",
    )
});

/// ARGV: tag, id, now, 'cancel' or 'requeue'.
static CHANGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local id = ARGV[2]
local job = jk(id)
local now = tonumber(ARGV[3])
local state = redis.call('HGET', job, 'state')
if not state then return {'unknown'} end
if (ARGV[4] == 'cancel' and (state == 'queued' or state == 'running'))
  or (ARGV[4] == 'requeue' and (state == 'dead' or state == 'failed')) then bump(id) end
if ARGV[4] == 'cancel' then
  if state ~= 'queued' and state ~= 'running' then return {'state', state} end
  redis.call('ZREM', T .. ':delayed', id)
  redis.call('ZREM', T .. ':ready', id)
  redis.call('HSET', job, 'state', 'cancelled', 'lease', '', 'lease_until', '', 'updated_at', now)
  move(id, state, 'cancelled', now)
else
  if state ~= 'dead' and state ~= 'failed' then return {'state', state} end
  redis.call('HSET', job, 'state', 'queued', 'attempts', 0, 'run_at', now, 'error', '', 'progress', '', 'updated_at', now)
  move(id, state, 'queued', tonumber(redis.call('HGET', job, 'created_at')))
  redis.call('ZADD', T .. ':delayed', now, id)
end
return {'ok', redis.call('HGETALL', job)}
",
    )
});

/// ARGV: tag, now. Returns the jobs whose lease ran out, after requeueing or killing them.
static EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local now = tonumber(ARGV[2])
local changed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', T .. ':s:running', '-inf', '(' .. now)) do
  local job = jk(id)
  bump(id)
  local state = 'queued'
  if tonumber(redis.call('HGET', job, 'attempts')) >= tonumber(redis.call('HGET', job, 'max_attempts')) then
    state = 'dead'
  end
  redis.call('HSET', job, 'state', state, 'error', 'lease expired', 'lease', '', 'lease_until', '', 'updated_at', now)
  if state == 'dead' then
    move(id, 'running', 'dead', now)
  else
    redis.call('HSET', job, 'run_at', now, 'progress', '')
    move(id, 'running', 'queued', tonumber(redis.call('HGET', job, 'created_at')))
    redis.call('ZADD', T .. ':delayed', now, id)
  end
  table.insert(changed, redis.call('HGETALL', job))
end
return changed
",
    )
});

/// ARGV: tag, finished before. Returns the deleted ids.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local deleted = {}
for _, state in ipairs({'succeeded', 'failed', 'dead', 'cancelled'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', T .. ':s:' .. state, '-inf', '(' .. ARGV[2])) do
    local key = redis.call('HGET', jk(id), 'idem')
    if key and key ~= '' then redis.call('HDEL', T .. ':idem', key) end
    redis.call('DEL', jk(id))
    redis.call('ZREM', T .. ':s:' .. state, id)
    table.insert(deleted, id)
  end
end
return deleted
",
    )
});

/// Jobs on the engine's Redis.
#[derive(Debug, Clone)]
pub struct RedisJobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("node", &self.id).finish()
    }
}

fn unavailable(error: redis::RedisError) -> JobError {
    JobError::Unavailable(error.to_string())
}

fn malformed(what: &str) -> JobError {
    JobError::Unavailable(format!("malformed job in Redis: {what}"))
}

fn raw(text: &str) -> Option<Box<RawValue>> {
    (!text.is_empty()).then(|| RawValue::from_string(text.to_owned()).ok()).flatten()
}

/// A job from its hash (as a field/value list).
fn job_of(value: &Value) -> Result<Job, JobError> {
    let fields: Vec<String> = redis::from_redis_value_ref(value).map_err(|_| malformed("not a hash"))?;
    let map: HashMap<&str, &str> = fields.chunks_exact(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
    let text = |name: &str| map.get(name).copied().unwrap_or("");
    let number = |name: &str| text(name).parse::<u64>().map_err(|_| malformed(name));
    let optional = |name: &str| Some(text(name).to_owned()).filter(|s| !s.is_empty());
    Ok(Job {
        id: text("id").to_owned(),
        queue: text("queue").to_owned(),
        state: JobState::parse(text("state")).ok_or_else(|| malformed("state"))?,
        priority: text("priority").parse().map_err(|_| malformed("priority"))?,
        payload: raw(text("payload")).ok_or_else(|| malformed("payload"))?,
        user_id: optional("user_id"),
        attempts: text("attempts").parse().map_err(|_| malformed("attempts"))?,
        max_attempts: text("max_attempts").parse().map_err(|_| malformed("max_attempts"))?,
        run_at: number("run_at")?,
        lease: optional("lease"),
        lease_until: text("lease_until").parse().ok(),
        progress: raw(text("progress")),
        result: raw(text("result")),
        error: optional("error"),
        created_at: number("created_at")?,
        updated_at: number("updated_at")?,
        version: number("version")?,
    })
}

/// An `{'ok', job}` reply, or the refusal the script gave.
fn answer(reply: Value, id: &str) -> Result<Job, JobError> {
    let Value::Array(parts) = reply else { return Err(malformed("reply")) };
    let tag: String = parts.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
    match (tag.as_str(), parts.get(1)) {
        ("ok", Some(job)) => job_of(job),
        ("unknown", _) => Err(JobError::UnknownJob(id.to_owned())),
        ("lease", _) => Err(JobError::LeaseMismatch),
        ("state", Some(state)) => {
            let state: String = redis::from_redis_value_ref(state).unwrap_or_default();
            Err(JobError::WrongState(JobState::parse(&state).map_or("finished", JobState::as_str)))
        }
        _ => Err(malformed("reply")),
    }
}

fn lease_token() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

impl RedisJobs {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn tag(&self, app: &str, queue: &str) -> String {
        self.inner.keys.queue(app, queue)
    }

    /// The queue a job id belongs to.
    async fn queue_of(&self, app: &str, id: &str) -> Result<Option<String>, JobError> {
        redis::cmd("HGET")
            .arg(self.inner.keys.job_ids(app))
            .arg(id)
            .query_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)
    }

    async fn tag_of(&self, app: &str, id: &str) -> Result<String, JobError> {
        let queue = self.queue_of(app, id).await?.ok_or_else(|| JobError::UnknownJob(id.to_owned()))?;
        Ok(self.tag(app, &queue))
    }
}

impl JobStore for RedisJobs {
    fn submit(&self, app: &str, job: NewJob) -> JobFuture<'_, (Job, bool)> {
        let (app, tag) = (app.to_owned(), self.tag(app, &job.queue));
        Box::pin(async move {
            // The id is findable before the job is claimable: a worker on another node may claim
            // it the moment the script returns.
            let queues = serde_json::to_string(&(&app, &job.queue)).unwrap_or_default();
            let commands = vec![
                redis::cmd("HSET").arg(self.inner.keys.job_ids(&app)).arg(&job.id).arg(&job.queue).take(),
                redis::cmd("SADD").arg(self.inner.keys.job_queues()).arg(queues).take(),
            ];
            self.inner.conn().run_all::<Value>(commands).await.map_err(unavailable)?;
            let reply: Value = SUBMIT
                .key(format!("{tag}:delayed"))
                .arg(&tag)
                .arg(&job.id)
                .arg(&job.queue)
                .arg(job.priority.clamp(-1000, 1000))
                .arg(job.payload.get())
                .arg(job.user_id.as_deref().unwrap_or(""))
                .arg(job.idempotency_key.as_deref().unwrap_or(""))
                .arg(job.max_attempts)
                .arg(job.backoff_ms)
                .arg(job.run_at)
                .arg(job.now)
                .arg(job.max_length)
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            let Value::Array(parts) = reply else { return Err(malformed("submit reply")) };
            let code: i64 = parts.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or(-1);
            let outcome = match (code, parts.get(1)) {
                (0, Some(stored)) => return Ok((job_of(stored)?, false)),
                (1, Some(existing)) => Ok((job_of(existing)?, true)),
                (2, _) => Err(JobError::QueueFull { max: job.max_length }),
                _ => Err(malformed("submit reply")),
            };
            // Not stored under this id: forget it again.
            let forget = redis::cmd("HDEL").arg(self.inner.keys.job_ids(&app)).arg(&job.id).take();
            let _ = forget.query_async::<()>(&mut self.inner.conn()).await;
            outcome
        })
    }

    fn claim(&self, app: &str, queue: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Option<Job>> {
        let tag = self.tag(app, queue);
        Box::pin(async move {
            let reply: Value = CLAIM
                .key(format!("{tag}:ready"))
                .arg(&tag)
                .arg(now)
                .arg(lease_ms)
                .arg(lease_token())
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            match reply {
                Value::Nil => Ok(None),
                job => job_of(&job).map(Some),
            }
        })
    }

    fn extend(&self, app: &str, id: &str, lease: &str, lease_ms: u64, now: u64) -> JobFuture<'_, Job> {
        self.report(app, id, lease, now, "lease_until", (now + lease_ms).to_string())
    }

    fn progress(&self, app: &str, id: &str, lease: &str, progress: Box<RawValue>, now: u64) -> JobFuture<'_, Job> {
        self.report(app, id, lease, now, "progress", progress.get().to_owned())
    }

    fn finish(&self, app: &str, id: &str, lease: &str, outcome: Outcome, now: u64) -> JobFuture<'_, Job> {
        let (app, id, lease) = (app.to_owned(), id.to_owned(), lease.to_owned());
        Box::pin(async move {
            let tag = self.tag_of(&app, &id).await?;
            let (kind, result, error) = match outcome {
                Outcome::Succeeded { result } => ("succeeded", result.get().to_owned(), String::new()),
                Outcome::Failed { error, retry: true } => ("retry", String::new(), error),
                Outcome::Failed { error, retry: false } => ("failed", String::new(), error),
            };
            let reply = FINISH
                .key(format!("{tag}:job:{id}"))
                .arg(&tag)
                .arg(&id)
                .arg(&lease)
                .arg(now)
                .arg(kind)
                .arg(result)
                .arg(error)
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            answer(reply, &id)
        })
    }

    fn cancel(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job> {
        self.change(app, id, now, "cancel")
    }

    fn requeue(&self, app: &str, id: &str, now: u64) -> JobFuture<'_, Job> {
        self.change(app, id, now, "requeue")
    }

    fn get(&self, app: &str, id: &str) -> JobFuture<'_, Option<Job>> {
        let (app, id) = (app.to_owned(), id.to_owned());
        Box::pin(async move {
            let Some(queue) = self.queue_of(&app, &id).await? else { return Ok(None) };
            let tag = self.tag(&app, &queue);
            let fields: Value = redis::cmd("HGETALL")
                .arg(format!("{tag}:job:{id}"))
                .query_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            match &fields {
                Value::Array(items) | Value::Set(items) if items.is_empty() => Ok(None),
                Value::Map(items) if items.is_empty() => Ok(None),
                _ => job_of(&fields).map(Some),
            }
        })
    }

    fn counts(&self, app: &str, queue: &str) -> JobFuture<'_, QueueCounts> {
        let tag = self.tag(app, queue);
        Box::pin(async move {
            let commands =
                JobState::ALL.iter().map(|s| redis::cmd("ZCARD").arg(format!("{tag}:s:{}", s.as_str())).take());
            let sizes: Vec<u64> = self.inner.conn().run_all(commands.collect()).await.map_err(unavailable)?;
            let mut counts = QueueCounts::default();
            for (state, n) in JobState::ALL.into_iter().zip(sizes) {
                counts.add(state, n);
            }
            Ok(counts)
        })
    }

    fn list(&self, app: &str, queue: &str, state: JobState, limit: usize) -> JobFuture<'_, Vec<Job>> {
        let tag = self.tag(app, queue);
        Box::pin(async move {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(format!("{tag}:s:{}", state.as_str()))
                .arg(0)
                .arg(limit.saturating_sub(1))
                .query_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            let commands = ids.iter().map(|id| redis::cmd("HGETALL").arg(format!("{tag}:job:{id}")).take()).collect();
            let jobs: Vec<Value> = self.inner.conn().run_all(commands).await.map_err(unavailable)?;
            jobs.iter().map(job_of).collect()
        })
    }

    fn expire(&self, now: u64) -> JobFuture<'_, Vec<(String, Job)>> {
        Box::pin(async move {
            let queues: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.inner.keys.job_queues())
                .query_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            let mut changed = Vec::new();
            for entry in queues {
                let Ok((app, queue)) = serde_json::from_str::<(String, String)>(&entry) else { continue };
                let tag = self.tag(&app, &queue);
                let expired: Result<Vec<Value>, _> = EXPIRE
                    .key(format!("{tag}:s:running"))
                    .arg(&tag)
                    .arg(now)
                    .invoke_async(&mut self.inner.conn())
                    .await;
                // One queue failing must not lose the changes already made in the others.
                let jobs = match expired {
                    Ok(jobs) => jobs,
                    Err(error) => {
                        tracing::warn!(%app, %queue, "expired leases not taken back: {error}");
                        continue;
                    }
                };
                changed.extend(jobs.iter().filter_map(|job| job_of(job).ok()).map(|job| (app.clone(), job)));
            }
            Ok(changed)
        })
    }

    fn prune(&self, app: &str, queue: &str, finished_before: u64) -> JobFuture<'_, u64> {
        let (app, tag) = (app.to_owned(), self.tag(app, queue));
        Box::pin(async move {
            let deleted: Vec<String> = PRUNE
                .key(format!("{tag}:s:succeeded"))
                .arg(&tag)
                .arg(finished_before)
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            if !deleted.is_empty() {
                redis::cmd("HDEL")
                    .arg(self.inner.keys.job_ids(&app))
                    .arg(&deleted)
                    .query_async::<()>(&mut self.inner.conn())
                    .await
                    .map_err(unavailable)?;
            }
            Ok(deleted.len() as u64)
        })
    }
}

impl RedisJobs {
    /// A worker's report on a running job: sets one field if `lease` still holds it.
    fn report(
        &self,
        app: &str,
        id: &str,
        lease: &str,
        now: u64,
        field: &'static str,
        value: String,
    ) -> JobFuture<'_, Job> {
        let (app, id, lease) = (app.to_owned(), id.to_owned(), lease.to_owned());
        Box::pin(async move {
            let tag = self.tag_of(&app, &id).await?;
            let reply = REPORT
                .key(format!("{tag}:job:{id}"))
                .arg(&tag)
                .arg(&id)
                .arg(&lease)
                .arg(now)
                .arg(field)
                .arg(value)
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            answer(reply, &id)
        })
    }

    fn change(&self, app: &str, id: &str, now: u64, what: &'static str) -> JobFuture<'_, Job> {
        let (app, id) = (app.to_owned(), id.to_owned());
        Box::pin(async move {
            let tag = self.tag_of(&app, &id).await?;
            let reply = CHANGE
                .key(format!("{tag}:job:{id}"))
                .arg(&tag)
                .arg(&id)
                .arg(now)
                .arg(what)
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            answer(reply, &id)
        })
    }
}
