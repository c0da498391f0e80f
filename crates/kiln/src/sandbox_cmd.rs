//! `kiln sandbox …`: operator commands straight on the local backend.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use futures::StreamExt;
use kiln_sandbox::SandboxProvider;
use kiln_types::SandboxId;
use kiln_types::envd::{ExecEvent, ExecRequest};

#[derive(Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox from the built template and print its id.
    Create {
        /// Do not start the dev server.
        #[arg(long)]
        no_dev_server: bool,
        /// Wait until the dev server answers before returning.
        #[arg(long)]
        wait_ready: bool,
        /// Give the sandbox outbound network (through pasta; never the host's loopback).
        #[arg(long)]
        egress: bool,
    },
    /// List sandboxes.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a sandbox; exits with the command's exit code.
    Exec {
        id: SandboxId,
        /// Working directory inside the sandbox (default /app).
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment, NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Kill the command after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Kill a sandbox: every process, its mounts and its directories.
    Kill { id: SandboxId },
}

pub async fn run(cmd: SandboxCmd) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let p = crate::cli::provider(&cfg, "cli")?;
    match cmd {
        SandboxCmd::Create { no_dev_server, wait_ready, egress } => {
            let mut spec = cfg.app_spec();
            spec.dev_server = !no_dev_server;
            spec.egress = egress;
            let c = p.create(&spec).await?;
            if wait_ready && spec.dev_server {
                let client = kiln_sandbox::EnvdClient::new(c.endpoint.clone());
                client.wait_dev_ready(Duration::from_secs(60)).await?;
            }
            println!("{}", c.info.id);
            Ok(0)
        }
        SandboxCmd::Ls { json } => {
            let list = p.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<34} {:<9} {:<8} CREATED", "ID", "STATE", "MEMORY");
                for s in list {
                    let age = kiln_sandbox::local::now_ms().saturating_sub(s.created_at_ms) / 1000;
                    println!("{:<34} {:<9} {:<8} {age}s ago", s.id, s.state, format!("{}M", s.spec.limits.memory_mib));
                }
            }
            Ok(0)
        }
        SandboxCmd::Exec { id, cwd, env, timeout, cmd } => {
            let client = p.connect(&id).await?;
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .context(format!("--env {kv:?} is not NAME=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (program, args) = cmd.split_first().context("no command given")?;
            let req = ExecRequest {
                cmd: program.clone(),
                args: args.to_vec(),
                cwd,
                env,
                timeout_ms: timeout.map(|s| s * 1000),
                stdin_b64: None,
            };
            let events = client.exec(&req).await?;
            futures::pin_mut!(events);
            let mut code = 1;
            while let Some(ev) = events.next().await {
                match ev? {
                    ExecEvent::Stdout { b64 } => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&B64.decode(b64)?)?;
                        o.flush()?;
                    }
                    ExecEvent::Stderr { b64 } => {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&B64.decode(b64)?)?;
                        e.flush()?;
                    }
                    ExecEvent::Exit { code: c, timed_out } => {
                        if timed_out {
                            eprintln!("kiln: command timed out and was killed");
                        }
                        code = c;
                    }
                    ExecEvent::Error { message } => anyhow::bail!(message),
                    ExecEvent::Started { .. } => {}
                }
            }
            Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
        }
        SandboxCmd::Kill { id } => {
            p.kill(&id).await?;
            println!("killed {id}");
            Ok(0)
        }
    }
}
