//! MCP servers of a session (rmcp clients over child-process stdio).
//!
//! Every tool of every server is offered to the model under its MCP name
//! and input schema. A server that fails to start is reported and left out;
//! the session still works with the other tools.

use std::collections::HashMap;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::Value;

use crate::model::ToolSpec;

/// An MCP server as ACP's `session/new` names it (stdio).
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct McpServers {
    clients: Vec<(String, RunningService<rmcp::RoleClient, ()>)>,
    /// Tool name → index of the server that has it.
    owner: HashMap<String, usize>,
    pub tools: Vec<ToolSpec>,
    /// Servers that could not start, with why.
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServers").field("tools", &self.tools.len()).field("failed", &self.failed).finish()
    }
}

/// How long a server may take to start and list its tools.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl McpServers {
    pub fn none() -> McpServers {
        McpServers { clients: vec![], owner: HashMap::new(), tools: vec![], failed: vec![] }
    }

    pub async fn start(specs: &[ServerSpec], cwd: &std::path::Path) -> McpServers {
        let mut s = McpServers::none();
        for spec in specs {
            match tokio::time::timeout(START_TIMEOUT, start_one(spec, cwd)).await {
                Ok(Ok((client, tools))) => {
                    let idx = s.clients.len();
                    for t in tools {
                        if s.owner.contains_key(&t.name) || crate::tools::is_builtin(&t.name) {
                            tracing::warn!(tool = %t.name, server = %spec.name, "duplicate tool name; left out");
                            continue;
                        }
                        s.owner.insert(t.name.clone(), idx);
                        s.tools.push(t);
                    }
                    s.clients.push((spec.name.clone(), client));
                }
                Ok(Err(e)) => s.failed.push((spec.name.clone(), e)),
                Err(_) => s.failed.push((spec.name.clone(), format!("did not start within {START_TIMEOUT:?}"))),
            }
        }
        for (name, why) in &s.failed {
            tracing::warn!(server = %name, %why, "MCP server unavailable");
        }
        s
    }

    pub fn has(&self, tool: &str) -> bool {
        self.owner.contains_key(tool)
    }

    /// Calls a tool; the text of its result (images are named, not inlined).
    pub async fn call(&self, tool: &str, input: &Value) -> Result<String, String> {
        let idx = *self.owner.get(tool).ok_or_else(|| format!("no tool named {tool}"))?;
        let args = match input {
            Value::Object(m) => m.clone(),
            Value::Null => Default::default(),
            _ => return Err("tool arguments must be a JSON object".into()),
        };
        let r = self.clients[idx]
            .1
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .map_err(|e| format!("MCP server {} failed: {e}", self.clients[idx].0))?;
        let v = serde_json::to_value(&r).unwrap_or_default();
        let mut out = String::new();
        for c in v.get("content").and_then(Value::as_array).into_iter().flatten() {
            match c.get("type").and_then(Value::as_str) {
                Some("text") => out.push_str(c.get("text").and_then(Value::as_str).unwrap_or_default()),
                Some(other) => out.push_str(&format!("[{other}]")),
                None => {}
            }
            out.push('\n');
        }
        if v.get("isError").and_then(Value::as_bool) == Some(true) { Err(out) } else { Ok(out) }
    }

    pub async fn shutdown(self) {
        for (_, c) in self.clients {
            let _ = c.cancel().await;
        }
    }
}

async fn start_one(
    spec: &ServerSpec,
    cwd: &std::path::Path,
) -> Result<(RunningService<rmcp::RoleClient, ()>, Vec<ToolSpec>), String> {
    let transport = TokioChildProcess::new(tokio::process::Command::new(&spec.command).configure(|c| {
        c.args(&spec.args).envs(spec.env.iter().map(|(k, v)| (k, v))).current_dir(cwd);
    }))
    .map_err(|e| format!("cannot start {}: {e}", spec.command))?;
    let client = ().serve(transport).await.map_err(|e| format!("MCP initialize failed: {e}"))?;
    let tools = client.list_all_tools().await.map_err(|e| format!("listing tools failed: {e}"))?;
    let tools = tools
        .into_iter()
        .map(|t| {
            let v = serde_json::to_value(&t).unwrap_or_default();
            ToolSpec {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                description: v["description"].as_str().unwrap_or_default().to_owned(),
                input_schema: v.get("inputSchema").cloned().unwrap_or(serde_json::json!({"type": "object"})),
            }
        })
        .collect();
    Ok((client, tools))
}
