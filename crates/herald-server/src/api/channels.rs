//! Channel queries: list occupied channels, one channel's attributes, a presence channel's users.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use herald_protocol::ChannelKind;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

fn attributes(info: Option<&str>) -> Vec<&str> {
    info.map(|i| i.split(',').map(str::trim).filter(|a| !a.is_empty()).collect()).unwrap_or_default()
}

/// `GET /apps/{id}/channels?filter_by_prefix=&info=user_count`
pub async fn list(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let prefix = auth.param("filter_by_prefix").unwrap_or("");
    let mut user_count = false;
    for attribute in attributes(auth.param("info")) {
        match attribute {
            "user_count" if prefix.starts_with("presence-") => user_count = true,
            "user_count" => return Err(bad("info=user_count requires filter_by_prefix=presence-")),
            "subscription_count" => {}
            other => return Err(bad(&format!("unknown info attribute {other:?}"))),
        }
    }
    let mut channels = Map::new();
    for (name, counts) in auth.app.occupied_channels(prefix).await? {
        let mut attributes = Map::new();
        if user_count {
            attributes.insert("user_count".into(), counts.user_count.into());
        }
        channels.insert(name.to_string(), Value::Object(attributes));
    }
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /apps/{id}/channels/{name}?info=user_count,subscription_count,cache`
pub async fn show(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let channel = auth.channel(&channel)?;
    let info = auth.app.channel_info(&channel, Instant::now()).await?;
    let mut body = Map::new();
    body.insert("occupied".into(), info.occupied.into());
    for attribute in attributes(auth.param("info")) {
        match attribute {
            "user_count" if channel.kind() == ChannelKind::Presence => {
                body.insert("user_count".into(), info.counts.user_count.into());
            }
            "user_count" => return Err(bad("user_count is only available for presence channels")),
            "subscription_count" if channel.kind() != ChannelKind::Presence => {
                body.insert("subscription_count".into(), info.counts.subscription_count.into());
            }
            "subscription_count" => {
                return Err(bad("subscription_count is not available for presence channels; use user_count"));
            }
            "cache" if channel.is_cache() => {
                let cache = info.cache.as_ref().map(|c| {
                    let ttl = c.expires_at.saturating_duration_since(Instant::now()).as_secs();
                    json!({ "event": &*c.event, "data": &*c.data, "ttl": ttl })
                });
                body.insert("cache".into(), cache.unwrap_or(Value::Null));
            }
            "cache" => return Err(bad("cache is only available for cache channels")),
            other => return Err(bad(&format!("unknown info attribute {other:?}"))),
        }
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /apps/{id}/channels/{name}/users`
pub async fn users(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let channel = auth.channel(&channel)?;
    if channel.kind() != ChannelKind::Presence {
        return Err(bad("users are only available for presence channels"));
    }
    let users: Vec<Value> =
        auth.app.presence_users(&channel).await?.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(Json(json!({ "users": users })))
}
