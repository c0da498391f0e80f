//! HTTP routes of the ACP bridge (contract: `kiln_types::agent`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_types::agent::{
    AgentStatus, InitializeResponse, NewSessionRequest, NewSessionResponse, PromptRequest, SetConfigRequest,
    SetConfigResponse, SetModelRequest,
};
use kiln_types::chat::ChatEvent;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::agent::log::{Read, SessionLog};
use crate::error::EnvdError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agent", get(status))
        .route("/v1/agent/initialize", post(initialize))
        .route("/v1/agent/sessions", post(new_session))
        .route("/v1/agent/sessions/{id}/config", post(set_config))
        .route("/v1/agent/sessions/{id}/model", post(set_model))
        .route("/v1/agent/sessions/{id}/prompt", post(prompt))
        .route("/v1/agent/sessions/{id}/cancel", post(cancel))
        .route("/v1/agent/sessions/{id}/events", get(events))
}

fn body<T: DeserializeOwned>(b: &Bytes, what: &str) -> Result<T, EnvdError> {
    serde_json::from_slice(b).map_err(|e| EnvdError::BadRequest(format!("{what} body is invalid: {e}")))
}

async fn status(State(st): State<AppState>) -> Json<AgentStatus> {
    Json(st.agent.status().await)
}

async fn initialize(State(st): State<AppState>, b: Bytes) -> Result<Json<InitializeResponse>, EnvdError> {
    Ok(Json(st.agent.initialize(body(&b, "initialize")?).await?))
}

async fn new_session(State(st): State<AppState>, b: Bytes) -> Result<Json<NewSessionResponse>, EnvdError> {
    let req: NewSessionRequest = body(&b, "session")?;
    Ok(Json(st.agent.new_session(req).await?))
}

async fn set_config(
    State(st): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<SetConfigResponse>, EnvdError> {
    let req: SetConfigRequest = body(&b, "config")?;
    Ok(Json(st.agent.set_config(&id, &req.config_id, &req.value).await?))
}

async fn set_model(
    State(st): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<SetConfigResponse>, EnvdError> {
    let req: SetModelRequest = body(&b, "model")?;
    Ok(Json(st.agent.set_model(&id, &req.model_id).await?))
}

async fn prompt(State(st): State<AppState>, Path(id): Path<String>, b: Bytes) -> Result<Response, EnvdError> {
    let req: PromptRequest = body(&b, "prompt")?;
    let (log, start) = st.agent.prompt(&id, req.text).await?;
    Ok(ndjson(follow(log, start, true)))
}

async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, EnvdError> {
    st.agent.cancel(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    follow: bool,
}

async fn events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, EnvdError> {
    let log = st.agent.log_of(&id)?;
    if let Read::Expired { oldest } = log.read_after(q.after) {
        return Err(EnvdError::Expired { after: q.after, oldest });
    }
    let follow = q.follow && log.turn_running();
    Ok(ndjson(follow_from(log, q.after, follow)))
}

fn ndjson(s: impl futures::Stream<Item = Bytes> + Send + 'static) -> Response {
    let s = futures::StreamExt::map(s, Ok::<_, std::convert::Infallible>);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(s)).into_response()
}

fn line(e: &ChatEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).expect("events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

fn follow(log: Arc<SessionLog>, after: u64, until_done: bool) -> impl futures::Stream<Item = Bytes> + Send {
    follow_from(log, after, until_done)
}

/// Events after `after`; with `until_done`, keeps waiting for new ones
/// until a `done` arrives (the batch is cut there), or until the log's
/// window has passed the reader by.
fn follow_from(log: Arc<SessionLog>, after: u64, until_done: bool) -> impl futures::Stream<Item = Bytes> + Send {
    let rx = log.subscribe();
    futures::stream::unfold((log, rx, after, false), move |(log, mut rx, cursor, finished)| async move {
        if finished {
            return None;
        }
        loop {
            rx.borrow_and_update();
            match log.read_after(cursor) {
                Read::Expired { .. } => return None,
                Read::Events(mut evs) if !evs.is_empty() => {
                    let mut done = !until_done;
                    if until_done && let Some(i) = evs.iter().position(|e| e.body.is_done()) {
                        evs.truncate(i + 1);
                        done = true;
                    }
                    let last = evs.last().map_or(cursor, |e| e.seq);
                    let mut buf = Vec::new();
                    for e in &evs {
                        buf.extend_from_slice(&line(e));
                    }
                    return Some((Bytes::from(buf), (log, rx, last, done)));
                }
                Read::Events(_) if !until_done => return None,
                Read::Events(_) => {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    })
}
