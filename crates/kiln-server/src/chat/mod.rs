//! The builder's chat: a prompt becomes a turn of an app that runs in its
//! own task and writes numbered events to the app's log ([`log`], kept in
//! the store); HTTP streams read the log. VM turns ([`vm`]) run the agent in
//! the app's sandbox and end in a version; Quick turns ([`quick`]) ask the
//! model for one HTML file and store it as a version of the app's quick app.

pub mod log;
pub mod quick;
pub mod vm;

use std::sync::Arc;

use kiln_types::AppId;
use kiln_types::chat::ChatMode;

pub use log::{Busy, ChatHub, ChatLog, Turn};

use crate::serve::AppState;

/// Longest prompt accepted (bytes).
pub const MAX_PROMPT: usize = 32 * 1024;

/// A validated chat request.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// The app the turn belongs to (its owner was checked by the caller).
    pub app: AppId,
    pub text: String,
    pub mode: ChatMode,
    /// Answer with the demo replay (offered when no model is configured).
    pub demo: bool,
}

/// Starts a turn in the background from an already locked `turn`; the
/// caller streams the log from `turn.first_seq()`. The app counts as
/// changed when the turn ends.
pub fn spawn(st: &Arc<AppState>, p: Prompt, turn: Turn) {
    let st = st.clone();
    tokio::spawn(async move {
        match p.mode {
            ChatMode::Vm => vm::run(&st, &p, turn).await,
            ChatMode::Quick => quick::run(&st, &p, turn).await,
        }
        if let Err(e) = st.pool.store().touch_app(&p.app, crate::now_ms()).await {
            tracing::warn!(app = %p.app, error = %e, "recording the app's last change failed");
        }
    });
}
