//! A client for the envd API over the sandbox's unix socket.
//!
//! Used by the server, the operator CLI and the tests, so all three speak the
//! contract in `kiln_types::envd` the same way. One connection per request:
//! connecting to a unix socket costs microseconds and keeps the client free
//! of pool state that could outlive a killed sandbox.

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
use kiln_types::envd::{DevServerStatus, ErrorBody, ExecEvent, ExecRequest, FileList, Health, WriteResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach envd at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("envd connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("envd answered {status}: {message} ({code})")]
    Status { status: StatusCode, code: String, message: String },
    #[error("envd sent a body that does not match the API: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        if let ClientError::Status { status, .. } = self { Some(*status) } else { None }
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

    /// Sends any request (the token is added). The response body streams.
    pub async fn send<B>(&self, mut req: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.ep.socket)
            .await
            .map_err(|source| ClientError::Connect { path: self.ep.socket.clone(), source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let auth = format!("Bearer {}", self.ep.token);
        req.headers_mut().insert(header::AUTHORIZATION, auth.parse().expect("token is header-safe"));
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, "envd".parse().expect("static"));
        }
        Ok(sender.send_request(req).await?)
    }

    pub(crate) async fn call(&self, method: Method, uri: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let req = Request::builder().method(method).uri(uri).body(Full::new(body))?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.code, e.error),
                Err(_) => ("unknown".into(), String::from_utf8_lossy(&bytes).into_owned()),
            };
            Err(ClientError::Status { status, code, message })
        }
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
        self.json(Method::GET, &format!("/v1/health?wait_ready_ms={}", wait.as_millis()), Bytes::new()).await
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

    /// Sends a request whose answer is an NDJSON stream of `T`.
    pub(crate) async fn stream<T: DeserializeOwned>(
        &self,
        r: Request<Full<Bytes>>,
    ) -> Result<impl Stream<Item = Result<T, ClientError>> + use<T>, ClientError> {
        let resp = self.send(r).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            let e: ErrorBody = serde_json::from_slice(&bytes)
                .unwrap_or(ErrorBody { error: String::from_utf8_lossy(&bytes).into(), code: "unknown".into() });
            return Err(ClientError::Status { status, code: e.code, message: e.error });
        }
        Ok(ndjson(resp.into_body()))
    }

    /// Starts a command; yields its events as they arrive.
    pub async fn exec(
        &self,
        req: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, ClientError>> + use<>, ClientError> {
        let body = Bytes::from(serde_json::to_vec(req)?);
        let r = Request::post("/v1/exec").header(header::CONTENT_TYPE, "application/json").body(Full::new(body))?;
        self.stream(r).await
    }

    /// Runs a command to completion and gathers its output.
    pub async fn exec_collect(&self, req: &ExecRequest) -> Result<ExecOutput, ClientError> {
        let mut out = ExecOutput::default();
        let events = self.exec(req).await?;
        futures::pin_mut!(events);
        while let Some(ev) = events.next().await {
            match ev? {
                ExecEvent::Stdout { b64 } => out.stdout.extend(B64.decode(b64).unwrap_or_default()),
                ExecEvent::Stderr { b64 } => out.stderr.extend(B64.decode(b64).unwrap_or_default()),
                ExecEvent::Exit { code, timed_out } => {
                    out.code = code;
                    out.timed_out = timed_out;
                }
                ExecEvent::Error { message } => {
                    return Err(ClientError::Status {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: "exec_failed".into(),
                        message,
                    });
                }
                ExecEvent::Started { .. } => {}
            }
        }
        Ok(out)
    }
}

/// Splits a streamed body into NDJSON lines and decodes each.
pub(crate) fn ndjson<T: DeserializeOwned>(body: Incoming) -> impl Stream<Item = Result<T, ClientError>> {
    let frames = body.into_data_stream();
    futures::stream::unfold((frames, Vec::<u8>::new(), false), |(mut frames, mut buf, mut done)| async move {
        loop {
            if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let ev = serde_json::from_slice::<T>(&line[..line.len() - 1]).map_err(ClientError::from);
                return Some((ev, (frames, buf, done)));
            }
            if done {
                return None;
            }
            match frames.next().await {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(e)) => {
                    done = true;
                    return Some((Err(ClientError::Http(e)), (frames, buf, done)));
                }
                None => done = true,
            }
        }
    })
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
