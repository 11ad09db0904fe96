//! `POST /apps/{id}/users/{user_id}/terminate_connections`: close a signed-in user's connections.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use serde_json::{Value, json};

use super::ApiError;
use super::auth::authenticate;
use crate::state::AppState;

pub async fn terminate_connections(
    State(state): State<AppState>,
    Path((app_id, user_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let auth = authenticate(&state, &app_id, &method, &uri, &body)?;
    let closed = auth.app.terminate_user(&user_id).await?;
    tracing::info!(app = %auth.app.id(), closed, "terminated a user's connections");
    Ok(Json(json!({})))
}
