//! The workspace as the ACP client offers it: `fs/*` and `terminal/*`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_client_protocol::Client;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, KillTerminalRequest, ReadTextFileRequest, ReleaseTerminalRequest, TerminalOutputRequest,
    WaitForTerminalExitRequest, WriteTextFileRequest,
};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::tools::{LocalWorkspace, Workspace};

/// What the client said it can do (`clientCapabilities`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCaps {
    pub read: bool,
    pub write: bool,
    pub terminal: bool,
}

impl ClientCaps {
    pub fn from_json(v: &Value) -> ClientCaps {
        let b = |p: &str| v.pointer(p).and_then(Value::as_bool).unwrap_or(false);
        ClientCaps { read: b("/fs/readTextFile"), write: b("/fs/writeTextFile"), terminal: b("/terminal") }
    }
}

pub struct AcpWorkspace {
    pub cx: ConnectionTo<Client>,
    pub session: String,
    pub caps: ClientCaps,
    pub local: LocalWorkspace,
}

fn req<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid ACP request")
}

fn err(e: &agent_client_protocol::Error) -> String {
    e.message.clone()
}

/// Kills and releases a terminal if the command is abandoned (the turn was
/// cancelled while it ran).
struct TerminalGuard {
    cx: ConnectionTo<Client>,
    ids: Value,
    armed: bool,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if self.armed {
            let (cx, ids) = (self.cx.clone(), self.ids.clone());
            tokio::spawn(async move {
                let _ = cx.send_request(req::<KillTerminalRequest>(ids.clone())).block_task().await;
                let _ = cx.send_request(req::<ReleaseTerminalRequest>(ids)).block_task().await;
            });
        }
    }
}

#[async_trait]
impl Workspace for AcpWorkspace {
    fn root(&self) -> &Path {
        &self.local.root
    }

    async fn read(&self, path: &Path) -> Result<String, String> {
        if !self.caps.read {
            return self.local.read(path).await;
        }
        let r: ReadTextFileRequest = req(json!({"sessionId": self.session, "path": path}));
        self.cx.send_request(r).block_task().await.map(|r| r.content).map_err(|e| err(&e))
    }

    async fn write(&self, path: &Path, content: &str) -> Result<(), String> {
        if !self.caps.write {
            return self.local.write(path, content).await;
        }
        let r: WriteTextFileRequest = req(json!({"sessionId": self.session, "path": path, "content": content}));
        self.cx.send_request(r).block_task().await.map(drop).map_err(|e| err(&e))
    }

    async fn run(&self, command: &str, timeout: Duration) -> Result<(String, Option<i32>), String> {
        if !self.caps.terminal {
            return self.local.run(command, timeout).await;
        }
        let create: CreateTerminalRequest = req(json!({
            "sessionId": self.session, "command": "/bin/sh", "args": ["-c", command],
            "cwd": self.local.root, "outputByteLimit": crate::tools::MAX_RUN_OUTPUT * 2,
        }));
        let t = self.cx.send_request(create).block_task().await.map_err(|e| err(&e))?;
        let ids = json!({"sessionId": self.session, "terminalId": t.terminal_id.0.to_string()});
        let mut guard = TerminalGuard { cx: self.cx.clone(), ids: ids.clone(), armed: true };
        let wait = self.cx.send_request(req::<WaitForTerminalExitRequest>(ids.clone())).block_task();
        let code = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(exit)) => serde_json::to_value(&exit).ok().and_then(|v| v["exitCode"].as_i64()).map(|c| c as i32),
            Ok(Err(e)) => return Err(err(&e)),
            Err(_) => {
                let _ = self.cx.send_request(req::<KillTerminalRequest>(ids.clone())).block_task().await;
                None
            }
        };
        let out =
            self.cx.send_request(req::<TerminalOutputRequest>(ids.clone())).block_task().await.map_err(|e| err(&e))?;
        guard.armed = false;
        let _ = self.cx.send_request(req::<ReleaseTerminalRequest>(ids)).block_task().await;
        Ok((out.output, code))
    }
}

/// The session's working directory as a path.
pub fn cwd_of(v: &Value) -> PathBuf {
    v.get("cwd").and_then(Value::as_str).map_or_else(|| PathBuf::from("/app"), PathBuf::from)
}
