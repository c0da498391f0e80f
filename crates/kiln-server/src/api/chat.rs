//! `POST /api/chat`: start a turn of an app (a new one without `appId`) and
//! stream its events as NDJSON. Resuming and cancelling are per app
//! (`/api/apps/{id}/events`, `/cancel`, in [`super::apps`]).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use kiln_types::AppId;
use kiln_types::chat::{ChatEvent, ChatMode};
use serde::Deserialize;

use super::ApiError;
use crate::apps::AppService;
use crate::chat::MAX_PROMPT;
use crate::serve::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChatBody {
    prompt: String,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    demo: bool,
}

/// A validated chat request.
#[derive(Debug)]
struct ChatRequest {
    app: Option<AppId>,
    text: String,
    mode: ChatMode,
    demo: bool,
}

/// Validates a chat request with messages that say what to fix.
fn parse_prompt(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let b: ChatBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be JSON like {{\"prompt\": \"…\", \"mode\": \"vm\", \"appId\": \"<app id, to continue one>\"}}: {e}"
        ))
    })?;
    let app = b.app_id.as_deref().map(super::apps::parse_app_id).transpose()?;
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
    Ok(ChatRequest { app, text, mode, demo: b.demo })
}

/// The NDJSON response over a stream of events.
pub fn ndjson(events: impl futures::Stream<Item = ChatEvent> + Send + 'static) -> Response {
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
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let owner = super::apps::owner(&headers)?;
    let r = parse_prompt(&body_or_limit(body)?)?;
    let svc = AppService::new(&st);
    let (app, first) = svc.prompt(&owner, r.app.as_ref(), r.text, r.mode, r.demo).await?;
    Ok(ndjson(st.chat.stream(&app, first - 1).await.map_err(|e| ApiError::Internal(e.to_string()))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b";
    const APP: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn prompts_are_validated_with_clear_messages() {
        let ok =
            parse_prompt(format!(r#"{{"appId":"{APP}","prompt":" a todo app ","mode":"quick"}}"#).as_bytes()).unwrap();
        assert_eq!((ok.text.as_str(), ok.mode, ok.demo), ("a todo app", ChatMode::Quick, false));
        assert_eq!(ok.app.unwrap().as_str(), APP);
        assert!(parse_prompt(br#"{"prompt":"x"}"#).unwrap().app.is_none());
        let big = "x".repeat(MAX_PROMPT + 1);
        for (body, needle) in [
            (String::from("not json"), "body must be JSON"),
            (String::from(r#"{"appId":"nope","prompt":"x"}"#), "invalid app id"),
            (format!(r#"{{"sessionKey":"{KEY}","prompt":"x"}}"#), "unknown field"),
            (String::from(r#"{"prompt":"   "}"#), "prompt is empty"),
            (String::from(r#"{"prompt":"x","mode":"fast"}"#), "mode must be"),
            (String::from(r#"{"prompt":"x","extra":1}"#), "unknown field"),
            (format!(r#"{{"prompt":"{big}"}}"#), "limit is 32 KiB"),
        ] {
            match parse_prompt(body.as_bytes()) {
                Err(ApiError::BadRequest(m) | ApiError::TooLarge(m) | ApiError::NotFound(m)) => {
                    assert!(m.contains(needle), "{needle}: {m}")
                }
                Err(other) => panic!("{needle}: {other:?}"),
                Ok(_) => panic!("{needle}: accepted"),
            }
        }
    }
}
