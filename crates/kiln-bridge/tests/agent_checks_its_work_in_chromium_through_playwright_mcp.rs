//! End to end in a real sandbox through the bridge: kiln-agent, driven by a
//! scripted model, writes `src/App.tsx`, then uses Playwright MCP (real
//! Debian Chromium, inside the sandbox) to open the real dev server and read
//! the accessibility snapshot, which contains the heading it wrote. The
//! turn ends with a version.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_bridge::{AcpWarmUp, AgentSession, AgentSetup};
use kiln_pool::{WarmCtx, WarmUp};
use kiln_sandbox::{LocalConfig, LocalProvider, SandboxProvider};
use kiln_types::SandboxSpec;
use kiln_types::agent::McpServer;
use kiln_types::chat::{EventBody, StopReason, ToolStatus};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_writes_the_app_and_sees_it_in_chromium() {
    let env = require_env!();
    kiln_sandbox::tools::install(&env.data_dir).await.expect("installing @playwright/mcp from npm");
    let provider = LocalProvider::new(LocalConfig {
        extra_bins: vec![kiln_testkit::built("kiln-agent", "kiln-agent")],
        ..env.config.clone()
    })
    .unwrap()
    .with_owner("test");
    let spec = SandboxSpec { agent: Some(vec!["/opt/kiln/kiln-agent".into()]), ..SandboxSpec::app() };
    let created = provider.create(&spec).await.expect("create sandbox");
    let g = support::Guard { provider, created };
    g.wait_dev_ready().await;

    let heading = "Kiln checks this page";
    let script = serde_json::json!({"turns": [
        {"text": "Writing the page.", "tool_calls": [
            {"name": "write_file", "input": {"path": "src/App.tsx", "content": format!("export default function App() {{\n  return <h1 className=\"text-3xl font-bold\">{heading}</h1>\n}}\n")}},
            {"name": "browser_navigate", "input": {"url": "http://localhost:5173"}}
        ]},
        {"tool_calls": [{"name": "browser_snapshot", "input": {}}]},
        {"text": "The page shows the heading."}
    ]});
    let req = kiln_types::envd::ExecRequest {
        cmd: "sh".into(),
        args: vec!["-c".into(), "cat > /tmp/script.json".into()],
        stdin_b64: Some(base64::engine::general_purpose::STANDARD.encode(script.to_string())),
        ..Default::default()
    };
    assert_eq!(g.client().exec_collect(&req).await.unwrap().code, 0);

    let setup = AgentSetup {
        pool_credentials: BTreeMap::from([("KILN_MODEL".to_owned(), "scripted:/tmp/script.json".to_owned())]),
        system_prompt: Some(include_str!("../../../prompts/app-builder.md").to_owned()),
        mcp_servers: vec![McpServer {
            name: "playwright".into(),
            command: "node".into(),
            args: kiln_sandbox::tools::playwright_mcp_args(),
            env: BTreeMap::new(),
        }],
        model: None,
    };
    let warm = AcpWarmUp::new(setup, None);
    let ctx = WarmCtx { sandbox_id: g.id(), host_socket: None, session_key: None };
    let meta = warm.prewarm(&g.client(), &ctx).await.expect("agent warm-up with Playwright MCP");
    let sid = AgentSession::parse(meta.as_deref()).unwrap().session_id;

    let repo_dir = tempfile::tempdir().unwrap();
    let v = common::versions(env, &g, repo_dir.path(), "e2e");
    let events = common::turn(&g, &sid, "Make a page with a big heading", Some(&v)).await;
    let snapshot = events
        .iter()
        .filter_map(|e| if let EventBody::ToolCall(c) = e { Some(c) } else { None })
        .filter(|c| c.status == Some(ToolStatus::Completed))
        .filter_map(|c| c.output.clone())
        .find(|o| o.contains("heading"))
        .unwrap_or_else(|| panic!("no snapshot with a heading: {events:?}"));
    assert!(snapshot.contains(heading), "the snapshot shows what the agent wrote: {snapshot}");
    let version = events.iter().find_map(|e| if let EventBody::Version(v) = e { Some(v.clone()) } else { None });
    assert_eq!(version.expect("a version").files, vec!["src/App.tsx"]);
    assert!(matches!(events.last(), Some(EventBody::Done { stop_reason: StopReason::EndTurn })));
    assert_eq!(common::text(&events), "Writing the page.The page shows the heading.");
    let _ = SandboxProvider::kill(&g.provider, g.id()).await;
}
