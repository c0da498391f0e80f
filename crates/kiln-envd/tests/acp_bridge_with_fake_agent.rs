//! The ACP bridge against `kiln-testy`, a deterministic ACP agent: envd
//! (on the host, against a temporary app directory) starts it, is its ACP
//! client, and turns its updates into Kiln chat events with sequence numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use kiln_testkit::Envd;
use kiln_types::agent::{InitializeRequest, NewSessionRequest};
use kiln_types::chat::{ChatEvent, EventBody, FileOp, StopReason, ToolStatus};

async fn start_with(extra_env: &[(&str, &str)]) -> Envd {
    static TESTY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let testy = TESTY.get_or_init(|| kiln_testkit::built("kiln-testy", "kiln-testy"));
    let e = Envd::start(Path::new(env!("CARGO_BIN_EXE_kiln-envd")), Some(testy), extra_env).await;
    std::fs::write(e.dir.path().join("secret.txt"), "outside").unwrap();
    e
}

async fn start() -> Envd {
    start_with(&[]).await
}

fn creds(pairs: &[(&str, &str)]) -> InitializeRequest {
    InitializeRequest { credentials: pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect::<BTreeMap<_, _>>() }
}

async fn session(e: &Envd) -> String {
    e.client.agent_initialize(&creds(&[("KILN_TOKEN", "a")])).await.unwrap();
    let req = NewSessionRequest { system_prompt: Some("You build apps.".into()), mcp_servers: vec![] };
    e.client.agent_new_session(&req).await.unwrap().session_id
}

async fn turn(e: &Envd, sid: &str, script: &str) -> Vec<ChatEvent> {
    let s = e.client.agent_prompt(sid, script).await.unwrap();
    let events: Vec<ChatEvent> =
        tokio::time::timeout(Duration::from_secs(30), s.map(|x| x.unwrap()).collect()).await.expect("turn ended");
    assert!(events.last().unwrap().body.is_done(), "a turn's stream ends with done: {events:?}");
    events
}

fn text(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| if let EventBody::Text { delta } = &e.body { Some(delta.as_str()) } else { None })
        .collect()
}

fn stop(events: &[ChatEvent]) -> StopReason {
    match events.last().unwrap().body {
        EventBody::Done { stop_reason } => stop_reason,
        _ => unreachable!(),
    }
}

fn status(e: &kiln_sandbox::envd_client::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn initialize_reuses_the_agent_and_restarts_it_only_on_new_credentials() {
    let e = start().await;
    let first = e.client.agent_initialize(&creds(&[("KILN_TOKEN", "a")])).await.unwrap();
    assert!(first.restarted);
    assert_eq!(first.agent_info["name"], "kiln-testy");
    assert!(first.capabilities.get("sessionCapabilities").is_some());
    let pid = e.client.agent_status().await.unwrap().pid.unwrap();
    let same = e.client.agent_initialize(&creds(&[("KILN_TOKEN", "a")])).await.unwrap();
    assert!(!same.restarted);
    assert_eq!(e.client.agent_status().await.unwrap().pid, Some(pid));

    let sid = e.client.agent_new_session(&NewSessionRequest::default()).await.unwrap().session_id;
    assert_eq!(text(&turn(&e, &sid, "env KILN_TOKEN").await), "a");

    let changed = e.client.agent_initialize(&creds(&[("KILN_TOKEN", "b")])).await.unwrap();
    assert!(changed.restarted);
    let st = e.client.agent_status().await.unwrap();
    assert_ne!(st.pid, Some(pid), "a new agent process");
    assert_eq!(st.starts, 2);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the old agent process is gone");
    // The old agent's sessions went with it.
    assert_eq!(status(&e.client.agent_prompt(&sid, "say hi").await.err().unwrap()), 404);
    let sid = e.client.agent_new_session(&NewSessionRequest::default()).await.unwrap().session_id;
    assert_eq!(text(&turn(&e, &sid, "env KILN_TOKEN").await), "b");
    // envd itself was never restarted.
    assert!(e.client.health().await.unwrap().uptime_ms > 0);
}

#[tokio::test]
async fn session_new_passes_the_system_prompt_and_set_model_uses_the_config_option() {
    let e = start().await;
    e.client.agent_initialize(&creds(&[])).await.unwrap();
    let req = NewSessionRequest { system_prompt: Some("Build with Vite.".into()), mcp_servers: vec![] };
    let s = e.client.agent_new_session(&req).await.unwrap();
    assert_eq!(s.system_prompt_via, "acp");
    assert_eq!(s.config_options[0]["category"], "model");
    assert_eq!(text(&turn(&e, &s.session_id, "system").await), "Build with Vite.");
    assert_eq!(text(&turn(&e, &s.session_id, "model").await), "testy-small");
    let r = e.client.agent_set_model(&s.session_id, "testy-large").await.unwrap();
    assert_eq!(r.config_options[0]["currentValue"], "testy-large");
    assert_eq!(text(&turn(&e, &s.session_id, "model").await), "testy-large");
    let bad = e.client.agent_set_model(&s.session_id, "gpt-9").await.unwrap_err();
    assert_eq!(status(&bad), 400);
    assert!(bad.to_string().contains("testy-small"), "the error lists the models on offer: {bad}");

    // An agent without the ACP system prompt capability gets it in _meta.
    let e = start_with(&[("TESTY_NO_SYSTEM_PROMPT", "1")]).await;
    e.client.agent_initialize(&creds(&[])).await.unwrap();
    let s = e.client.agent_new_session(&req).await.unwrap();
    assert_eq!(s.system_prompt_via, "meta");
    assert_eq!(text(&turn(&e, &s.session_id, "system").await), "Build with Vite.");
}

#[tokio::test]
async fn a_turn_streams_text_tool_calls_plan_and_file_events_in_order() {
    let e = start().await;
    let sid = session(&e).await;
    let events =
        turn(&e, &sid, "think planning\nplan\nsay Hello there\nwrite src/App.tsx export default 1\nusage").await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "consecutive seqs: {seqs:?}");
    assert_eq!(text(&events), "Hello there");
    assert!(events.iter().any(|e| matches!(&e.body, EventBody::Thought { delta } if delta == "planning")));
    assert!(events.iter().any(|e| matches!(&e.body, EventBody::Plan { entries } if entries.len() == 2)));
    let file_at = events
        .iter()
        .position(|e| e.body == EventBody::File { path: "src/App.tsx".into(), op: FileOp::Write })
        .expect("a file event");
    let calls: Vec<_> =
        events.iter().filter_map(|e| if let EventBody::ToolCall(c) = &e.body { Some(c) } else { None }).collect();
    assert_eq!(calls[0].status, Some(ToolStatus::Pending));
    assert_eq!(calls[0].kind.as_deref(), Some("edit"));
    assert_eq!(calls.last().unwrap().status, Some(ToolStatus::Completed));
    let completed_at = events.iter().rposition(|e| matches!(e.body, EventBody::ToolCall(_))).unwrap();
    assert!(file_at < completed_at, "the write happened before the tool call completed");
    assert!(events.iter().any(|e| matches!(&e.body, EventBody::Usage(u) if u.used == Some(1234))));
    assert_eq!(stop(&events), StopReason::EndTurn);
    assert_eq!(std::fs::read_to_string(e.app().join("src/App.tsx")).unwrap(), "export default 1");
}

#[tokio::test]
async fn fs_calls_are_confined_to_app_and_traversal_fails_for_the_agent() {
    let e = start().await;
    let sid = session(&e).await;
    std::fs::write(e.app().join("notes.md"), "line1\nline2\n").unwrap();
    std::os::unix::fs::symlink(e.dir.path().join("secret.txt"), e.app().join("link")).unwrap();
    let events = turn(
        &e,
        &sid,
        "read /app/notes.md\nread ../secret.txt\nread /app/link\nwrite /app/../escape.txt x\nwrite /etc/kiln-owned x\nwrite /app/link x",
    )
    .await;
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolCall(c) if matches!(c.status, Some(ToolStatus::Completed | ToolStatus::Failed)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(finals.len(), 6);
    assert_eq!(finals[0].status, Some(ToolStatus::Completed));
    assert_eq!(finals[0].output.as_deref(), Some("line1\nline2\n"));
    for f in &finals[1..5] {
        assert_eq!(f.status, Some(ToolStatus::Failed), "{f:?}");
        assert!(!f.output.as_deref().unwrap_or_default().contains("outside"), "secret leaked: {f:?}");
    }
    assert!(!e.dir.path().join("escape.txt").exists());
    assert_eq!(std::fs::read_to_string(e.dir.path().join("secret.txt")).unwrap(), "outside");
    // Writing to a symlink replaces the link (atomic rename), never its target.
    assert_eq!(finals[5].status, Some(ToolStatus::Completed));
    assert!(!std::fs::symlink_metadata(e.app().join("link")).unwrap().is_symlink());
    let files: Vec<_> = events.iter().filter(|e| matches!(e.body, EventBody::File { .. })).collect();
    assert_eq!(files.len(), 1, "only the link's replacement was written: {files:?}");
    assert_eq!(stop(&events), StopReason::EndTurn);
}

#[tokio::test]
async fn terminals_run_commands_and_permissions_are_chosen_by_kind() {
    let e = start().await;
    let sid = session(&e).await;
    let events = turn(&e, &sid, "run echo hi from $0 && exit 3\npermission").await;
    let out = events
        .iter()
        .rev()
        .find_map(|e| match &e.body {
            EventBody::ToolCall(c) if c.status == Some(ToolStatus::Completed) => c.output.clone(),
            _ => None,
        })
        .unwrap();
    assert!(out.starts_with("hi from /bin/sh\n") && out.ends_with("exit: 3"), "{out:?}");
    assert!(text(&events).ends_with("permission: yes-once"), "{}", text(&events));
}

#[tokio::test]
async fn cancel_ends_a_running_turn_promptly() {
    let e = start().await;
    let sid = session(&e).await;
    let s = e.client.agent_prompt(&sid, "say starting\nsleep 30000\nsay never").await.unwrap();
    // A second prompt during the turn is refused.
    let busy = e.client.agent_prompt(&sid, "say again").await.err().unwrap();
    assert_eq!(status(&busy), 409);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    e.client.agent_cancel(&sid).await.unwrap();
    let events: Vec<ChatEvent> =
        tokio::time::timeout(Duration::from_secs(5), s.map(|x| x.unwrap()).collect()).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(stop(&events), StopReason::Cancelled);
    assert!(!text(&events).contains("never"));
    // The session takes prompts again.
    assert_eq!(text(&turn(&e, &sid, "say back").await), "back");
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_events_after() {
    let e = start().await;
    let sid = session(&e).await;
    let mut s = Box::pin(e.client.agent_prompt(&sid, "say one\nsleep 500\nwrite a.txt A\nsay two").await.unwrap());
    let first = s.next().await.unwrap().unwrap();
    drop(s); // the server's connection goes away; the turn goes on
    let mut got = vec![first.clone()];
    let rest = e.client.agent_events(&sid, first.seq, true).await.unwrap();
    got.extend(rest.map(|x| x.unwrap()).collect::<Vec<_>>().await);
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1), "no gaps, no repeats");
    assert!(got.last().unwrap().body.is_done());
    assert_eq!(text(&got), "onetwo");
    assert!(e.app().join("a.txt").exists());
    // Replaying the whole log gives the same events.
    let all: Vec<ChatEvent> = e.client.agent_events(&sid, 0, false).await.unwrap().map(|x| x.unwrap()).collect().await;
    assert_eq!(all, got);
}

#[tokio::test]
async fn agent_failures_end_the_turn_with_an_error_event() {
    let e = start().await;
    let sid = session(&e).await;
    let events = turn(&e, &sid, "say x\nfail").await;
    assert!(events.iter().any(|e| matches!(&e.body, EventBody::Error { code, .. } if code == "agent_error")));
    assert_eq!(stop(&events), StopReason::Error);
    let events = turn(&e, &sid, "exit").await;
    assert!(events.iter().any(|e| matches!(&e.body, EventBody::Error { code, .. } if code == "agent_exited")));
    // The pipe closes as the process exits; it is reaped a moment later.
    let t = std::time::Instant::now();
    while e.client.agent_status().await.unwrap().running {
        assert!(t.elapsed() < Duration::from_secs(5), "the exited agent still counts as running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&e.client.agent_new_session(&NewSessionRequest::default()).await.unwrap_err()), 409);
    // initialize brings it back.
    assert!(e.client.agent_initialize(&creds(&[("KILN_TOKEN", "a")])).await.unwrap().restarted);
}

#[tokio::test]
async fn bad_agent_requests_are_4xx() {
    let e = start().await;
    assert_eq!(status(&e.client.agent_new_session(&NewSessionRequest::default()).await.unwrap_err()), 409);
    let bad = creds(&[("NOT-A-NAME", "x")]);
    assert_eq!(status(&e.client.agent_initialize(&bad).await.unwrap_err()), 400);
    let sid = session(&e).await;
    assert_eq!(status(&e.client.agent_prompt("nope", "say x").await.err().unwrap()), 404);
    let huge = "x".repeat(kiln_types::agent::MAX_PROMPT_BYTES + 1);
    assert_eq!(status(&e.client.agent_prompt(&sid, &huge).await.err().unwrap()), 413);
    assert_eq!(status(&e.client.agent_events("nope", 0, false).await.err().unwrap()), 404);
}

#[tokio::test]
async fn agent_stderr_reaches_the_log_only_bounded() {
    let testy = kiln_testkit::built("kiln-testy", "kiln-testy");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("envd.log");
    let e =
        kiln_testkit::Envd::start_logging(Path::new(env!("CARGO_BIN_EXE_kiln-envd")), Some(&testy), &[], Some(&log))
            .await;
    let sid = session(&e).await;
    // 24 MiB of stderr, three times the log's cap.
    let events = turn(&e, &sid, "stderr 24").await;
    assert_eq!(text(&events).trim(), "flooded");
    // The pump is asynchronous: wait until it has drained the pipe.
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let len = std::fs::metadata(&log).unwrap().len();
        if len == last {
            break;
        }
        last = len;
    }
    let content = std::fs::read(&log).unwrap();
    assert!(content.len() as u64 <= kiln_envd::logsink::MAX_BYTES, "envd.log grew to {} bytes", content.len());
    let text = String::from_utf8_lossy(&content);
    assert!(text.contains("older lines were dropped"), "the log says it was cut");
    assert!(text.lines().all(|l| l.len() < kiln_envd::logsink::MAX_LINE + 512), "an unbounded line reached the log");
    assert!(text.contains("[cut]"), "the endless line was cut");
}
