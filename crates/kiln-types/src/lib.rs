//! Types that cross Kiln's process boundaries.
//!
//! Anything that two processes must agree on lives here exactly once: the
//! sandbox lifecycle (which the store mirrors) and the envd wire contract
//! (which envd serves and the runtime's client speaks). Keeping them in one
//! crate is what lets a test on one side prove the other side's assumptions.

pub mod agent;
pub mod app;
pub mod chat;
pub mod envd;
pub mod sandbox;

pub use app::{AppId, AppIdError, OwnerId, OwnerKey, OwnerKeyError};
pub use sandbox::{CpuPriority, Limits, SandboxId, SandboxIdError, SandboxInfo, SandboxSpec, SandboxState};

pub mod session;
pub use session::{SessionKey, SessionKeyError};
