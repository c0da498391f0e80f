//! Test doubles for the gateway's tests: a stand-in provider on 127.0.0.1
//! that checks requests the way the real APIs do (key, `anthropic-version`,
//! a JSON body with `model` and an output cap) and answers in their SSE wire
//! formats while keeping a bill; an "attacker" listener that records any
//! connection; and clients that speak to a gateway socket as a sandbox
//! would, including raw request lines no HTTP library would send.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ANTHROPIC_KEY: &str = "sk-ant-REAL-KEY";
pub const OPENAI_KEY: &str = "sk-openai-REAL-KEY";

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct StandIn {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Tokens the stand-in billed (input + everything it generated).
    pub billed: Arc<AtomicU64>,
}

impl StandIn {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn billed(&self) -> u64 {
        self.billed.load(Ordering::SeqCst)
    }
}

fn api_error(status: u16, message: &str) -> http::Response<Body> {
    let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    http::Response::builder().status(status).body(Body::from(body.to_string())).unwrap()
}

/// A stand-in provider. It bills input as body bytes / 4 and generates the
/// whole output cap, `delay` between events. `openai_key: None` plays a
/// keyless local server that refuses any `Authorization`. Model
/// `cut-stream` ends the stream right after `message_start`.
pub async fn stand_in(delay: Duration, openai_key: Option<&'static str>) -> StandIn {
    let s = StandIn { base: String::new(), seen: Arc::default(), billed: Arc::default() };
    let (seen, billed) = (s.seen.clone(), s.billed.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, billed) = (seen.clone(), billed.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let h = parts.headers.clone();
            seen.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: h.clone(),
                body: body.clone(),
            });
            let path = parts.uri.path();
            if parts.method == http::Method::GET && path == "/v1/models" {
                return http::Response::new(Body::from(r#"{"data":[{"id":"stand-in-model"}]}"#));
            }
            let anthropic = path == "/v1/messages";
            if parts.method != http::Method::POST || !(anthropic || path == "/v1/chat/completions") {
                return api_error(404, "no such route on the stand-in");
            }
            if anthropic {
                if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(ANTHROPIC_KEY) {
                    return api_error(401, "invalid x-api-key");
                }
                if h.get("anthropic-version").is_none() {
                    return api_error(400, "anthropic-version header is required");
                }
            } else {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                if auth != openai_key.map(|k| format!("Bearer {k}")) {
                    return api_error(401, "unexpected authorization");
                }
            }
            if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
                return api_error(400, "content-type must be application/json");
            }
            let max = body.get("max_tokens").or(body.get("max_completion_tokens")).and_then(Value::as_u64);
            let (Some(model), Some(max)) = (body.get("model").and_then(Value::as_str), max) else {
                return api_error(400, "model and max_tokens are required");
            };
            let input = (bytes.len() as u64).div_ceil(4);
            billed.fetch_add(input + max, Ordering::SeqCst);
            let events = if anthropic {
                anthropic_events(input, max, model == "cut-stream")
            } else {
                let usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
                openai_events(input, max, usage)
            };
            let stream = futures::stream::unfold(0usize, move |i| {
                let events = events.clone();
                async move {
                    let e = events.get(i)?.clone();
                    if i > 0 {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok::<_, std::io::Error>(Bytes::from(e)), i + 1))
                }
            });
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    StandIn { base, ..s }
}

fn anthropic_events(input: u64, max: u64, cut: bool) -> Vec<String> {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"usage": {"input_tokens": input, "output_tokens": 1}}}),
    )];
    if cut {
        return out;
    }
    out.push(ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
    ));
    out.push(ev("message_delta", json!({"type": "message_delta", "usage": {"output_tokens": max}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn openai_events(input: u64, max: u64, usage: bool) -> Vec<String> {
    let mut out = vec![format!("data: {}\n\n", json!({"choices": [{"delta": {"content": "Hi"}}]}))];
    if usage {
        let u = json!({"choices": [], "usage": {"prompt_tokens": input, "completion_tokens": max}});
        out.push(format!("data: {u}\n\n"));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

/// A listener standing in for an attacker's host: counts connections.
pub async fn attacker() -> (u16, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        }
    });
    (port, hits)
}

/// One request over the gateway socket, as an agent in the sandbox makes
/// it: returns status and body.
pub async fn call(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", "127.0.0.1:4141");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tx.send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The headers an agent's SDK sends (its key is a placeholder).
pub const AGENT_HEADERS: &[(&str, &str)] =
    &[("x-api-key", "kiln-gateway"), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];

/// A streamed Anthropic messages body capped at `max` output tokens.
pub fn messages_body(max: u64) -> String {
    json!({"model": "claude-stand-in", "max_tokens": max, "stream": true,
        "messages": [{"role": "user", "content": "Write a haiku about kilns."}]})
    .to_string()
}

/// Sends `head` (a request line and headers, CRLFs added) raw over the
/// socket; returns the status code of the answer (0 if none).
pub async fn raw(socket: &Path, head: &str) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!("{}\r\nhost: 127.0.0.1:4141\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", head);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// Waits until no hold of `owner` is in flight (answers settle after their
/// body ends); returns its spend.
pub async fn settled(gw: &kiln_gateway::Gateway, owner: &str) -> kiln_gateway::ScopeSpend {
    for _ in 0..500 {
        let s = gw.spend(owner).await.unwrap();
        if s.reserved == 0 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{owner}'s holds never settled: {:?}", gw.spend(owner).await);
}
