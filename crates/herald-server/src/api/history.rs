//! `GET /apps/{id}/channels/{name}/history?after=N&limit=L`: a channel's recent events.
//!
//! Answers the channel's position and up to `limit` events after serial `after`, oldest first, in
//! the shape clients receive them. `truncated` says that some events after `after` are no longer
//! held, so the caller must refetch its state rather than assume it saw everything.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

/// Events returned when `limit` is not given, and the most one page may hold.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub async fn history(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let bad = |m: &str| ApiError::BadRequest(m.to_owned());
    let channel = auth.channel(&channel)?;
    let after = match auth.param("after") {
        Some(text) => text.parse::<u64>().map_err(|_| bad("after must be a serial (a whole number)"))?,
        None => 0,
    };
    let limit = match auth.param("limit") {
        Some(text) => text.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)),
        None => Some(DEFAULT_LIMIT),
    }
    .ok_or_else(|| bad(&format!("limit must be 1 to {MAX_LIMIT}")))?;
    let Some(page) = auth.app.history(&channel, after, limit, Instant::now()).await? else {
        return Ok(Json(
            json!({ "channel": channel.as_str(), "position": null, "events": [], "truncated": after > 0 }),
        ));
    };
    let events: Vec<Value> =
        page.events.iter().filter_map(|(_, frame)| serde_json::from_slice::<Value>(frame).ok()).collect();
    Ok(Json(json!({
        "channel": channel.as_str(),
        "position": { "epoch": &*page.epoch, "serial": page.head },
        "events": events,
        "truncated": page.truncated,
    })))
}
