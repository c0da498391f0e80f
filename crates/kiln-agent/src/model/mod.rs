//! The model layer: one request/reply shape for every provider.
//!
//! A call streams text and thinking deltas to a sink as they arrive (the
//! agent forwards them as ACP chunks) and returns the whole reply: its
//! content blocks in order, including complete tool calls (arguments parsed
//! when their block ends; empty arguments are `{}`), the stop reason and the
//! token usage. [`call_with_retries`] retries 429, overloaded and 5xx
//! answers with backoff as long as nothing has been streamed yet.

pub mod anthropic;
pub mod openai;
pub mod scripted;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// A piece of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message { role: Role::User, content: vec![Block::Text { text: text.into() }] }
    }
}

/// A tool the model may call, with its JSON Schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelRequest {
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

/// Streamed as it arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Text(String),
    Thinking(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelStop {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub content: Vec<Block>,
    pub stop: ModelStop,
    pub usage: TokenUsage,
}

impl Reply {
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| if let Block::Text { text } = b { Some(text.as_str()) } else { None })
            .collect()
    }
    pub fn tool_calls(&self) -> Vec<(&str, &str, &Value)> {
        self.content
            .iter()
            .filter_map(|b| match b {
                Block::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Worth trying again (429, overloaded, 5xx, a dropped connection).
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// Trying again will not help (4xx: bad request, bad key, no such model).
    #[error("{message}")]
    Fatal { status: Option<u16>, message: String },
    #[error("the model's stream did not follow the API: {0}")]
    Protocol(String),
    #[error("the script has no more turns (it has {0})")]
    ScriptExhausted(usize),
}

impl ModelError {
    pub fn retryable(&self) -> bool {
        matches!(self, ModelError::Retryable { .. })
    }
}

/// Where streamed deltas go.
pub type Sink<'a> = &'a (dyn Fn(StreamEvent) + Send + Sync);

#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// One model call.
    async fn call(&self, req: &ModelRequest, sink: Sink<'_>) -> Result<Reply, ModelError>;
}

/// Backoff between attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

/// Calls `provider`, retrying retryable failures (honouring `retry-after`)
/// while nothing has been streamed to `sink` yet.
pub async fn call_with_retries(
    provider: &dyn ModelProvider,
    req: &ModelRequest,
    sink: Sink<'_>,
    policy: &RetryPolicy,
) -> Result<Reply, ModelError> {
    let mut delay = policy.first_delay;
    let mut attempt = 1;
    loop {
        let streamed = std::sync::atomic::AtomicBool::new(false);
        let tracking = |e: StreamEvent| {
            streamed.store(true, std::sync::atomic::Ordering::Relaxed);
            sink(e);
        };
        match provider.call(req, &tracking).await {
            Err(ModelError::Retryable { message, retry_after })
                if attempt < policy.attempts && !streamed.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                let wait = retry_after.unwrap_or(delay).min(policy.max_delay);
                tracing::warn!(attempt, ?wait, %message, "model call failed; retrying");
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Classifies an HTTP error answer.
pub(crate) fn http_error(status: u16, retry_after: Option<Duration>, body: &str, provider: &str) -> ModelError {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let message = format!("{provider} answered {status}: {detail}");
    if status == 429 || status == 529 || status >= 500 {
        ModelError::Retryable { message, retry_after }
    } else {
        ModelError::Fatal { status: Some(status), message }
    }
}

pub(crate) fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64)
}

/// Parses a tool call's accumulated JSON arguments; empty means `{}`.
pub(crate) fn parse_args(raw: &str) -> Result<Value, ModelError> {
    if raw.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(raw).map_err(|e| ModelError::Protocol(format!("tool arguments are not JSON ({e}): {raw}")))
}
