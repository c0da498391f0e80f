//! kiln-agent as a real child process of kiln-envd (Kiln's ACP client):
//! initialize, session/new, model selection through the config option, a
//! scripted turn that writes a file (through ACP fs, so envd reports it)
//! and runs a shell command (through ACP terminals), cancel in the middle
//! of a tool, the step limit, and a model error ending the turn cleanly.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kiln_testkit::Envd;
use kiln_types::agent::{InitializeRequest, NewSessionRequest};
use kiln_types::chat::{EventBody, FileOp, StopReason, ToolStatus};

async fn start() -> Envd {
    let envd = kiln_testkit::built("kiln-envd", "kiln-envd");
    Envd::start(&envd, Some(&kiln_testkit::built("kiln-agent", "kiln-agent")), &[]).await
}

/// Writes a script and initializes the agent with it (and `extra` env).
async fn session(e: &Envd, script: serde_json::Value, extra: &[(&str, &str)]) -> String {
    let path = e.dir.path().join(format!("script-{}.json", rand_suffix()));
    std::fs::write(&path, script.to_string()).unwrap();
    let mut credentials = BTreeMap::from([("KILN_MODEL".to_owned(), format!("scripted:{}", path.display()))]);
    credentials.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    e.client.agent_initialize(&InitializeRequest { credentials }).await.unwrap();
    let req = NewSessionRequest { system_prompt: Some("You build apps.".into()), mcp_servers: vec![] };
    e.client.agent_new_session(&req).await.unwrap().session_id
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn turn(e: &Envd, sid: &str, text: &str) -> Vec<EventBody> {
    let s = e.client.agent_prompt(sid, text).await.unwrap();
    let evs: Vec<_> = tokio::time::timeout(Duration::from_secs(30), s.collect::<Vec<_>>()).await.expect("turn ended");
    evs.into_iter().map(|x| x.unwrap().body).collect()
}

fn text(evs: &[EventBody]) -> String {
    evs.iter().filter_map(|e| if let EventBody::Text { delta } = e { Some(delta.as_str()) } else { None }).collect()
}

fn stop(evs: &[EventBody]) -> StopReason {
    match evs.last() {
        Some(EventBody::Done { stop_reason }) => *stop_reason,
        other => panic!("no done: {other:?}"),
    }
}

#[tokio::test]
async fn initialize_session_model_and_a_turn_with_a_file_write_and_a_command() {
    let e = start().await;
    let init = e.client.agent_initialize(&InitializeRequest::default()).await.unwrap();
    assert_eq!(init.agent_info["name"], "kiln-agent");
    assert!(init.capabilities.pointer("/sessionCapabilities/systemPrompt").is_some());
    let script = serde_json::json!({"turns": [
        {"text": "Writing the app.", "tool_calls": [
            {"name": "write_file", "input": {"path": "src/App.tsx", "content": "export default () => <h1>Hi</h1>\n"}},
            {"name": "run", "input": {"command": "wc -c < src/App.tsx && echo ran-in-$(basename $PWD)"}}
        ]},
        {"thinking": "It is written.", "text": "Done."}
    ]});
    let sid = session(&e, script, &[]).await;
    let opts = e.client.agent_set_model(&sid, "anthropic:claude-haiku-4-5").await.unwrap();
    assert_eq!(opts.config_options[0]["currentValue"], "anthropic:claude-haiku-4-5");
    let status = e.client.agent_status().await.unwrap();
    assert_eq!(status.starts, 2, "new credentials restarted the agent once");
    // Back to the script (the option's value is the KILN_MODEL syntax).
    let back = opts.config_options[0]["options"][0]["value"].as_str().unwrap().to_owned();
    assert!(back.starts_with("scripted:"), "{back}");
    e.client.agent_set_model(&sid, &back).await.unwrap();

    let evs = turn(&e, &sid, "Make a page").await;
    assert_eq!(text(&evs), "Writing the app.Done.");
    assert!(evs.iter().any(|x| matches!(x, EventBody::Thought { delta } if delta == "It is written.")));
    assert!(
        evs.contains(&EventBody::File { path: "src/App.tsx".into(), op: FileOp::Write }),
        "the write went through ACP fs"
    );
    let run = evs
        .iter()
        .filter_map(|x| if let EventBody::ToolCall(c) = x { Some(c) } else { None })
        .find(|c| c.status == Some(ToolStatus::Completed) && c.output.as_deref().is_some_and(|o| o.contains("ran-in")))
        .unwrap_or_else(|| panic!("the command ran through an ACP terminal: {evs:?}"));
    assert!(run.output.as_deref().unwrap().contains("33\nran-in-app"), "{run:?}");
    assert!(evs.iter().any(|x| matches!(x, EventBody::ToolCall(c) if c.kind.as_deref() == Some("execute"))));
    assert!(evs.iter().any(|x| matches!(x, EventBody::Usage(u) if u.size == Some(180_000))));
    assert_eq!(stop(&evs), StopReason::EndTurn);
    assert_eq!(
        std::fs::read_to_string(e.dir.path().join("app/src/App.tsx")).unwrap(),
        "export default () => <h1>Hi</h1>\n"
    );

    // The script is used up: the next turn ends with a clear error.
    let evs = turn(&e, &sid, "More").await;
    assert!(
        evs.iter().any(|x| matches!(x, EventBody::Error { message, .. } if message.contains("no more turns"))),
        "{evs:?}"
    );
    assert_eq!(stop(&evs), StopReason::Error);
}

#[tokio::test]
async fn cancel_stops_a_running_command_promptly() {
    let e = start().await;
    let script = serde_json::json!({"turns": [
        {"tool_calls": [{"name": "run", "input": {"command": "sleep 30; echo never"}}]},
        {"text": "not reached"}
    ]});
    let sid = session(&e, script, &[]).await;
    let s = e.client.agent_prompt(&sid, "go").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = std::time::Instant::now();
    e.client.agent_cancel(&sid).await.unwrap();
    let evs: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>()).await.unwrap();
    let evs: Vec<EventBody> = evs.into_iter().map(|x| x.unwrap().body).collect();
    assert!(t.elapsed() < Duration::from_secs(3), "cancel took {:?}", t.elapsed());
    assert_eq!(stop(&evs), StopReason::Cancelled);
    assert!(!text(&evs).contains("not reached"));
    // The command's process is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = std::process::Command::new("pgrep").args(["-f", "sleep 30; echo never"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ps.stdout).trim().is_empty(), "the cancelled command still runs");
}

#[tokio::test]
async fn the_step_limit_ends_the_turn_and_says_so() {
    let e = start().await;
    let call = serde_json::json!({"tool_calls": [{"name": "list_files", "input": {}}]});
    let script = serde_json::json!({"turns": [call, call, call, {"text": "never"}]});
    let sid = session(&e, script, &[("KILN_AGENT_MAX_STEPS", "2")]).await;
    let evs = turn(&e, &sid, "loop").await;
    assert_eq!(stop(&evs), StopReason::MaxTurnRequests);
    assert!(text(&evs).contains("stopped after 2 model calls"), "{}", text(&evs));
}

#[tokio::test]
async fn edit_file_failures_go_back_to_the_model_as_failed_calls() {
    let e = start().await;
    std::fs::write(e.dir.path().join("app/a.txt"), "one two two").unwrap();
    let script = serde_json::json!({"turns": [
        {"tool_calls": [
            {"name": "edit_file", "input": {"path": "a.txt", "old_string": "two", "new_string": "2"}},
            {"name": "edit_file", "input": {"path": "a.txt", "old_string": "one", "new_string": "1"}},
            {"name": "read_file", "input": {"path": "../../etc/passwd"}}
        ]},
        {"text": "ok"}
    ]});
    let sid = session(&e, script, &[]).await;
    let evs = turn(&e, &sid, "edit").await;
    let finals: Vec<_> = evs
        .iter()
        .filter_map(|x| match x {
            EventBody::ToolCall(c) if matches!(c.status, Some(ToolStatus::Completed | ToolStatus::Failed)) => {
                Some(c.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(finals[0].status, Some(ToolStatus::Failed));
    assert!(finals[0].output.as_deref().unwrap().contains("appears 2 times"));
    assert_eq!(finals[1].status, Some(ToolStatus::Completed));
    assert_eq!(finals[2].status, Some(ToolStatus::Failed));
    assert_eq!(std::fs::read_to_string(e.dir.path().join("app/a.txt")).unwrap(), "1 two two");
    assert_eq!(stop(&evs), StopReason::EndTurn);
}
