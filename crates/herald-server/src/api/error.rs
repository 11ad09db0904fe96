//! API errors as values that know their HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_core::PublishError;
use herald_core::cursors::CursorError;
use herald_core::engine::EngineError;
use herald_core::feeds::FeedError;
use herald_core::jobs::JobError;
use herald_protocol::RequestAuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(#[from] RequestAuthError),
    #[error("app disabled")]
    AppDisabled,
    #[error("unknown app id")]
    UnknownApp,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(#[from] EngineError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    StoreDown(String),
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        let message = error.to_string();
        match error {
            JobError::UnknownQueue(_) | JobError::UnknownJob(_) => Self::NotFound(message),
            JobError::InvalidPayload(_) | JobError::Invalid(_) => Self::BadRequest(message),
            JobError::QueueFull { .. } => Self::TooMany(message),
            JobError::ClientSubmitNotAllowed => Self::Forbidden(message),
            JobError::LeaseMismatch | JobError::WrongState(_) => Self::Conflict(message),
            JobError::Unavailable(_) => Self::StoreDown(message),
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(error: FeedError) -> Self {
        let message = error.to_string();
        match error {
            FeedError::UnknownItem(_) => Self::NotFound(message),
            FeedError::ItemExists(_) | FeedError::FeedFull { .. } => Self::Conflict(message),
            FeedError::ItemTooLarge { .. } => Self::PayloadTooLarge(message),
            FeedError::InvalidId | FeedError::SelfAnchor | FeedError::Invalid(_) | FeedError::NotAFeed(_) => {
                Self::BadRequest(message)
            }
            FeedError::Unavailable(_) => Self::StoreDown(message),
        }
    }
}

impl From<CursorError> for ApiError {
    fn from(error: CursorError) -> Self {
        Self::StoreDown(error.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::AppDisabled => StatusCode::FORBIDDEN,
            Self::UnknownApp => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::StoreDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::PayloadTooLarge { .. } => Self::PayloadTooLarge(error.to_string()),
            PublishError::IdempotencyConflict => Self::Conflict(error.to_string()),
            PublishError::Unavailable(error) => Self::Unavailable(error),
            PublishError::Cursors(error) => error.into(),
            _ => Self::BadRequest(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::info!(status = status.as_u16(), "api request refused: {self}");
        (status, format!("{self}\n")).into_response()
    }
}
