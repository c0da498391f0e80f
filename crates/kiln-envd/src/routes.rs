//! HTTP routes of the envd API (contract: `kiln_types::envd`).

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use futures::StreamExt;
use kiln_types::envd::{DevServerStatus, ENVD_API_VERSION, ExecRequest, FileList, Health, MAX_FILE_BYTES, WriteResult};
use serde::Deserialize;

use crate::error::EnvdError;
use crate::files::RelPath;
use crate::{AppState, ENVD_VERSION, exec, proxy};

/// Longest a health long-poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/files", get(read_file).put(write_file).delete(delete_file))
        .route("/v1/files/list", get(list_files))
        .route("/v1/exec", post(exec_cmd))
        .route("/v1/dev-server", get(dev_status))
        .route("/v1/dev-server/restart", post(dev_restart))
        .merge(crate::agent_routes::routes())
        .fallback(proxy_or_404)
        .layer(DefaultBodyLimit::max(MAX_FILE_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token))
        .with_state(state)
}

#[derive(Deserialize)]
struct HealthQuery {
    wait_ready_ms: Option<u64>,
}

async fn health(State(st): State<AppState>, Query(q): Query<HealthQuery>) -> Json<Health> {
    if let Some(ms) = q.wait_ready_ms {
        st.dev.wait_ready(Duration::from_millis(ms).min(MAX_WAIT)).await;
    }
    Json(Health {
        api_version: ENVD_API_VERSION,
        envd_version: ENVD_VERSION.to_owned(),
        uptime_ms: st.started.elapsed().as_millis() as u64,
        dev_server: st.dev.status(),
    })
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    recursive: bool,
}

/// File calls do blocking syscalls; keep them off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EnvdError> + Send + 'static,
) -> Result<T, EnvdError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| EnvdError::Io(std::io::Error::other(e)))?
}

async fn read_file(State(st): State<AppState>, Query(q): Query<PathQuery>) -> Result<Response, EnvdError> {
    let rel = RelPath::parse(&q.path, false)?;
    let data = blocking(move || st.app.read(&rel)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

async fn write_file(
    State(st): State<AppState>,
    Query(q): Query<PathQuery>,
    body: Bytes,
) -> Result<Json<WriteResult>, EnvdError> {
    let rel = RelPath::parse(&q.path, false)?;
    Ok(Json(blocking(move || st.app.write(&rel, &body)).await?))
}

async fn delete_file(State(st): State<AppState>, Query(q): Query<PathQuery>) -> Result<StatusCode, EnvdError> {
    let rel = RelPath::parse(&q.path, false)?;
    blocking(move || st.app.delete(&rel, q.recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
}

async fn list_files(State(st): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<FileList>, EnvdError> {
    let rel = RelPath::parse(&q.path, true)?;
    Ok(Json(blocking(move || st.app.list(&rel, q.recursive)).await?))
}

async fn exec_cmd(State(st): State<AppState>, body: Bytes) -> Result<Response, EnvdError> {
    let req: ExecRequest = serde_json::from_slice(&body)
        .map_err(|e| EnvdError::BadRequest(format!("exec body is not a valid ExecRequest: {e}")))?;
    exec::validate(&req)?;
    let rx = exec::spawn(req, st.app.path());
    let stream = tokio_stream_from(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn dev_status(State(st): State<AppState>) -> Json<DevServerStatus> {
    Json(st.dev.status())
}

async fn dev_restart(State(st): State<AppState>) -> Json<DevServerStatus> {
    st.dev.restart();
    Json(st.dev.status())
}

async fn proxy_or_404(req: Request) -> Result<Response, EnvdError> {
    match proxy::split(req.uri()) {
        Some((port, pq)) => proxy::forward(port, pq, req).await,
        None => Err(EnvdError::NotFound(req.uri().path().to_owned())),
    }
}
