//! envd's error type and its single conversion to an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_types::envd::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("path {0:?} is not inside /app (absolute paths, `..` and symlinks that leave /app are refused)")]
    PathEscapes(String),
    #[error("{0:?} does not exist")]
    NotFound(String),
    #[error("{0:?} is a directory")]
    IsDirectory(String),
    #[error("body of {got} bytes is over the {max}-byte limit")]
    TooLarge { got: u64, max: u64 },
    #[error("nothing answers on port {0} inside the sandbox")]
    Upstream(u16),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("events after seq {after} are no longer kept (oldest kept: {oldest}); reload the session")]
    Expired { after: u64, oldest: u64 },
    #[error("agent: {0}")]
    Agent(String),
    #[error("internal error: {0}")]
    Io(#[from] std::io::Error),
}

impl EnvdError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            EnvdError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            EnvdError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            EnvdError::PathEscapes(_) => (StatusCode::BAD_REQUEST, "path_escapes_app"),
            EnvdError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EnvdError::IsDirectory(_) => (StatusCode::BAD_REQUEST, "is_directory"),
            EnvdError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            EnvdError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            EnvdError::Conflict(code, _) => (StatusCode::CONFLICT, code),
            EnvdError::Expired { .. } => (StatusCode::GONE, "events_expired"),
            EnvdError::Agent(_) => (StatusCode::BAD_GATEWAY, "agent_error"),
            EnvdError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for EnvdError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let error = if let EnvdError::Io(e) = &self {
            // Logged with context here; the client gets no internals.
            tracing::error!(error = %e, "envd internal error");
            "internal error in envd; see the sandbox log".to_owned()
        } else {
            self.to_string()
        };
        (status, axum::Json(ErrorBody { error, code: code.to_owned() })).into_response()
    }
}
