//! The sandbox provider trait: what callers (the pool, the CLI, the server)
//! may ask of any backend. The local namespace backend implements it today; a
//! microVM or Kubernetes backend can follow without touching callers.

use async_trait::async_trait;
use kiln_types::{CpuPriority, SandboxId, SandboxInfo, SandboxSpec, SandboxState};

use crate::envd_client::{Endpoint, EnvdClient};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("no sandbox {0}")]
    NotFound(SandboxId),
    #[error("the app template is not built: run `kiln template build`")]
    TemplateMissing,
    #[error("sandbox {id} did not come up: {reason}")]
    Boot { id: SandboxId, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("sandbox runtime I/O failed while {context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Envd(#[from] crate::envd_client::ClientError),
}

impl ProviderError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
        let context = context.into();
        move |source| ProviderError::Io { context, source }
    }
}

/// A sandbox that was just created: its description and how to reach it.
#[derive(Debug, Clone)]
pub struct Created {
    pub info: SandboxInfo,
    pub endpoint: Endpoint,
}

/// Decides which sandboxes survive a reclaim: `(id, owner, state)`.
pub type KeepFn<'a> = &'a (dyn Fn(&SandboxId, &str, SandboxState) -> bool + Send + Sync);

#[async_trait]
pub trait SandboxProvider: Send + Sync {
    /// Creates a sandbox from `spec` and returns once its envd answers.
    async fn create(&self, spec: &SandboxSpec) -> Result<Created, ProviderError> {
        self.create_as(&SandboxId::random(), spec).await
    }
    /// Like `create`, under an id the caller chose (and recorded) first, so
    /// that a crash between recording and creating leaves a name to clean up.
    async fn create_as(&self, id: &SandboxId, spec: &SandboxSpec) -> Result<Created, ProviderError>;
    /// The spec hash of what `create` builds now (the current template).
    async fn spec_hash(&self) -> Result<String, ProviderError>;
    /// Kills and removes every sandbox `keep` rejects; returns their ids.
    async fn reclaim(&self, keep: KeepFn<'_>) -> Result<Vec<SandboxId>, ProviderError>;
    /// Kills every process of the sandbox and removes all it left behind.
    /// Killing an unknown id is `NotFound`; killing twice is harmless.
    async fn kill(&self, id: &SandboxId) -> Result<(), ProviderError>;
    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError>;
    /// Weighs the sandbox's CPU against other sandboxes' (see
    /// [`CpuPriority`]). Backends that cannot weigh sandboxes ignore it.
    async fn set_cpu_priority(&self, _id: &SandboxId, _priority: CpuPriority) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Where the host's model gateway should listen for this sandbox, if
    /// the backend has such a socket.
    fn host_socket(&self, _id: &SandboxId) -> Option<std::path::PathBuf> {
        None
    }

    /// The host's view of the sandbox's `/app` (what versions are taken
    /// from), if the backend exposes one.
    fn app_dir(&self, _id: &SandboxId) -> Option<std::path::PathBuf> {
        None
    }

    /// A client for the sandbox's envd.
    async fn connect(&self, id: &SandboxId) -> Result<EnvdClient, ProviderError>;
}
