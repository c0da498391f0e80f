//! kiln-envd: the daemon that runs first inside every sandbox.
//!
//! It is the sandbox's only door: the host reaches it over a unix socket
//! bind-mounted from a directory only Kiln can read, authenticated with a
//! per-sandbox token. Everything the server does to a sandbox — files,
//! commands, the dev server, the preview — goes through this API, whose
//! contract lives in [`kiln_types::envd`].

pub mod agent;
mod agent_routes;
pub mod auth;
pub mod devserver;
pub mod error;
pub mod exec;
pub mod files;
pub mod gateway_fwd;
pub mod logsink;
pub mod proxy;
pub mod reaper;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use error::EnvdError;

/// envd's own version, reported by `/v1/health`.
pub const ENVD_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone)]
pub struct AppState {
    pub token: Arc<str>,
    pub app: Arc<files::AppDir>,
    pub dev: devserver::DevServer,
    pub agent: agent::AgentHost,
    pub started: Instant,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// A listening unix socket handed over by the sandbox runtime; `socket`
    /// is not bound when it is set.
    pub listen_fd: Option<i32>,
    pub app_dir: PathBuf,
    pub token: String,
    pub dev_server: bool,
    pub dev_port: u16,
    /// The ACP agent's command line (argv); none: the agent API answers 409.
    pub agent: Option<Vec<String>>,
    /// The host's model gateway socket, forwarded to
    /// `127.0.0.1:GATEWAY_PORT` inside the sandbox when set.
    pub gateway_socket: Option<PathBuf>,
    pub gateway_port: u16,
}

/// Serves the API on `config.socket` until the process is killed.
pub async fn run(config: Config) -> std::io::Result<()> {
    let app = Arc::new(files::AppDir::open(&config.app_dir)?);
    if config.dev_server {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        app.set_change_hook(tx);
        tokio::spawn(devserver::notify_changes(config.dev_port, rx));
    }
    let dev = devserver::DevServer::new(config.app_dir.clone(), config.dev_port, config.dev_server);
    let agent = agent::AgentHost::new(config.agent.clone(), app.clone(), agent::PermissionPolicy::AllowOnce);
    if let Some(sock) = config.gateway_socket.clone() {
        let port = config.gateway_port;
        tokio::spawn(async move {
            if let Err(e) = gateway_fwd::serve(port, sock).await {
                tracing::error!(error = %e, port, "model gateway forwarder stopped");
            }
        });
    }
    let state = AppState { token: config.token.into(), app, dev, agent, started: Instant::now() };
    reaper::start();
    let listener = match config.listen_fd {
        Some(fd) => {
            // SAFETY: the runtime hands this descriptor to envd alone, and
            // nothing else in envd refers to it.
            let l = unsafe { <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            l.set_nonblocking(true)?;
            tracing::info!(fd, "kiln-envd listening on the runtime's socket");
            tokio::net::UnixListener::from_std(l)?
        }
        None => {
            let _ = std::fs::remove_file(&config.socket);
            tracing::info!(socket = %config.socket.display(), "kiln-envd listening");
            tokio::net::UnixListener::bind(&config.socket)?
        }
    };
    axum::serve(listener, routes::router(state)).await
}
