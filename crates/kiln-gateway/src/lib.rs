//! The model gateway: the only way out of a sandbox without egress.
//!
//! Each sandbox gets its own unix socket (`host.sock`) in a host directory
//! bound read-only into the sandbox; envd forwards a loopback port to it, so
//! an agent uses `http://127.0.0.1:4141/anthropic` (or `/openai/v1`) as its
//! API base URL. Because the socket is per sandbox, the gateway knows who is
//! calling without trusting anything the caller sends.
//!
//! It is an allow-list, not a proxy ([`route`]): a handful of (method, path)
//! pairs per provider are forwarded to the operator's configured origin, and
//! nothing else. It adds the real API key on the host (keys never enter a
//! sandbox), holds each request's worst-case cost against the session's and
//! the server's budgets before sending it ([`budget`], [`cost`]), and
//! streams answers through chunk by chunk while counting their tokens
//! ([`usage`]), charging the reported usage when they end ([`forward`]).

pub mod budget;
pub mod cost;
mod forward;
pub mod route;
mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
pub use budget::{LedgerError, MemoryLedger, ScopeSpend, SpendLedger, StoreLedger};
pub use usage::UsageTap;

/// Largest request body forwarded (bytes).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("binding the gateway socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("{name}: {why}")]
    Config { name: &'static str, why: String },
}

/// Where requests go, with which keys, within which budgets.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// e.g. `https://api.anthropic.com`
    pub anthropic_base: String,
    pub anthropic_key: Option<String>,
    /// e.g. `https://api.openai.com` or `http://127.0.0.1:11434/v1` (Ollama)
    pub openai_base: String,
    pub openai_key: Option<String>,
    /// Tokens (input + output) one session may use.
    pub session_budget_tokens: u64,
    /// Tokens all sessions together may use per UTC day (`None`: no cap).
    pub global_budget_tokens: Option<u64>,
    /// Unix gid that may connect (the sandbox uid's group).
    pub sandbox_gid: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            anthropic_base: "https://api.anthropic.com".into(),
            anthropic_key: None,
            openai_base: "https://api.openai.com".into(),
            openai_key: None,
            session_budget_tokens: 5_000_000,
            global_budget_tokens: None,
            sandbox_gid: 61000,
        }
    }
}

/// Something the gateway refused, for the chat stream of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub sandbox: String,
    pub owner: String,
    /// `budget_exceeded` or `no_model_key`.
    pub code: String,
    pub message: String,
}

struct Attached {
    owner: String,
    task: tokio::task::AbortHandle,
}

/// The gateway and its per-sandbox sockets.
pub struct Gateway {
    cfg: GatewayConfig,
    anthropic: route::Upstream,
    openai: route::Upstream,
    http: reqwest::Client,
    ledger: Arc<dyn SpendLedger>,
    attached: Mutex<HashMap<String, Attached>>,
    /// Each owner's spend as this process last saw it (see [`Gateway::spent`]).
    seen_spent: Mutex<HashMap<String, u64>>,
    /// Keys a user brought for their own session (provider → key). Kept in
    /// memory only: keys are never written to the store.
    user_keys: Mutex<HashMap<(String, Provider), String>>,
    notices: tokio::sync::broadcast::Sender<Notice>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("anthropic_base", &self.cfg.anthropic_base).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "Anthropic",
            Provider::OpenAi => "OpenAI-compatible",
        }
    }
}

impl Gateway {
    /// A gateway whose spend lives in memory (tests; embedders without a
    /// store).
    ///
    /// # Panics
    /// If a base URL in `cfg` is invalid (use [`Gateway::open`] to get an error).
    pub fn new(cfg: GatewayConfig) -> Arc<Gateway> {
        Gateway::open(cfg, Arc::new(MemoryLedger::default())).expect("valid gateway base URLs")
    }

    /// A gateway keeping spend in `ledger`. The base URLs are parsed here,
    /// once: every request goes to one of these two origins.
    pub fn open(cfg: GatewayConfig, ledger: Arc<dyn SpendLedger>) -> Result<Arc<Gateway>, GatewayError> {
        let anthropic = route::Upstream::parse(&cfg.anthropic_base)
            .map_err(|why| GatewayError::Config { name: "KILN_ANTHROPIC_BASE_URL", why })?;
        let openai = route::Upstream::parse(&cfg.openai_base)
            .map_err(|why| GatewayError::Config { name: "KILN_OPENAI_BASE_URL", why })?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            // A redirect would carry the key to a host the provider names.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS-capable HTTP client");
        Ok(Arc::new(Gateway {
            cfg,
            anthropic,
            openai,
            http,
            ledger,
            attached: Mutex::default(),
            seen_spent: Mutex::default(),
            user_keys: Mutex::default(),
            notices: tokio::sync::broadcast::channel(256).0,
        }))
    }

    /// Serves `socket` for `sandbox`, whose spending counts against `owner`
    /// (a session key, or a pool placeholder before a claim). Attaching an
    /// attached sandbox only changes its owner.
    pub fn attach(self: &Arc<Self>, sandbox: &str, socket: &Path, owner: &str) -> Result<(), GatewayError> {
        let mut a = self.attached.lock().unwrap();
        if let Some(x) = a.get_mut(sandbox)
            && !x.task.is_finished()
        {
            x.owner = owner.to_owned();
            return Ok(());
        }
        let bind_err = |source| GatewayError::Bind { path: socket.to_owned(), source };
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).map_err(bind_err)?;
        // root:<sandbox gid> 0660: the sandbox uid may connect, no one else.
        // (Only root can give the socket away; unprivileged test runs keep it.)
        if let Err(e) = std::os::unix::fs::chown(socket, Some(0), Some(self.cfg.sandbox_gid)) {
            tracing::debug!(error = %e, "gateway socket keeps its owner");
        }
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o660)).map_err(bind_err)?;
        let caller = forward::Caller { gw: self.clone(), sandbox: sandbox.to_owned() };
        let app = Router::new().fallback(forward::forward).with_state(caller);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "gateway socket stopped");
            }
        });
        a.insert(sandbox.to_owned(), Attached { owner: owner.to_owned(), task: task.abort_handle() });
        Ok(())
    }

    /// Stops serving a sandbox (it was killed).
    pub fn detach(&self, sandbox: &str) {
        if let Some(x) = self.attached.lock().unwrap().remove(sandbox) {
            x.task.abort();
        }
    }

    /// Refusals as they happen (a turn turns them into `error` events).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn notify(&self, sandbox: &str, owner: &str, code: &str, message: &str) {
        let _ = self.notices.send(Notice {
            sandbox: sandbox.to_owned(),
            owner: owner.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Detaches every sandbox `keep` rejects (they were killed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.attached.lock().unwrap().retain(|id, a| {
            let k = keep(id);
            if !k {
                a.task.abort();
            }
            k
        });
    }

    pub fn owner_of(&self, sandbox: &str) -> Option<String> {
        self.attached.lock().unwrap().get(sandbox).map(|x| x.owner.clone())
    }

    /// Tokens `owner` has been charged, as this process last saw them (after
    /// its latest hold or settle for `owner`; 0 before any). The ledger is
    /// the truth across restarts and instances: [`Gateway::spend`].
    pub fn spent(&self, owner: &str) -> u64 {
        self.seen_spent.lock().unwrap().get(owner).copied().unwrap_or(0)
    }

    /// `owner`'s spend and holds, from the ledger.
    pub async fn spend(&self, owner: &str) -> Result<ScopeSpend, LedgerError> {
        self.ledger.spend(&budget::session_scope(owner)).await
    }

    fn saw_spent(&self, owner: &str, spent: u64) {
        self.seen_spent.lock().unwrap().insert(owner.to_owned(), spent);
    }

    /// A user's own key for their session; used instead of the server's.
    pub fn set_user_key(&self, owner: &str, provider: Provider, key: String) {
        self.user_keys.lock().unwrap().insert((owner.to_owned(), provider), key);
    }

    fn key_for(&self, owner: &str, provider: Provider) -> Option<String> {
        if let Some(k) = self.user_keys.lock().unwrap().get(&(owner.to_owned(), provider)) {
            return Some(k.clone());
        }
        match provider {
            Provider::Anthropic => self.cfg.anthropic_key.clone(),
            Provider::OpenAi => self.cfg.openai_key.clone(),
        }
    }

    fn upstream(&self, provider: Provider) -> &route::Upstream {
        match provider {
            Provider::Anthropic => &self.anthropic,
            Provider::OpenAi => &self.openai,
        }
    }
}
