//! The web UI: plain HTML, CSS and JavaScript modules in `web/`, embedded in
//! the binary (no front-end build step to run Kiln). Served with a CSP that
//! allows this origin's scripts and framing previews (`*.localhost` or the
//! configured preview domain) and quick apps only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::serve::AppState;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn csp(st: &AppState) -> String {
    let (scheme, _) = st.cfg.edge.public_url.split_once("://").unwrap_or(("http", ""));
    // Inline script and style are allowed only because a quick app is shown
    // in an `srcdoc` frame, which inherits this policy (the frame is
    // sandboxed without `allow-same-origin`, so it cannot reach this page).
    // The UI itself never inserts untrusted HTML.
    format!(
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
         script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-src 'self' {scheme}://*.{d}:*; \
         object-src 'none'; base-uri 'none'; form-action 'self'",
        d = st.cfg.edge.preview_domain
    )
}

fn serve(st: &AppState, path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut r = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if path.ends_with(".html")
        && let Ok(v) = HeaderValue::from_str(&csp(st))
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    r
}

pub async fn index(State(st): State<Arc<AppState>>) -> Response {
    serve(&st, "index.html")
}

pub async fn asset(State(st): State<Arc<AppState>>, Path(path): Path<String>) -> Response {
    if path.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    serve(&st, &path)
}
