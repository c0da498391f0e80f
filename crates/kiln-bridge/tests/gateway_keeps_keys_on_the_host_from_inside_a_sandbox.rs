//! The model gateway seen from inside a real sandbox: the agent reaches a
//! (local stand-in) provider only through `127.0.0.1:4141`, the host adds
//! the real key (which appears nowhere inside the sandbox: not in any
//! process's environment or command line, not in a file), answers stream
//! through unbuffered, and a spent budget cuts the session off with a clear
//! `error` event before the request leaves the host. Only the gateway's
//! allow-list is reachable: the sandbox cannot point it at another host or
//! at Kiln's own API.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_bridge::{AcpWarmUp, AgentSession, AgentSetup, GatewayNotices};
use kiln_gateway::{Gateway, GatewayConfig};
use kiln_pool::{WarmCtx, WarmUp};
use kiln_sandbox::SandboxProvider;
use kiln_types::chat::EventBody;

const KEY: &str = "sk-ant-HOST-ONLY-9f8e7d6c5b4a";

#[tokio::test(flavor = "multi_thread")]
async fn the_key_stays_on_the_host_answers_stream_and_the_budget_cuts_off() {
    let env = require_env!();
    let (base, seen) = kiln_testkit::stand_in_provider(Duration::from_millis(400)).await;
    let gw = Gateway::new(GatewayConfig {
        anthropic_base: base,
        anthropic_key: Some(KEY.into()),
        session_budget_tokens: 150,
        ..Default::default()
    });
    let creds: BTreeMap<String, String> =
        [("ANTHROPIC_BASE_URL", "http://127.0.0.1:4141/anthropic"), ("ANTHROPIC_API_KEY", "kiln-gateway")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let warm = AcpWarmUp::new(AgentSetup { pool_credentials: creds, ..Default::default() }, Some(gw.clone()));
    let g = common::sandbox(env).await;
    let host_socket = SandboxProvider::host_socket(&g.provider, g.id());
    let ctx = WarmCtx { sandbox_id: g.id(), host_socket: host_socket.clone(), session_key: None };
    let meta = warm.prewarm(&g.client(), &ctx).await.unwrap();
    let claim = WarmCtx { session_key: Some("session-1"), ..ctx };
    let claimed = warm.on_claim(&g.client(), &claim, meta.as_deref()).await.unwrap();
    assert!(!claimed.restarted, "same credentials: the warm agent is kept");
    let sid = AgentSession::parse(claimed.agent_session.as_deref()).unwrap().session_id;
    assert_eq!(gw.owner_of(g.id().as_str()).as_deref(), Some("session-1"));

    // The agent calls the provider through the gateway; the host adds the key.
    let ev =
        common::turn(&g, &sid, "env ANTHROPIC_API_KEY\nsay |\nhttp http://127.0.0.1:4141/anthropic/v1/models", None)
            .await;
    let text = common::text(&ev);
    assert!(text.starts_with("kiln-gateway|HTTP/1.1 200"), "{text}");
    assert!(text.contains("claude-stand-in"), "{text}");
    assert_eq!(seen.lock().unwrap()[0].1["x-api-key"], KEY);

    // Streaming through envd's forwarder and the gateway is not buffered.
    let js = r#"
const t0 = Date.now();
const body = JSON.stringify({model: 'claude-stand-in', max_tokens: 10, stream: true, messages: [{role: 'user', content: 'hi'}]});
const r = await fetch('http://127.0.0.1:4141/anthropic/v1/messages', {method: 'POST', body, headers: {'content-type': 'application/json', 'anthropic-version': '2023-06-01'}});
const times = [];
for await (const chunk of r.body) times.push(Date.now() - t0);
console.log(JSON.stringify({status: r.status, times}));
"#;
    let req = kiln_types::envd::ExecRequest {
        cmd: "node".into(),
        args: vec!["--input-type=module".into(), "-e".into(), js.into()],
        timeout_ms: Some(30_000),
        ..Default::default()
    };
    let o = g.client().exec_collect(&req).await.unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], 200);
    let times: Vec<u64> = v["times"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(times.len() >= 3, "{times:?}");
    assert!(times[0] < 350 && *times.last().unwrap() >= 750, "chunks arrive as sent: {times:?}");

    // The key is nowhere inside the sandbox. The pattern is a regex that
    // matches the key without containing it, so the scan never finds itself.
    let pattern = format!("{}[{}]", &KEY[..KEY.len() - 1], &KEY[KEY.len() - 1..]);
    let g = &g;
    let scan = |pattern: String| async move {
        let script = format!(
            "P='{pattern}'; for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -q \"$P\" && echo $p; done; grep -rl \"$P\" /app/src /app/index.html /tmp /run /opt /etc 2>/dev/null; ps -eo args 2>/dev/null | grep \"$P\" || true"
        );
        g.sh(&script).await.1
    };
    // The scan does find a planted key (so the check can fail)…
    g.client().write_file("src/planted.txt", KEY).await.unwrap();
    assert!(scan(pattern.clone()).await.contains("/app/src/planted.txt"));
    g.client().delete_file("src/planted.txt", false).await.unwrap();
    // …and finds nothing otherwise.
    let found = scan(pattern).await;
    assert_eq!(found.trim(), "", "the key is visible inside the sandbox");
    let (_, procs, _) = g.sh("ls -d /proc/[0-9]* | wc -l").await;
    assert!(procs.trim().parse::<u32>().unwrap() >= 3, "the scan saw envd, vite and the agent");

    // The gateway is no proxy: a host, port or path the sandbox picks is
    // refused with 403 and reaches no one (neither an "attacker" listener on
    // the host's loopback nor the provider).
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = attacker.local_addr().unwrap();
    let before = seen.lock().unwrap().len();
    for target in [
        format!("http://127.0.0.1:4141/anthropic@{a}/v1/messages"),
        "http://127.0.0.1:4141/anthropic.evil.example/v1/messages".to_owned(),
        "http://127.0.0.1:4141/openai/../../api/health".to_owned(),
        "http://127.0.0.1:4141/anthropic/v1/%2e%2e/%2e%2e/metrics".to_owned(),
        "http://127.0.0.1:4141/anthropic/v1/files".to_owned(),
    ] {
        let ev = common::turn(g, &sid, &format!("http {target}"), None).await;
        let text = common::text(&ev);
        assert!(text.starts_with("HTTP/1.1 403"), "{target}: {text}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), attacker.accept()).await.is_err(),
        "the attacker's listener was reached through the gateway"
    );
    assert_eq!(seen.lock().unwrap().len(), before, "a refused request reached the provider");

    // 40 tokens spent by the stream; a POST spends 40 more (80 of 150); the
    // next one would hold its input estimate plus max_tokens 100 and is
    // refused before it leaves the host, with a clear error event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.spend("session-1").await.unwrap().spent, 40);
    let post = |max: u32| {
        format!(
            "post http://127.0.0.1:4141/anthropic/v1/messages {{\"model\":\"claude-stand-in\",\"max_tokens\":{max},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
        )
    };
    let ev = common::turn(g, &sid, &post(10), None).await;
    assert!(common::text(&ev).starts_with("HTTP/1.1 200"), "{}", common::text(&ev));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.spend("session-1").await.unwrap().spent, 80);
    let reached = seen.lock().unwrap().len();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let notices = GatewayNotices { sandbox: g.id().to_string(), rx: gw.subscribe() };
    let client = g.client();
    kiln_bridge::run_turn_with(&client, &sid, &format!("{}\nsleep 300", post(100)), None, Some(notices), &tx)
        .await
        .unwrap();
    drop(tx);
    let mut events = vec![];
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert!(common::text(&events).contains("429"), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, EventBody::Error { code, message, retryable: false }
            if code == "budget_exceeded" && message.contains("80 of 150 tokens"))),
        "{events:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), reached, "the refused call never reached the provider");
    gw.detach(g.id().as_str());
}
