//! A client for the envd API over the sandbox's unix socket.
//!
//! Used by the server, the operator CLI and the tests, so all three speak the
//! contract in `kiln_types::envd` the same way. One connection per request:
//! connecting to a unix socket costs microseconds and keeps the client free
//! of pool state that could outlive a killed sandbox.
//!
//! envd is not trusted (code in the sandbox may have replaced or subverted
//! it), so every byte it sends is treated as hostile: each call has a
//! deadline, each answer a size cap ([`limits`] has the table), streams are
//! split into bounded lines in linear time ([`ndjson`]), and what envd says
//! in an error is escaped before it is displayed or logged. A connection is
//! torn down as soon as its caller stops reading (a guard aborts its task),
//! so a refused answer is never read to its end.

pub mod limits;
mod ndjson;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_types::chat::escape_control;
use kiln_types::envd::{DevServerStatus, ErrorBody, ExecEvent, ExecRequest, FileList, Health, WriteResult};
use limits::{CallLimits, StreamLimits};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Most bytes of envd's error message kept.
const MAX_ERROR_MESSAGE: usize = 2048;
/// Most output [`EnvdClient::exec_collect`] gathers per stream.
pub const MAX_EXEC_COLLECT: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach envd at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("envd connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("envd connection failed: {0}")]
    Body(String),
    #[error("envd answered {status}: {} ({})", escape_control(message), escape_control(code))]
    Status { status: StatusCode, code: String, message: String },
    #[error("envd sent a body that does not match the API: {}", escape_control(&.0.to_string()))]
    Decode(#[from] serde_json::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    /// envd sent more than the call allows; the rest was not read.
    #[error("envd sent more than {limit} bytes in {what}; refused")]
    TooLarge { what: &'static str, limit: usize },
    /// envd did not answer in time; the connection was dropped.
    #[error("envd did not send {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        if let ClientError::Status { status, .. } = self { Some(*status) } else { None }
    }

    /// The connection broke (as opposed to envd answering something wrong,
    /// too much, or too late): trying again may help.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Http(_) | ClientError::Body(_))
    }
}

/// How to reach one sandbox's envd. Everything a claimant needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub socket: PathBuf,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct EnvdClient {
    ep: Endpoint,
}

/// What [`EnvdClient::exec_collect`] gathers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: i32,
    pub timed_out: bool,
}

/// The task driving one connection; dropping this ends it, so a caller
/// that gives up on an answer also stops envd from feeding it.
struct Conn(Option<tokio::task::JoinHandle<()>>);

impl Conn {
    /// Lets the connection run on by itself (until its body or upgrade ends).
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl EnvdClient {
    pub fn new(ep: Endpoint) -> Self {
        EnvdClient { ep }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn socket(&self) -> &Path {
        &self.ep.socket
    }

    /// Connects, sends, and waits for the response headers; the connection
    /// lives as long as the returned guard.
    async fn open<B>(&self, mut req: Request<B>) -> Result<(Response<Incoming>, Conn), ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.ep.socket)
            .await
            .map_err(|source| ClientError::Connect { path: self.ep.socket.clone(), source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = Conn(Some(tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        })));
        let auth = format!("Bearer {}", self.ep.token);
        req.headers_mut().insert(header::AUTHORIZATION, auth.parse().expect("token is header-safe"));
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, "envd".parse().expect("static"));
        }
        Ok((sender.send_request(req).await?, conn))
    }

    /// Sends any request (the token is added) and waits at most
    /// [`limits::SEND_HEADERS_TIMEOUT`] for the response headers. The body
    /// streams and is not bounded: the caller (the preview proxy) passes it
    /// on as it arrives. The connection lives on with the body or upgrade.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let after = limits::SEND_HEADERS_TIMEOUT;
        let (resp, conn) = tokio::time::timeout(after, self.open(req))
            .await
            .map_err(|_| ClientError::Timeout { what: "response headers", after })??;
        // The body or the upgraded connection needs it.
        conn.detach();
        Ok(resp)
    }

    /// A call whose answer is read whole, within `lim`.
    pub(crate) async fn call_with(
        &self,
        lim: CallLimits,
        method: Method,
        uri: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let req = Request::builder().method(method).uri(uri).body(Full::new(body))?;
        let work = async {
            let (resp, _conn) = self.open(req).await?;
            let (parts, body) = resp.into_parts();
            if parts.status.is_success() {
                limits::read_body(&parts.headers, body, lim.max_body).await
            } else {
                Err(status_error(parts.status, &limits::read_body(&parts.headers, body, limits::MAX_ERROR_BODY).await?))
            }
        };
        tokio::time::timeout(lim.total, work)
            .await
            .map_err(|_| ClientError::Timeout { what: "an answer", after: lim.total })?
    }

    /// A call with the bounds of its route ([`limits::call_limits`]).
    pub(crate) async fn call(&self, method: Method, uri: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.call_with(limits::call_limits(&method, uri), method, uri, body).await
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.call(method, uri, body).await?)?)
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/v1/health", Bytes::new()).await
    }

    /// Long-polls until the dev server answers (or `wait` passes) and
    /// returns the health at that moment.
    pub async fn wait_dev_ready(&self, wait: Duration) -> Result<Health, ClientError> {
        let lim = CallLimits { total: wait.saturating_add(limits::WAIT_MARGIN), max_body: limits::MAX_JSON_BODY };
        let uri = format!("/v1/health?wait_ready_ms={}", wait.as_millis());
        Ok(serde_json::from_slice(&self.call_with(lim, Method::GET, &uri, Bytes::new()).await?)?)
    }

    pub async fn read_file(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(Method::GET, &format!("/v1/files?path={}", enc(path)), Bytes::new()).await
    }

    pub async fn write_file(&self, path: &str, data: impl Into<Bytes>) -> Result<WriteResult, ClientError> {
        self.json(Method::PUT, &format!("/v1/files?path={}", enc(path)), data.into()).await
    }

    pub async fn delete_file(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v1/files?path={}&recursive={recursive}", enc(path)), Bytes::new())
            .await
            .map(|_| ())
    }

    pub async fn list_files(&self, path: &str, recursive: bool) -> Result<FileList, ClientError> {
        self.json(Method::GET, &format!("/v1/files/list?path={}&recursive={recursive}", enc(path)), Bytes::new()).await
    }

    pub async fn dev_server(&self) -> Result<DevServerStatus, ClientError> {
        self.json(Method::GET, "/v1/dev-server", Bytes::new()).await
    }

    pub async fn restart_dev_server(&self) -> Result<DevServerStatus, ClientError> {
        self.json(Method::POST, "/v1/dev-server/restart", Bytes::new()).await
    }

    /// Sends a request whose answer is an NDJSON stream of `T`, with the
    /// bounds of its route ([`limits::stream_limits`]).
    pub(crate) async fn stream<T: DeserializeOwned>(
        &self,
        r: Request<Full<Bytes>>,
    ) -> Result<impl Stream<Item = Result<T, ClientError>> + use<T>, ClientError> {
        let lim = limits::stream_limits(r.uri().path());
        self.stream_with(lim, r).await
    }

    /// [`Self::stream`] within `lim`. The stream ends after its first
    /// transport, size or time error; a line that does not decode is an
    /// error item and the stream goes on.
    pub(crate) async fn stream_with<T: DeserializeOwned>(
        &self,
        lim: StreamLimits,
        r: Request<Full<Bytes>>,
    ) -> Result<impl Stream<Item = Result<T, ClientError>> + use<T>, ClientError> {
        let after = lim.headers;
        let (resp, conn) = tokio::time::timeout(after, self.open(r))
            .await
            .map_err(|_| ClientError::Timeout { what: "response headers", after })??;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            let read = limits::read_body(&parts.headers, body, limits::MAX_ERROR_BODY);
            let bytes = tokio::time::timeout(after, read)
                .await
                .map_err(|_| ClientError::Timeout { what: "an error body", after })??;
            return Err(status_error(parts.status, &bytes));
        }
        // The guard rides along with the frames: dropping the stream drops
        // the connection.
        let frames = body.into_data_stream().map(move |f| {
            let _ = &conn;
            f.map_err(ClientError::Http)
        });
        Ok(ndjson::decode(Box::pin(frames), lim.max_line, lim.idle))
    }

    /// Starts a command; yields its events as they arrive. Silence is
    /// bounded by the command's own timeout plus a margin.
    pub async fn exec(
        &self,
        req: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, ClientError>> + use<>, ClientError> {
        let body = Bytes::from(serde_json::to_vec(req)?);
        let r = Request::post("/v1/exec").header(header::CONTENT_TYPE, "application/json").body(Full::new(body))?;
        let run = Duration::from_millis(req.timeout_ms.unwrap_or(kiln_types::envd::DEFAULT_EXEC_TIMEOUT_MS));
        let lim =
            StreamLimits { idle: run.saturating_add(limits::EXEC_IDLE_MARGIN), ..limits::stream_limits("/v1/exec") };
        self.stream_with(lim, r).await
    }

    /// Runs a command to completion and gathers its output (at most
    /// [`MAX_EXEC_COLLECT`] bytes of each stream).
    pub async fn exec_collect(&self, req: &ExecRequest) -> Result<ExecOutput, ClientError> {
        let mut out = ExecOutput::default();
        let events = self.exec(req).await?;
        futures::pin_mut!(events);
        while let Some(ev) = events.next().await {
            let (buf, b64) = match ev? {
                ExecEvent::Stdout { b64 } => (&mut out.stdout, b64),
                ExecEvent::Stderr { b64 } => (&mut out.stderr, b64),
                ExecEvent::Exit { code, timed_out } => {
                    out.code = code;
                    out.timed_out = timed_out;
                    continue;
                }
                ExecEvent::Error { message } => {
                    return Err(ClientError::Status {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: "exec_failed".into(),
                        message,
                    });
                }
                ExecEvent::Started { .. } => continue,
            };
            buf.extend(B64.decode(b64).unwrap_or_default());
            if buf.len() > MAX_EXEC_COLLECT {
                return Err(ClientError::TooLarge { what: "a command's output", limit: MAX_EXEC_COLLECT });
            }
        }
        Ok(out)
    }
}

/// envd's error answer as a [`ClientError::Status`] (its message cut to a
/// readable length; it is escaped when displayed).
fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    let (code, mut message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.error),
        Err(_) => ("unknown".into(), String::from_utf8_lossy(body).into_owned()),
    };
    if message.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    let code = if code.len() <= 64 { code } else { "unknown".into() };
    ClientError::Status { status, code, message }
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
