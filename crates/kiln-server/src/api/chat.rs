//! `/api/chat`: start a turn and stream its events as NDJSON; resume a
//! stream after a dropped connection; cancel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kiln_types::SessionKey;
use kiln_types::chat::{ChatEvent, ChatMode};
use serde::Deserialize;

use super::ApiError;
use crate::chat::{self, MAX_PROMPT, Prompt};
use crate::serve::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChatBody {
    session_key: String,
    prompt: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    demo: bool,
}

pub fn parse_key(raw: &str) -> Result<SessionKey, ApiError> {
    raw.parse().map_err(|e: kiln_types::SessionKeyError| ApiError::BadRequest(e.to_string()))
}

/// Validates a chat request with messages that say what to fix.
fn parse_prompt(body: &[u8]) -> Result<Prompt, ApiError> {
    let b: ChatBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be JSON like {{\"sessionKey\": \"<uuid>\", \"prompt\": \"…\", \"mode\": \"vm\"}}: {e}"
        ))
    })?;
    let key = parse_key(&b.session_key)?;
    let text = b.prompt.trim().to_owned();
    if text.is_empty() {
        return Err(ApiError::BadRequest("prompt is empty: describe the app or the change you want".into()));
    }
    if text.len() > MAX_PROMPT {
        return Err(ApiError::TooLarge(format!(
            "prompt is {} bytes; the limit is {} KiB — shorten it",
            text.len(),
            MAX_PROMPT / 1024
        )));
    }
    let mode = match b.mode.as_deref() {
        None | Some("vm") => ChatMode::Vm,
        Some("quick") => ChatMode::Quick,
        Some(other) => return Err(ApiError::BadRequest(format!("mode must be \"vm\" or \"quick\"; got {other:?}"))),
    };
    Ok(Prompt { key, text, mode, demo: b.demo })
}

/// The NDJSON response over a stream of events.
fn ndjson(events: impl futures::Stream<Item = ChatEvent> + Send + 'static) -> Response {
    let lines = events.map(|e| {
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        // Tells buffering reverse proxies (nginx) to pass lines through.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(lines))
        .expect("static headers")
}

/// The body, or a clear 413 when it is over the server's limit.
pub fn body_or_limit(body: Result<Bytes, axum::extract::rejection::BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "request body over {} KiB; prompts may be up to {} KiB",
            crate::serve::BODY_LIMIT / 1024,
            MAX_PROMPT / 1024
        )),
        _ => ApiError::BadRequest(format!("could not read the request body: {e}")),
    })
}

pub async fn post(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let p = parse_prompt(&body_or_limit(body)?)?;
    let key = p.key.as_str().to_owned();
    let first = chat::start(&st, p).map_err(|_| {
        ApiError::Conflict("a prompt is already running for this session; wait for it to finish or cancel it".into())
    })?;
    Ok(ndjson(st.chat.log(&key).stream(first - 1)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsQuery {
    session_key: String,
    #[serde(default)]
    after: Option<String>,
}

pub async fn events(
    State(st): State<Arc<AppState>>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?sessionKey=<uuid>&after=<seq>: {e}")))?;
    let key = parse_key(&q.session_key)?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("after must be the last seq you saw (an integer); got {a:?}")))?,
    };
    let Some(log) = st.chat.existing(key.as_str()) else {
        // No turn since the server started: an empty stream, not an error.
        return Ok(ndjson(futures::stream::empty()));
    };
    Ok(ndjson(log.stream(after)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    session_key: String,
}

pub async fn cancel(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let b: CancelBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON like {{\"sessionKey\": \"<uuid>\"}}: {e}")))?;
    let key = parse_key(&b.session_key)?;
    let cancelled = st.chat.cancel(key.as_str()).await;
    let status = if cancelled { StatusCode::OK } else { StatusCode::CONFLICT };
    let msg = if cancelled { "cancelling" } else { "nothing is running for this session" };
    Ok((status, axum::Json(serde_json::json!({ "cancelled": cancelled, "message": msg }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b";

    #[test]
    fn prompts_are_validated_with_clear_messages() {
        let ok = parse_prompt(format!(r#"{{"sessionKey":"{KEY}","prompt":" a todo app ","mode":"quick"}}"#).as_bytes())
            .unwrap();
        assert_eq!((ok.text.as_str(), ok.mode, ok.demo), ("a todo app", ChatMode::Quick, false));
        let big = "x".repeat(MAX_PROMPT + 1);
        for (body, needle) in [
            (String::from("not json"), "body must be JSON"),
            (String::from(r#"{"sessionKey":"nope","prompt":"x"}"#), "invalid session key"),
            (format!(r#"{{"sessionKey":"{KEY}","prompt":"   "}}"#), "prompt is empty"),
            (format!(r#"{{"sessionKey":"{KEY}","prompt":"x","mode":"fast"}}"#), "mode must be"),
            (format!(r#"{{"sessionKey":"{KEY}","prompt":"x","extra":1}}"#), "unknown field"),
            (format!(r#"{{"sessionKey":"{KEY}","prompt":"{big}"}}"#), "limit is 32 KiB"),
        ] {
            match parse_prompt(body.as_bytes()) {
                Err(ApiError::BadRequest(m) | ApiError::TooLarge(m)) => assert!(m.contains(needle), "{needle}: {m}"),
                Err(other) => panic!("{needle}: {other:?}"),
                Ok(_) => panic!("{needle}: accepted"),
            }
        }
    }
}
