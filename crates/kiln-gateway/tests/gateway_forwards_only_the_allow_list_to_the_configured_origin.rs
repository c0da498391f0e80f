//! The gateway is an allow-list, not a proxy: from a sandbox's socket,
//! every trick that used to send the operator's key to a host of the
//! sandbox's choosing (`@host`, a `.evil` host suffix, `..` plain or
//! encoded, absolute-form targets, CONNECT) and every method or path off the
//! list is refused with 403 before anything leaves the host — a listener
//! standing in for the attacker receives nothing, and neither does the
//! provider. What is allowed reaches the configured provider with the key,
//! and only allow-listed headers go with it; a redirect is not followed.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_gateway::{Gateway, GatewayConfig};
use support::{AGENT_HEADERS, ANTHROPIC_KEY, OPENAI_KEY, attacker, call, messages_body, raw, stand_in};

fn config(base: &str) -> GatewayConfig {
    GatewayConfig {
        anthropic_base: base.into(),
        anthropic_key: Some(ANTHROPIC_KEY.into()),
        openai_base: base.into(),
        openai_key: Some(OPENAI_KEY.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn smuggled_hosts_traversal_absolute_form_connect_and_unlisted_routes_get_403_and_reach_no_one() {
    let provider = stand_in(Duration::ZERO, Some(OPENAI_KEY)).await;
    let (port, hits) = attacker().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(config(&provider.base));
    gw.attach("sb1", &socket, "session-a").unwrap();

    let attacks = [
        format!("POST /anthropic@127.0.0.1:{port}/v1/messages HTTP/1.1"),
        format!("POST /openai@127.0.0.1:{port}/v1/chat/completions HTTP/1.1"),
        format!("POST /anthropic:{port}@127.0.0.1/v1/messages HTTP/1.1"),
        "POST /anthropic.evil.example/v1/messages HTTP/1.1".into(),
        "POST /openai.evil.example/v1/chat/completions HTTP/1.1".into(),
        "GET /openai/../../admin HTTP/1.1".into(),
        "GET /openai/v1/../../api/health HTTP/1.1".into(),
        "GET /openai/%2e%2e/%2e%2e/metrics HTTP/1.1".into(),
        "POST /openai/v1%2fchat%2fcompletions HTTP/1.1".into(),
        "POST /openai/v1/chat/completions%00 HTTP/1.1".into(),
        "POST /anthropic/v1\\messages HTTP/1.1".into(),
        "POST //anthropic/v1/messages HTTP/1.1".into(),
        format!("POST http://127.0.0.1:{port}/anthropic/v1/messages HTTP/1.1"),
        format!("GET http://127.0.0.1:{port}/openai/v1/models HTTP/1.1"),
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1"),
        "OPTIONS * HTTP/1.1".into(),
        "DELETE /openai/v1/models/gpt-4o HTTP/1.1".into(),
        "POST /openai/v1/files HTTP/1.1".into(),
        "POST /openai/v1/fine_tuning/jobs HTTP/1.1".into(),
        "POST /openai/v1/images/generations HTTP/1.1".into(),
        "POST /anthropic/v1/messages/batches HTTP/1.1".into(),
        "GET /anthropic/v1/messages HTTP/1.1".into(),
        "PUT /anthropic/v1/messages HTTP/1.1".into(),
        "POST /anthropic/v1/messages?beta=true&target=evil HTTP/1.1".into(),
        "GET /api/health HTTP/1.1".into(),
        "GET /metrics HTTP/1.1".into(),
    ];
    for head in &attacks {
        let (status, answer) = raw(&socket, head).await;
        assert_eq!(status, 403, "{head} → {answer}");
        assert!(answer.contains("It forwards only POST /"), "the 403 names what is allowed: {answer}");
    }
    // Sent the ordinary way too, with a real client and a JSON body.
    let (status, body) =
        call(&socket, "POST", &format!("/anthropic@127.0.0.1:{port}/v1/messages"), AGENT_HEADERS, &messages_body(10))
            .await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "permission_error", "Anthropic's error shape: {body}");
    let (status, body) = call(&socket, "POST", "/openai/v1/files", &[], "{}").await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("POST /openai/v1/chat/completions"), "{body}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the attacker's listener was reached");
    assert!(provider.requests().is_empty(), "refused requests reached the provider: {:?}", provider.requests());

    // What is on the list reaches the provider, with the key and only
    // allow-listed headers.
    let mut headers = AGENT_HEADERS.to_vec();
    headers.extend([
        ("authorization", "Bearer sandbox-chosen"),
        ("cookie", "a=b"),
        ("openai-organization", "org-other"),
        ("x-forwarded-host", "evil.example"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
    ]);
    let (status, body) = call(&socket, "POST", "/anthropic/v1/messages?beta=true", &headers, &messages_body(10)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("message_stop"));
    let (status, body) = call(&socket, "GET", "/openai/v1/models", &[], "").await;
    assert_eq!((status, body.contains("stand-in-model")), (200, true), "{body}");
    let seen = provider.requests();
    assert_eq!(seen.len(), 2);
    let h = &seen[0].headers;
    assert_eq!(seen[0].uri, "/v1/messages?beta=true");
    assert_eq!(h["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(h["anthropic-beta"], "prompt-caching-2024-07-31");
    for dropped in ["authorization", "cookie", "openai-organization", "x-forwarded-host"] {
        assert!(h.get(dropped).is_none(), "{dropped} was forwarded");
    }
    assert_eq!(seen[1].headers["authorization"], format!("Bearer {OPENAI_KEY}"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    gw.detach("sb1");
}

#[tokio::test]
async fn a_provider_redirect_is_passed_back_not_followed_with_the_key() {
    let (port, hits) = attacker().await;
    // A "provider" that redirects every request to the attacker.
    let app = axum::Router::new().fallback(move || async move {
        http::Response::builder()
            .status(307)
            .header("location", format!("http://127.0.0.1:{port}/steal"))
            .body(axum::body::Body::empty())
            .unwrap()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(config(&base));
    gw.attach("sb1", &socket, "session-a").unwrap();
    let (status, _) = call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, &messages_body(10)).await;
    assert_eq!(status, 307);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    // A 3xx is not a generation: the hold is released, the session not charged.
    assert_eq!(support::settled(&gw, "session-a").await.spent, 0);
}

#[tokio::test]
async fn a_keyless_local_openai_compatible_server_gets_no_authorization_and_a_public_one_needs_a_key() {
    let local = stand_in(Duration::ZERO, None).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(GatewayConfig { openai_base: format!("{}/v1", local.base), ..Default::default() });
    gw.attach("sb1", &socket, "session-a").unwrap();
    let body = r#"{"model":"llama3.2","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [("authorization", "Bearer kiln-gateway"), ("content-type", "application/json")];
    let (status, answer) = call(&socket, "POST", "/openai/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(local.requests()[0].uri, "/v1/chat/completions", "the base's /v1 is not repeated");
    assert!(local.requests()[0].headers.get("authorization").is_none());
    // A public base without a key: a clear 401 naming the setting, nothing sent.
    let gw = Gateway::new(GatewayConfig::default());
    let socket2 = dir.path().join("host2.sock");
    gw.attach("sb2", &socket2, "session-b").unwrap();
    let (status, answer) = call(&socket2, "POST", "/openai/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 401);
    assert!(answer.contains("OPENAI_API_KEY"), "{answer}");
}
