//! How long, and how much, the host waits for and takes from envd.
//!
//! envd runs inside the sandbox, next to code Kiln did not write; the host
//! assumes it may be compromised. So every call has a deadline and every
//! answer a size cap, chosen per route here in one table rather than at each
//! call site: the agent half of the client (`envd_agent.rs`) gets its bounds
//! from the route it calls, and an auditor reads them in one place.
//!
//! | route | bound | why |
//! |---|---|---|
//! | `GET /v1/health` | 10 s, 1 MiB | answered from memory; the pool's own check is 2 s |
//! | `GET /v1/health?wait_ready_ms=N` | N + 15 s, 1 MiB | a long poll (envd caps N at 60 s) |
//! | `GET /v1/files` | 60 s, [`MAX_FILE_BYTES`] | the largest file envd serves |
//! | `GET /v1/files/list` | 60 s, 16 MiB | 10,000 entries ([`MAX_LIST_ENTRIES`]) of long paths |
//! | `PUT`/`DELETE /v1/files`, dev server, other JSON | 30–60 s, 1 MiB | small JSON answers |
//! | `POST /v1/agent/sessions/{id}/cancel` | 5 s, 64 KiB | a cancel must never wait long |
//! | other `/v1/agent/…` calls | 120 s, 1 MiB | envd gives the agent 60 s to initialize |
//! | agent streams (prompt, events) | headers 60 s, 15 min idle, 1 MiB lines | see [`AGENT_STREAM_IDLE`] |
//! | `/v1/exec` | headers 30 s, idle = the command's timeout + 60 s, 1 MiB lines | the command is killed by then |
//! | raw [`send`](super::EnvdClient::send) (preview proxy) | headers 60 s | the body streams to the browser |
//!
//! [`MAX_FILE_BYTES`]: kiln_types::envd::MAX_FILE_BYTES
//! [`MAX_LIST_ENTRIES`]: kiln_types::envd::MAX_LIST_ENTRIES

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use kiln_types::envd::MAX_FILE_BYTES;

use super::ClientError;

/// Largest JSON answer envd sends (health with its log tail, write results,
/// agent answers with config options).
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest file listing (10,000 entries).
pub const MAX_LIST_BODY: usize = 16 << 20;
/// Largest error body read from a failed call.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// Largest NDJSON line (one event) in a stream. envd's biggest events are
/// tool calls with their input (a whole file for `write_file`).
pub const MAX_LINE: usize = 1 << 20;

pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const FILE_TIMEOUT: Duration = Duration::from_secs(60);
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(120);
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to a long poll's own wait.
pub const WAIT_MARGIN: Duration = Duration::from_secs(15);
/// Connect + response headers of a stream (envd answers a prompt once the
/// turn has started; it may wait for the agent's state lock meanwhile).
pub const STREAM_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Connect + response headers of an exec.
pub const EXEC_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence between two frames of an agent stream. envd sends no
/// keep-alives and a turn is legitimately quiet while a tool runs: kiln-agent's
/// `run` tool may take up to 10 minutes (other agents' shells have similar
/// caps), and a model may think for a while before its first token. 15
/// minutes is beyond all of that; it only ends turns of an agent (or envd)
/// that hangs. A person's cancel never waits for it (the chat layer ends the
/// turn itself).
pub const AGENT_STREAM_IDLE: Duration = Duration::from_secs(15 * 60);
/// Added to an exec's own timeout for its idle bound: envd kills the command
/// when its timeout passes and then sends `exit`.
pub const EXEC_IDLE_MARGIN: Duration = Duration::from_secs(60);
/// Connect + response headers of a raw request (the preview proxy): Vite's
/// first transform of a large module can take seconds, never a minute.
pub const SEND_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);

/// The bounds of one call whose answer is read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Connect, headers and body together.
    pub total: Duration,
    pub max_body: usize,
}

/// The bounds of one NDJSON stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connect + response headers.
    pub headers: Duration,
    /// Longest wait for the next frame.
    pub idle: Duration,
    pub max_line: usize,
}

/// The bounds of a call to `path` (a query is ignored).
pub fn call_limits(method: &Method, path: &str) -> CallLimits {
    let json = |total| CallLimits { total, max_body: MAX_JSON_BODY };
    match path.split('?').next().unwrap_or(path) {
        "/v1/health" => json(HEALTH_TIMEOUT),
        "/v1/files" if method == Method::GET => CallLimits { total: FILE_TIMEOUT, max_body: MAX_FILE_BYTES },
        "/v1/files" | "/v1/dev-server/restart" => json(FILE_TIMEOUT),
        "/v1/files/list" => CallLimits { total: FILE_TIMEOUT, max_body: MAX_LIST_BODY },
        p if p.starts_with("/v1/agent/sessions/") && p.ends_with("/cancel") => {
            CallLimits { total: CANCEL_TIMEOUT, max_body: MAX_ERROR_BODY }
        }
        p if p.starts_with("/v1/agent") => json(AGENT_CALL_TIMEOUT),
        _ => json(CALL_TIMEOUT),
    }
}

/// The bounds of a stream from `path`; an exec's depend on its own timeout
/// and are set by [`exec`](super::EnvdClient::exec).
pub fn stream_limits(path: &str) -> StreamLimits {
    if path.starts_with("/v1/agent") {
        StreamLimits { headers: STREAM_HEADERS_TIMEOUT, idle: AGENT_STREAM_IDLE, max_line: MAX_LINE }
    } else {
        let idle = Duration::from_millis(kiln_types::envd::DEFAULT_EXEC_TIMEOUT_MS) + EXEC_IDLE_MARGIN;
        StreamLimits { headers: EXEC_HEADERS_TIMEOUT, idle, max_line: MAX_LINE }
    }
}

/// Reads a whole body of at most `max` bytes. A declared length over the
/// cap is refused before a byte is read; an undeclared one stops at the cap.
pub async fn read_body(headers: &HeaderMap, body: Incoming, max: usize) -> Result<Bytes, ClientError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ClientError::TooLarge { what: "one response body", limit: max });
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ClientError::TooLarge { what: "one response body", limit: max }),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(h) => Err(ClientError::Http(*h)),
            Err(other) => Err(ClientError::Body(other.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_deadline_and_a_cap() {
        let l = call_limits(&Method::GET, "/v1/files?path=src/App.tsx");
        assert_eq!(l, CallLimits { total: FILE_TIMEOUT, max_body: MAX_FILE_BYTES });
        assert_eq!(call_limits(&Method::PUT, "/v1/files?path=a").max_body, MAX_JSON_BODY);
        assert_eq!(call_limits(&Method::POST, "/v1/agent/sessions/s%2F1/cancel").total, CANCEL_TIMEOUT);
        assert_eq!(call_limits(&Method::POST, "/v1/agent/initialize").total, AGENT_CALL_TIMEOUT);
        assert_eq!(call_limits(&Method::GET, "/v1/health").total, HEALTH_TIMEOUT);
        assert_eq!(call_limits(&Method::GET, "/v1/unknown").total, CALL_TIMEOUT);
        assert_eq!(stream_limits("/v1/agent/sessions/s/prompt").idle, AGENT_STREAM_IDLE);
        assert!(stream_limits("/v1/exec").idle > Duration::from_secs(600));
    }
}
