//! Sandboxes with `kiln-testy` as their agent, on the shared test data dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_bridge::VersionCtx;
use kiln_sandbox::{LocalConfig, LocalProvider, SandboxProvider};
use kiln_types::SandboxSpec;
use kiln_types::chat::EventBody;
use tokio::sync::mpsc;

use crate::support;

/// Builds kiln-testy (another package's binary) once.
pub fn testy() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| kiln_testkit::built("kiln-testy", "kiln-testy")).clone()
}

pub fn provider(env: &support::Env) -> LocalProvider {
    let cfg = LocalConfig { extra_bins: vec![testy()], ..env.config.clone() };
    LocalProvider::new(cfg).unwrap().with_owner("test")
}

pub fn spec() -> SandboxSpec {
    SandboxSpec { agent: Some(vec!["/opt/kiln/kiln-testy".into()]), ..SandboxSpec::app() }
}

pub async fn sandbox(env: &support::Env) -> support::Guard {
    let provider = provider(env);
    let created = provider.create(&spec()).await.expect("create sandbox");
    let g = support::Guard { provider, created };
    g.wait_dev_ready().await;
    g
}

pub fn versions(env: &support::Env, g: &support::Guard, repo_dir: &Path, app: &str) -> VersionCtx {
    VersionCtx {
        repo: kiln_versions::AppRepo::open(repo_dir, app).unwrap(),
        work_tree: g.provider.app_dir(g.id()),
        template: kiln_sandbox::template::current(&env.data_dir).map(|t| t.app_dir),
    }
}

/// Runs a turn of testy commands and returns its events.
pub async fn turn(g: &support::Guard, session: &str, script: &str, versions: Option<&VersionCtx>) -> Vec<EventBody> {
    let (tx, mut rx) = mpsc::channel(1024);
    let client = g.client();
    let run = kiln_bridge::run_turn(&client, session, script, versions, &tx);
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("turn finished").expect("turn ran");
    drop(tx);
    let mut out = Vec::new();
    while let Some(e) = rx.recv().await {
        out.push(e);
    }
    assert!(out.last().is_some_and(EventBody::is_done), "{out:?}");
    out
}

pub fn text(events: &[EventBody]) -> String {
    events.iter().filter_map(|e| if let EventBody::Text { delta } = e { Some(delta.as_str()) } else { None }).collect()
}
