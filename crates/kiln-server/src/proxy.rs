//! The preview proxy: `http://<sandbox id>.<preview domain>:<port>/…` is the
//! sandbox's Vite dev server, HTTP and the HMR WebSocket, through envd's port
//! proxy on the sandbox's unix socket.
//!
//! The `Host` header only ever selects *which sandbox*: the label must parse
//! as a sandbox id (128 random bits, so ids cannot be guessed), the socket
//! path is built from that validated id under Kiln's sandboxes directory, and
//! the upstream is always port 5173 behind envd — there is no way to name
//! another host, port or path. Every request on a preview host goes here,
//! never to Kiln's own API, so a shared preview link gives read-only access
//! to the running app and nothing else (no chat, no files, no envd token).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use kiln_sandbox::SandboxProvider;

use crate::api::sessions::{not_found_page, parse_sandbox_id};
use crate::serve::AppState;

/// The dev server's port inside every sandbox.
pub const DEV_PORT: u16 = 5173;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

fn host_of(req: &Request) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Routes preview hosts to [`forward`], Kiln's own hosts to its router, and
/// refuses every other `Host` (a page on another site that resolves its
/// name to this machine — DNS rebinding — must not reach the API).
pub async fn route(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let host = host_of(&req).map(str::to_owned);
    if let Some(label) = host.as_deref().and_then(|h| st.cfg.edge.preview_id(h)) {
        let label = label.to_owned();
        return forward(&st, &label, req).await;
    }
    match host {
        Some(h) if !st.cfg.edge.serves_host(&h, st.cfg.listen) => {
            let msg = format!(
                "this server does not answer for Host {h:?}; open {} (or set KILN_PUBLIC_URL to the address you use)",
                st.cfg.edge.public_url
            );
            (StatusCode::MISDIRECTED_REQUEST, msg).into_response()
        }
        _ if cross_site_write(&st, &req) => (
            StatusCode::FORBIDDEN,
            "cross-site request refused: Kiln's API only takes changes from its own pages (or clients without an Origin)",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// A browser request that changes something, sent by a page of another
/// origin (another site, a preview, or a sandboxed quick app: `Origin:
/// null`). Browsers always send `Origin` on such requests; `kiln chat`,
/// curl and other non-browser clients send none and are not affected.
fn cross_site_write(st: &AppState, req: &Request) -> bool {
    if matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS) {
        return false;
    }
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return false };
    let host = origin.split_once("://").map(|(_, h)| h);
    !host.is_some_and(|h| st.cfg.edge.preview_id(h).is_none() && st.cfg.edge.serves_host(h, st.cfg.listen))
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE).is_some()
        && h.get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

pub async fn forward(st: &AppState, label: &str, mut req: Request) -> Response {
    let Some(id) = parse_sandbox_id(label) else {
        return not_found_page("There is no preview at this address.");
    };
    let Ok(client) = st.provider.connect(&id).await else {
        return not_found_page("This preview is not running (its sandbox has stopped or never existed).");
    };
    if req.uri().path().starts_with("/__kiln/") {
        // The template's change hook is for envd inside the sandbox only.
        return not_found_page("There is nothing at this address.");
    }
    metrics::counter!("kiln_preview_requests_total").increment(1);
    let upgrade = is_upgrade(req.headers());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("/v1/proxy/{DEV_PORT}{path}");
    let mut up = hyper::Request::builder().method(req.method().clone()).uri(uri);
    for (name, value) in req.headers() {
        let n = name.as_str();
        if (HOP_BY_HOP.contains(&n) && !upgrade) || name == header::AUTHORIZATION || name == header::HOST {
            continue;
        }
        up = up.header(name, value);
    }
    if upgrade {
        up = up.header(header::CONNECTION, "upgrade");
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let Ok(up) = up.body(req.into_body()) else {
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    };
    let resp = match client.send(up).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(sandbox = %id, error = %e, "preview upstream failed");
            return preview_unavailable();
        }
    };
    if resp.status() == StatusCode::BAD_GATEWAY {
        return preview_unavailable();
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let mut resp = resp;
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((c, s)) => {
                    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                Err(e) => tracing::debug!(error = %e, "preview WebSocket upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let mut out = resp.map(Body::new);
    for h in HOP_BY_HOP {
        out.headers_mut().remove(*h);
    }
    out
}

/// The sandbox runs but its dev server does not answer (yet): a page that
/// retries by itself rather than a bare 502.
fn preview_unavailable() -> Response {
    let body = "<!doctype html><html lang=en><meta charset=utf-8><meta http-equiv=refresh content=2>\
        <title>Starting · Kiln</title><body style=\"font-family:system-ui,sans-serif;display:grid;place-items:center;\
        min-height:90vh;color:#475569\"><p>The app's dev server is starting… this page retries by itself.</p></body></html>";
    let mut r = (StatusCode::BAD_GATEWAY, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}
