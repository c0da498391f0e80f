//! envd's API, driven through the runtime's client over a real unix socket
//! (no sandbox: envd runs on the host against a temporary app directory).
//! Proves the contract both sides share: auth, files, exec streaming and
//! timeouts, and the port proxy for HTTP and WebSocket.

use std::time::Duration;

use axum::extract::ws::{Message as AxMsg, WebSocketUpgrade};
use axum::extract::{Query, Request};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use kiln_sandbox::{Endpoint, EnvdClient};
use kiln_testkit::{Envd, TOKEN};
use kiln_types::envd::{DevServerState, ExecRequest};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn start() -> Envd {
    Envd::start(std::path::Path::new(env!("CARGO_BIN_EXE_kiln-envd")), None, &[]).await
}

fn status(e: &kiln_sandbox::envd_client::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn every_route_requires_the_token() {
    let e = start().await;
    for token in ["", "wrong", &TOKEN[..TOKEN.len() - 1]] {
        let c = EnvdClient::new(Endpoint { socket: e.client.socket().to_owned(), token: token.into() });
        assert_eq!(status(&c.health().await.unwrap_err()), 401);
        assert_eq!(status(&c.write_file("x", "y").await.unwrap_err()), 401);
        assert_eq!(status(&c.list_files("", false).await.unwrap_err()), 401);
    }
    assert!(!e.app().join("x").exists());
    let h = e.client.health().await.unwrap();
    assert_eq!(h.api_version, kiln_types::envd::ENVD_API_VERSION);
    assert_eq!(h.dev_server.state, DevServerState::Disabled);
}

#[tokio::test]
async fn files_round_trip_and_bad_paths_are_4xx() {
    let e = start().await;
    let w = e.client.write_file("src/App.tsx", "export {}").await.unwrap();
    assert!(w.created);
    assert_eq!(&e.client.read_file("src/App.tsx").await.unwrap()[..], b"export {}");
    assert_eq!(std::fs::read(e.app().join("src/App.tsx")).unwrap(), b"export {}");
    let l = e.client.list_files("", true).await.unwrap();
    assert_eq!(l.entries.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(), ["src", "src/App.tsx"]);
    assert_eq!(status(&e.client.read_file("missing.txt").await.unwrap_err()), 404);
    assert_eq!(status(&e.client.read_file("src").await.unwrap_err()), 400);
    for bad in ["../x", "/etc/passwd", "a/../../x", "a\0b"] {
        assert_eq!(status(&e.client.write_file(bad, "x").await.unwrap_err()), 400, "{bad:?}");
    }
    assert_eq!(status(&e.client.delete_file("src", false).await.unwrap_err()), 400);
    e.client.delete_file("src", true).await.unwrap();
    assert!(!e.app().join("src").exists());
}

#[tokio::test]
async fn exec_streams_output_and_exit_code() {
    let e = start().await;
    let req = ExecRequest {
        cmd: "sh".into(),
        args: vec!["-c".into(), "pwd; echo err >&2; printf '\\001\\377'; cat; exit 3".into()],
        env: vec![("KILN_T".into(), "1".into())],
        stdin_b64: Some("aGVsbG8=".into()),
        ..Default::default()
    };
    let out = e.client.exec_collect(&req).await.unwrap();
    assert_eq!(out.code, 3);
    let mut expected = format!("{}\n", e.app().display()).into_bytes();
    expected.extend_from_slice(&[1, 255]);
    expected.extend_from_slice(b"hello");
    assert_eq!(out.stdout, expected, "binary output must survive byte for byte");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let e = start().await;
    let pidfile = e.app().join("bg.pid");
    let req = ExecRequest {
        cmd: "sh".into(),
        args: vec!["-c".into(), format!("sleep 300 & echo $! > {}; wait", pidfile.display())],
        timeout_ms: Some(300),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let out = e.client.exec_collect(&req).await.unwrap();
    assert!(out.timed_out);
    assert_eq!(out.code, 128 + 9);
    assert!(t.elapsed() < Duration::from_secs(5));
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z"), "background child survived the timeout: {state}");
}

#[tokio::test]
async fn exec_bad_input_is_400_and_missing_program_is_an_error_event() {
    let e = start().await;
    for bad in [ExecRequest::default(), ExecRequest { cmd: "x".into(), timeout_ms: Some(0), ..Default::default() }] {
        assert_eq!(status(&e.client.exec_collect(&bad).await.unwrap_err()), 400);
    }
    let err =
        e.client.exec_collect(&ExecRequest { cmd: "/no/such/program".into(), ..Default::default() }).await.unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");
}

#[derive(serde::Deserialize)]
struct Q {
    q: Option<String>,
}

async fn upstream() -> u16 {
    let app = axum::Router::new()
        .route(
            "/echo",
            get(|req: Request| async move {
                let h = req.headers();
                format!(
                    "path={} auth={} host={} fwd={}",
                    req.uri(),
                    h.contains_key("authorization"),
                    h.get("host").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default(),
                    h.get("x-forwarded-host").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
                )
            }),
        )
        .route(
            "/ws",
            get(|headers: axum::http::HeaderMap, ws: WebSocketUpgrade, Query(q): Query<Q>| async move {
                let proto = headers.get("sec-websocket-protocol").map(|p| p.to_str().unwrap().to_owned());
                ws.protocols(["vite-hmr"]).on_upgrade(move |mut sock| async move {
                    let hello = format!("query={} proto={}", q.q.unwrap_or_default(), proto.unwrap_or_default());
                    let _ = sock.send(AxMsg::Text(hello.into())).await;
                    while let Some(Ok(m)) = sock.recv().await {
                        if let AxMsg::Text(t) = m {
                            let _ = sock.send(AxMsg::Text(format!("echo:{t}").into())).await;
                        }
                    }
                })
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

#[tokio::test]
async fn port_proxy_forwards_http_without_the_token() {
    let e = start().await;
    let port = upstream().await;
    let (status_code, body) = kiln_sandbox::graph::proxy_get(&e.client, port, "/echo?a=1&b=two").await.unwrap();
    assert_eq!(status_code, 200);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(body, format!("path=/echo?a=1&b=two auth=false host=127.0.0.1:{port} fwd=localhost"));
    // Nothing listening: 502 with a clear code.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (s, body) = kiln_sandbox::graph::proxy_get(&e.client, closed, "/").await.unwrap();
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("upstream_unavailable"));
}

#[tokio::test]
async fn port_proxy_carries_websockets_with_subprotocol_and_query() {
    let e = start().await;
    let port = upstream().await;
    let stream = tokio::net::UnixStream::connect(e.client.socket()).await.unwrap();
    let mut req = format!("ws://localhost/v1/proxy/{port}/ws?q=tok3n").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "vite-hmr");
    let hello = ws.next().await.unwrap().unwrap();
    assert_eq!(hello.to_text().unwrap(), "query=tok3n proto=vite-hmr");
    ws.send(Message::Text("ping".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "echo:ping");
}
