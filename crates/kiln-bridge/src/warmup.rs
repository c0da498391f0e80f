//! ACP warm-up for pooled sandboxes.
//!
//! A pooled sandbox is only warm once its agent is: `initialize` with the
//! pool's shared credentials, `session/new` with the app-builder system
//! prompt and MCP servers, the default model selected. A claim then costs
//! one `initialize` with the claimant's credentials; only if they differ
//! does envd restart the agent process (never the sandbox), and only then is
//! a new ACP session opened.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_gateway::Gateway;
use kiln_pool::{Claimed, WarmCtx, WarmUp};
use kiln_sandbox::EnvdClient;
use kiln_types::agent::{InitializeRequest, McpServer, NewSessionRequest};
use serde::{Deserialize, Serialize};

/// How to set an agent up.
#[derive(Clone, Debug, Default)]
pub struct AgentSetup {
    /// Environment for the agent in pooled sandboxes (gateway base URLs and
    /// placeholder keys; never a real key).
    pub pool_credentials: BTreeMap<String, String>,
    pub system_prompt: Option<String>,
    pub mcp_servers: Vec<McpServer>,
    /// Model to select (a value of the agent's `model` config option).
    pub model: Option<String>,
}

/// What is stored on the pool row and the session (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSession {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "configOptions")]
    pub config_options: serde_json::Value,
    #[serde(rename = "agentInfo", default)]
    pub agent_info: serde_json::Value,
}

impl AgentSession {
    pub fn parse(s: Option<&str>) -> Option<AgentSession> {
        s.and_then(|s| serde_json::from_str(s).ok())
    }
}

type CredsFn = dyn Fn(&str) -> BTreeMap<String, String> + Send + Sync;

pub struct AcpWarmUp {
    setup: AgentSetup,
    gateway: Option<Arc<Gateway>>,
    /// The credentials a claimant's agent runs with (by session key).
    claim_credentials: Arc<CredsFn>,
}

impl AcpWarmUp {
    pub fn new(setup: AgentSetup, gateway: Option<Arc<Gateway>>) -> AcpWarmUp {
        let pool = setup.pool_credentials.clone();
        AcpWarmUp { setup, gateway, claim_credentials: Arc::new(move |_| pool.clone()) }
    }

    /// Claimants run with these credentials instead of the pool's.
    pub fn with_claim_credentials(
        mut self,
        f: impl Fn(&str) -> BTreeMap<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.claim_credentials = Arc::new(f);
        self
    }

    fn attach(&self, ctx: &WarmCtx<'_>) -> Result<(), String> {
        if let (Some(gw), Some(sock)) = (&self.gateway, &ctx.host_socket) {
            let owner = ctx.session_key.map_or_else(|| format!("pool:{}", ctx.sandbox_id), str::to_owned);
            gw.attach(ctx.sandbox_id.as_str(), sock, &owner).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn open_session(&self, client: &EnvdClient, agent_info: serde_json::Value) -> Result<AgentSession, String> {
        let req = NewSessionRequest {
            system_prompt: self.setup.system_prompt.clone(),
            mcp_servers: self.setup.mcp_servers.clone(),
        };
        let s = client.agent_new_session(&req).await.map_err(|e| format!("session/new: {e}"))?;
        let mut config_options = s.config_options;
        if let Some(model) = &self.setup.model {
            config_options = client
                .agent_set_model(&s.session_id, model)
                .await
                .map_err(|e| format!("selecting model {model}: {e}"))?
                .config_options;
        }
        Ok(AgentSession { session_id: s.session_id, config_options, agent_info })
    }
}

fn json(s: &AgentSession) -> Option<String> {
    serde_json::to_string(s).ok()
}

#[async_trait]
impl WarmUp for AcpWarmUp {
    async fn prewarm(&self, client: &EnvdClient, ctx: &WarmCtx<'_>) -> Result<Option<String>, String> {
        self.attach(ctx)?;
        let init = client
            .agent_initialize(&InitializeRequest { credentials: self.setup.pool_credentials.clone() })
            .await
            .map_err(|e| format!("initialize: {e}"))?;
        Ok(json(&self.open_session(client, init.agent_info).await?))
    }

    async fn on_claim(
        &self,
        client: &EnvdClient,
        ctx: &WarmCtx<'_>,
        agent_session: Option<&str>,
    ) -> Result<Claimed, String> {
        // The gateway socket is a convenience of this server: a claim of a
        // sandbox another server prewarmed still works (that server serves it).
        if let Err(e) = self.attach(ctx) {
            tracing::warn!(sandbox = %ctx.sandbox_id, error = %e, "gateway not attached for the claimant");
        }
        let creds = (self.claim_credentials)(ctx.session_key.unwrap_or_default());
        let init = client
            .agent_initialize(&InitializeRequest { credentials: creds })
            .await
            .map_err(|e| format!("initialize: {e}"))?;
        let stored = AgentSession::parse(agent_session);
        if !init.restarted
            && let Some(s) = stored
        {
            return Ok(Claimed { agent_session: json(&s), restarted: false });
        }
        let s = self.open_session(client, init.agent_info).await?;
        Ok(Claimed { agent_session: json(&s), restarted: true })
    }

    async fn on_reuse(&self, _client: &EnvdClient, ctx: &WarmCtx<'_>) -> Result<(), String> {
        self.attach(ctx)
    }
}
