//! The hook the agent bridge fills in: what else a sandbox needs before it
//! counts as warm (ACP `initialize`, `session/new`, model selection), and
//! what a claim must redo with the claimant's own credentials.

use std::path::PathBuf;

use async_trait::async_trait;
use kiln_sandbox::EnvdClient;
use kiln_types::SandboxId;

/// Who a warm-up step is for.
#[derive(Debug, Clone)]
pub struct WarmCtx<'a> {
    pub sandbox_id: &'a SandboxId,
    /// Where the host's model gateway listens for this sandbox.
    pub host_socket: Option<PathBuf>,
    /// The session key it is (being) bound to; `None` while in the pool.
    pub session_key: Option<&'a str>,
}

/// What a claim hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The (possibly new) agent session metadata to store (JSON).
    pub agent_session: Option<String>,
    /// The agent process had to restart for the claimant's credentials, so
    /// a new ACP session was opened.
    pub restarted: bool,
}

#[async_trait]
pub trait WarmUp: Send + Sync {
    /// Runs after the dev server answers and before the row turns ready.
    /// Returns the agent session metadata to store on the row (JSON).
    async fn prewarm(&self, client: &EnvdClient, ctx: &WarmCtx<'_>) -> Result<Option<String>, String>;

    /// Runs on claim (and after a cold boot), before the sandbox is handed
    /// out. Gets the stored metadata.
    async fn on_claim(
        &self,
        client: &EnvdClient,
        ctx: &WarmCtx<'_>,
        agent_session: Option<&str>,
    ) -> Result<Claimed, String>;

    /// Runs when a session gets its own live sandbox back (e.g. after a
    /// server restart: re-attach what lives in the server's memory).
    async fn on_reuse(&self, _client: &EnvdClient, _ctx: &WarmCtx<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// No agent: a sandbox is warm when its dev server answers.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWarmUp;

#[async_trait]
impl WarmUp for NoWarmUp {
    async fn prewarm(&self, _client: &EnvdClient, _ctx: &WarmCtx<'_>) -> Result<Option<String>, String> {
        Ok(None)
    }
    async fn on_claim(
        &self,
        _client: &EnvdClient,
        _ctx: &WarmCtx<'_>,
        agent_session: Option<&str>,
    ) -> Result<Claimed, String> {
        Ok(Claimed { agent_session: agent_session.map(str::to_owned), restarted: false })
    }
}
