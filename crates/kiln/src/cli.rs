//! Command-line surface. Each subcommand maps to one library call.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiln_sandbox::LocalProvider;
use kiln_server::Config;

#[derive(Parser)]
#[command(name = "kiln", version, about = "Self-hostable AI app builder: sandboxes, warm pool, live preview.")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the server with the web UI (builds the template first if needed).
    Serve,
    /// Send a prompt to a running server and print the events as they stream.
    Chat(crate::chat_cmd::ChatArgs),
    /// Check every prerequisite and say how to fix what is missing.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The app template sandboxes are created from.
    Template {
        #[command(subcommand)]
        cmd: TemplateCmd,
    },
    /// Operate sandboxes directly on the local backend (no server needed).
    Sandbox {
        #[command(subcommand)]
        cmd: crate::sandbox_cmd::SandboxCmd,
    },
    /// The warm pool: status, top-up, drain.
    Pool {
        #[command(subcommand)]
        cmd: crate::pool_cmd::PoolCmd,
        /// A running server (e.g. http://127.0.0.1:8080); without it, the
        /// store and local sandboxes are used directly. Sends
        /// KILN_POOL_ADMIN_TOKEN as the bearer token.
        #[arg(long, global = true, env = "KILN_SERVER")]
        server: Option<String>,
    },
    /// Benchmarks that print median and p95.
    Bench {
        #[command(subcommand)]
        cmd: crate::bench::BenchCmd,
    },
}

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// Install the template, warm Vite's cache at /app, record the spec hash.
    /// A no-op when nothing changed.
    Build {
        /// Build from this directory instead of the template embedded in kiln.
        #[arg(long)]
        source: Option<std::path::PathBuf>,
    },
}

pub fn config() -> anyhow::Result<Config> {
    Ok(Config::load()?)
}

pub fn provider(cfg: &Config, owner: &str) -> anyhow::Result<LocalProvider> {
    let local = cfg.local().context(
        "kiln-envd was not found next to the kiln binary; build it (cargo build --bins) or set KILN_ENVD_BIN",
    )?;
    Ok(LocalProvider::new(local)?.with_owner(owner))
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.cmd {
        Cmd::Serve => {
            kiln_server::serve::serve(config()?).await?;
            Ok(0)
        }
        Cmd::Doctor { json } => crate::doctor::run(json),
        Cmd::Template { cmd: TemplateCmd::Build { source } } => {
            let cfg = config()?;
            let p = provider(&cfg, "template")?;
            let r = kiln_sandbox::template::build(&p, &cfg.app_spec(), source.as_deref()).await?;
            if r.built {
                println!(
                    "template built: spec hash {} (npm ci {} ms, warm-up {} ms, {} modules)",
                    r.spec_hash, r.install_ms, r.warm_ms, r.modules_warmed
                );
            } else {
                println!("template up to date: spec hash {}", r.spec_hash);
            }
            Ok(0)
        }
        Cmd::Sandbox { cmd } => crate::sandbox_cmd::run(cmd).await,
        Cmd::Pool { cmd, server } => crate::pool_cmd::run(cmd, server).await,
        Cmd::Chat(args) => crate::chat_cmd::run(args).await,
        Cmd::Bench { cmd } => crate::bench::run(cmd).await,
    }
}
