//! OpenAI-compatible Chat Completions, streaming.
//!
//! `delta.content` is text; `delta.tool_calls[*]` are accumulated by
//! `index` until `finish_reason`; usage comes in a last chunk when
//! `stream_options.include_usage` is honoured; `data: [DONE]` ends it.
//! Servers differ (Ollama, vLLM, llama.cpp, OpenRouter): an id may come only
//! with the first delta of a call, arguments may arrive in one piece, and
//! `index` may be missing — then a delta with a new id starts a new call
//! and one without continues the last.

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Block, ModelError, ModelProvider, ModelRequest, ModelStop, Reply, Role, Sink, StreamEvent, TokenUsage};

#[derive(Clone, Debug)]
pub struct OpenAi {
    /// Including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: String,
    http: reqwest::Client,
}

impl OpenAi {
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> OpenAi {
        OpenAi { base_url: base_url.into(), api_key: api_key.into(), http: reqwest::Client::new() }
    }

    pub fn body(req: &ModelRequest) -> Value {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        for m in &req.messages {
            match m.role {
                Role::User => {
                    let mut text = String::new();
                    for b in &m.content {
                        match b {
                            Block::ToolResult { tool_use_id, content, .. } => {
                                messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                            }
                            Block::Text { text: t } => text.push_str(t),
                            _ => {}
                        }
                    }
                    if !text.is_empty() {
                        messages.push(json!({"role": "user", "content": text}));
                    }
                }
                Role::Assistant => {
                    let text: String = m
                        .content
                        .iter()
                        .filter_map(|b| if let Block::Text { text } = b { Some(text.as_str()) } else { None })
                        .collect();
                    let calls: Vec<Value> = m
                        .content
                        .iter()
                        .filter_map(|b| match b {
                            Block::ToolUse { id, name, input } => Some(json!({"id": id, "type": "function",
                                "function": {"name": name, "arguments": input.to_string()}})),
                            _ => None,
                        })
                        .collect();
                    let mut msg = json!({"role": "assistant", "content": text});
                    if !calls.is_empty() {
                        msg["tool_calls"] = json!(calls);
                    }
                    messages.push(msg);
                }
            }
        }
        let mut body = json!({
            "model": req.model,
            "messages": messages,
            "max_tokens": req.max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                .collect();
            body["tools"] = json!(tools);
        }
        body
    }
}

#[derive(Default)]
struct Call {
    index: Option<u64>,
    id: String,
    name: String,
    args: String,
}

#[async_trait]
impl ModelProvider for OpenAi {
    async fn call(&self, req: &ModelRequest, sink: Sink<'_>) -> Result<Reply, ModelError> {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let resp =
            self.http.post(&url).bearer_auth(&self.api_key).json(&OpenAi::body(req)).send().await.map_err(|e| {
                ModelError::Retryable { message: format!("cannot reach {url}: {e}"), retry_after: None }
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let ra = super::retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            return Err(super::http_error(status, ra, &body, "the OpenAI-compatible server"));
        }
        let mut events = resp.bytes_stream().eventsource();
        let (mut text, mut calls, mut usage, mut finish) =
            (String::new(), Vec::<Call>::new(), TokenUsage::default(), None);
        while let Some(ev) = events.next().await {
            let ev =
                ev.map_err(|e| ModelError::Retryable { message: format!("stream broke: {e}"), retry_after: None })?;
            let data = ev.data.trim();
            if data == "[DONE]" {
                break;
            }
            if data.is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(data).map_err(|e| ModelError::Protocol(format!("bad chunk JSON: {e}")))?;
            if let Some(err) = v.get("error") {
                let m = err.get("message").and_then(Value::as_str).unwrap_or("error").to_owned();
                return Err(ModelError::Retryable { message: format!("stream error: {m}"), retry_after: None });
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                usage.input = u["prompt_tokens"].as_u64().unwrap_or(usage.input);
                usage.output = u["completion_tokens"].as_u64().unwrap_or(usage.output);
            }
            let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else { continue };
            let delta = &choice["delta"];
            if let Some(t) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                text.push_str(t);
                sink(StreamEvent::Text(t.to_owned()));
            }
            if let Some(t) = delta.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                sink(StreamEvent::Thinking(t.to_owned()));
            }
            for tc in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = tc.get("index").and_then(Value::as_u64);
                let id = tc.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
                let pos = match (index, id) {
                    (Some(i), _) => calls.iter().position(|c| c.index == Some(i)),
                    (None, Some(id)) => calls.iter().position(|c| c.id == id),
                    (None, None) => calls.len().checked_sub(1),
                };
                let call = match pos {
                    Some(p) => &mut calls[p],
                    None => {
                        calls.push(Call { index, ..Default::default() });
                        calls.last_mut().expect("just pushed")
                    }
                };
                if let Some(id) = id {
                    call.id = id.to_owned();
                }
                if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str) {
                    call.name.push_str(n);
                }
                match tc.pointer("/function/arguments") {
                    Some(Value::String(a)) => call.args.push_str(a),
                    Some(obj @ Value::Object(_)) => call.args.push_str(&obj.to_string()),
                    _ => {}
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                finish = Some(f.to_owned());
            }
        }
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(Block::Text { text });
        }
        for (i, c) in calls.into_iter().enumerate() {
            let id = if c.id.is_empty() { format!("call_{i}") } else { c.id };
            content.push(Block::ToolUse { id, name: c.name, input: super::parse_args(&c.args)? });
        }
        let has_calls = content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
        let stop = match finish.as_deref() {
            Some("tool_calls" | "function_call") => ModelStop::ToolUse,
            Some("length") => ModelStop::MaxTokens,
            Some("stop") if has_calls => ModelStop::ToolUse,
            Some("stop") => ModelStop::EndTurn,
            Some(other) => ModelStop::Other(other.to_owned()),
            None if has_calls => ModelStop::ToolUse,
            None => {
                return Err(ModelError::Retryable {
                    message: "the stream ended without a finish reason".into(),
                    retry_after: None,
                });
            }
        };
        Ok(Reply { content, stop, usage })
    }
}
