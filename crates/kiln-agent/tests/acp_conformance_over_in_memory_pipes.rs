//! kiln-agent driven by the `agent-client-protocol` crate's own client over
//! in-memory pipes (no process, no envd): the client offers fs and
//! terminals from memory and checks exactly what the agent asks of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, CreateTerminalRequest, CreateTerminalResponse, InitializeRequest, NewSessionRequest,
    PromptRequest, ReadTextFileRequest, ReadTextFileResponse, ReleaseTerminalRequest, ReleaseTerminalResponse,
    SessionNotification, SetSessionConfigOptionRequest, TerminalOutputRequest, TerminalOutputResponse,
    WaitForTerminalExitRequest, WaitForTerminalExitResponse, WriteTextFileRequest, WriteTextFileResponse,
};
use agent_client_protocol::{Agent, ByteStreams, Client};
use serde_json::{Value, json};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[derive(Default)]
struct Fake {
    files: Mutex<HashMap<String, String>>,
    commands: Mutex<Vec<String>>,
    updates: Mutex<Vec<Value>>,
}

async fn with_agent(script: Value, steps: &str, test: impl AsyncFnOnce(ConnectionTo<Agent>, Arc<Fake>, String)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("KILN_MODEL", format!("scripted:{}", path.display())),
        ("KILN_AGENT_MAX_STEPS", steps.to_owned()),
    ]);
    let cfg = kiln_agent::config::AgentConfig::from(&|k| env.get(k).cloned()).unwrap();
    let (a, b) = tokio::io::duplex(1 << 16);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    tokio::spawn(kiln_agent::agent::serve(cfg, ByteStreams::new(a_write.compat_write(), a_read.compat())));
    let fake = Arc::new(Fake::default());
    let (f1, f2, f3, f4, f5, f6, f7) =
        (fake.clone(), fake.clone(), fake.clone(), fake.clone(), fake.clone(), fake.clone(), fake.clone());
    let cwd = dir.path().to_string_lossy().into_owned();
    Client
        .v1()
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                f1.updates.lock().unwrap().push(serde_json::to_value(&n.update).unwrap());
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |r: ReadTextFileRequest, responder, _cx| {
                let p = r.path.to_string_lossy().into_owned();
                match f2.files.lock().unwrap().get(&p) {
                    Some(t) => responder.respond(ReadTextFileResponse::new(t.clone())),
                    None => responder
                        .respond_with_error(agent_client_protocol::Error::new(-32002, format!("{p} not found"))),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: WriteTextFileRequest, responder, _cx| {
                f3.files.lock().unwrap().insert(r.path.to_string_lossy().into_owned(), r.content.clone());
                responder.respond(WriteTextFileResponse::new())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: CreateTerminalRequest, responder, _cx| {
                f4.commands.lock().unwrap().push(r.args.join(" "));
                responder.respond(CreateTerminalResponse::new("t1"))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |_r: WaitForTerminalExitRequest, responder, _cx| {
                let slow = f5.commands.lock().unwrap().last().is_some_and(|c| c.contains("sleep"));
                tokio::spawn(async move {
                    if slow {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let _ = responder.respond(from::<WaitForTerminalExitResponse>(json!({"exitCode": 0})));
                });
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |_r: TerminalOutputRequest, responder, _cx| {
                responder.respond(from::<TerminalOutputResponse>(json!({"output": "built ok\n", "truncated": false})))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |_r: ReleaseTerminalRequest, responder, _cx| {
                f6.commands.lock().unwrap().push("released".into());
                responder.respond(ReleaseTerminalResponse::new())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(
            ByteStreams::new(b_write.compat_write(), b_read.compat()),
            async move |cx: ConnectionTo<Agent>| {
                let init: InitializeRequest = from(json!({"protocolVersion": 1,
                "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": true}}));
                let i = cx.send_request(init).block_task().await?;
                assert_eq!(i.protocol_version, ProtocolVersion::V1);
                let iv = serde_json::to_value(&i).unwrap();
                assert_eq!(iv["agentInfo"]["name"], "kiln-agent");
                assert!(iv.pointer("/agentCapabilities/sessionCapabilities/systemPrompt").is_some());
                assert_eq!(
                    iv.pointer("/agentCapabilities/promptCapabilities/image"),
                    Some(&json!(false)),
                    "honest: text only"
                );
                let s = cx
                    .send_request(from::<NewSessionRequest>(json!({"cwd": cwd, "mcpServers": [],
                    "systemPrompt": {"mode": "append", "content": [{"type": "text", "text": "Build apps."}]}})))
                    .block_task()
                    .await?;
                test(cx, f7, s.session_id.0.to_string()).await;
                Ok(())
            },
        )
        .await
        .unwrap();
}

fn prompt(sid: &str, text: &str) -> PromptRequest {
    from(json!({"sessionId": sid, "prompt": [{"type": "text", "text": text}]}))
}

#[tokio::test]
async fn a_turn_writes_through_fs_runs_through_a_terminal_and_reports_tool_calls() {
    let script = json!({"turns": [
        {"text": "On it.", "tool_calls": [
            {"name": "write_file", "input": {"path": "src/App.tsx", "content": "v1"}},
            {"name": "edit_file", "input": {"path": "src/App.tsx", "old_string": "v1", "new_string": "v2"}},
            {"name": "run", "input": {"command": "npm run typecheck"}}
        ]},
        {"text": "Done."}
    ]});
    with_agent(script, "40", async |cx, fake, sid| {
        let set: SetSessionConfigOptionRequest =
            from(json!({"sessionId": sid, "configId": "model", "value": "openai:qwen2.5-coder"}));
        let r = cx.send_request(set).block_task().await.unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap()["configOptions"][0]["currentValue"], "openai:qwen2.5-coder");
        let bad: SetSessionConfigOptionRequest = from(json!({"sessionId": sid, "configId": "model", "value": "gpt"}));
        assert!(cx.send_request(bad).block_task().await.is_err());
        let back = r.config_options.iter().map(|o| serde_json::to_value(o).unwrap()).next().unwrap();
        let scripted = back["options"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["value"].as_str().filter(|v| v.starts_with("scripted:")))
            .unwrap()
            .to_owned();
        let set: SetSessionConfigOptionRequest =
            from(json!({"sessionId": sid, "configId": "model", "value": scripted}));
        cx.send_request(set).block_task().await.unwrap();

        let r = cx.send_request(prompt(&sid, "build")).block_task().await.unwrap();
        assert_eq!(serde_json::to_value(r.stop_reason).unwrap(), "end_turn");
        let files = fake.files.lock().unwrap().clone();
        let key = files.keys().next().unwrap().clone();
        assert!(key.ends_with("/src/App.tsx") && key.starts_with('/'), "absolute paths in the session's cwd: {key}");
        assert_eq!(files[&key], "v2", "edit_file read and rewrote through ACP fs");
        assert_eq!(fake.commands.lock().unwrap().as_slice(), ["-c npm run typecheck", "released"]);
        let updates = fake.updates.lock().unwrap().clone();
        let kinds: Vec<&str> = updates.iter().filter_map(|u| u["sessionUpdate"].as_str()).collect();
        assert!(kinds.contains(&"tool_call") && kinds.contains(&"tool_call_update") && kinds.contains(&"usage_update"));
        let completed: Vec<&Value> = updates.iter().filter(|u| u["status"] == "completed").collect();
        assert_eq!(completed.len(), 3);
        assert!(completed[2]["content"][0]["content"]["text"].as_str().unwrap().contains("built ok"));
        let text: String = updates
            .iter()
            .filter(|u| u["sessionUpdate"] == "agent_message_chunk")
            .filter_map(|u| u["content"]["text"].as_str())
            .collect();
        assert_eq!(text, "On it.Done.");
    })
    .await;
}

#[tokio::test]
async fn cancel_mid_tool_returns_cancelled_and_releases_the_terminal() {
    let script =
        json!({"turns": [{"tool_calls": [{"name": "run", "input": {"command": "sleep 100"}}]}, {"text": "no"}]});
    with_agent(script, "40", async |cx, fake, sid| {
        let c2 = cx.clone();
        let s2 = sid.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.send_notification(from::<CancelNotification>(json!({"sessionId": s2}))).unwrap();
        });
        let t = std::time::Instant::now();
        let r = cx.send_request(prompt(&sid, "go")).block_task().await.unwrap();
        assert_eq!(serde_json::to_value(r.stop_reason).unwrap(), "cancelled");
        assert!(t.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(fake.commands.lock().unwrap().contains(&"released".to_owned()), "the abandoned terminal is released");
    })
    .await;
}

#[tokio::test]
async fn the_step_limit_is_reported() {
    let call = json!({"tool_calls": [{"name": "read_file", "input": {"path": "missing.txt"}}]});
    with_agent(json!({"turns": [call, call, call]}), "2", async |cx, fake, sid| {
        let r = cx.send_request(prompt(&sid, "go")).block_task().await.unwrap();
        assert_eq!(serde_json::to_value(r.stop_reason).unwrap(), "max_turn_requests");
        let failed = fake.updates.lock().unwrap().iter().filter(|u| u["status"] == "failed").count();
        assert_eq!(failed, 2, "a missing file is a failed call the model sees, not a failed turn");
    })
    .await;
}
