//! The ACP bridge: envd hosts the agent process and is its ACP client.
//!
//! Why here and not in the server: the agent must outlive any one server
//! connection (a restarting server, or another instance, picks the session
//! up again), and every request the agent makes of its client (files,
//! terminals) has to be served inside the sandbox anyway. The server drives
//! the bridge through envd's HTTP API (`kiln_types::agent`) and reads turns
//! as Kiln chat events from a per-session log.

pub mod client;
pub mod log;
pub mod terminal;
pub mod translate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use agent_client_protocol::Agent;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, InitializeRequest as AcpInit, NewSessionRequest as AcpNewSession, PromptRequest as AcpPrompt,
    SetSessionConfigOptionRequest,
};
use kiln_types::agent::{
    AgentStatus, InitializeRequest, InitializeResponse, NewSessionRequest, NewSessionResponse, SessionStatus,
    SetConfigResponse,
};
use kiln_types::chat::{EventBody, StopReason};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub use client::PermissionPolicy;
use log::SessionLog;
use terminal::Terminals;

use crate::error::EnvdError;
use crate::files::AppDir;

/// Shared with the ACP handlers.
#[derive(Debug)]
pub struct Shared {
    pub app: Arc<AppDir>,
    pub terminals: Terminals,
    pub policy: PermissionPolicy,
    sessions: Mutex<HashMap<String, Arc<SessionLog>>>,
}

impl Shared {
    /// The log of a session, created on first use (an agent may report
    /// updates for a session before `session/new` has answered).
    pub fn log(&self, session_id: &str) -> Arc<SessionLog> {
        self.sessions.lock().unwrap().entry(session_id.to_owned()).or_default().clone()
    }

    pub fn find(&self, session_id: &str) -> Option<Arc<SessionLog>> {
        self.sessions.lock().unwrap().get(session_id).cloned()
    }
}

struct Running {
    conn: ConnectionTo<Agent>,
    child: tokio::process::Child,
    pid: u32,
    fingerprint: String,
    init: InitializeResponse,
    _stop: oneshot::Sender<()>,
    /// configOptions per session, for model selection.
    options: HashMap<String, Value>,
}

impl Running {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The running agent, if its process is still alive.
fn live(st: &mut HostState) -> Option<&mut Running> {
    let r = st.running.as_mut()?;
    if r.alive() { Some(r) } else { None }
}

#[derive(Default)]
struct HostState {
    running: Option<Running>,
    starts: u32,
}

/// The agent process and its sessions.
#[derive(Clone)]
pub struct AgentHost {
    command: Option<Arc<[String]>>,
    shared: Arc<Shared>,
    state: Arc<tokio::sync::Mutex<HostState>>,
}

/// 8 random hex digits (ids of terminals).
pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 over the sorted `name=value` pairs.
pub fn fingerprint(creds: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in creds {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn acp_failed(what: &str, e: &agent_client_protocol::Error) -> EnvdError {
    EnvdError::Agent(format!("{what} failed: {} ({})", e.message, i32::from(e.code)))
}

impl AgentHost {
    pub fn new(command: Option<Vec<String>>, app: Arc<AppDir>, policy: PermissionPolicy) -> AgentHost {
        AgentHost {
            command: command.filter(|c| !c.is_empty()).map(Into::into),
            shared: Arc::new(Shared {
                terminals: Terminals::new(app.path().to_owned()),
                app,
                policy,
                sessions: Mutex::default(),
            }),
            state: Arc::default(),
        }
    }

    /// Starts the agent (or keeps the running one when the credentials are
    /// unchanged) and runs ACP `initialize`.
    pub async fn initialize(&self, req: InitializeRequest) -> Result<InitializeResponse, EnvdError> {
        for (k, v) in &req.credentials {
            if !kiln_types::agent::valid_credential_name(k) || v.contains('\0') {
                return Err(EnvdError::BadRequest(format!(
                    "credential name {k:?} must be letters, digits and '_' (not starting with a digit), and values may not contain NUL"
                )));
            }
        }
        let Some(command) = self.command.clone() else {
            return Err(EnvdError::Conflict("agent_not_configured", "this sandbox has no agent command".into()));
        };
        let fp = fingerprint(&req.credentials);
        let mut st = self.state.lock().await;
        if let Some(r) = st.running.as_mut()
            && r.fingerprint == fp
            && r.alive()
        {
            let mut init = r.init.clone();
            init.restarted = false;
            return Ok(init);
        }
        if let Some(old) = st.running.take() {
            self.stop(old).await;
        }
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..])
            .envs(&req.credentials)
            .current_dir(self.shared.app.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = crate::reaper::spawn(&mut cmd)
            .map_err(|e| EnvdError::Agent(format!("cannot start the agent {:?}: {e}", command[0])))?;
        let pid = child.id().unwrap_or(0);
        st.starts += 1;
        // The agent's stderr (and its MCP servers') reaches the log only
        // through envd's bounded pump, never straight into the host's file.
        if let Some(err) = child.stderr.take() {
            crate::logsink::pump("agent", err);
        }
        let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        let (conn, stop) = client::connect(stdin, stdout, self.shared.clone()).await?;
        let init: AcpInit = serde_json::from_value(json!({
            "protocolVersion": 1,
            "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": true},
            "clientInfo": {"name": "kiln-envd", "version": crate::ENVD_VERSION},
        }))
        .expect("a valid initialize request");
        let resp = tokio::time::timeout(std::time::Duration::from_secs(60), conn.send_request(init).block_task())
            .await
            .map_err(|_| EnvdError::Agent("the agent did not answer initialize within 60 s".into()))?
            .map_err(|e| acp_failed("initialize", &e))?;
        let v = serde_json::to_value(&resp).unwrap_or_default();
        let init = InitializeResponse {
            restarted: true,
            agent_info: v.get("agentInfo").cloned().unwrap_or(Value::Null),
            capabilities: v.get("agentCapabilities").cloned().unwrap_or(Value::Null),
            protocol_version: v.get("protocolVersion").and_then(Value::as_u64).unwrap_or(1) as u16,
        };
        tracing::info!(pid, starts = st.starts, "agent started and initialized");
        st.running = Some(Running {
            conn,
            child,
            pid,
            fingerprint: fp,
            init: init.clone(),
            _stop: stop,
            options: HashMap::new(),
        });
        Ok(init)
    }

    /// Ends an agent process: its turns end with an error, its terminals die.
    async fn stop(&self, mut old: Running) {
        let pid = old.pid as i32;
        if pid > 0 {
            // The agent's process group: it and the MCP servers it started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = old.child.wait().await;
        self.shared.terminals.release_all();
        let sessions: Vec<_> = self.shared.sessions.lock().unwrap().drain().collect();
        for (_, log) in sessions {
            if log.turn_running() {
                log.push(EventBody::Error {
                    code: "agent_restarted".into(),
                    message: "the agent was restarted with new credentials during this turn".into(),
                    retryable: true,
                });
                log.push(EventBody::Done { stop_reason: StopReason::Error });
            }
        }
    }

    async fn conn(&self) -> Result<ConnectionTo<Agent>, EnvdError> {
        let mut st = self.state.lock().await;
        match live(&mut st) {
            Some(r) => Ok(r.conn.clone()),
            None => {
                Err(EnvdError::Conflict("agent_not_running", "the agent is not running; call initialize first".into()))
            }
        }
    }

    pub async fn new_session(&self, req: NewSessionRequest) -> Result<NewSessionResponse, EnvdError> {
        if req.mcp_servers.iter().any(|s| s.name.is_empty() || s.command.is_empty()) {
            return Err(EnvdError::BadRequest("every MCP server needs a name and a command".into()));
        }
        let conn = self.conn().await?;
        let caps = self.state.lock().await.running.as_ref().map(|r| r.init.capabilities.clone()).unwrap_or_default();
        let mcp: Vec<Value> = req
            .mcp_servers
            .iter()
            .map(|s| {
                json!({"name": s.name, "command": s.command, "args": s.args,
                    "env": s.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()})
            })
            .collect();
        let mut body = json!({"cwd": self.shared.app.path(), "mcpServers": mcp});
        let via = match &req.system_prompt {
            None => "none",
            Some(p) if caps.pointer("/sessionCapabilities/systemPrompt").is_some_and(|v| !v.is_null()) => {
                body["systemPrompt"] = json!({"mode": "append", "content": [{"type": "text", "text": p}]});
                "acp"
            }
            Some(p) => {
                body["_meta"] = json!({"systemPrompt": {"append": p}});
                "meta"
            }
        };
        let acp: AcpNewSession =
            serde_json::from_value(body).map_err(|e| EnvdError::BadRequest(format!("invalid session request: {e}")))?;
        let resp = conn.send_request(acp).block_task().await.map_err(|e| acp_failed("session/new", &e))?;
        let session_id = resp.session_id.0.to_string();
        let v = serde_json::to_value(&resp).unwrap_or_default();
        let options = v.get("configOptions").cloned().unwrap_or(Value::Array(vec![]));
        self.shared.log(&session_id);
        if let Some(r) = self.state.lock().await.running.as_mut() {
            r.options.insert(session_id.clone(), options.clone());
        }
        Ok(NewSessionResponse { session_id, config_options: options, system_prompt_via: via.into() })
    }

    pub async fn set_config(
        &self,
        session: &str,
        config_id: &str,
        value: &str,
    ) -> Result<SetConfigResponse, EnvdError> {
        let conn = self.conn().await?;
        self.known(session)?;
        let req: SetSessionConfigOptionRequest =
            serde_json::from_value(json!({"sessionId": session, "configId": config_id, "value": value}))
                .map_err(|e| EnvdError::BadRequest(format!("invalid config value: {e}")))?;
        let resp =
            conn.send_request(req).block_task().await.map_err(|e| acp_failed("session/set_config_option", &e))?;
        let options = serde_json::to_value(&resp.config_options).unwrap_or_default();
        if let Some(r) = self.state.lock().await.running.as_mut() {
            r.options.insert(session.to_owned(), options.clone());
        }
        Ok(SetConfigResponse { config_options: options })
    }

    /// Selects the model: the config option of category `model`.
    pub async fn set_model(&self, session: &str, model_id: &str) -> Result<SetConfigResponse, EnvdError> {
        let options = self
            .state
            .lock()
            .await
            .running
            .as_ref()
            .and_then(|r| r.options.get(session).cloned())
            .ok_or_else(|| EnvdError::NotFound(format!("session {session}")))?;
        let opt = options
            .as_array()
            .and_then(|a| a.iter().find(|o| o.get("category").and_then(Value::as_str) == Some("model")))
            .ok_or_else(|| EnvdError::Conflict("no_model_option", "the agent offers no model option".into()))?;
        let values = option_values(opt);
        if !values.iter().any(|v| v == model_id) {
            return Err(EnvdError::BadRequest(format!(
                "unknown model {model_id:?}; the agent offers: {}",
                values.join(", ")
            )));
        }
        let id = opt.get("id").and_then(Value::as_str).unwrap_or("model").to_owned();
        self.set_config(session, &id, model_id).await
    }

    fn known(&self, session: &str) -> Result<Arc<SessionLog>, EnvdError> {
        self.shared.find(session).ok_or_else(|| EnvdError::NotFound(format!("session {session}")))
    }

    /// Starts a turn; its events go to the session log. Returns the seq the
    /// turn's events start after.
    pub async fn prompt(&self, session: &str, text: String) -> Result<(Arc<SessionLog>, u64), EnvdError> {
        if text.len() > kiln_types::agent::MAX_PROMPT_BYTES {
            return Err(EnvdError::TooLarge {
                got: text.len() as u64,
                max: kiln_types::agent::MAX_PROMPT_BYTES as u64,
            });
        }
        let conn = self.conn().await?;
        let log = self.known(session)?;
        let start = log
            .begin_turn()
            .ok_or_else(|| EnvdError::Conflict("turn_running", "a turn is already running in this session".into()))?;
        let req: AcpPrompt =
            serde_json::from_value(json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}))
                .expect("a valid prompt request");
        let l = log.clone();
        tokio::spawn(async move {
            match conn.send_request(req).block_task().await {
                Ok(resp) => {
                    let v = serde_json::to_value(&resp).unwrap_or_default();
                    if let Some(u) = v.get("usage") {
                        let n = |k: &str| u.get(k).and_then(Value::as_u64);
                        l.push(EventBody::Usage(kiln_types::chat::Usage {
                            input_tokens: n("inputTokens"),
                            output_tokens: n("outputTokens"),
                            ..Default::default()
                        }));
                    }
                    let stop_reason = serde_json::from_value(v.get("stopReason").cloned().unwrap_or_default())
                        .unwrap_or(StopReason::EndTurn);
                    l.push(EventBody::Done { stop_reason });
                }
                Err(e) => {
                    if !l.turn_running() {
                        return; // ended by a restart already
                    }
                    let exited = agent_client_protocol::is_incoming_transport_closed(&e)
                        || agent_client_protocol::is_connection_terminated(&e);
                    let (code, message) = if exited {
                        ("agent_exited".to_owned(), "the agent process exited during the turn".to_owned())
                    } else {
                        ("agent_error".to_owned(), format!("{} ({})", e.message, i32::from(e.code)))
                    };
                    l.push(EventBody::Error { code, message, retryable: exited });
                    l.push(EventBody::Done { stop_reason: StopReason::Error });
                }
            }
        });
        Ok((log, start))
    }

    pub async fn cancel(&self, session: &str) -> Result<(), EnvdError> {
        let conn = self.conn().await?;
        self.known(session)?;
        let n: CancelNotification = serde_json::from_value(json!({"sessionId": session})).expect("valid cancel");
        conn.send_notification(n).map_err(|e| acp_failed("session/cancel", &e))
    }

    pub fn log_of(&self, session: &str) -> Result<Arc<SessionLog>, EnvdError> {
        self.known(session)
    }

    pub async fn status(&self) -> AgentStatus {
        let mut st = self.state.lock().await;
        let starts = st.starts;
        let (running, pid, fingerprint) = match live(&mut st) {
            Some(r) => (true, Some(r.pid), Some(r.fingerprint.clone())),
            None => (false, None, None),
        };
        let mut sessions: Vec<SessionStatus> = self
            .shared
            .sessions
            .lock()
            .unwrap()
            .iter()
            .map(|(id, l)| SessionStatus {
                session_id: id.clone(),
                turn_running: l.turn_running(),
                last_seq: l.last_seq(),
            })
            .collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        AgentStatus { configured: self.command.is_some(), running, pid, fingerprint, starts, sessions }
    }
}

/// Every value a select option offers (grouped or not).
fn option_values(opt: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(items) = opt.get("options").and_then(Value::as_array) {
        for it in items {
            if let Some(v) = it.get("value").and_then(Value::as_str) {
                out.push(v.to_owned());
            }
            if let Some(group) = it.get("options").and_then(Value::as_array) {
                out.extend(group.iter().filter_map(|g| g.get("value").and_then(Value::as_str).map(str::to_owned)));
            }
        }
    }
    out
}
