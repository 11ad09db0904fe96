//! Webhook dead letters: list them, and queue them again once the endpoint works
//! (`herald webhooks dead-letters list|replay` calls these). Signed like the rest of the API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use herald_core::webhooks::{OutboxError, Replay, WebhookSink};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::{Authenticated, authenticate};
use crate::state::AppState;

/// Most dead letters listed (and ids replayed) per request.
const MAX_LIMIT: usize = 1000;

impl From<OutboxError> for ApiError {
    fn from(error: OutboxError) -> Self {
        Self::StoreDown(error.to_string())
    }
}

fn sink(auth: &Authenticated) -> Result<&WebhookSink, ApiError> {
    auth.app.webhook_sink().ok_or_else(|| ApiError::NotFound("this app has no webhooks".into()))
}

/// `GET /apps/{id}/webhooks/dead_letters[?limit=N]`: oldest first.
pub async fn dead_letters(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let limit = match auth.param("limit") {
        Some(limit) => limit.parse::<usize>().map_err(|_| ApiError::BadRequest("limit must be a number".into()))?,
        None => 100,
    };
    let letters = sink(&auth)?.dead_letters(limit.min(MAX_LIMIT)).await?;
    let letters: Vec<Value> = letters
        .into_iter()
        .map(|letter| {
            let event = RawValue::from_string(letter.event).map_or(Value::Null, |raw| json!(raw));
            json!({
                "id": letter.id, "url": letter.url, "event": event,
                "failed_at_ms": letter.failed_at_ms, "reason": letter.reason,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
}

/// `POST /apps/{id}/webhooks/dead_letters/replay` with `{"ids":[…]}` or `{"all":true}`: queues
/// them again, each at the end of its endpoint's queue.
pub async fn replay(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let request: ReplayBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let which = match (request.all, request.ids.is_empty()) {
        (true, true) => Replay::All,
        (false, false) if request.ids.len() <= MAX_LIMIT => Replay::Ids(request.ids),
        (false, false) => return Err(ApiError::BadRequest(format!("at most {MAX_LIMIT} ids per replay"))),
        _ => return Err(ApiError::BadRequest("give either ids or all: true".into())),
    };
    let replayed = sink(&auth)?.replay(which).await?;
    tracing::info!(app = %auth.app.id(), replayed, "webhook dead letters replayed");
    Ok(Json(json!({ "replayed": replayed })))
}
