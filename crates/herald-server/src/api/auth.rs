//! Pusher request signing at the HTTP edge: find the app by the path's id, then check the signature.
//!
//! The query string is decoded once here; the core's [`SignedRequest`] does the cryptography. The
//! path signed is the path as received, which is what the SDKs sign.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{Method, Uri};
use herald_core::App;
use herald_protocol::{ChannelName, SignedRequest};

use super::ApiError;
use crate::state::AppState;

/// A request that passed signature checks, with its decoded query.
pub struct Authenticated {
    pub app: Arc<App>,
    pub query: Vec<(String, String)>,
}

impl Authenticated {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A channel name from the path, validated against this app's limits (400 otherwise).
    pub fn channel(&self, name: &str) -> Result<ChannelName, ApiError> {
        ChannelName::parse(name, self.app.config.max_channel_name_len)
            .map_err(|e| ApiError::BadRequest(format!("invalid channel: {e}")))
    }
}

pub fn authenticate(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Authenticated, ApiError> {
    let app = state.registry.by_id(app_id).cloned().ok_or(ApiError::UnknownApp)?;
    let query = decode_query(uri.query().unwrap_or(""))?;
    let request = SignedRequest { method: method.as_str(), path: uri.path(), query: &query, body };
    request.verify(app.key(), app.secret(), unix_now())?;
    if !app.config.enabled {
        return Err(ApiError::AppDisabled);
    }
    Ok(Authenticated { app, query })
}

fn decode_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse::<Uri>().map_err(|_| ApiError::BadRequest("invalid query string".into()))?,
    )
    .map(|q| q.0)
    .map_err(|_| ApiError::BadRequest("invalid query string".into()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
