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
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
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
    #[error(transparent)]
    Models(#[from] crate::models::ModelsError),
    #[error(transparent)]
    Gateway(#[from] kiln_gateway::GatewayError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct AppState {
    pub cfg: Config,
    pub provider: Arc<LocalProvider>,
    pub pool: PoolManager,
    pub metrics: PrometheusHandle,
    pub gateway: Arc<kiln_gateway::Gateway>,
    pub models: crate::models::Models,
    /// Chat logs (kept in the store) and the one-turn-per-app lock.
    pub chat: crate::chat::ChatHub,
    pub chat_models: crate::chat::quick::QuickProviders,
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
        claim_refill_delay: cfg.pool.claim_refill_delay,
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

pub async fn serve(mut cfg: Config) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| ServeError::Bind(cfg.listen, e))?;
    let metrics = crate::metrics::install();
    let local = cfg.local().ok_or(ServeError::NoEnvd)?;
    let provider = Arc::new(LocalProvider::new(local)?.with_owner(OWNER));
    let report = kiln_sandbox::template::build(&provider, &cfg.app_spec(), None).await?;
    if report.built {
        tracing::info!(spec_hash = %report.spec_hash, install_ms = report.install_ms, warm_ms = report.warm_ms, "template built");
    }
    let models = crate::models::Models::prepare(&cfg.data_dir, &cfg.agent, cfg.edge.quick_model.as_deref())?;
    // Agents get the model as they can see it (scripts under /opt/kiln).
    cfg.agent.agent_model.clone_from(&models.agent_model);
    match &models.info().model {
        Some(m) => tracing::info!(model = %m, quick = ?models.info().quick_model, "model configured"),
        None => tracing::warn!("no model configured: the UI offers the demo replay; {}", crate::models::HOW_TO),
    }
    let store = open_store(&cfg).await?;
    if let Some(wanted) = cfg.pool.clamped_from {
        tracing::warn!(wanted, max = cfg.pool.max_target, "KILN_POOL_TARGET_SIZE is above KILN_POOL_MAX_SIZE; clamped");
    }
    // Model spend lives in the store; this instance's holds left by a dead
    // predecessor are charged before anything new is held.
    let ledger = Arc::new(kiln_gateway::StoreLedger::new(store.clone(), &cfg.instance));
    match ledger.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(requests = n, "charged model requests a previous server process left in flight"),
        Err(e) => tracing::warn!(error = %e, "cannot settle a previous process's model spend holds"),
    }
    let gateway = kiln_gateway::Gateway::open(cfg.agent.gateway(cfg.sandbox.uid), ledger)?;
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
            if cfg.agent.explicit_none {
                tracing::warn!("KILN_AGENT=none: sandboxes are warm without an agent; prompts will be refused");
            } else {
                tracing::error!(
                    "kiln-agent was not found next to the kiln binary, so sandboxes have no agent and prompts will \
                     be refused: build it (cargo build --release -p kiln-agent) or set KILN_AGENT"
                );
            }
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

    let chat = crate::chat::ChatHub::with_store(pool.store().clone());
    let state = Arc::new(AppState {
        cfg: cfg.clone(),
        provider,
        pool,
        metrics,
        gateway,
        models,
        chat,
        chat_models: Default::default(),
    });
    tracing::info!(instance = %cfg.instance, store = state.pool.store().kind(), "Kiln is running at http://{}/", cfg.listen);
    println!("Kiln is running at {}/", cfg.edge.public_url);
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

/// Largest request body accepted (prompts are limited to 32 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every route with its method, as registered: the OpenAPI document must
/// list exactly these (checked by a test).
pub fn routes() -> (Router<Arc<AppState>>, Vec<(&'static str, &'static str)>) {
    use crate::api::{apps, chat, pool, sessions};
    use axum::routing::MethodRouter;
    let mut table = Vec::new();
    let mut r = Router::new();
    let mut add = |method: &'static str, path: &'static str, h: MethodRouter<Arc<AppState>>| {
        table.push((method, path));
        r = std::mem::take(&mut r).route(path, h);
    };
    add("get", "/", get(crate::web::index));
    add("get", "/a/{id}", get(crate::web::index));
    add("get", "/assets/{*path}", get(crate::web::asset));
    add("get", "/api/health", get(health));
    add("get", "/api/config", get(sessions::config));
    add("get", "/api/openapi.json", get(openapi));
    add("post", "/api/chat", post(chat::post));
    add("get", "/api/apps", get(apps::list));
    add("get", "/api/apps/{id}", get(apps::get));
    add("patch", "/api/apps/{id}", patch(apps::rename));
    add("get", "/api/apps/{id}/events", get(apps::events));
    add("post", "/api/apps/{id}/cancel", post(apps::cancel));
    add("post", "/api/apps/{id}/versions/{sha}/restore", post(apps::restore));
    add("get", "/api/vm/prewarm", get(pool::status));
    add("post", "/api/vm/prewarm", post(pool::topup));
    add("post", "/api/vm/drain", post(pool::drain));
    add("post", "/api/vm/claim", post(pool::claim));
    add("get", "/q/{id}", get(sessions::quick_newest));
    add("get", "/q/{id}/{sha}", get(sessions::quick_version));
    add("get", "/metrics", get(metrics));
    (r, table)
}

pub fn router(state: Arc<AppState>) -> Router {
    routes()
        .0
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        // Outermost: preview hosts never reach the routes above.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::proxy::route))
        .with_state(state)
}

/// The HTTP API's contract (OpenAPI 3.1), written once in `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    if uri.path().starts_with("/api/") {
        crate::api::ApiError::NotFound(format!("no API route {}; see /api/openapi.json", uri.path())).into_response()
    } else {
        crate::api::sessions::not_found_page("There is nothing at this address.")
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("docs/openapi.json is JSON");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut routed: Vec<(String, String)> =
            super::routes().1.iter().map(|(m, p)| ((*m).to_owned(), p.replace("{*", "{"))).collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed, "docs/openapi.json and the router disagree");
    }
}
