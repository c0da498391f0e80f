//! `kiln serve`: brings the host to a runnable state, then serves HTTP.
//!
//! Start-up order matters: the template is built (a no-op when unchanged)
//! before anything can be created from it, and sandboxes a previous server
//! left behind are reclaimed before new ones are made, so a crash never
//! leaks processes, mounts or cgroups across restarts.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use kiln_sandbox::{LocalProvider, SandboxProvider};
use serde_json::json;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("kiln-envd was not found next to the kiln binary; build it (cargo build --bins) or set KILN_ENVD_BIN")]
    NoEnvd,
    #[error(transparent)]
    Provider(#[from] kiln_sandbox::ProviderError),
    #[error(transparent)]
    Template(#[from] kiln_sandbox::template::TemplateError),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

struct AppState {
    cfg: Config,
    provider: LocalProvider,
}

pub const OWNER: &str = "server";

pub async fn serve(cfg: Config) -> Result<(), ServeError> {
    let local = cfg.local().ok_or(ServeError::NoEnvd)?;
    let provider = LocalProvider::new(local)?.with_owner(OWNER);
    let report = kiln_sandbox::template::build(&provider, &cfg.app_spec(), None).await?;
    if report.built {
        tracing::info!(spec_hash = %report.spec_hash, install_ms = report.install_ms, warm_ms = report.warm_ms, "template built");
    }
    let reclaimed = provider.reclaim(|_, owner, alive| owner != OWNER && alive).await?;
    if !reclaimed.is_empty() {
        tracing::info!(count = reclaimed.len(), "reclaimed sandboxes left by a previous server");
    }
    let state = Arc::new(AppState { cfg: cfg.clone(), provider });
    let app = Router::new().route("/", get(index)).route("/api/health", get(health)).with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| ServeError::Bind(cfg.listen, e))?;
    tracing::info!("Kiln is running at http://{}/", cfg.listen);
    println!("Kiln is running at http://{}/", cfg.listen);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn health(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let sandboxes = st.provider.list().await.map(|l| l.len()).unwrap_or(0);
    let template = kiln_sandbox::template::current(&st.cfg.data_dir).map(|c| c.spec_hash);
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sandboxes": sandboxes,
        "template": template,
        "limits": st.provider.layout().enforcement(),
    }))
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}
