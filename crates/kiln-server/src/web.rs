//! The web UI: plain HTML, CSS and JavaScript modules in `web/`, embedded in
//! the binary (no front-end build step to run Kiln).
//!
//! One page, `index.html`, is the landing (`/`) and every app's builder
//! (`/a/<app id>`, the same handler; the page reads the app from the API), so
//! it loads everything by absolute path.
//!
//! The builder page holds the owner key (localStorage; sent only in the
//! `X-Kiln-Key` header, never in a URL) and the right to call Kiln's API, and
//! it shows what sandboxes and models wrote. So its CSP
//! ([`builder_csp`]) allows only this origin's script files — no inline
//! script, no `eval` — requires Trusted Types with no policy allowed (no
//! HTML sink such as `innerHTML` or `srcdoc` can be used at all, and a
//! `javascript:` URL cannot run), frames only previews (`*.<preview
//! domain>`) and this origin, and cannot itself be framed. Were a hostile
//! event to slip past the UI's own URL gate (`web/urls.js`) and text-only
//! rendering, the browser still refuses to run it in Kiln's origin.
//!
//! Quick mode is why the page once allowed `'unsafe-inline'`: it rendered the
//! model's HTML progressively in an `srcdoc` frame, and `srcdoc` documents
//! inherit their parent's policy. Now the quick frame loads a shell document
//! (`web/quick-frame.html`) that is served with the quick apps' own policy
//! ([`shell_csp`]: `sandbox allow-scripts`, so an opaque origin that reaches
//! neither Kiln's origin nor its storage; inline script for the app; no
//! network), and the builder streams the HTML into it with postMessage. The
//! app's inline script is allowed there, in a document that has nothing to
//! steal, instead of on the page that has everything. (Alternatives: a nonce
//! or hashes cannot cover model-written script; `blob:` and `data:`
//! documents inherit the page's policy just as `srcdoc` does; streaming the
//! HTML from the server into `/q/<id>` would need the chat log to be
//! readable by quick app id.)

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

/// The quick frame's shell document (see the module doc).
pub const QUICK_SHELL: &str = "quick-frame.html";

/// The builder page's policy (see the module doc).
pub fn builder_csp(st: &AppState) -> String {
    let (scheme, _) = st.cfg.edge.public_url.split_once("://").unwrap_or(("http", ""));
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'; frame-src 'self' {scheme}://*.{d}:*; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'",
        d = st.cfg.edge.preview_domain
    )
}

/// The quick frame shell's policy: exactly a stored quick app's
/// (`/q/<id>`), so what streams in behaves as what is served later, except
/// that only Kiln's own pages may frame it.
pub fn shell_csp() -> String {
    crate::api::sessions::QUICK_CSP.replace("frame-ancestors *", "frame-ancestors 'self'")
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
    let policy = match path {
        QUICK_SHELL => Some(shell_csp()),
        p if p.ends_with(".html") => Some(builder_csp(st)),
        _ => None,
    };
    match policy.as_deref().map(HeaderValue::from_str) {
        None => {}
        Some(Ok(v)) => {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        }
        // Never a page without its policy (the preview domain is validated,
        // so this is not expected).
        Some(Err(e)) => {
            tracing::error!(error = %e, "the page's CSP is not a valid header value");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
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

#[cfg(test)]
mod tests {
    fn directives(policy: &str) -> std::collections::BTreeSet<String> {
        policy
            .split(';')
            .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|d| !d.is_empty())
            .collect()
    }

    #[test]
    fn the_page_loads_its_files_by_absolute_path_so_it_works_at_every_app_address() {
        let page = super::Assets::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).unwrap();
        let refs: Vec<&str> = ["src=\"", "href=\""]
            .iter()
            .flat_map(|attr| page.split(attr).skip(1).map(|rest| rest.split('"').next().unwrap_or("")))
            .collect();
        assert!(refs.iter().any(|r| r.ends_with("app.js")), "{refs:?}");
        for r in refs {
            assert!(r.starts_with('/'), "{r:?} would resolve under /a/<id>/ and 404 there");
        }
    }

    #[test]
    fn the_quick_shell_has_the_quick_app_policy_framed_only_by_kiln() {
        let shell = directives(&super::shell_csp());
        assert!(shell.contains("frame-ancestors 'self'") && shell.contains("sandbox allow-scripts"), "{shell:?}");
        let not_framing = |s: &std::collections::BTreeSet<String>| {
            s.iter().filter(|d| !d.starts_with("frame-ancestors")).cloned().collect::<Vec<_>>()
        };
        let quick = directives(crate::api::sessions::QUICK_CSP);
        assert_eq!(not_framing(&shell), not_framing(&quick), "the shell and /q/<id> must behave alike");
    }
}
