//! Pages outside the apps API: `/q/{id}` serves a quick app, `/api/config`
//! tells the UI which model answers, and the 404 page. (What the builder
//! shows about an app is `/api/apps/{id}`, in [`super::apps`].)

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_types::SandboxId;
use serde_json::json;

use crate::chat::quick;
use crate::serve::AppState;

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
