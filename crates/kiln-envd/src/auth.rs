//! Bearer-token check for every envd route.
//!
//! The socket lives in a host directory only Kiln can open, so the token is a
//! second lock: it ties a request to one sandbox (a mixed-up socket path can
//! never drive the wrong sandbox) and keeps the API closed if the directory's
//! permissions are ever wrong.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::EnvdError;

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, EnvdError> {
    let given = req
        .headers()
        .get(kiln_types::envd::AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = given.as_bytes().ct_eq(state.token.as_bytes()).into();
    if ok && !state.token.is_empty() { Ok(next.run(req).await) } else { Err(EnvdError::Unauthorized) }
}
