//! `/api/vm/*`: pool status, top-up, drain, and the operator claim.
//!
//! With `KILN_POOL_ADMIN_TOKEN` set, every route here needs
//! `Authorization: Bearer <token>` (compared in constant time). Without it
//! status and top-up are open — their only effect is bounded by the
//! configured maximum — while drain and claim stay closed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use kiln_pool::{PoolStatus, TopupResult};
use kiln_types::SessionKey;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::serve::AppState;

/// `Ok` if no token is configured (and `open` allows that) or the request
/// carries it.
fn authorize(st: &AppState, headers: &HeaderMap, open_without_token: bool) -> Result<(), ApiError> {
    let Some(token) = &st.cfg.pool.admin_token else {
        return if open_without_token {
            Ok(())
        } else {
            Err(ApiError::BadRequest("this endpoint is disabled until KILN_POOL_ADMIN_TOKEN is set".into()))
        };
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) { Ok(()) } else { Err(ApiError::Unauthorized) }
}

pub async fn status(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<PoolStatus>, ApiError> {
    authorize(&st, &headers, true)?;
    Ok(Json(st.pool.status().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopupBody {
    target: Option<serde_json::Value>,
}

/// Parses the optional `{"target": N}` body with messages that say exactly
/// what was wrong.
fn parse_target(body: &[u8], max: u32) -> Result<Option<u32>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: TopupBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be empty or JSON like {{\"target\": 2}}: {e}")))?;
    let Some(v) = b.target else { return Ok(None) };
    let range = format!("target must be an integer from 0 to {max}");
    match v.as_u64() {
        Some(n) if n <= u64::from(max) => Ok(Some(n as u32)),
        Some(n) => Err(ApiError::BadRequest(format!("{range} (the configured maximum); got {n}"))),
        None => Err(ApiError::BadRequest(format!("{range}; got {v}"))),
    }
}

pub async fn topup(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TopupResult>, ApiError> {
    authorize(&st, &headers, true)?;
    let target = parse_target(&body, st.cfg.pool.max_target)?;
    metrics::counter!("kiln_pool_prewarm_requests_total").increment(1);
    Ok(Json(st.pool.topup(target).await?))
}

#[derive(Serialize)]
pub struct Drained {
    drained: usize,
}

pub async fn drain(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Drained>, ApiError> {
    authorize(&st, &headers, false)?;
    Ok(Json(Drained { drained: st.pool.drain().await? }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimBody {
    session_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claimed {
    sandbox_id: String,
    app_id: String,
    source: kiln_pool::Source,
    ms: u64,
    /// Time the agent's re-initialization took, on a warm claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    reinit_ms: Option<u64>,
    /// The agent had to restart for the claimant's credentials.
    agent_restarted: bool,
    /// The ACP session the claimant's turns run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_session_id: Option<String>,
}

/// Gives a session a sandbox (reuse, warm claim or cold boot): the same path
/// the chat API's first prompt takes, exposed for operators and tests.
pub async fn claim(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Claimed>, ApiError> {
    authorize(&st, &headers, false)?;
    let b: ClaimBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON like {{\"sessionKey\": \"<uuid>\"}}: {e}")))?;
    let key: SessionKey =
        b.session_key.parse().map_err(|e: kiln_types::SessionKeyError| ApiError::BadRequest(e.to_string()))?;
    let a = st.pool.acquire(key.as_str(), &|_, _| {}).await?;
    let agent_session_id = kiln_bridge::AgentSession::parse(a.agent_session.as_deref()).map(|s| s.session_id);
    Ok(Json(Claimed {
        sandbox_id: a.sandbox_id.to_string(),
        app_id: a.app_id,
        source: a.source,
        ms: a.ms,
        reinit_ms: a.reinit_ms,
        agent_restarted: a.agent_restarted,
        agent_session_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_validated_with_clear_messages() {
        assert_eq!(parse_target(b"", 16).unwrap(), None);
        assert_eq!(parse_target(b"{}", 16).unwrap(), None);
        assert_eq!(parse_target(br#"{"target": 3}"#, 16).unwrap(), Some(3));
        assert_eq!(parse_target(br#"{"target": 0}"#, 16).unwrap(), Some(0));
        for (body, needle) in [
            (&br#"{"target": -1}"#[..], "from 0 to 16"),
            (br#"{"target": 17}"#, "configured maximum"),
            (br#"{"target": 99999999999999999999}"#, "from 0 to 16"),
            (br#"{"target": "3"}"#, "from 0 to 16"),
            (br#"{"target": 1.5}"#, "from 0 to 16"),
            (br#"{"target": 3"#, "must be empty or JSON"),
            (br#"{"targte": 3}"#, "unknown field"),
            (b"target=3", "must be empty or JSON"),
        ] {
            match parse_target(body, 16) {
                Err(ApiError::BadRequest(m)) => assert!(m.contains(needle), "{}: {m}", String::from_utf8_lossy(body)),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
