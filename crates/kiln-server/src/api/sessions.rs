//! `/api/sessions/{key}`: what the builder shows about a session (its app,
//! sandbox, versions, quick app) and restoring a version; `/q/{id}` serves
//! a quick app; `/api/config` tells the UI which model answers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_sandbox::{EnvdClient, SandboxProvider};
use kiln_types::SandboxId;
use kiln_types::chat::EventBody;
use kiln_versions::{AppRepo, Version};
use serde::Serialize;
use serde_json::json;

use super::ApiError;
use super::chat::parse_key;
use crate::chat::quick;
use crate::serve::AppState;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    app_id: Option<String>,
    sandbox: Option<SandboxView>,
    running: bool,
    /// The newest event `seq` in the chat log (0: none since the server started).
    last_seq: u64,
    versions: Vec<Version>,
    quick: Option<QuickView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SandboxView {
    id: String,
    state: Option<kiln_types::SandboxState>,
    preview_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuickView {
    id: String,
    url: String,
    versions: Vec<Version>,
}

async fn versions_of(repo: AppRepo) -> Result<Vec<Version>, ApiError> {
    tokio::task::spawn_blocking(move || repo.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub async fn get(State(st): State<Arc<AppState>>, Path(key): Path<String>) -> Result<Json<SessionView>, ApiError> {
    let key = parse_key(&key)?;
    let store = st.pool.store();
    let session = store.get_session(key.as_str()).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let quick_id = store.get_quick_app(key.as_str()).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let log = st.chat.existing(key.as_str());
    if session.is_none() && quick_id.is_none() && log.is_none() {
        return Err(ApiError::NotFound("no such session: it starts with its first prompt (POST /api/chat)".into()));
    }
    let mut view = SessionView {
        app_id: None,
        sandbox: None,
        running: log.as_ref().is_some_and(|l| l.running()),
        last_seq: log.as_ref().map_or(0, |l| l.newest()),
        versions: vec![],
        quick: None,
    };
    if let Some(s) = session {
        if kiln_versions::valid_app_id(&s.app_id) {
            let repo = AppRepo::open(&st.cfg.data_dir, &s.app_id).map_err(|e| ApiError::Internal(e.to_string()))?;
            view.versions = versions_of(repo).await?;
        }
        view.app_id = Some(s.app_id);
        if let Some(id) = s.sandbox_id {
            let list = st.provider.list().await.map_err(|e| ApiError::Internal(e.to_string()))?;
            let state = list.into_iter().find(|i| i.id.as_str() == id).map(|i| i.state);
            view.sandbox = Some(SandboxView { preview_url: st.cfg.edge.preview_url(&id), id, state });
        }
    }
    if let Some(id) = quick_id.filter(|id| quick::valid_quick_id(id)) {
        let repo = quick::repo(&st, &id).map_err(|e| ApiError::Internal(e.to_string()))?;
        let versions = versions_of(repo).await?;
        view.quick = Some(QuickView { url: format!("{}/q/{id}", st.cfg.edge.public_url), id, versions });
    }
    Ok(Json(view))
}

/// Restores a version into the session's sandbox (a new one, with the
/// newest version, if the old one is gone) and records it as a new version.
pub async fn restore(
    State(st): State<Arc<AppState>>,
    Path((key, sha)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = parse_key(&key)?;
    if !(4..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(format!("{sha:?} is not a version id (4 to 40 hex digits)")));
    }
    let session = st.pool.store().get_session(key.as_str()).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(session) = session else {
        return Err(ApiError::NotFound("no such session: it has no app to restore yet".into()));
    };
    if kiln_versions::valid_app_id(&session.app_id) {
        let repo = AppRepo::open(&st.cfg.data_dir, &session.app_id).map_err(|e| ApiError::Internal(e.to_string()))?;
        let s = sha.clone();
        let known = tokio::task::spawn_blocking(move || repo.files_at(&s).is_ok()).await.unwrap_or(false);
        if !known {
            return Err(ApiError::NotFound(format!("this app has no version {sha}")));
        }
    }
    // Holds the session's turn lock: a restore never races a prompt.
    let mut turn = st.chat.begin(key.as_str()).map_err(|_| {
        ApiError::Conflict("a prompt is running for this session; wait for it to finish or cancel it".into())
    })?;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let result = async {
        let (a, ctx) = crate::chat::vm::acquire(&st, key.as_str(), tx).await?;
        let client = EnvdClient::new(a.endpoint.clone());
        let v = kiln_bridge::restore_version(&client, &ctx, &sha).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((a.sandbox_id, v))
    }
    .await;
    match result {
        Ok((sandbox, v)) => {
            if let Some(v) = &v {
                turn.emit(EventBody::Version(v.clone()));
            }
            turn.finish(kiln_types::chat::StopReason::EndTurn);
            Ok(Json(json!({
                "restored": sha,
                "version": v,
                "previewUrl": st.cfg.edge.preview_url(sandbox.as_str()),
            }))
            .into_response())
        }
        Err(e) => {
            turn.fail("restore_failed", "the version could not be restored; try again", true);
            Err(ApiError::Internal(format!("restoring {sha}: {e}")))
        }
    }
}

/// `/q/{id}` (newest) and `/q/{id}/{sha}`: a quick app, under a CSP that
/// lets it run its own inline code and nothing else — no network, no
/// frames, no forms, and an opaque origin (`sandbox`), so it can neither
/// call Kiln's API as the viewer nor read anything of Kiln's origin.
pub async fn quick_page(st: Arc<AppState>, id: String, sha: Option<String>) -> Response {
    if !quick::valid_quick_id(&id) || sha.as_deref().is_some_and(|s| !s.bytes().all(|b| b.is_ascii_hexdigit())) {
        return not_found_page("This quick app does not exist.");
    }
    if !st.cfg.data_dir.join("apps").join(format!("quick-{id}.git")).exists() {
        return not_found_page("This quick app does not exist.");
    }
    let st2 = st.clone();
    let html = tokio::task::spawn_blocking(move || quick::html_at(&st2, &id, sha.as_deref())).await;
    match html {
        Ok(Ok(Some(h))) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, QUICK_CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            h,
        )
            .into_response(),
        Ok(Ok(None)) | Ok(Err(kiln_versions::VersionsError::UnknownVersion(_))) => {
            not_found_page("This quick app has no such version.")
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading a quick app failed");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the quick page task panicked");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub const QUICK_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
img-src data: blob:; media-src data: blob:; font-src data:; form-action 'none'; frame-ancestors *; \
base-uri 'none'; sandbox allow-scripts";

pub async fn quick_newest(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    quick_page(st, id, None).await
}

pub async fn quick_version(State(st): State<Arc<AppState>>, Path((id, sha)): Path<(String, String)>) -> Response {
    quick_page(st, id, Some(sha)).await
}

/// A small styled 404 page (previews and quick apps are opened by people).
pub fn not_found_page(msg: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>Not found · Kiln</title><body style=\"font-family:system-ui,sans-serif;display:grid;place-items:center;\
         min-height:90vh;color:#334155;background:#f8fafc\"><div style=text-align:center><h1 style=margin:0>Not found</h1>\
         <p>{}</p><p style=color:#94a3b8>Links to previews work while the app's sandbox is running.</p></div></body></html>",
        html_escape(msg)
    );
    (axum::http::StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub async fn config(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let i = st.models.info();
    Json(json!({
        "model": i.model,
        "quickModel": i.quick_model,
        "demoAvailable": true,
        "howTo": i.how_to,
        "previewDomain": st.cfg.edge.preview_domain,
        "publicUrl": st.cfg.edge.public_url,
        "agent": st.cfg.agent_command().is_some(),
    }))
}

/// Sandbox ids in previews are validated before any lookup.
pub fn parse_sandbox_id(s: &str) -> Option<SandboxId> {
    s.parse().ok()
}
