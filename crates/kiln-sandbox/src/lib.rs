//! Kiln's sandbox runtime.
//!
//! - [`provider`]: the [`SandboxProvider`] trait every backend implements.
//! - [`local`]: the local backend (bubblewrap namespaces, overlayfs, cgroups).
//! - [`template`]: building the app template once, and its spec hash.
//! - [`envd_client`]: the client for the daemon inside each sandbox.
//! - [`cgroup`] and [`sys`]: kernel interfaces behind a testable trait.
//! - [`prereq`]: what the host must offer (`kiln doctor`).

pub mod cgroup;
pub mod envd_agent;
pub mod envd_client;
pub mod graph;
pub mod local;
pub mod prereq;
pub mod provider;
pub mod sys;
pub mod template;
pub mod tools;

pub use envd_client::{Endpoint, EnvdClient};
pub use local::{LocalConfig, LocalProvider};
pub use provider::{Created, ProviderError, SandboxProvider};
