//! Interop with a real third-party ACP agent: `@agentclientprotocol/
//! claude-agent-acp` from npm, hosted by envd inside a real sandbox.
//! `initialize`, `session/new` and model selection succeed; a prompt with no
//! reachable model ends in a clean `error` event and `done`, not a hang or a
//! crash.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use kiln_sandbox::{LocalConfig, LocalProvider, SandboxProvider};
use kiln_types::SandboxSpec;
use kiln_types::agent::{InitializeRequest, NewSessionRequest};
use kiln_types::chat::EventBody;

const PACKAGE: &str = "@agentclientprotocol/claude-agent-acp@0.101.0";
const ENTRY: &str = "/opt/kiln/claude-agent-acp/node_modules/@agentclientprotocol/claude-agent-acp/dist/index.js";

/// Installs the agent from npm into `<data>/bin` (seen as `/opt/kiln`)
/// once; false (skip) when npm cannot fetch it outside CI.
fn install(data_dir: &Path) -> bool {
    let dir = data_dir.join("bin/claude-agent-acp");
    let marker = dir.join(".installed");
    if marker.exists() {
        return true;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(data_dir.join("bin/.claude-agent-acp.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if marker.exists() {
        return true;
    }
    let out = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
        .arg(&dir)
        .arg(PACKAGE)
        .output()
        .expect("running npm");
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and npm could not install {PACKAGE}: {why}");
        }
        eprintln!("SKIPPED: npm could not install {PACKAGE}: {why}");
        return false;
    }
    std::fs::write(&marker, "").unwrap();
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_agent_acp_initializes_opens_a_session_selects_a_model_and_fails_cleanly_without_a_model() {
    let env = require_env!();
    if !install(&env.data_dir) {
        return;
    }
    let provider = LocalProvider::new(LocalConfig { ..env.config.clone() }).unwrap().with_owner("test");
    let spec = SandboxSpec { agent: Some(vec!["node".into(), ENTRY.into()]), ..SandboxSpec::app() };
    let created = provider.create(&spec).await.expect("create sandbox");
    let g = support::Guard { provider, created };
    let c = g.client();

    let creds = [("IS_SANDBOX", "1"), ("ANTHROPIC_BASE_URL", "http://127.0.0.1:4141/anthropic")];
    let init = InitializeRequest { credentials: creds.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() };
    let i = c.agent_initialize(&init).await.expect("initialize");
    assert!(i.restarted);
    assert!(i.agent_info["name"].as_str().unwrap_or_default().contains("claude"), "{:?}", i.agent_info);

    let req = NewSessionRequest { system_prompt: Some("You build web apps.".into()), mcp_servers: vec![] };
    let s =
        tokio::time::timeout(Duration::from_secs(60), c.agent_new_session(&req)).await.unwrap().expect("session/new");
    let options = s.config_options.as_array().expect("configOptions").clone();
    let model = options.iter().find(|o| o["category"] == "model").expect("a model option");
    let values: Vec<String> = model["options"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| match o["value"].as_str() {
            Some(v) => vec![v.to_owned()],
            None => o["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["value"].as_str().map(str::to_owned))
                .collect(),
        })
        .collect();
    let pick = values.iter().find(|v| Some(v.as_str()) != model["currentValue"].as_str()).unwrap_or(&values[0]).clone();
    let r = c.agent_set_model(&s.session_id, &pick).await.expect("model selection");
    let now =
        r.config_options.as_array().unwrap().iter().find(|o| o["category"] == "model").unwrap()["currentValue"].clone();
    assert_eq!(now, pick.as_str());

    // No key and no reachable model: the turn ends cleanly with an error.
    let stream = c.agent_prompt(&s.session_id, "Say hello.").await.expect("prompt accepted");
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>())
        .await
        .expect("the turn ends instead of hanging");
    let events: Vec<EventBody> = events.into_iter().map(|e| e.unwrap().body).collect();
    assert!(events.last().is_some_and(EventBody::is_done), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, EventBody::Error { .. })), "the failure is reported: {events:?}");
    // Nothing crashed: envd answers, the agent still runs.
    c.health().await.unwrap();
    assert!(c.agent_status().await.unwrap().running);
    let _ = SandboxProvider::kill(&g.provider, g.id()).await;
}
