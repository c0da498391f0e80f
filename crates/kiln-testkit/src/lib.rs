//! Helpers shared by tests of several crates (a dev-dependency only).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kiln_sandbox::{Endpoint, EnvdClient};
use tokio::io::AsyncWriteExt;

/// The envd token tests use.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Builds `bin` of another workspace package (cargo gives a test only its
/// own package's binaries) and returns its path next to the test's target
/// directory.
///
/// It builds every binary of the workspace, the same command `scripts/test`
/// runs before the tests: building one package alone resolves shared
/// dependencies with other features (hyper's, for one), which rebuilt them
/// in the middle of the test run (3.5 minutes of one CI run); the whole
/// workspace is already up to date there and takes a second.
pub fn built(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/<test binary>
    let path = exe.parent().and_then(Path::parent).expect("target/<profile>").join(bin);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args(["build", "-q", "--workspace", "--bins"])
        .status()
        .expect("running cargo");
    assert!(ok.success() && path.exists(), "building {bin} of {package} failed");
    path
}

/// kiln-envd on the host, serving a temporary app directory (no sandbox).
pub struct Envd {
    /// Holds `app/` (the app directory) and `envd.sock`.
    pub dir: tempfile::TempDir,
    pub child: tokio::process::Child,
    pub client: EnvdClient,
}

impl Envd {
    /// Starts `envd_bin`, optionally hosting `agent`, with `env` added to
    /// its environment; returns once it answers.
    pub async fn start(envd_bin: &Path, agent: Option<&Path>, env: &[(&str, &str)]) -> Envd {
        Envd::start_logging(envd_bin, agent, env, None).await
    }

    /// [`Envd::start`] with envd's stderr (its log) written to `log`, as the
    /// sandbox runtime does with `envd.log`.
    pub async fn start_logging(
        envd_bin: &Path,
        agent: Option<&Path>,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Envd {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = dir.path().join("app");
        std::fs::create_dir(&app).expect("app dir");
        let socket = dir.path().join("envd.sock");
        let mut cmd = tokio::process::Command::new(envd_bin);
        cmd.arg("--socket").arg(&socket).arg("--app-dir").arg(&app);
        if let Some(a) = agent {
            cmd.arg("--agent").arg(serde_json::to_string(&[a]).expect("argv"));
        }
        if let Some(log) = log {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
            cmd.stderr(f);
        }
        let mut child = cmd.envs(env.iter().copied()).stdin(Stdio::piped()).kill_on_drop(true).spawn().expect("envd");
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(format!("{TOKEN}\n").as_bytes()).await.expect("token");
        drop(stdin);
        let client = EnvdClient::new(Endpoint { socket, token: TOKEN.into() });
        for _ in 0..500 {
            if client.health().await.is_ok() {
                return Envd { dir, child, client };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("envd did not come up");
    }

    pub fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What a stand-in provider received: (path and query, headers).
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, http::HeaderMap)>>>;

/// A local stand-in for a model provider that checks requests as the real
/// APIs do and records every one. Anthropic's Messages API: `POST
/// /v1/messages` needs `x-api-key` (else 401), `anthropic-version` and a
/// JSON body naming `model`, `max_tokens` and `messages` (else 400, in
/// Anthropic's error shape), and streams a whole message, events `delay`
/// apart, that reports 40 tokens (30 in, 10 out). An OpenAI-compatible
/// local server (as Ollama: no key needed): `POST /v1/chat/completions`
/// needs `model` and `messages` and answers one chunk plus, when
/// `stream_options.include_usage` is set, a usage chunk (40 tokens).
/// `GET /v1/models` lists `claude-stand-in`. Returns the base URL.
pub async fn stand_in_provider(delay: Duration) -> (String, Seen) {
    use axum::body::Body;
    fn refuse(status: u16, kind: &str, message: &str) -> http::Response<Body> {
        let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("a response")
    }
    let seen: Seen = Seen::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((req.uri().to_string(), req.headers().clone()));
            let anthropic = match (req.method().as_str(), req.uri().path()) {
                ("GET", "/v1/models") => {
                    return http::Response::new(Body::from(r#"{"data":[{"id":"claude-stand-in"}]}"#));
                }
                ("POST", "/v1/messages") => true,
                ("POST", "/v1/chat/completions") => false,
                _ => return refuse(404, "not_found_error", "no such route"),
            };
            if anthropic && !req.headers().contains_key("x-api-key") {
                return refuse(401, "authentication_error", "x-api-key header is required");
            }
            if anthropic && !req.headers().contains_key("anthropic-version") {
                return refuse(400, "invalid_request_error", "anthropic-version: header is required");
            }
            let Ok(body) = axum::body::to_bytes(req.into_body(), 32 << 20).await else {
                return refuse(413, "request_too_large", "request too large");
            };
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return refuse(400, "invalid_request_error", "body must be JSON"),
            };
            let required: &[&str] = if anthropic { &["model", "max_tokens", "messages"] } else { &["model", "messages"] };
            for field in required {
                if v.get(field).is_none() {
                    return refuse(400, "invalid_request_error", &format!("{field}: Field required"));
                }
            }
            if !anthropic {
                let mut out = String::from(
                    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n",
                );
                if v.pointer("/stream_options/include_usage") == Some(&serde_json::Value::Bool(true)) {
                    out.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,\"total_tokens\":40}}\n\n");
                }
                out.push_str("data: [DONE]\n\n");
                return http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from(out))
                    .expect("a response");
            }
            let events = [
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-stand-in\",\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":10}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ];
            let stream = futures::stream::unfold(0usize, move |i| async move {
                if i >= events.len() {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(events[i].as_bytes())), i + 1))
            });
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("a response")
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = l.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(l, app).await.expect("the stand-in serves") });
    (format!("http://{addr}"), seen)
}
