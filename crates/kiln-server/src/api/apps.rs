//! `/api/apps*` and the owner header: the handlers parse the request (the
//! `X-Kiln-Key` owner, the app id, the body) and answer; the
//! [`AppService`](crate::apps::AppService) does the work.
//!
//! The owner key travels only in a header: no route takes it in its path or
//! query string, and nothing here logs it (a short hash at most).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_types::app::{AppList, AppSummary, OWNER_HEADER, RenameApp};
use kiln_types::{AppId, OwnerKey};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::chat::ndjson;
use crate::apps::{AppError, AppService, AppView};
use crate::serve::AppState;

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound | AppError::NoSuchVersion(_) => ApiError::NotFound(e.to_string()),
            AppError::BadInput(m) => ApiError::BadRequest(m),
            AppError::Busy => ApiError::Conflict(e.to_string()),
            AppError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// The caller's owner key from `X-Kiln-Key`, or a 400 saying to send it.
pub fn owner(headers: &HeaderMap) -> Result<OwnerKey, ApiError> {
    let bad = |e: kiln_types::OwnerKeyError| ApiError::BadRequest(e.to_string());
    let raw = headers.get(OWNER_HEADER).ok_or_else(|| bad(kiln_types::OwnerKeyError))?;
    raw.to_str().map_err(|_| bad(kiln_types::OwnerKeyError))?.parse().map_err(bad)
}

pub fn parse_app_id(raw: &str) -> Result<AppId, ApiError> {
    // Malformed ids are answered like unknown ones.
    raw.parse().map_err(|e: kiln_types::AppIdError| ApiError::NotFound(e.to_string()))
}

pub async fn list(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<AppList>, ApiError> {
    let owner = owner(&headers)?;
    Ok(Json(AppService::new(&st).list(&owner).await?))
}

pub async fn get(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let owner = owner(&headers)?;
    let id = parse_app_id(&id)?;
    Ok(Json(AppService::new(&st).view(&owner, &id).await?))
}

pub async fn rename(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AppSummary>, ApiError> {
    let owner = owner(&headers)?;
    let id = parse_app_id(&id)?;
    let b: RenameApp = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON like {{\"name\": \"My app\"}}: {e}")))?;
    Ok(Json(AppService::new(&st).rename(&owner, &id, &b.name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: Option<String>,
}

pub async fn events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = owner(&headers)?;
    let id = parse_app_id(&id)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?after=<the last seq you saw>: {e}")))?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("after must be the last seq you saw (an integer); got {a:?}")))?,
    };
    Ok(ndjson(AppService::new(&st).events(&owner, &id, after).await?))
}

pub async fn cancel(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = owner(&headers)?;
    let id = parse_app_id(&id)?;
    let cancelled = AppService::new(&st).cancel(&owner, &id).await?;
    let status = if cancelled { StatusCode::OK } else { StatusCode::CONFLICT };
    let msg = if cancelled { "cancelling" } else { "nothing is running for this app" };
    Ok((status, Json(json!({ "cancelled": cancelled, "message": msg }))).into_response())
}

pub async fn restore(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, sha)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let owner = owner(&headers)?;
    let id = parse_app_id(&id)?;
    let r = AppService::new(&st).restore(&owner, &id, &sha).await?;
    Ok(Json(json!({ "restored": sha, "version": r.version, "previewUrl": r.preview_url })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_comes_only_from_the_header_with_a_message_naming_it() {
        let mut h = HeaderMap::new();
        for bad in [None, Some("nope"), Some("3f2b8c1e9a4d4e6f8b2a1c3d5e7f9a0b")] {
            if let Some(v) = bad {
                h.insert(OWNER_HEADER, v.parse().unwrap());
            }
            match owner(&h) {
                Err(ApiError::BadRequest(m)) => assert!(m.contains("X-Kiln-Key"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        h.insert(OWNER_HEADER, "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b".parse().unwrap());
        assert!(owner(&h).is_ok());
        assert!(matches!(parse_app_id("../etc"), Err(ApiError::NotFound(_))));
    }
}
