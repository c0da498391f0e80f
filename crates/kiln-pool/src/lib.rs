//! The warm pool: sandboxes booted before anyone asks, claimed atomically.
//!
//! The database decides everything that two processes could race on
//! (reserving slots, claiming a row; see `kiln-store`); this crate does the
//! slow work around those decisions — creating sandboxes, waiting for them to
//! answer, renewing leases, killing what is stale — and never holds a lock
//! while it does.
//!
//! - [`PoolManager::topup`]: clean up stale rows, reserve the deficit as
//!   `warming` rows, spawn one prewarm task per row, return the counts at once.
//! - prewarm task: create the sandbox under the id its row recorded → envd
//!   answers → dev server answers → [`WarmUp::prewarm`] (the agent-bridge hook)
//!   → mark the row `ready`; it renews the row's lease meanwhile, and on any
//!   failure kills the sandbox and deletes the row.
//! - [`PoolManager::acquire`]: the session's own sandbox if it is alive, else
//!   a claim (hit: milliseconds), else a cold boot reporting its phases.

mod manager;
mod metrics_names;
mod warmup;

pub use manager::{Acquired, BootPhase, FirstReady, PoolConfig, PoolManager, PoolStatus, Source, TopupResult};
pub use metrics_names::describe_metrics;
pub use warmup::{Claimed, NoWarmUp, WarmCtx, WarmUp};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Provider(#[from] kiln_sandbox::ProviderError),
    #[error("sandbox {sandbox} failed during {phase}: {detail}")]
    Boot { sandbox: String, phase: BootPhase, detail: String },
    #[error("target {got} is over the configured maximum {max}")]
    TargetTooLarge { got: u32, max: u32 },
    #[error("claiming from the pool failed: {0}")]
    Claim(String),
    #[error("a stored endpoint is not valid JSON: {0}")]
    Endpoint(#[from] serde_json::Error),
}
