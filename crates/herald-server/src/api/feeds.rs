//! Feed routes for backends: publish, edit, move and retract items, read one item, the whole feed,
//! or what changed after a serial. Signed like the rest of the API; a change answers with the
//! position its event took, so a backend can tell clients "you are current at N".

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::feeds::{Applied, FeedChange, Place, new_item_id};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Where an item goes: at most one of `index`, `before`, `after`.
#[derive(Deserialize, Default)]
struct PlaceBody {
    index: Option<usize>,
    before: Option<String>,
    after: Option<String>,
}

impl PlaceBody {
    fn place(self) -> Result<Place, ApiError> {
        match (self.index, self.before, self.after) {
            (None, None, None) => Ok(Place::End),
            (Some(index), None, None) => Ok(Place::Index(index)),
            (None, Some(before), None) => Ok(Place::Before(before)),
            (None, None, Some(after)) => Ok(Place::After(after)),
            _ => Err(ApiError::BadRequest("give at most one of index, before and after".into())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    id: Option<String>,
    value: Box<RawValue>,
    index: Option<usize>,
    before: Option<String>,
    after: Option<String>,
}

fn answer(status: StatusCode, id: &str, applied: &Applied) -> Response {
    (status, Json(json!({ "id": id, "position": applied.position }))).into_response()
}

/// `POST /apps/{id}/feeds/{channel}/items`: 201 with the item's id and the change's position.
pub async fn publish(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let body: PublishBody = parse(&body)?;
    let place = PlaceBody { index: body.index, before: body.before, after: body.after }.place()?;
    let id = body.id.unwrap_or_else(new_item_id);
    let change = FeedChange::Publish { id: id.clone(), value: body.value, place };
    let applied = auth.app.feed_apply(&channel, change).await?;
    Ok(answer(StatusCode::CREATED, &id, &applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    value: Box<RawValue>,
    #[serde(default)]
    merge: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    index: Option<usize>,
    before: Option<String>,
    after: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetractBody {}

/// `POST /apps/{id}/feeds/{channel}/items/{item}/{edit|move|retract}`.
pub async fn change(
    State(state): State<AppState>,
    Path((app_id, channel, item, action)): Path<(String, String, String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let change = match action.as_str() {
        "edit" => {
            let body: EditBody = parse(&body)?;
            FeedChange::Edit { id: item.clone(), value: body.value, merge: body.merge }
        }
        "move" => {
            let body: MoveBody = parse(&body)?;
            let place = PlaceBody { index: body.index, before: body.before, after: body.after }.place()?;
            FeedChange::Move { id: item.clone(), place }
        }
        "retract" => {
            let _: RetractBody = parse(&body)?;
            FeedChange::Retract { id: item.clone() }
        }
        other => return Err(ApiError::NotFound(format!("no feed action {other:?} (edit, move, retract)"))),
    };
    let applied = auth.app.feed_apply(&channel, change).await?;
    Ok(answer(StatusCode::OK, &item, &applied))
}

/// `GET /apps/{id}/feeds/{channel}/items/{item}`.
pub async fn item(
    State(state): State<AppState>,
    Path((app_id, channel, item)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &[])?;
    match auth.app.feed_item(&channel, &item).await? {
        Some(found) => Ok(Json(found).into_response()),
        None => Err(ApiError::NotFound(format!("no item {item:?} in this feed"))),
    }
}

#[derive(Deserialize)]
pub struct FeedQuery {
    modified_since: Option<u64>,
    epoch: Option<String>,
}

/// `GET /apps/{id}/feeds/{channel}[?modified_since=N[&epoch=E]]`: the whole feed, or what changed.
pub async fn show(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    Query(query): Query<FeedQuery>,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &[])?;
    match query.modified_since {
        Some(since) => Ok(Json(auth.app.feed_changes(&channel, since, query.epoch).await?).into_response()),
        None => Ok(Json(auth.app.feed_snapshot(&channel).await?).into_response()),
    }
}
