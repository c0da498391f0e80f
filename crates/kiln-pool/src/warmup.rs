//! The hook the agent bridge fills in: what else a sandbox needs before it
//! counts as warm (ACP `initialize`, `session/new`, model selection), and
//! what a claim must redo with the claimant's own credentials.

use async_trait::async_trait;
use kiln_sandbox::EnvdClient;

#[async_trait]
pub trait WarmUp: Send + Sync {
    /// Runs after the dev server answers and before the row turns ready.
    /// Returns the agent session metadata to store on the row (JSON).
    async fn prewarm(&self, client: &EnvdClient) -> Result<Option<String>, String>;

    /// Runs on claim, before the sandbox is bound to the session. Gets the
    /// stored metadata; returns the (possibly new) metadata.
    async fn on_claim(&self, client: &EnvdClient, agent_session: Option<&str>) -> Result<Option<String>, String>;
}

/// No agent yet: a sandbox is warm when its dev server answers.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWarmUp;

#[async_trait]
impl WarmUp for NoWarmUp {
    async fn prewarm(&self, _client: &EnvdClient) -> Result<Option<String>, String> {
        Ok(None)
    }
    async fn on_claim(&self, _client: &EnvdClient, agent_session: Option<&str>) -> Result<Option<String>, String> {
        Ok(agent_session.map(str::to_owned))
    }
}
