//! The Anthropic Messages API, streaming.
//!
//! Events: `message_start` (input tokens), `content_block_start` (text,
//! `tool_use` with its id and name, `thinking`), `content_block_delta`
//! (`text_delta`, `input_json_delta`, `thinking_delta`, `signature_delta`),
//! `content_block_stop` (a tool call's JSON is parsed here),
//! `message_delta` (stop reason, cumulative output tokens), `message_stop`,
//! `ping`, and `error` mid-stream (`overloaded_error` is retryable).

use std::collections::BTreeMap;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Block, ModelError, ModelProvider, ModelRequest, ModelStop, Reply, Role, Sink, StreamEvent, TokenUsage};

pub const API_VERSION: &str = "2023-06-01";

#[derive(Clone, Debug)]
pub struct Anthropic {
    pub base_url: String,
    pub api_key: String,
    http: reqwest::Client,
}

impl Anthropic {
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Anthropic {
        Anthropic { base_url: base_url.into(), api_key: api_key.into(), http: reqwest::Client::new() }
    }

    pub fn body(req: &ModelRequest) -> Value {
        let messages: Vec<Value> = req
            .messages
            .iter()
            .map(|m| {
                let role = if m.role == Role::User { "user" } else { "assistant" };
                json!({"role": role, "content": m.content})
            })
            .collect();
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if !req.system.is_empty() {
            body["system"] = json!(req.system);
        }
        if !req.tools.is_empty() {
            body["tools"] = json!(req.tools);
        }
        body
    }
}

/// A content block being streamed.
enum Partial {
    Text(String),
    Thinking(String, String),
    Tool { id: String, name: String, json: String },
}

#[async_trait]
impl ModelProvider for Anthropic {
    async fn call(&self, req: &ModelRequest, sink: Sink<'_>) -> Result<Reply, ModelError> {
        let url = format!("{}/v1/messages", self.base_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", API_VERSION)
            .json(&Anthropic::body(req))
            .send()
            .await
            .map_err(|e| ModelError::Retryable { message: format!("cannot reach {url}: {e}"), retry_after: None })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let ra = super::retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            return Err(super::http_error(status, ra, &body, "Anthropic"));
        }
        let mut events = resp.bytes_stream().eventsource();
        let mut blocks: BTreeMap<u64, Partial> = BTreeMap::new();
        let mut done: BTreeMap<u64, Block> = BTreeMap::new();
        let mut usage = TokenUsage::default();
        let mut stop = None;
        while let Some(ev) = events.next().await {
            let ev =
                ev.map_err(|e| ModelError::Retryable { message: format!("stream broke: {e}"), retry_after: None })?;
            if ev.data.is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(&ev.data).map_err(|e| ModelError::Protocol(format!("bad event JSON: {e}")))?;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or(&ev.event);
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            match kind {
                "message_start" => {
                    if let Some(n) = v.pointer("/message/usage/input_tokens").and_then(Value::as_u64) {
                        usage.input = n;
                    }
                }
                "content_block_start" => {
                    let b = &v["content_block"];
                    let partial = match b.get("type").and_then(Value::as_str) {
                        Some("tool_use") => Partial::Tool {
                            id: b["id"].as_str().unwrap_or_default().to_owned(),
                            name: b["name"].as_str().unwrap_or_default().to_owned(),
                            json: String::new(),
                        },
                        Some("thinking") => Partial::Thinking(String::new(), String::new()),
                        _ => Partial::Text(b.get("text").and_then(Value::as_str).unwrap_or_default().to_owned()),
                    };
                    blocks.insert(index, partial);
                }
                "content_block_delta" => {
                    let d = &v["delta"];
                    let Some(p) = blocks.get_mut(&index) else {
                        return Err(ModelError::Protocol(format!("delta for unknown block {index}")));
                    };
                    match (d.get("type").and_then(Value::as_str), p) {
                        (Some("text_delta"), Partial::Text(t)) => {
                            let s = d["text"].as_str().unwrap_or_default();
                            t.push_str(s);
                            sink(StreamEvent::Text(s.to_owned()));
                        }
                        (Some("input_json_delta"), Partial::Tool { json, .. }) => {
                            json.push_str(d["partial_json"].as_str().unwrap_or_default());
                        }
                        (Some("thinking_delta"), Partial::Thinking(t, _)) => {
                            let s = d["thinking"].as_str().unwrap_or_default();
                            t.push_str(s);
                            sink(StreamEvent::Thinking(s.to_owned()));
                        }
                        (Some("signature_delta"), Partial::Thinking(_, sig)) => {
                            sig.push_str(d["signature"].as_str().unwrap_or_default());
                        }
                        (other, _) => tracing::debug!(?other, "ignored delta"),
                    }
                }
                "content_block_stop" => {
                    let block = match blocks.remove(&index) {
                        Some(Partial::Text(text)) => Block::Text { text },
                        Some(Partial::Thinking(thinking, signature)) => Block::Thinking { thinking, signature },
                        Some(Partial::Tool { id, name, json }) => {
                            Block::ToolUse { id, name, input: super::parse_args(&json)? }
                        }
                        None => continue,
                    };
                    done.insert(index, block);
                }
                "message_delta" => {
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        stop = Some(match r {
                            "end_turn" | "stop_sequence" => ModelStop::EndTurn,
                            "tool_use" => ModelStop::ToolUse,
                            "max_tokens" => ModelStop::MaxTokens,
                            other => ModelStop::Other(other.to_owned()),
                        });
                    }
                    if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        usage.output = n;
                    }
                }
                "message_stop" => break,
                "error" => {
                    let t = v.pointer("/error/type").and_then(Value::as_str).unwrap_or("error");
                    let m = v.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
                    let message = format!("Anthropic stream error {t}: {m}");
                    return Err(if t == "overloaded_error" || t == "api_error" || t == "rate_limit_error" {
                        ModelError::Retryable { message, retry_after: None }
                    } else {
                        ModelError::Fatal { status: None, message }
                    });
                }
                _ => {} // ping and future event types
            }
        }
        let stop = stop.ok_or_else(|| ModelError::Retryable {
            message: "the stream ended before the message did".into(),
            retry_after: None,
        })?;
        Ok(Reply { content: done.into_values().collect(), stop, usage })
    }
}
