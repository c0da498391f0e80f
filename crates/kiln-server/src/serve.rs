//! `kiln serve`: brings the host to a runnable state, then serves HTTP.
//!
//! Start-up order matters: listen first (a taken port fails at once), build
//! the template (a no-op when unchanged) before anything is created from it,
//! open the store (migrations), then recover: this instance's warming rows
//! are its dead predecessor's, and sandboxes no row knows are leftovers —
//! both are killed before the first top-up, so a crash never leaks
//! processes, mounts or cgroups across restarts.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_pool::{NoWarmUp, PoolConfig, PoolManager};
use kiln_sandbox::{LocalProvider, SandboxProvider};
use metrics_exporter_prometheus::PrometheusHandle;
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
    #[error("database {url}: {source}")]
    Store { url: String, source: kiln_store::StoreError },
    #[error(transparent)]
    Pool(#[from] kiln_pool::PoolError),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct AppState {
    pub cfg: Config,
    pub provider: Arc<LocalProvider>,
    pub pool: PoolManager,
    pub metrics: PrometheusHandle,
}

/// Label on sandboxes the server creates (operator sandboxes say `cli`).
pub const OWNER: &str = "server";

pub fn pool_config(cfg: &Config) -> PoolConfig {
    PoolConfig {
        target: cfg.pool.target,
        max_target: cfg.pool.max_target,
        max_age: cfg.pool.max_age,
        lease: cfg.pool.lease,
        idle_timeout: cfg.sandbox.idle_timeout,
        ..PoolConfig::new(cfg.app_spec(), cfg.instance.clone())
    }
}

/// Opens the configured store, naming the URL's scheme (never its
/// credentials) when it fails.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn kiln_store::Store>, ServeError> {
    let scheme = cfg.database_url.split("://").next().unwrap_or("").to_owned();
    kiln_store::connect(&cfg.database_url)
        .await
        .map_err(|source| ServeError::Store { url: format!("{scheme}://…"), source })
}

pub async fn serve(cfg: Config) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| ServeError::Bind(cfg.listen, e))?;
    let metrics = crate::metrics::install();
    let local = cfg.local().ok_or(ServeError::NoEnvd)?;
    let provider = Arc::new(LocalProvider::new(local)?.with_owner(OWNER));
    let report = kiln_sandbox::template::build(&provider, &cfg.app_spec(), None).await?;
    if report.built {
        tracing::info!(spec_hash = %report.spec_hash, install_ms = report.install_ms, warm_ms = report.warm_ms, "template built");
    }
    let store = open_store(&cfg).await?;
    if let Some(wanted) = cfg.pool.clamped_from {
        tracing::warn!(wanted, max = cfg.pool.max_target, "KILN_POOL_TARGET_SIZE is above KILN_POOL_MAX_SIZE; clamped");
    }
    let gateway = kiln_gateway::Gateway::new(cfg.agent.gateway(cfg.sandbox.uid));
    let warmup: Arc<dyn kiln_pool::WarmUp> = match &cfg.agent_command() {
        Some(cmd) => {
            tracing::info!(agent = ?cmd, "sandboxes host an ACP agent");
            // The agent's eyes: Playwright MCP driving Debian's Chromium.
            let mcp_servers = match kiln_sandbox::tools::install(&cfg.data_dir).await {
                Ok(_) => vec![kiln_types::agent::McpServer {
                    name: "playwright".into(),
                    command: "node".into(),
                    args: kiln_sandbox::tools::playwright_mcp_args(),
                    env: Default::default(),
                }],
                Err(e) => {
                    tracing::warn!(error = %e, "Playwright MCP is not installed; agents work without a browser");
                    vec![]
                }
            };
            let setup = kiln_bridge::AgentSetup {
                pool_credentials: cfg.agent.pool_credentials(),
                system_prompt: Some(APP_BUILDER_PROMPT.to_owned()),
                mcp_servers,
                model: cfg.agent.model.clone(),
            };
            Arc::new(kiln_bridge::AcpWarmUp::new(setup, Some(gateway.clone())))
        }
        None => {
            tracing::warn!("no agent configured (KILN_AGENT): sandboxes are warm without one");
            Arc::new(NoWarmUp)
        }
    };
    let pool = PoolManager::new(store, provider.clone() as Arc<dyn SandboxProvider>, warmup, pool_config(&cfg));
    spawn_gateway_pruning(gateway.clone(), provider.clone());
    let recovered = pool.recover_own_warming().await?;
    let reclaimed = pool.reclaim_unknown(OWNER).await?;
    if recovered + reclaimed.len() > 0 {
        tracing::info!(recovered, reclaimed = reclaimed.len(), "cleaned up after a previous server process");
    }
    let t = pool.topup(None).await?;
    tracing::info!(target = t.target, ready = t.ready, warming = t.warming, "pool topped up");
    pool.spawn_maintenance(cfg.pool.maintenance_interval);

    let state = Arc::new(AppState { cfg: cfg.clone(), provider, pool, metrics });
    tracing::info!(instance = %cfg.instance, store = state.pool.store().kind(), "Kiln is running at http://{}/", cfg.listen);
    println!("Kiln is running at http://{}/", cfg.listen);
    axum::serve(listener, router(state)).await?;
    Ok(())
}

/// The app-builder system prompt, reviewed like code (`prompts/`).
pub const APP_BUILDER_PROMPT: &str = include_str!("../../../prompts/app-builder.md");

/// Stops the gateway sockets of sandboxes that no longer exist.
fn spawn_gateway_pruning(gateway: Arc<kiln_gateway::Gateway>, provider: Arc<LocalProvider>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Ok(list) = provider.list().await {
                let live: std::collections::HashSet<String> = list.into_iter().map(|i| i.id.to_string()).collect();
                gateway.retain(|id| live.contains(id));
            }
        }
    });
}

pub fn router(state: Arc<AppState>) -> Router {
    use crate::api::pool;
    Router::new()
        .route("/", get(index))
        .route("/api/health", get(health))
        .route("/api/vm/prewarm", get(pool::status).post(pool::topup))
        .route("/api/vm/drain", post(pool::drain))
        .route("/api/vm/claim", post(pool::claim))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

async fn health(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let sandboxes = st.provider.list().await.map(|l| l.len()).unwrap_or(0);
    let template = kiln_sandbox::template::current(&st.cfg.data_dir).map(|c| c.spec_hash);
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sandboxes": sandboxes,
        "template": template,
        "store": st.pool.store().kind(),
        "limits": st.provider.layout().enforcement(),
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render())
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}
