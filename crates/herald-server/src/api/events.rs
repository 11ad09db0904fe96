//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`.
//!
//! A request is parsed and every event in it checked before anything is delivered, so a batch with
//! one bad event delivers none. `info` asks for channel attributes computed after delivery. Herald
//! adds `"serials"` to every answer (the serial each channel gave the event) and honours
//! `idempotency_key`: a repeat inside the app's window answers with the first serials and delivers
//! nothing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use herald_core::{App, Publish};
use herald_protocol::{ChannelKind, ChannelName, SocketId};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

#[derive(Deserialize)]
struct EventBody {
    name: String,
    data: Value,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    count_unread: bool,
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Vec<EventBody>,
}

/// An event after parsing, ready to check and deliver.
struct Event {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    exclude: Option<SocketId>,
    count_unread: bool,
    info: Vec<Attribute>,
    idempotency_key: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attribute {
    UserCount,
    SubscriptionCount,
}

impl Event {
    fn parse(body: EventBody, app: &App) -> Result<Self, ApiError> {
        let names = match (body.channels, body.channel) {
            (Some(channels), None) => channels,
            (None, Some(channel)) => vec![channel],
            (Some(_), Some(_)) => return Err(bad("give either \"channels\" or \"channel\", not both")),
            (None, None) => return Err(bad("missing \"channels\"")),
        };
        let max = app.config.max_event_channels;
        if names.len() > max {
            return Err(bad(&format!("too many channels: at most {max} per event")));
        }
        let channels = names
            .iter()
            .map(|name| {
                ChannelName::parse(name, app.config.max_channel_name_len)
                    .map_err(|e| bad(&format!("invalid channel {:?}: {e}", truncate(name))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = body.socket_id.map(|s| s.parse::<SocketId>().map_err(|e| bad(&e.to_string()))).transpose()?;
        let data = match body.data {
            Value::String(text) => text,
            other => other.to_string(),
        };
        let info = parse_attributes(body.info.as_deref())?;
        let event = Self {
            name: body.name,
            data,
            channels,
            exclude,
            count_unread: body.count_unread,
            info,
            idempotency_key: body.idempotency_key,
        };
        app.check_publish(&event.as_publish())?;
        Ok(event)
    }

    fn as_publish(&self) -> Publish<'_> {
        Publish {
            event: &self.name,
            channels: &self.channels,
            data: &self.data,
            exclude: self.exclude,
            idempotency_key: self.idempotency_key.as_deref(),
            count_unread: self.count_unread,
        }
    }

    /// Delivers; returns `{channel: serial}` and, if any were asked for, the attributes per channel.
    async fn deliver(&self, app: &App) -> Result<(Value, Option<Value>), ApiError> {
        let now = Instant::now();
        let published = app.publish(&self.as_publish(), now).await?;
        if !published.repeated {
            app.counters().published(herald_core::metrics::PublishSource::Api, self.channels.len() as u64);
        }
        let serials: Map<String, Value> =
            self.channels.iter().zip(published.serials.iter()).map(|(c, s)| (c.to_string(), (*s).into())).collect();
        Ok((Value::Object(serials), self.attributes(app, now).await?))
    }

    async fn attributes(&self, app: &App, now: Instant) -> Result<Option<Value>, ApiError> {
        if self.info.is_empty() {
            return Ok(None);
        }
        let mut channels = Map::new();
        for channel in &self.channels {
            let counts = app.channel_info(channel, now).await?.counts;
            let mut attributes = Map::new();
            if self.info.contains(&Attribute::UserCount) && channel.kind() == ChannelKind::Presence {
                attributes.insert("user_count".into(), counts.user_count.into());
            }
            if self.info.contains(&Attribute::SubscriptionCount) {
                attributes.insert("subscription_count".into(), counts.subscription_count.into());
            }
            channels.insert(channel.to_string(), Value::Object(attributes));
        }
        Ok(Some(json!({ "channels": channels })))
    }
}

fn parse_attributes(info: Option<&str>) -> Result<Vec<Attribute>, ApiError> {
    let Some(info) = info.filter(|i| !i.is_empty()) else {
        return Ok(Vec::new());
    };
    info.split(',')
        .map(|name| match name.trim() {
            "user_count" => Ok(Attribute::UserCount),
            "subscription_count" => Ok(Attribute::SubscriptionCount),
            other => Err(bad(&format!("unknown info attribute {:?}", truncate(other)))),
        })
        .collect()
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("invalid JSON body: {e}")))
}

pub async fn publish(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let event = Event::parse(parse_json(&body)?, &auth.app)?;
    let (serials, attributes) = event.deliver(&auth.app).await?;
    let mut answer = attributes.unwrap_or_else(|| json!({}));
    answer["serials"] = serials;
    Ok(Json(answer))
}

pub async fn publish_batch(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let batch: BatchBody = parse_json(&body)?;
    let max = auth.app.config.max_batch_events;
    if batch.batch.len() > max {
        return Err(bad(&format!("too many events: at most {max} per batch")));
    }
    let events = batch.batch.into_iter().map(|e| Event::parse(e, &auth.app)).collect::<Result<Vec<_>, _>>()?;
    let any_info = events.iter().any(|e| !e.info.is_empty());
    // Each batch event names one channel, so its attributes are reported directly; serials are
    // `{channel: serial}` per event; both index-aligned.
    let mut serials = Vec::with_capacity(events.len());
    let mut attributes = Vec::with_capacity(events.len());
    for event in &events {
        let (event_serials, info) = event.deliver(&auth.app).await?;
        let channel = event.channels.first().map(ChannelName::as_str).unwrap_or_default();
        serials.push(event_serials);
        attributes.push(info.map_or_else(|| json!({}), |v| v["channels"][channel].clone()));
    }
    let mut answer = if any_info { json!({ "batch": attributes }) } else { json!({}) };
    answer["serials"] = Value::Array(serials);
    Ok(Json(answer))
}
