//! The host side of the agent bridge.
//!
//! envd hosts the agent inside the sandbox ([`kiln_types::agent`]); this
//! crate is what the server does with it: warm the agent up for the pool and
//! hand it over on claim ([`warmup`]), run a prompt turn and end it with a
//! version ([`turn`]), and put versions back into a sandbox ([`restore`]).
//! What the host accepts from envd in a turn is [`contract`]: envd runs in
//! the sandbox and is treated as hostile.

pub mod contract;
pub mod restore;
pub mod turn;
pub mod warmup;

pub use restore::{restore_latest, restore_version};
pub use turn::{GatewayNotices, MAX_RESUMES, RESUME_BACKOFF, TurnError, VersionCtx, run_turn, run_turn_with};
pub use warmup::{AcpWarmUp, AgentSession, AgentSetup};
