//! The model gateway: the only way out of a sandbox without egress.
//!
//! Each sandbox gets its own unix socket (`host.sock`) in a host directory
//! bound read-only into the sandbox; envd forwards a loopback port to it, so
//! an agent uses `http://127.0.0.1:4141/anthropic` (or `/openai/v1`) as its
//! API base URL. Because the socket is per sandbox, the gateway knows who is
//! calling without trusting anything the caller sends. It adds the real API
//! key on the host (keys never enter a sandbox), refuses requests once the
//! owning session's token budget is spent, and streams answers through
//! chunk by chunk while counting their tokens.

mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
pub use usage::UsageTap;

/// Largest request body forwarded (bytes).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("binding the gateway socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

/// Where requests go and with which keys.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// e.g. `https://api.anthropic.com`
    pub anthropic_base: String,
    pub anthropic_key: Option<String>,
    /// e.g. `https://api.openai.com` or `http://127.0.0.1:11434` (Ollama)
    pub openai_base: String,
    pub openai_key: Option<String>,
    /// Tokens (input + output) one session may use.
    pub session_budget_tokens: u64,
    /// Unix gid that may connect (the sandbox uid's group).
    pub sandbox_gid: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            anthropic_base: "https://api.anthropic.com".into(),
            anthropic_key: None,
            openai_base: "https://api.openai.com".into(),
            openai_key: None,
            session_budget_tokens: 5_000_000,
            sandbox_gid: 61000,
        }
    }
}

/// Something the gateway refused, for the chat stream of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub sandbox: String,
    pub owner: String,
    /// `budget_exceeded` or `no_model_key`.
    pub code: String,
    pub message: String,
}

struct Attached {
    owner: String,
    task: tokio::task::AbortHandle,
}

/// The gateway and its per-sandbox sockets.
pub struct Gateway {
    cfg: GatewayConfig,
    http: reqwest::Client,
    attached: Mutex<HashMap<String, Attached>>,
    spent: Mutex<HashMap<String, u64>>,
    /// Keys a user brought for their own session (provider → key).
    user_keys: Mutex<HashMap<(String, Provider), String>>,
    notices: tokio::sync::broadcast::Sender<Notice>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("anthropic_base", &self.cfg.anthropic_base).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    fn from_prefix(p: &str) -> Option<(Provider, &str)> {
        if let Some(rest) = p.strip_prefix("/anthropic") {
            return Some((Provider::Anthropic, rest));
        }
        p.strip_prefix("/openai").map(|rest| (Provider::OpenAi, rest))
    }
    fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "Anthropic",
            Provider::OpenAi => "OpenAI-compatible",
        }
    }
}

#[derive(Clone)]
struct Caller {
    gw: Arc<Gateway>,
    sandbox: String,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Arc<Gateway> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a TLS-capable HTTP client");
        Arc::new(Gateway {
            cfg,
            http,
            attached: Mutex::default(),
            spent: Mutex::default(),
            user_keys: Mutex::default(),
            notices: tokio::sync::broadcast::channel(256).0,
        })
    }

    /// Serves `socket` for `sandbox`, whose spending counts against `owner`
    /// (a session key, or a pool placeholder before a claim). Attaching an
    /// attached sandbox only changes its owner.
    pub fn attach(self: &Arc<Self>, sandbox: &str, socket: &Path, owner: &str) -> Result<(), GatewayError> {
        let mut a = self.attached.lock().unwrap();
        if let Some(x) = a.get_mut(sandbox)
            && !x.task.is_finished()
        {
            x.owner = owner.to_owned();
            return Ok(());
        }
        let bind_err = |source| GatewayError::Bind { path: socket.to_owned(), source };
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).map_err(bind_err)?;
        // root:<sandbox gid> 0660: the sandbox uid may connect, no one else.
        // (Only root can give the socket away; unprivileged test runs keep it.)
        if let Err(e) = std::os::unix::fs::chown(socket, Some(0), Some(self.cfg.sandbox_gid)) {
            tracing::debug!(error = %e, "gateway socket keeps its owner");
        }
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o660)).map_err(bind_err)?;
        let caller = Caller { gw: self.clone(), sandbox: sandbox.to_owned() };
        let app = Router::new().fallback(forward).with_state(caller);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "gateway socket stopped");
            }
        });
        a.insert(sandbox.to_owned(), Attached { owner: owner.to_owned(), task: task.abort_handle() });
        Ok(())
    }

    /// Stops serving a sandbox (it was killed).
    pub fn detach(&self, sandbox: &str) {
        if let Some(x) = self.attached.lock().unwrap().remove(sandbox) {
            x.task.abort();
        }
    }

    /// Refusals as they happen (a turn turns them into `error` events).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn notify(&self, sandbox: &str, owner: &str, code: &str, message: &str) {
        let _ = self.notices.send(Notice {
            sandbox: sandbox.to_owned(),
            owner: owner.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Detaches every sandbox `keep` rejects (they were killed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.attached.lock().unwrap().retain(|id, a| {
            let k = keep(id);
            if !k {
                a.task.abort();
            }
            k
        });
    }

    pub fn owner_of(&self, sandbox: &str) -> Option<String> {
        self.attached.lock().unwrap().get(sandbox).map(|x| x.owner.clone())
    }

    /// Tokens `owner` has used through the gateway.
    pub fn spent(&self, owner: &str) -> u64 {
        self.spent.lock().unwrap().get(owner).copied().unwrap_or(0)
    }

    /// A user's own key for their session; used instead of the server's.
    pub fn set_user_key(&self, owner: &str, provider: Provider, key: String) {
        self.user_keys.lock().unwrap().insert((owner.to_owned(), provider), key);
    }

    fn key_for(&self, owner: &str, provider: Provider) -> Option<String> {
        if let Some(k) = self.user_keys.lock().unwrap().get(&(owner.to_owned(), provider)) {
            return Some(k.clone());
        }
        match provider {
            Provider::Anthropic => self.cfg.anthropic_key.clone(),
            Provider::OpenAi => self.cfg.openai_key.clone(),
        }
    }

    fn add_spent(&self, owner: &str, tokens: u64) {
        *self.spent.lock().unwrap().entry(owner.to_owned()).or_default() += tokens;
    }
}

/// An error in the shape of the provider's own errors, so agents report it.
fn error(provider: Option<Provider>, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match provider {
        Some(Provider::OpenAi) => serde_json::json!({"error": {"message": message, "type": kind, "code": kind}}),
        _ => serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    (status, axum::Json(body)).into_response()
}

const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"];

fn forwardable(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name) && name != "authorization" && name != "x-api-key" && name != "content-length"
}

async fn forward(State(c): State<Caller>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some((provider, rest)) = Provider::from_prefix(&path) else {
        return error(
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            "Kiln's model gateway serves /anthropic/… and /openai/… only",
        );
    };
    let owner = c.gw.owner_of(&c.sandbox).unwrap_or_default();
    let budget = c.gw.cfg.session_budget_tokens;
    let spent = c.gw.spent(&owner);
    if spent >= budget {
        let msg = format!(
            "this session has used its model budget ({spent} of {budget} tokens); start a new app or raise KILN_GATEWAY_SESSION_BUDGET"
        );
        c.gw.notify(&c.sandbox, &owner, "budget_exceeded", &msg);
        return error(Some(provider), StatusCode::TOO_MANY_REQUESTS, "budget_exceeded", &msg);
    }
    let Some(key) = c.gw.key_for(&owner, provider) else {
        let var = if provider == Provider::Anthropic { "ANTHROPIC_API_KEY" } else { "OPENAI_API_KEY" };
        let msg =
            format!("no {} API key is configured on the Kiln server; set {var} where kiln serve runs", provider.name());
        c.gw.notify(&c.sandbox, &owner, "no_model_key", &msg);
        return error(Some(provider), StatusCode::UNAUTHORIZED, "authentication_error", &msg);
    };
    let base = match provider {
        Provider::Anthropic => &c.gw.cfg.anthropic_base,
        Provider::OpenAi => &c.gw.cfg.openai_base,
    };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}{rest}{query}", base.trim_end_matches('/'));
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if forwardable(k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    match provider {
        Provider::Anthropic => {
            headers.insert("x-api-key", HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static("invalid")));
        }
        Provider::OpenAi => {
            let v = HeaderValue::from_str(&format!("Bearer {key}")).unwrap_or(HeaderValue::from_static("invalid"));
            headers.insert(header::AUTHORIZATION, v);
        }
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                Some(provider),
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!("model requests are limited to {MAX_REQUEST_BYTES} bytes"),
            );
        }
    };
    let upstream = match c.gw.http.request(method, &url).headers(headers).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, url, "model gateway: upstream request failed");
            return error(
                Some(provider),
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                &format!("the {} API could not be reached from the Kiln server", provider.name()),
            );
        }
    };
    let status = upstream.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in upstream.headers() {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != header::CONTENT_LENGTH {
            out_headers.append(k.clone(), v.clone());
        }
    }
    // Pass every chunk on as it arrives; count tokens on the side; charge
    // the owner when the body ends (or the caller goes away).
    let gw = c.gw.clone();
    let charge = Charge { gw, owner, tap: UsageTap::default() };
    let stream = futures::stream::unfold((upstream.bytes_stream(), charge), |(mut s, mut charge)| async move {
        match s.next().await {
            Some(Ok(b)) => {
                charge.tap.feed(&b);
                Some((Ok::<_, std::io::Error>(b), (s, charge)))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), (s, charge))),
            None => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}

/// Charges what the tap counted when the response body is dropped.
struct Charge {
    gw: Arc<Gateway>,
    owner: String,
    tap: UsageTap,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let used = self.tap.finish();
        if used > 0 {
            self.gw.add_spent(&self.owner, used);
        }
    }
}
