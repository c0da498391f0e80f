//! The agent loop: model → tools → model … until the model ends the turn,
//! the step limit is hit, or the client cancels.

use std::sync::Arc;

use agent_client_protocol::Client;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::SessionNotification;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::mcp::McpServers;
use crate::model::{
    Block, Message, ModelError, ModelProvider, ModelRequest, ModelStop, RetryPolicy, Role, StreamEvent, ToolSpec,
    call_with_retries,
};
use crate::tools::{self, Workspace};

/// Why a turn ended (ACP stop reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    EndTurn,
    MaxTokens,
    MaxTurnRequests,
    Cancelled,
}

impl TurnEnd {
    pub fn acp(self) -> &'static str {
        match self {
            TurnEnd::EndTurn => "end_turn",
            TurnEnd::MaxTokens => "max_tokens",
            TurnEnd::MaxTurnRequests => "max_turn_requests",
            TurnEnd::Cancelled => "cancelled",
        }
    }
}

pub struct Turn<'a> {
    pub cx: ConnectionTo<Client>,
    pub session: String,
    pub provider: Arc<dyn ModelProvider>,
    pub model: String,
    pub system: String,
    pub ws: &'a dyn Workspace,
    pub mcp: &'a McpServers,
    pub cfg: &'a AgentConfig,
    pub cancel: watch::Receiver<bool>,
    pub retry: RetryPolicy,
}

impl Turn<'_> {
    #[allow(clippy::needless_pass_by_value)] // callers build the update inline
    fn update(&self, u: Value) {
        let n: SessionNotification =
            serde_json::from_value(json!({"sessionId": self.session, "update": u})).expect("a valid session update");
        if let Err(e) = self.cx.send_notification(n) {
            tracing::debug!(error = %e, "client gone");
        }
    }

    fn chunk(&self, kind: &str, text: &str) {
        self.update(json!({"sessionUpdate": kind, "content": {"type": "text", "text": text}}));
    }

    async fn cancelled(&self) {
        let mut c = self.cancel.clone();
        let _ = c.wait_for(|x| *x).await;
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let mut t = tools::specs();
        t.extend(self.mcp.tools.iter().cloned());
        t
    }

    /// Runs the turn on `history` (the new user message already appended).
    pub async fn run(&self, history: &mut Vec<Message>) -> Result<TurnEnd, ModelError> {
        let tools = self.tools();
        for _step in 0..self.cfg.max_steps {
            if *self.cancel.borrow() {
                return Ok(TurnEnd::Cancelled);
            }
            let budget = self.cfg.context_tokens * 3 / 4;
            let trimmed = crate::context::trim(&self.system, history, budget, 4);
            if trimmed > 0 {
                tracing::info!(trimmed, "trimmed old tool output to fit the context window");
            }
            let req = ModelRequest {
                model: self.model.clone(),
                system: self.system.clone(),
                messages: history.clone(),
                tools: tools.clone(),
                max_tokens: self.cfg.max_tokens,
            };
            let sink = |e: StreamEvent| match e {
                StreamEvent::Text(t) => self.chunk("agent_message_chunk", &t),
                StreamEvent::Thinking(t) => self.chunk("agent_thought_chunk", &t),
            };
            let reply = tokio::select! {
                r = call_with_retries(self.provider.as_ref(), &req, &sink, &self.retry) => r?,
                () = self.cancelled() => return Ok(TurnEnd::Cancelled),
            };
            let used = crate::context::estimate(&self.system, history) + reply.usage.output;
            self.update(json!({"sessionUpdate": "usage_update", "used": reply.usage.input.max(used), "size": self.cfg.context_tokens}));
            history.push(Message { role: Role::Assistant, content: reply.content.clone() });
            let calls: Vec<(String, String, Value)> =
                reply.tool_calls().into_iter().map(|(i, n, v)| (i.to_owned(), n.to_owned(), v.clone())).collect();
            if calls.is_empty() {
                return Ok(if reply.stop == ModelStop::MaxTokens { TurnEnd::MaxTokens } else { TurnEnd::EndTurn });
            }
            let mut results = Vec::new();
            for (id, name, input) in calls {
                let (kind, title) = tools::describe(&name, &input);
                self.update(json!({"sessionUpdate": "tool_call", "toolCallId": id, "title": title, "kind": kind,
                    "status": "pending", "rawInput": input}));
                self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress"}));
                let exec = async {
                    if tools::is_builtin(&name) {
                        tools::run_builtin(self.ws, &name, &input).await
                    } else if self.mcp.has(&name) {
                        self.mcp.call(&name, &input).await
                    } else {
                        Err(format!("there is no tool named {name}"))
                    }
                };
                let result = tokio::select! {
                    r = exec => r,
                    () = self.cancelled() => {
                        self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "failed",
                            "content": [{"type": "content", "content": {"type": "text", "text": "cancelled"}}]}));
                        return Ok(TurnEnd::Cancelled);
                    }
                };
                let (status, text, is_error) = match result {
                    Ok(t) => ("completed", t, false),
                    Err(e) => ("failed", e, true),
                };
                let mut u = json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": status,
                    "content": [{"type": "content", "content": {"type": "text", "text": tools::keep_end(&text, 8 * 1024)}}]});
                if let Some(p) = input.get("path").and_then(Value::as_str) {
                    u["locations"] = json!([{"path": tools::resolve(self.ws.root(), p).unwrap_or_default()}]);
                }
                self.update(u);
                results.push(Block::ToolResult { tool_use_id: id, content: text, is_error });
            }
            history.push(Message { role: Role::User, content: results });
        }
        self.chunk(
            "agent_message_chunk",
            &format!(
                "\n\nI stopped after {} model calls (KILN_AGENT_MAX_STEPS); say \"continue\" to go on.",
                self.cfg.max_steps
            ),
        );
        Ok(TurnEnd::MaxTurnRequests)
    }
}
