//! Read-cursor routes for backends: mark a user's channel read (every connection of the user is
//! told), and unread counts for many channels at once (a sidebar in one call).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::cursors::service::MAX_UNREAD_CHANNELS;
use herald_protocol::ChannelName;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    channel: String,
    serial: u64,
}

/// `POST /apps/{id}/users/{user}/read`.
pub async fn read(
    State(state): State<AppState>,
    Path((app_id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let body: ReadBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    check_channel(&body.channel, auth.app.config.max_channel_name_len)?;
    let (unread, moved) = auth.app.mark_read(&user, &body.channel, body.serial).await?;
    let answer = json!({ "channel": unread.channel, "cursor": unread.cursor, "unread": unread.unread, "moved": moved });
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnreadBody {
    channels: Vec<String>,
}

/// `POST /apps/{id}/users/{user}/unread`: `{"channels": {"<name>": {"cursor", "unread"}}}`.
pub async fn unread(
    State(state): State<AppState>,
    Path((app_id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let body: UnreadBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if body.channels.len() > MAX_UNREAD_CHANNELS {
        return Err(ApiError::BadRequest(format!("at most {MAX_UNREAD_CHANNELS} channels per call")));
    }
    for channel in &body.channels {
        check_channel(channel, auth.app.config.max_channel_name_len)?;
    }
    let found = auth.app.unread(&user, body.channels).await?;
    let channels: BTreeMap<_, _> =
        found.into_iter().map(|u| (u.channel, json!({ "cursor": u.cursor, "unread": u.unread }))).collect();
    Ok(Json(json!({ "channels": channels })).into_response())
}

fn check_channel(channel: &str, max_len: usize) -> Result<(), ApiError> {
    ChannelName::parse(channel, max_len).map(drop).map_err(|e| ApiError::BadRequest(format!("{channel:?}: {e}")))
}
