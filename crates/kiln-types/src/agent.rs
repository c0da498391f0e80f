//! envd's agent API: the ACP bridge's routes and bodies.
//!
//! envd is the ACP *client* of the agent it hosts; the server drives it with
//! these routes (all under `/v1/agent`, same auth as the rest of envd):
//!
//! | route | verb | body → answer |
//! |---|---|---|
//! | `/v1/agent` | GET | → [`AgentStatus`] |
//! | `/v1/agent/initialize` | POST | [`InitializeRequest`] → [`InitializeResponse`] |
//! | `/v1/agent/sessions` | POST | [`NewSessionRequest`] → [`NewSessionResponse`] |
//! | `/v1/agent/sessions/{id}/config` | POST | [`SetConfigRequest`] → [`SetConfigResponse`] |
//! | `/v1/agent/sessions/{id}/model` | POST | [`SetModelRequest`] → [`SetConfigResponse`] |
//! | `/v1/agent/sessions/{id}/prompt` | POST | [`PromptRequest`] → NDJSON [`crate::chat::ChatEvent`]s of the turn, ending with `done` |
//! | `/v1/agent/sessions/{id}/cancel` | POST | → 202 |
//! | `/v1/agent/sessions/{id}/events?after=N&follow=B` | GET | → NDJSON events with `seq > N` (with `follow`, until the running turn's `done`) |
//!
//! A second prompt while a turn runs is refused with 409 `turn_running`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most events kept per session; older ones are dropped first (a resume
/// from before the window gets 410 `events_expired`).
pub const EVENT_LOG_CAPACITY: usize = 20_000;
/// Largest prompt text envd forwards (bytes).
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Environment variable names a credential may set: letters, digits, `_`,
/// not starting with a digit, at most this long.
pub const MAX_CREDENTIAL_NAME: usize = 128;
/// Inside the sandbox, the model gateway answers on this loopback port
/// (envd forwards it to the host's `host.sock`).
pub const GATEWAY_PORT: u16 = 4141;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitializeRequest {
    /// Environment variables the agent runs with (gateway base URLs, a
    /// gateway token). Never the real provider keys: those stay on the host.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitializeResponse {
    /// The agent process was (re)started for these credentials.
    pub restarted: bool,
    #[serde(rename = "agentInfo")]
    pub agent_info: serde_json::Value,
    /// ACP `agentCapabilities` as the agent sent them.
    pub capabilities: serde_json::Value,
    /// ACP protocol version the agent agreed to.
    #[serde(rename = "protocolVersion")]
    pub protocol_version: u16,
}

/// An MCP server the agent should start (ACP's stdio form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSessionRequest {
    #[serde(default, rename = "systemPrompt")]
    pub system_prompt: Option<String>,
    #[serde(default, rename = "mcpServers")]
    pub mcp_servers: Vec<McpServer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewSessionResponse {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    /// ACP `configOptions` as the agent sent them (the model is the one of
    /// category `model`).
    #[serde(rename = "configOptions")]
    pub config_options: serde_json::Value,
    /// How the system prompt reached the agent: `acp` (the session's
    /// `systemPrompt` field, when the agent advertises it), `meta`
    /// (`_meta.systemPrompt`, the convention of Claude's ACP adapter), or
    /// `none`.
    #[serde(rename = "systemPromptVia")]
    pub system_prompt_via: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfigRequest {
    #[serde(rename = "configId")]
    pub config_id: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetModelRequest {
    #[serde(rename = "modelId")]
    pub model_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetConfigResponse {
    #[serde(rename = "configOptions")]
    pub config_options: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRequest {
    /// The user's message.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Whether an agent command is configured for this sandbox.
    pub configured: bool,
    pub running: bool,
    pub pid: Option<u32>,
    /// SHA-256 of the credentials the running agent was started with.
    pub fingerprint: Option<String>,
    /// Times the agent process was started.
    pub starts: u32,
    pub sessions: Vec<SessionStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "turnRunning")]
    pub turn_running: bool,
    #[serde(rename = "lastSeq")]
    pub last_seq: u64,
}

/// Checks a credential's variable name (it becomes part of the agent's
/// environment, so nothing that could smuggle a second assignment).
pub fn valid_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CREDENTIAL_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
