//! `kiln serve` with an agent configured: pooled sandboxes are warm only
//! once their agent has an ACP session with the app-builder prompt and the
//! configured model; a claim hands over that session; and the agent reaches
//! the (stand-in) model provider through the server's gateway, which adds
//! the server's key.

mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use server::{Server, call, status};

const KEY: &str = "sk-ant-SERVER-SIDE-KEY-0042";
const TOKEN: &str = "admin-token-for-this-test-0123";

#[test]
fn pooled_agents_are_warm_and_reach_the_provider_through_the_gateway() {
    if !server::prerequisites() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let base = rt.block_on(async move {
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let s2 = s2.clone();
            async move {
                let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                s2.lock().unwrap().push(key);
                r#"{"data":[{"id":"claude-stand-in"}]}"#
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    });
    let testy = kiln_testkit::built("kiln-testy", "kiln-testy");
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        dir.path(),
        &[
            ("KILN_POOL_TARGET_SIZE", "1"),
            ("KILN_AGENT", "/opt/kiln/kiln-testy"),
            ("KILN_AGENT_BINS", testy.to_str().unwrap()),
            ("KILN_AGENT_MODEL", "testy-large"),
            ("KILN_ANTHROPIC_BASE_URL", &base),
            ("ANTHROPIC_API_KEY", KEY),
            ("KILN_POOL_ADMIN_TOKEN", TOKEN),
        ],
    );
    s.wait_up();
    let t = Instant::now();
    while status(&s, Some(TOKEN))["ready"].as_u64() != Some(1) {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", std::fs::read_to_string(&s.log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }

    let key = "0f9e8d7c-6b5a-4f3e-8d2c-1b0a99887766";
    let (code, body) =
        call("POST", &format!("{}/api/vm/claim", s.url), Some(&format!(r#"{{"sessionKey":"{key}"}}"#)), Some(TOKEN))
            .unwrap();
    assert_eq!(code, 200, "{body}");
    let claimed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(claimed["source"], "warm");
    assert_eq!(claimed["agentRestarted"], false);
    assert!(claimed["reinitMs"].is_u64());
    let session = claimed["agentSessionId"].as_str().expect("the ACP session is handed over").to_owned();

    // Drive the claimed agent directly through its envd.
    let cfg = kiln_sandbox::LocalConfig {
        data_dir: dir.path().to_owned(),
        envd_bin: server::envd_bin(),
        uid: 61000,
        extra_ro: vec![],
        extra_bins: vec![],
    };
    let text = rt.block_on(async {
        let p = kiln_sandbox::LocalProvider::new(cfg).unwrap();
        let id: kiln_types::SandboxId = claimed["sandboxId"].as_str().unwrap().parse().unwrap();
        let c = kiln_sandbox::SandboxProvider::connect(&p, &id).await.unwrap();
        let script = "model\nsay |\nsystem\nsay |\nhttp http://127.0.0.1:4141/anthropic/v1/models";
        let events: Vec<_> = c.agent_prompt(&session, script).await.unwrap().collect().await;
        events
            .into_iter()
            .filter_map(|e| match e.unwrap().body {
                kiln_types::chat::EventBody::Text { delta } => Some(delta),
                _ => None,
            })
            .collect::<String>()
    });
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(parts[0], "testy-large", "{text}");
    assert!(parts[1].starts_with("You are Kiln's app builder."), "{text}");
    assert!(parts[2].starts_with("HTTP/1.1 200") && parts[2].contains("claude-stand-in"), "{text}");
    assert_eq!(seen.lock().unwrap().as_slice(), [KEY.to_owned()], "the server's key was added on the host");
    s.destroy();
}
