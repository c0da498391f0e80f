//! kiln-agent as an ACP agent: `initialize`, `session/new`,
//! `session/set_config_option` (the model), `session/prompt`, `session/cancel`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, InitializeRequest, InitializeResponse, NewSessionRequest, NewSessionResponse, PromptRequest,
    PromptResponse, SetSessionConfigOptionRequest, SetSessionConfigOptionResponse,
};
use agent_client_protocol::{Agent, Client, ConnectTo, Error};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::acp_workspace::{AcpWorkspace, ClientCaps};
use crate::config::{AgentConfig, ModelChoice};
use crate::mcp::{McpServers, ServerSpec};
use crate::model::{Message, RetryPolicy};
use crate::tools::LocalWorkspace;

/// Used when the client sends no system prompt.
pub const DEFAULT_SYSTEM: &str = "You are a careful software engineer working on the project in the current directory. \
Use the tools to read, change and run it. Edit files rather than rewrite them, and check your work before you finish.";

struct Session {
    system: String,
    history: Vec<Message>,
    model: Option<ModelChoice>,
    /// The provider for `model`, made once (a script's position is kept
    /// across turns).
    provider: Option<(ModelChoice, Arc<dyn crate::model::ModelProvider>, String)>,
    mcp: Arc<McpServers>,
    cwd: PathBuf,
}

#[derive(Clone)]
struct State {
    cfg: Arc<AgentConfig>,
    caps: Arc<Mutex<ClientCaps>>,
    sessions: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>>,
    cancels: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
    retry: RetryPolicy,
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid ACP message")
}

impl State {
    fn options(&self, current: Option<&ModelChoice>) -> Value {
        let mut values: Vec<Value> =
            self.cfg.offered.iter().map(|m| json!({"value": m.id(), "name": m.id()})).collect();
        let current_id = current.map(ModelChoice::id).unwrap_or_else(|| self.cfg.offered[0].id());
        if !self.cfg.offered.iter().any(|m| m.id() == current_id) {
            values.insert(0, json!({"value": current_id, "name": current_id}));
        }
        json!([{"id": "model", "name": "Model", "category": "model", "type": "select",
            "currentValue": current_id, "options": values}])
    }

    fn session(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Session>>, Error> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::new(-32602, format!("unknown session {id}")))
    }
}

fn mcp_specs(v: &Value) -> (Vec<ServerSpec>, Vec<(String, String)>) {
    let (mut ok, mut bad) = (vec![], vec![]);
    for s in v.as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("mcp").to_owned();
        match s.get("command").and_then(Value::as_str) {
            Some(cmd) => ok.push(ServerSpec {
                name,
                command: cmd.to_owned(),
                args: s["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect(),
                env: s["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
                    .collect(),
            }),
            None => bad.push((name, "only stdio MCP servers are supported".to_owned())),
        }
    }
    (ok, bad)
}

/// Serves ACP on `transport` until the client goes away.
pub async fn serve(cfg: AgentConfig, transport: impl ConnectTo<Agent> + 'static) -> Result<(), Error> {
    let st = State {
        cfg: Arc::new(cfg),
        caps: Arc::default(),
        sessions: Arc::default(),
        cancels: Arc::default(),
        next: Arc::default(),
        retry: RetryPolicy::default(),
    };
    let (s1, s2, s3, s4, s5) = (st.clone(), st.clone(), st.clone(), st.clone(), st);
    Agent
        .v1()
        .name("kiln-agent")
        .on_receive_request(
            async move |r: InitializeRequest, responder, _cx| {
                let v = serde_json::to_value(&r).unwrap_or_default();
                *s1.caps.lock().unwrap() = ClientCaps::from_json(v.get("clientCapabilities").unwrap_or(&Value::Null));
                responder.respond(from::<InitializeResponse>(json!({
                    "protocolVersion": serde_json::to_value(r.protocol_version).unwrap_or(json!(1)),
                    "agentCapabilities": {
                        "loadSession": false,
                        "promptCapabilities": {"image": false, "audio": false, "embeddedContext": false},
                        "mcpCapabilities": {"http": false, "sse": false},
                        "sessionCapabilities": {"systemPrompt": {}},
                    },
                    "agentInfo": {"name": "kiln-agent", "title": "Kiln", "version": env!("CARGO_PKG_VERSION")},
                    "authMethods": [],
                })))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: NewSessionRequest, responder, cx: ConnectionTo<Client>| {
                let st = s2.clone();
                cx.spawn(async move {
                    let v = serde_json::to_value(&r).unwrap_or_default();
                    let cwd = crate::acp_workspace::cwd_of(&v);
                    let system = v
                        .pointer("/systemPrompt/content/0/text")
                        .or_else(|| v.pointer("/_meta/systemPrompt/append"))
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_SYSTEM)
                        .to_owned();
                    let (specs, unsupported) = mcp_specs(v.get("mcpServers").unwrap_or(&Value::Null));
                    let mut mcp = McpServers::start(&specs, &cwd).await;
                    mcp.failed.extend(unsupported);
                    let mut system = system;
                    for (name, why) in &mcp.failed {
                        system.push_str(&format!("\n\n(The MCP server {name} is unavailable in this session: {why}.)"));
                    }
                    let n = st.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let id = format!("kiln-{}-{n}", std::process::id());
                    let model = st.cfg.model.clone();
                    let options = st.options(model.as_ref());
                    let session = Session { system, history: vec![], model, provider: None, mcp: Arc::new(mcp), cwd };
                    st.sessions.lock().unwrap().insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
                    responder.respond(from::<NewSessionResponse>(json!({"sessionId": id, "configOptions": options})))
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: SetSessionConfigOptionRequest, responder, _cx| {
                let v = serde_json::to_value(&r).unwrap_or_default();
                let value = v["value"].as_str().unwrap_or_default().to_owned();
                if v["configId"].as_str() != Some("model") {
                    return responder.respond_with_error(Error::new(-32602, "the only option is `model`"));
                }
                let choice = match ModelChoice::parse(&value) {
                    Ok(c) => c,
                    Err(e) => return responder.respond_with_error(Error::new(-32602, e)),
                };
                let sid = r.session_id.0.to_string();
                let session = match s3.session(&sid) {
                    Ok(s) => s,
                    Err(e) => return responder.respond_with_error(e),
                };
                let Ok(mut s) = session.try_lock() else {
                    return responder.respond_with_error(Error::new(-32602, "a turn is running; change the model after it"));
                };
                s.model = Some(choice.clone());
                responder.respond(from::<SetSessionConfigOptionResponse>(json!({"configOptions": s3.options(Some(&choice))})))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |n: CancelNotification, _cx| {
                if let Some(tx) = s4.cancels.lock().unwrap().get(n.session_id.0.as_ref()) {
                    tx.send_replace(true);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |r: PromptRequest, responder, cx: ConnectionTo<Client>| {
                let st = s5.clone();
                let c2 = cx.clone();
                cx.spawn(async move {
                    let sid = r.session_id.0.to_string();
                    let session = match st.session(&sid) {
                        Ok(s) => s,
                        Err(e) => return responder.respond_with_error(e),
                    };
                    let v = serde_json::to_value(&r.prompt).unwrap_or_default();
                    let text: String = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|b| match b["type"].as_str() {
                            Some("text") => b["text"].as_str().map(str::to_owned),
                            Some("resource_link") => b["uri"].as_str().map(|u| format!("[{u}]")),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    let (tx, rx) = watch::channel(false);
                    st.cancels.lock().unwrap().insert(sid.clone(), tx);
                    let mut s = session.lock().await;
                    let Some(choice) = s.model.clone() else {
                        return responder.respond_with_error(Error::new(
                            -32000,
                            "no model is configured: set KILN_MODEL (anthropic:<model>, openai:<model> or scripted:<path>) or ANTHROPIC_API_KEY",
                        ));
                    };
                    if s.provider.as_ref().is_none_or(|(c, _, _)| *c != choice) {
                        match st.cfg.provider(&choice) {
                            Ok((p, m)) => s.provider = Some((choice.clone(), p, m)),
                            Err(e) => return responder.respond_with_error(Error::new(-32602, e)),
                        }
                    }
                    let (_, provider, model) = s.provider.clone().expect("set above");
                    let caps = *st.caps.lock().unwrap();
                    let ws = AcpWorkspace { cx: c2.clone(), session: sid.clone(), caps, local: LocalWorkspace { root: s.cwd.clone() } };
                    let mcp = s.mcp.clone();
                    s.history.push(Message::user(text));
                    let turn = crate::turn::Turn {
                        cx: c2,
                        session: sid.clone(),
                        provider,
                        model,
                        system: s.system.clone(),
                        ws: &ws,
                        mcp: &mcp,
                        cfg: &st.cfg,
                        cancel: rx,
                        retry: st.retry.clone(),
                    };
                    let result = turn.run(&mut s.history).await;
                    st.cancels.lock().unwrap().remove(&sid);
                    match result {
                        Ok(end) => responder.respond(from::<PromptResponse>(json!({"stopReason": end.acp()}))),
                        Err(e) => responder.respond_with_error(Error::new(-32603, e.to_string())),
                    }
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_to(transport)
        .await
}
