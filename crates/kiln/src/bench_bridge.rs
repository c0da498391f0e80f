//! `kiln bench bridge`: what the agent bridge costs, per sandbox.
//!
//! - initialize, cold: envd starts the agent and runs ACP `initialize`
//! - initialize, same credentials: a claim that keeps the warm agent
//! - session/new + model: the rest of a prewarm
//! - initialize, new credentials + session: a claim that restarts the agent
//! - turn → version: a prompt that writes `src/App.tsx`, until its version
//!   is committed on the host
//! - turn → preview: from the prompt to the dev server serving the change
//! - restore: the previous version back into the sandbox, committed

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_bridge::VersionCtx;
use kiln_sandbox::{EnvdClient, LocalConfig, LocalProvider, SandboxProvider};
use kiln_types::SandboxSpec;
use kiln_types::agent::{InitializeRequest, NewSessionRequest};
use kiln_types::chat::EventBody;

use crate::bench::report;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn creds(v: &str) -> InitializeRequest {
    InitializeRequest { credentials: BTreeMap::from([("KILN_TOKEN".to_owned(), v.to_owned())]) }
}

pub async fn run(runs: usize, agent: Option<PathBuf>) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let agent = match agent {
        Some(a) => a,
        None => std::env::current_exe()?.with_file_name("kiln-testy"),
    };
    anyhow::ensure!(agent.is_file(), "{} not found (cargo build --bins, or pass --agent)", agent.display());
    let name = agent.file_name().context("agent path names a file")?.to_string_lossy().into_owned();
    let local = cfg.local().context("kiln-envd was not found next to the kiln binary")?;
    let p = LocalProvider::new(LocalConfig { extra_bins: vec![agent.clone()], ..local })?.with_owner("bench");
    kiln_sandbox::template::build(&p, &cfg.app_spec(), None).await?;
    let spec = SandboxSpec { agent: Some(vec![format!("/opt/kiln/{name}")]), ..cfg.app_spec() };
    let repos = tempdir()?;
    let mut m: [Vec<f64>; 7] = Default::default();
    for i in 0..runs {
        let c = p.create(&spec).await?;
        let id = c.info.id.clone();
        let result = one(&p, &cfg, &c.endpoint, &id, &repos, i, &mut m).await;
        p.kill(&id).await?;
        result?;
        eprintln!("run {}/{runs}: cold init {:.0} ms, turn → version {:.0} ms", i + 1, m[0][i], m[4][i]);
    }
    let _ = std::fs::remove_dir_all(&repos);
    println!("kiln bench bridge: {runs} runs, agent {}", agent.display());
    let names = [
        "initialize, cold (agent start)",
        "initialize, same credentials (warm claim)",
        "session/new + set model",
        "initialize, new credentials + session (claim)",
        "turn → version committed",
        "turn → preview serves the change",
        "restore previous version (+ commit)",
    ];
    for (name, xs) in names.iter().zip(m.iter_mut()) {
        report(name, xs, "ms");
    }
    Ok(0)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("kiln-bench-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

async fn one(
    p: &LocalProvider,
    cfg: &kiln_server::config::Config,
    ep: &kiln_sandbox::Endpoint,
    id: &kiln_types::SandboxId,
    repos: &std::path::Path,
    run: usize,
    m: &mut [Vec<f64>; 7],
) -> anyhow::Result<()> {
    let client = EnvdClient::new(ep.clone());
    client.wait_dev_ready(Duration::from_secs(30)).await?;
    let t = Instant::now();
    client.agent_initialize(&creds("pool")).await?;
    m[0].push(ms(t));
    let t = Instant::now();
    let r = client.agent_initialize(&creds("pool")).await?;
    anyhow::ensure!(!r.restarted, "unchanged credentials restarted the agent");
    m[1].push(ms(t));
    let req = NewSessionRequest { system_prompt: Some("You build apps.".into()), mcp_servers: vec![] };
    let t = Instant::now();
    let s = client.agent_new_session(&req).await?;
    let model = s.config_options.pointer("/0/options/1/value").and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(model) = &model {
        client.agent_set_model(&s.session_id, model).await?;
    }
    m[2].push(ms(t));
    let t = Instant::now();
    let r = client.agent_initialize(&creds("user")).await?;
    anyhow::ensure!(r.restarted, "new credentials did not restart the agent");
    let s = client.agent_new_session(&req).await?;
    if let Some(model) = &model {
        client.agent_set_model(&s.session_id, model).await?;
    }
    m[3].push(ms(t));

    let versions = VersionCtx {
        repo: kiln_versions::AppRepo::open(repos, &format!("bench-{run}"))?,
        work_tree: SandboxProvider::app_dir(p, id).context("app dir")?,
        template: kiln_sandbox::template::current(&cfg.data_dir).map(|t| t.app_dir),
    };
    versions.ensure_base().await?;
    let heading = format!("Bench heading {run}");
    let script = format!("write src/App.tsx export default function App() {{ return <h1>{heading}</h1> }}\\n");
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let t = Instant::now();
    let watch = {
        let client = client.clone();
        let heading = heading.clone();
        tokio::spawn(async move {
            loop {
                let (status, body) = kiln_sandbox::graph::proxy_get(&client, 5173, "/src/App.tsx").await?;
                if status == 200 && String::from_utf8_lossy(&body).contains(&heading) {
                    return Ok::<f64, anyhow::Error>(ms(t));
                }
                anyhow::ensure!(t.elapsed() < Duration::from_secs(20), "the preview never served the change");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    kiln_bridge::run_turn(&client, &s.session_id, &script, Some(&versions), &tx).await?;
    m[4].push(ms(t));
    drop(tx);
    let mut parent = None;
    while let Some(e) = rx.recv().await {
        if let EventBody::Version(v) = e {
            parent = v.parent;
        }
    }
    m[5].push(watch.await??);
    let parent = parent.context("the turn made no version")?;
    let t = Instant::now();
    kiln_bridge::restore_version(&client, &versions, &parent).await?.context("the restore made no version")?;
    m[6].push(ms(t));
    Ok(())
}
