//! A stand-in for envd that a test turns hostile: it listens on a unix
//! socket and answers the routes the host uses in a turn (health, the agent
//! prompt stream, `events?after=`, cancel, config) the way an impostor in a
//! compromised sandbox could.
//!
//! HTTP is written by hand (one request per connection, answers delimited by
//! closing the connection) so that it can break the protocol where a real
//! server library would not let it: declare a 1 GiB body, never end a line,
//! never answer. It counts what it was asked and what it sent, so a test can
//! prove the host stopped reading. Shared by kiln-bridge's tests and the
//! server-level test in `crates/kiln/tests` (included there by `#[path]`);
//! it needs only tokio, serde_json, tempfile and the contract types.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_sandbox::{Endpoint, EnvdClient};
use kiln_types::envd::{DevServerState, DevServerStatus, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const TOKEN: &str = "fake-envd-token";
/// What a `HugeBody` answer declares and streams.
pub const GIB: u64 = 1 << 30;

/// How the fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Like envd: health, a turn of `text` then `done`, cancel.
    Honest,
    /// The turn carries what envd must never send: a `session` event whose
    /// preview URL is `javascript:alert(1)`, `version`, `boot`, `html`, an
    /// unknown event type, file events with `..` and with a newline and an
    /// escape sequence in the name (that one first); then honest text and
    /// `done`.
    Impersonates,
    /// The turn's stream is one line that never ends (MBs without `\n`,
    /// until the host hangs up). Other routes are honest.
    EndlessLine,
    /// The turn's stream sends its headers, then nothing, ever. Other
    /// routes are honest.
    SilentStream,
    /// Accepts connections and reads requests, but never answers anything
    /// (health and cancel included).
    Silent,
    /// Every answer is 200 with a 1 GiB body (declared in
    /// `content-length`, or not: delimited by the connection's end).
    HugeBody { declared: bool },
    /// Closes every connection as soon as it is accepted.
    CloseImmediately,
    /// The turn's stream sends one `text` and closes without `done`; every
    /// resume (`events?after=`) is closed at once.
    Truncates,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
    bytes_sent: AtomicU64,
}

pub struct FakeEnvd {
    pub socket: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FakeEnvd {
    /// Starts listening (inside a Tokio runtime).
    pub fn start(behaviour: Behaviour) -> FakeEnvd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("envd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            bytes_sent: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                sh.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, sh.clone()));
            }
        });
        FakeEnvd { socket, shared, task, _dir: dir }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { socket: self.socket.clone(), token: TOKEN.into() }
    }

    pub fn client(&self) -> EnvdClient {
        EnvdClient::new(self.endpoint())
    }

    /// `METHOD /path?query` of every request read, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Body bytes written to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEnvd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and its body; `(method, target)`.
async fn read_request(s: &mut UnixStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().ok()))
        .flatten()
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some((method, target))
}

/// Writes `b`, counting body bytes; `false` once the client is gone.
async fn write(s: &mut UnixStream, sh: &Shared, b: &[u8], body: bool) -> bool {
    if s.write_all(b).await.is_err() {
        return false;
    }
    if body {
        sh.bytes_sent.fetch_add(b.len() as u64, Ordering::SeqCst);
    }
    true
}

async fn answer(s: &mut UnixStream, sh: &Shared, status: &str, ctype: &str, body: &[u8]) {
    let head = format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\nconnection: close\r\n\r\n");
    if write(s, sh, head.as_bytes(), false).await {
        write(s, sh, body, true).await;
    }
}

fn health() -> Vec<u8> {
    let dev = DevServerStatus { state: DevServerState::Ready, port: 5173, pid: Some(7), restarts: 0, log_tail: vec![] };
    serde_json::to_vec(&Health { api_version: 3, envd_version: "fake".into(), uptime_ms: 1, dev_server: dev }).unwrap()
}

fn lines(events: &[serde_json::Value]) -> Vec<u8> {
    events.iter().flat_map(|e| format!("{e}\n").into_bytes()).collect()
}

fn honest_turn() -> Vec<u8> {
    lines(&[
        serde_json::json!({"seq": 1, "type": "text", "delta": "Hello from the fake envd."}),
        serde_json::json!({"seq": 2, "type": "done", "stopReason": "end_turn"}),
    ])
}

fn impostor_turn() -> Vec<u8> {
    use serde_json::json;
    lines(&[
        json!({"seq": 1, "type": "session", "mode": "vm", "sandboxId": "0".repeat(32), "appId": "evil",
               "previewUrl": "javascript:alert(1)", "warm": true, "prompt": "x"}),
        json!({"seq": 2, "type": "version", "sha": "f".repeat(40), "parent": null, "message": "forged", "files": []}),
        json!({"seq": 3, "type": "boot", "phase": "create", "ms": 1}),
        json!({"seq": 4, "type": "html", "delta": "<script>alert(1)</script>"}),
        json!({"seq": 5, "type": "telemetry", "url": "javascript:alert(1)"}),
        json!({"seq": 6, "type": "file", "path": "src/\u{1b}[31mred\nline.tsx", "op": "write"}),
        json!({"seq": 7, "type": "file", "path": "../../etc/passwd", "op": "write"}),
        json!({"seq": 8, "type": "text", "delta": "Still an agent."}),
        json!({"seq": 9, "type": "done", "stopReason": "end_turn"}),
    ])
}

/// Runs one turn against `client` (no versions) and gathers what the host
/// would show: the result and every event sent to the browser.
pub async fn turn(client: &EnvdClient) -> (Result<(), kiln_bridge::TurnError>, Vec<kiln_types::chat::EventBody>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let collect = async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        out
    };
    let run = async move { kiln_bridge::run_turn(client, "s1", "build it", None, &tx).await };
    tokio::join!(run, collect)
}

/// The process's resident set size, from `/proc/self/status`.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

async fn serve(mut s: UnixStream, sh: Arc<Shared>) {
    let behaviour = *sh.behaviour.lock().unwrap();
    if behaviour == Behaviour::CloseImmediately {
        return;
    }
    let Some((method, target)) = read_request(&mut s).await else { return };
    sh.requests.lock().unwrap().push(format!("{method} {target}"));
    let path = target.split('?').next().unwrap_or("").to_owned();
    let turn_stream = path.ends_with("/prompt") || path.ends_with("/events");
    const NDJSON: &str = "application/x-ndjson";
    match behaviour {
        Behaviour::Silent => {
            // Hold the connection until the client hangs up.
            let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
        }
        Behaviour::HugeBody { declared } => {
            let len = if declared { format!("content-length: {GIB}\r\n") } else { String::new() };
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{len}connection: close\r\n\r\n");
            if !write(&mut s, &sh, head.as_bytes(), false).await {
                return;
            }
            let zeros = vec![b'0'; 64 * 1024];
            let mut sent = 0u64;
            while sent < GIB && write(&mut s, &sh, &zeros, true).await {
                sent += zeros.len() as u64;
            }
        }
        Behaviour::EndlessLine if turn_stream => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {NDJSON}\r\nconnection: close\r\n\r\n");
            if !write(&mut s, &sh, head.as_bytes(), false).await
                || !write(&mut s, &sh, br#"{"seq":1,"type":"text","delta":""#, true).await
            {
                return;
            }
            let chunk = vec![b'a'; 64 * 1024];
            while write(&mut s, &sh, &chunk, true).await {}
        }
        Behaviour::SilentStream if turn_stream => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {NDJSON}\r\nconnection: close\r\n\r\n");
            if write(&mut s, &sh, head.as_bytes(), false).await {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            }
        }
        Behaviour::Truncates if path.ends_with("/events") => {}
        Behaviour::Truncates if path.ends_with("/prompt") => {
            let one = lines(&[serde_json::json!({"seq": 1, "type": "text", "delta": "cut short"})]);
            answer(&mut s, &sh, "200 OK", NDJSON, &one).await;
        }
        Behaviour::Impersonates if path.ends_with("/prompt") => {
            answer(&mut s, &sh, "200 OK", NDJSON, &impostor_turn()).await;
        }
        _ if path.ends_with("/prompt") => answer(&mut s, &sh, "200 OK", NDJSON, &honest_turn()).await,
        _ if path.ends_with("/events") => {
            let done = lines(&[serde_json::json!({"seq": 1_000_000, "type": "done", "stopReason": "end_turn"})]);
            answer(&mut s, &sh, "200 OK", NDJSON, &done).await;
        }
        _ if path == "/v1/health" => answer(&mut s, &sh, "200 OK", "application/json", &health()).await,
        _ if path.ends_with("/config") || path.ends_with("/model") => {
            answer(&mut s, &sh, "200 OK", "application/json", br#"{"configOptions":[]}"#).await;
        }
        _ if path.ends_with("/cancel") => answer(&mut s, &sh, "200 OK", "application/json", b"{}").await,
        _ => {
            let body = br#"{"error":"not in the fake","code":"not_found"}"#;
            answer(&mut s, &sh, "404 Not Found", "application/json", body).await;
        }
    }
}
