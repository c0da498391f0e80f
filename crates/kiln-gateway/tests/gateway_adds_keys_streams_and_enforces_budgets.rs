//! The gateway against a local stand-in for a model provider: the key is
//! added on the host side (whatever the sandbox sends is dropped), answers
//! stream through chunk by chunk, and a session's budget cuts it off before
//! a request whose hold would not fit is sent.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kiln_gateway::{Gateway, GatewayConfig};

/// One request over the gateway socket, as an agent in the sandbox makes it;
/// returns status, the times chunks arrived, and the body.
async fn call(socket: &std::path::Path, path: &str) -> (u16, Vec<Duration>, String) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "127.0.0.1:4141")
        .header("x-api-key", "sandbox-has-no-key")
        .header("authorization", "Bearer also-not-a-key")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let t0 = Instant::now();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut times, mut text) = (Vec::new(), String::new());
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            times.push(t0.elapsed());
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    (status, times, text)
}

/// 72 bytes: a hold of 24 + 10 tokens; the stand-in reports 40 used.
const BODY: &str = r#"{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user"}]}"#;

#[tokio::test]
async fn keys_are_added_on_the_host_answers_stream_and_the_budget_cuts_off() {
    let (base, seen) = kiln_testkit::stand_in_provider(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(GatewayConfig {
        anthropic_base: base.clone(),
        anthropic_key: Some("sk-ant-REAL-KEY".into()),
        openai_base: base,
        openai_key: None,
        session_budget_tokens: 100,
        ..Default::default()
    });
    gw.attach("sb1", &socket, "session-a").unwrap();

    let (status, times, body) = call(&socket, "/anthropic/v1/messages?beta=true").await;
    assert_eq!(status, 200);
    assert!(body.contains("text_delta") && body.contains("message_delta"));
    // Streamed: the first event arrived long before the last was sent.
    assert!(times.len() >= 3, "{times:?}");
    assert!(times[0] < Duration::from_millis(250) && *times.last().unwrap() >= Duration::from_millis(550), "{times:?}");
    {
        let seen = seen.lock().unwrap();
        let (uri, h) = &seen[0];
        assert_eq!(uri, "/v1/messages?beta=true");
        assert_eq!(h["x-api-key"], "sk-ant-REAL-KEY");
        assert!(h.get("authorization").is_none(), "the sandbox's authorization header is dropped");
        assert_eq!(h["anthropic-version"], "2023-06-01");
    }
    assert_eq!(support::settled(&gw, "session-a").await.spent, 40);
    assert_eq!(gw.spent("session-a"), 40);

    // 40 + 34 ≤ 100: one more request is allowed; then 80 + 34 > 100.
    assert_eq!(call(&socket, "/anthropic/v1/messages").await.0, 200);
    assert_eq!(support::settled(&gw, "session-a").await.spent, 80);
    let (status, _, body) = call(&socket, "/anthropic/v1/messages").await;
    assert_eq!(status, 429);
    assert!(body.contains("budget_exceeded") && body.contains("80 of 100 tokens"), "{body}");
    assert_eq!(seen.lock().unwrap().len(), 2, "a refused request never reaches the provider");

    // Re-attached to a new session (a claim): a fresh budget.
    gw.attach("sb1", &socket, "session-b").unwrap();
    assert_eq!(call(&socket, "/anthropic/v1/messages").await.0, 200);

    // A user's own key replaces the server's for that session only.
    gw.set_user_key("session-b", kiln_gateway::Provider::OpenAi, "sk-user".into());
    assert_eq!(call(&socket, "/openai/v1/chat/completions").await.0, 200);
    assert_eq!(seen.lock().unwrap().last().unwrap().1["authorization"], "Bearer sk-user");
    // No OpenAI key for session-c, and the OpenAI base is a local server:
    // forwarded without one (a keyless Ollama).
    gw.attach("sb1", &socket, "session-c").unwrap();
    assert_eq!(call(&socket, "/openai/v1/chat/completions").await.0, 200);
    assert!(seen.lock().unwrap().last().unwrap().1.get("authorization").is_none());
    // Anything off the allow-list is not forwarded.
    assert_eq!(call(&socket, "/etc/passwd").await.0, 403);
    gw.detach("sb1");
}
