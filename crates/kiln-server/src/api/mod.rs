//! The HTTP API. Errors convert to responses in one place ([`ApiError`]):
//! user errors are 4xx with a message that says what to do; internal errors
//! are logged with context and answered with a generic 500.

pub mod apps;
pub mod chat;
pub mod pool;
pub mod sessions;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong admin token: send Authorization: Bearer <KILN_POOL_ADMIN_TOKEN>")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<kiln_pool::PoolError> for ApiError {
    fn from(e: kiln_pool::PoolError) -> Self {
        match e {
            kiln_pool::PoolError::TargetTooLarge { .. } => ApiError::BadRequest(e.to_string()),
            kiln_pool::PoolError::Provider(kiln_sandbox::ProviderError::TemplateMissing) => {
                ApiError::Unavailable("the app template is not built yet; try again shortly".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error answering a request");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let msg = match &self {
            ApiError::Internal(_) => "internal error; the server log has the details".to_owned(),
            other => other.to_string(),
        };
        (status, Json(json!({ "error": msg, "code": code }))).into_response()
    }
}
