//! `kiln pool …`: against a running server over HTTP, or straight on the
//! store and the local backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use kiln_pool::{NoWarmUp, PoolManager};
use kiln_sandbox::SandboxProvider;

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Ready, warming and stale counts, target, spec hash, first ready sandbox.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Refill the pool up to the target (or --target N for this top-up).
    Topup {
        #[arg(long)]
        target: Option<u32>,
    },
    /// Remove every pool row and kill its sandbox.
    Drain,
}

pub async fn run(cmd: PoolCmd, server: Option<String>) -> anyhow::Result<u8> {
    match server {
        Some(url) => remote(cmd, url.trim_end_matches('/')).await,
        None => local(cmd).await,
    }
}

async fn remote(cmd: PoolCmd, base: &str) -> anyhow::Result<u8> {
    let token = std::env::var("KILN_POOL_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let (method, path, body) = match &cmd {
        PoolCmd::Status { .. } => ("GET", "/api/vm/prewarm", None),
        PoolCmd::Topup { target: Some(t) } => ("POST", "/api/vm/prewarm", Some(format!("{{\"target\":{t}}}"))),
        PoolCmd::Topup { target: None } => ("POST", "/api/vm/prewarm", None),
        PoolCmd::Drain => ("POST", "/api/vm/drain", None),
    };
    let (status, text) =
        crate::http_client::call(method, &format!("{base}{path}"), body.as_deref(), token.as_deref()).await?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("server answered {status}: {msg}");
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    match cmd {
        PoolCmd::Status { json: false } => print_status(&v),
        _ => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(0)
}

fn print_status(v: &serde_json::Value) {
    println!("ready {}  warming {}  stale {}  target {}", v["ready"], v["warming"], v["stale"], v["target"]);
    println!("spec hash {}", v["specHash"].as_str().unwrap_or("?"));
    match v["firstReady"]["sandboxId"].as_str() {
        Some(id) => println!("first ready {id}"),
        None => println!("first ready: none"),
    }
}

async fn local(cmd: PoolCmd) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let provider = Arc::new(crate::cli::provider(&cfg, kiln_server::serve::OWNER)?);
    let store = kiln_server::serve::open_store(&cfg).await?;
    let pool = PoolManager::new(
        store,
        provider as Arc<dyn SandboxProvider>,
        Arc::new(NoWarmUp),
        kiln_server::serve::pool_config(&cfg),
    );
    match cmd {
        PoolCmd::Status { json } => {
            let s = pool.status().await?;
            let v = serde_json::to_value(&s)?;
            if json { println!("{}", serde_json::to_string_pretty(&v)?) } else { print_status(&v) }
        }
        PoolCmd::Topup { target } => {
            let r = pool.topup(target).await?;
            println!("ready {}  warming {}  spawned {}  target {}", r.ready, r.warming, r.spawned, r.target);
            // The prewarm tasks live in this process: wait for them.
            let t = Instant::now();
            loop {
                let s = pool.status().await?;
                if s.warming == 0 {
                    println!("ready {} after {:.1} s", s.ready, t.elapsed().as_secs_f64());
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("{} sandboxes still warming after 120 s", s.warming);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        PoolCmd::Drain => println!("drained {} sandboxes", pool.drain().await?),
    }
    Ok(0)
}
