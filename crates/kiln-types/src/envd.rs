//! The envd wire contract: routes, request and response bodies.
//!
//! envd serves HTTP/1.1 on a unix socket (`envd.sock`) that only the host can
//! reach. Every request carries `Authorization: Bearer <per-sandbox token>`.
//! `docs/envd-api.md` is the prose version of this module; bump
//! [`ENVD_API_VERSION`] on every behaviour change so a server can refuse an
//! envd it does not understand.
//!
//! | route | verb | body → answer |
//! |---|---|---|
//! | `/v1/health` | GET | → [`Health`] (`?wait_ready_ms=N` long-polls until the dev server answers) |
//! | `/v1/files?path=P` | GET | → file bytes |
//! | `/v1/files?path=P` | PUT | bytes → [`WriteResult`] (parents created) |
//! | `/v1/files?path=P` | DELETE | → 204 |
//! | `/v1/files/list?path=P&recursive=B` | GET | → [`FileList`] |
//! | `/v1/exec` | POST | [`ExecRequest`] → NDJSON stream of [`ExecEvent`] |
//! | `/v1/dev-server` | GET | → [`DevServerStatus`] |
//! | `/v1/dev-server/restart` | POST | → [`DevServerStatus`] |
//! | `/v1/proxy/{port}/{path…}` | any | forwarded to `127.0.0.1:{port}/{path…}` inside the sandbox, WebSocket upgrades included |
//!
//! Errors are JSON [`ErrorBody`] with a 4xx/5xx status.

use serde::{Deserialize, Serialize};

/// Version of the envd API. Bump on every behaviour change.
pub const ENVD_API_VERSION: u32 = 3;

/// Where the sandbox's app lives, inside the sandbox.
pub const APP_DIR: &str = "/app";
/// Directory inside the sandbox holding envd's socket; bind-mounted from a
/// host directory only Kiln can read.
pub const RUN_DIR: &str = "/run/kiln";
/// Socket file name inside [`RUN_DIR`].
pub const SOCKET_NAME: &str = "envd.sock";
/// The dev server's port inside the sandbox.
pub const DEV_SERVER_PORT: u16 = 5173;
/// Largest file body the file API accepts (bytes).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Header carrying the per-sandbox token (`Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub api_version: u32,
    pub envd_version: String,
    pub uptime_ms: u64,
    pub dev_server: DevServerStatus,
}

/// Supervisor state of the dev server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevServerState {
    /// Not configured to run.
    Disabled,
    /// Process started, port not answering yet.
    Starting,
    /// `GET /` on the port answered.
    Ready,
    /// Exited; the supervisor will restart it after a backoff.
    Backoff,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevServerStatus {
    pub state: DevServerState,
    pub port: u16,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// The last lines the dev server wrote (stdout and stderr, interleaved).
    pub log_tail: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub path: String,
    pub bytes: u64,
    /// `true` if the file did not exist before.
    pub created: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to `/app`, `/`-separated.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub entries: Vec<FileEntry>,
    /// Set when the listing stopped at [`MAX_LIST_ENTRIES`].
    pub truncated: bool,
}

/// Most entries one listing returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program; looked up on `PATH` if it has no `/`.
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory; defaults to `/app`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Kill the command (and everything it started) after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes written to the command's stdin, then closed.
    #[serde(default)]
    pub stdin_b64: Option<String>,
}

/// Longest an exec may run when the request names no timeout.
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// One line of the exec NDJSON stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    Started {
        pid: u32,
    },
    /// Output bytes, base64 so any byte sequence survives.
    Stdout {
        b64: String,
    },
    Stderr {
        b64: String,
    },
    /// Last event. `code` is the exit code, or 128+signal if killed.
    Exit {
        code: i32,
        timed_out: bool,
    },
    /// The command could not be started at all.
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Stable machine-readable code, e.g. `path_escapes_app`.
    pub code: String,
}
