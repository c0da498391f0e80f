//! The builder's chat: a prompt becomes a turn that runs in its own task
//! and writes numbered events to the session's log ([`log`]); HTTP streams
//! read the log. VM turns ([`vm`]) run the agent in the session's sandbox
//! and end in a version; Quick turns ([`quick`]) ask the model for one HTML
//! file and store it as a version of the session's quick app.

pub mod log;
pub mod quick;
pub mod vm;

use std::sync::Arc;

use kiln_types::SessionKey;
use kiln_types::chat::ChatMode;

pub use log::{Busy, ChatHub, ChatLog, Turn};

use crate::serve::AppState;

/// Longest prompt accepted (bytes).
pub const MAX_PROMPT: usize = 32 * 1024;

/// A validated chat request.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub key: SessionKey,
    pub text: String,
    pub mode: ChatMode,
    /// Answer with the demo replay (offered when no model is configured).
    pub demo: bool,
}

/// Starts the turn in the background; the caller streams the log from
/// `turn.first_seq()`.
pub fn start(st: &Arc<AppState>, p: Prompt) -> Result<u64, Busy> {
    let turn = st.chat.begin(p.key.as_str())?;
    let first = turn.first_seq();
    let st = st.clone();
    tokio::spawn(async move {
        match p.mode {
            ChatMode::Vm => vm::run(&st, &p, turn).await,
            ChatMode::Quick => quick::run(&st, &p, turn).await,
        }
    });
    Ok(first)
}
