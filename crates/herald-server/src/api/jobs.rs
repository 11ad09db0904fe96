//! Job routes for backends and workers: submit, claim (long-poll), extend, progress, finish, fail,
//! cancel, requeue, and inspection. All are signed like the rest of the API.
//!
//! A worker quotes the `lease` it got from its claim on every report; a report with a stale lease
//! (the job went back to the queue and another worker has it) is refused with 409, so a slow
//! worker cannot overwrite a newer attempt.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::jobs::service::SubmitJob;
use herald_core::jobs::{JobState, Outcome};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

/// Longest a claim may wait, whatever it asks.
const MAX_CLAIM_WAIT_SECS: u64 = 25;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    payload: Box<RawValue>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    delay_secs: u64,
    user_id: Option<String>,
    idempotency_key: Option<String>,
}

/// `POST /apps/{id}/queues/{queue}/jobs`: 201 with the job, or 200 for a repeated key.
pub async fn submit(
    State(state): State<AppState>,
    Path((app_id, queue)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let body: SubmitBody = parse(&body)?;
    let submit = SubmitJob {
        payload: body.payload,
        priority: body.priority,
        delay: Duration::from_secs(body.delay_secs.min(365 * 24 * 60 * 60)),
        user_id: body.user_id,
        idempotency_key: body.idempotency_key,
        from_client: false,
    };
    let (job, repeated) = auth.app.submit_job(&queue, submit).await?;
    let status = if repeated { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({ "job": job.public(), "repeated": repeated }))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    wait_secs: u64,
}

/// `POST /apps/{id}/queues/{queue}/claim`: 200 with a job and its `lease`, or 204 after the wait.
pub async fn claim(
    State(state): State<AppState>,
    Path((app_id, queue)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let body: ClaimBody = parse(&body)?;
    let cap = MAX_CLAIM_WAIT_SECS.min(state.settings.request_timeout_secs.saturating_sub(1));
    let wait = Duration::from_secs(body.wait_secs.min(cap));
    match auth.app.claim_job(&queue, wait).await? {
        Some(job) => Ok(Json(json!({ "job": job })).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `GET /apps/{id}/queues/{queue}`: counts by state; `?state=dead&limit=N` lists jobs too.
pub async fn queue(
    State(state): State<AppState>,
    Path((app_id, queue)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let counts = auth.app.queue_counts(&queue).await?;
    let mut answer = json!({ "queue": queue, "counts": counts });
    if let Some(state_name) = auth.param("state") {
        let job_state =
            JobState::parse(state_name).ok_or_else(|| ApiError::BadRequest(format!("unknown state {state_name:?}")))?;
        let limit = auth.param("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
        let jobs: Vec<_> = auth.app.list_jobs(&queue, job_state, limit).await?.iter().map(|j| j.public()).collect();
        answer["jobs"] = json!(jobs);
    }
    Ok(Json(answer))
}

/// `GET /apps/{id}/jobs/{job}`.
pub async fn show(
    State(state): State<AppState>,
    Path((app_id, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let job = auth.app.job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    Ok(Json(json!({ "job": job.public() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    #[serde(default)]
    lease: String,
    lease_secs: Option<u64>,
    progress: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<String>,
    retry: Option<bool>,
}

/// `POST /apps/{id}/jobs/{job}/{action}`: extend, progress, finish, fail, cancel, requeue.
pub async fn act(
    State(state): State<AppState>,
    Path((app_id, id, action)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let report: Report = parse(&body)?;
    let app = &auth.app;
    let need = |field: &str| ApiError::BadRequest(format!("{action} needs {field}"));
    let job = match action.as_str() {
        "extend" => app.extend_job(&id, &report.lease, report.lease_secs).await?,
        "progress" => app.job_progress(&id, &report.lease, report.progress.ok_or_else(|| need("progress"))?).await?,
        "finish" => {
            let result = report.result.unwrap_or_else(|| RawValue::from_string("null".into()).unwrap_or_default());
            app.finish_job(&id, &report.lease, Outcome::Succeeded { result }).await?
        }
        "fail" => {
            let error = report.error.ok_or_else(|| need("error"))?;
            if error.len() > 4096 {
                return Err(ApiError::BadRequest("error is longer than 4096 bytes".into()));
            }
            app.finish_job(&id, &report.lease, Outcome::Failed { error, retry: report.retry.unwrap_or(true) }).await?
        }
        "cancel" => app.cancel_job(&id).await?,
        "requeue" => app.requeue_job(&id).await?,
        other => return Err(ApiError::NotFound(format!("no job action {other:?}"))),
    };
    Ok(Json(json!({ "job": job.public() })))
}
