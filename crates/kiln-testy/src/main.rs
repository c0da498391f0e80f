//! `kiln-testy`: a deterministic ACP agent over stdio, for the bridge's
//! tests (after the ACP SDK's `testy`).
//!
//! Every line of a prompt is one command, run in order:
//!
//! | command | does |
//! |---|---|
//! | `say TEXT` | streams TEXT as three `agent_message_chunk`s |
//! | `think TEXT` | one `agent_thought_chunk` |
//! | `plan` | a two-entry plan |
//! | `usage` | a `usage_update` |
//! | `write PATH TEXT` | tool call (edit) + `fs/write_text_file`; `\n` in TEXT is a newline |
//! | `read PATH` | tool call (read) + `fs/read_text_file`, the content as its output |
//! | `run CMD` | tool call (execute) + `terminal/create`, wait, output, release |
//! | `permission` | `session/request_permission` with options in shuffled order; says the chosen id |
//! | `sleep MS` | waits, unless cancelled (then the turn ends `cancelled`) |
//! | `env NAME` | says the variable's value (or `<unset>`) |
//! | `system` | says the session's system prompt |
//! | `model` | says the current model |
//! | `http URL` | GETs an `http://` URL with a raw HTTP/1.1 request; says status line and body |
//! | `fail` | the prompt request fails with an error |
//! | `exit` | the process exits at once |
//!
//! The model is a config option (category `model`: `testy-small`,
//! `testy-large`). `TESTY_NO_SYSTEM_PROMPT=1` hides the system prompt
//! capability (the bridge then passes it in `_meta`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, CreateTerminalRequest, InitializeRequest, InitializeResponse, NewSessionRequest,
    NewSessionResponse, PromptRequest, PromptResponse, ReadTextFileRequest, ReleaseTerminalRequest,
    RequestPermissionRequest, SessionNotification, SetSessionConfigOptionRequest, SetSessionConfigOptionResponse,
    TerminalOutputRequest, WaitForTerminalExitRequest, WriteTextFileRequest,
};
use agent_client_protocol::{Agent, ByteStreams, Client, Error};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

const MODELS: [&str; 2] = ["testy-small", "testy-large"];

#[derive(Default)]
struct Session {
    system_prompt: Option<String>,
    model: String,
    cancel: Option<watch::Sender<bool>>,
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("testy builds valid ACP messages")
}

fn options(current: &str) -> Value {
    json!([{
        "id": "model", "name": "Model", "category": "model", "type": "select", "currentValue": current,
        "options": MODELS.iter().map(|m| json!({"value": m, "name": m})).collect::<Vec<_>>(),
    }])
}

struct Turn {
    cx: ConnectionTo<Client>,
    sid: String,
    sessions: Sessions,
    cancel: watch::Receiver<bool>,
    calls: u32,
}

#[allow(clippy::needless_pass_by_value)] // json! only borrows; callers build the values inline
impl Turn {
    fn update(&self, u: Value) -> Result<(), Error> {
        let n = json!({"sessionId": self.sid, "update": u});
        self.cx.send_notification(from::<SessionNotification>(n))
    }

    fn say(&self, text: &str) -> Result<(), Error> {
        let n = text.len().div_ceil(3).max(1);
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(n) {
            let t: String = chunk.iter().collect();
            self.update(json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": t}}))?;
        }
        Ok(())
    }

    fn tool(&mut self, title: &str, kind: &str, input: Value) -> Result<String, Error> {
        self.calls += 1;
        let id = format!("call-{}", self.calls);
        let call = json!({"sessionUpdate": "tool_call", "toolCallId": id, "title": title, "kind": kind,
            "status": "pending", "rawInput": input});
        self.update(call)?;
        self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress"}))?;
        Ok(id)
    }

    fn finish(&self, id: &str, result: Result<String, Error>) -> Result<(), Error> {
        let (status, text) = match result {
            Ok(t) => ("completed", t),
            Err(e) => ("failed", format!("error {}: {}", i32::from(e.code), e.message)),
        };
        self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": status,
            "content": [{"type": "content", "content": {"type": "text", "text": text}}]}))
    }

    async fn request<R: agent_client_protocol::JsonRpcRequest>(&self, r: R) -> Result<R::Response, Error> {
        self.cx.send_request(r).block_task().await
    }

    /// Runs the script; Some(reason) ends the turn early.
    async fn run(&mut self, script: &str) -> Result<&'static str, Error> {
        for line in script.lines() {
            if *self.cancel.borrow() {
                return Ok("cancelled");
            }
            let (cmd, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            match cmd {
                "" => {}
                "say" => self.say(rest)?,
                "think" => self.update(
                    json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": rest}}),
                )?,
                "plan" => self.update(json!({"sessionUpdate": "plan", "entries": [
                    {"content": "Write the app", "priority": "high", "status": "in_progress"},
                    {"content": "Check it in the browser", "priority": "medium", "status": "pending"}]}))?,
                "usage" => self.update(json!({"sessionUpdate": "usage_update", "used": 1234, "size": 200000}))?,
                "write" => {
                    let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    let text = text.replace("\\n", "\n");
                    let id = self.tool(&format!("Write {path}"), "edit", json!({"path": path}))?;
                    let r = self
                        .request(from::<WriteTextFileRequest>(
                            json!({"sessionId": self.sid, "path": path, "content": text}),
                        ))
                        .await
                        .map(|_| format!("wrote {} bytes", text.len()));
                    self.finish(&id, r)?;
                }
                "read" => {
                    let id = self.tool(&format!("Read {rest}"), "read", json!({"path": rest}))?;
                    let r = self
                        .request(from::<ReadTextFileRequest>(json!({"sessionId": self.sid, "path": rest})))
                        .await
                        .map(|r| r.content);
                    self.finish(&id, r)?;
                }
                "run" => {
                    let id = self.tool(&format!("Run {rest}"), "execute", json!({"command": rest}))?;
                    let r = self.terminal(rest).await;
                    self.finish(&id, r)?;
                }
                "permission" => {
                    let req = from::<RequestPermissionRequest>(json!({"sessionId": self.sid,
                        "toolCall": {"toolCallId": "perm-1", "title": "Delete everything"},
                        "options": [
                            {"optionId": "no-always", "name": "Never", "kind": "reject_always"},
                            {"optionId": "yes-always", "name": "Always", "kind": "allow_always"},
                            {"optionId": "yes-once", "name": "Once", "kind": "allow_once"},
                            {"optionId": "no-once", "name": "Not now", "kind": "reject_once"}]}));
                    let resp = self.request(req).await?;
                    let v = serde_json::to_value(&resp.outcome).unwrap_or_default();
                    let chosen = v.get("optionId").and_then(Value::as_str).unwrap_or("cancelled").to_owned();
                    self.say(&format!("permission: {chosen}"))?;
                }
                "sleep" => {
                    let ms: u64 = rest.parse().unwrap_or(1000);
                    let mut c = self.cancel.clone();
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = c.wait_for(|x| *x) => return Ok("cancelled"),
                    }
                }
                "stderr" => {
                    // `stderr <MiB>`: floods stderr (half in lines, half in
                    // one line without an end), as a broken agent might.
                    use std::io::Write;
                    let mib: usize = rest.parse().unwrap_or(1);
                    let mut err = std::io::stderr().lock();
                    let line = format!("{}\n", "x".repeat(1023));
                    for _ in 0..mib * 512 {
                        let _ = err.write_all(line.as_bytes());
                    }
                    let _ = err.write_all(&vec![b'y'; mib * 512 * 1024]);
                    let _ = err.write_all(b"\n");
                    self.say("flooded")?;
                }
                "env" => self.say(&std::env::var(rest).unwrap_or_else(|_| "<unset>".into()))?,
                "system" => {
                    let p = self.sessions.lock().unwrap().get(&self.sid).and_then(|s| s.system_prompt.clone());
                    self.say(&p.unwrap_or_else(|| "<none>".into()))?;
                }
                "model" => {
                    let m = self.sessions.lock().unwrap().get(&self.sid).map(|s| s.model.clone()).unwrap_or_default();
                    self.say(&m)?;
                }
                "http" => {
                    let out = http(rest, None).await.unwrap_or_else(|e| format!("http error: {e}"));
                    self.say(&out)?;
                }
                "post" => {
                    // `post <url> <json body>`: an Anthropic-style POST.
                    let (url, body) = rest.split_once(' ').unwrap_or((rest, "{}"));
                    let out = http(url, Some(body)).await.unwrap_or_else(|e| format!("http error: {e}"));
                    self.say(&out)?;
                }
                "fail" => return Err(Error::new(-32603, "testy was told to fail")),
                "exit" => std::process::exit(3),
                other => self.say(&format!("unknown command {other:?}"))?,
            }
        }
        Ok("end_turn")
    }

    async fn terminal(&self, command: &str) -> Result<String, Error> {
        let t = self
            .request(from::<CreateTerminalRequest>(
                json!({"sessionId": self.sid, "command": command, "outputByteLimit": 4096}),
            ))
            .await?;
        let tid = t.terminal_id.0.to_string();
        let ids = json!({"sessionId": self.sid, "terminalId": tid});
        let exit = self.request(from::<WaitForTerminalExitRequest>(ids.clone())).await?;
        let out = self.request(from::<TerminalOutputRequest>(ids.clone())).await?;
        self.request(from::<ReleaseTerminalRequest>(ids)).await?;
        let code = serde_json::to_value(&exit).unwrap_or_default();
        Ok(format!("{}exit: {}", out.output, code.get("exitCode").cloned().unwrap_or(Value::Null)))
    }
}

async fn http(url: &str, post: Option<&str>) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_default();
    let head = match post {
        None => format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"),
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    };
    s.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    Ok(format!("{status}\n{body}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sessions: Sessions = Arc::default();
    let (s1, s2, s3, s4) = (sessions.clone(), sessions.clone(), sessions.clone(), sessions);
    let transport = ByteStreams::new(tokio::io::stdout().compat_write(), tokio::io::stdin().compat());
    Agent
        .v1()
        .name("kiln-testy")
        .on_receive_request(
            async move |r: InitializeRequest, responder, _cx| {
                let system_prompt = std::env::var("TESTY_NO_SYSTEM_PROMPT").is_err();
                let mut caps = json!({"loadSession": false, "promptCapabilities": {}, "mcpCapabilities": {}});
                if system_prompt {
                    caps["sessionCapabilities"] = json!({"systemPrompt": {}});
                }
                responder.respond(from::<InitializeResponse>(json!({
                    "protocolVersion": serde_json::to_value(r.protocol_version).unwrap_or(json!(1)),
                    "agentCapabilities": caps,
                    "agentInfo": {"name": "kiln-testy", "version": env!("CARGO_PKG_VERSION")},
                })))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: NewSessionRequest, responder, _cx| {
                let v = serde_json::to_value(&r).unwrap_or_default();
                let prompt = v
                    .pointer("/systemPrompt/content/0/text")
                    .or_else(|| v.pointer("/_meta/systemPrompt/append"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let id = format!("testy-{}", s1.lock().unwrap().len() + 1);
                s1.lock()
                    .unwrap()
                    .insert(id.clone(), Session { system_prompt: prompt, model: MODELS[0].into(), cancel: None });
                responder
                    .respond(from::<NewSessionResponse>(json!({"sessionId": id, "configOptions": options(MODELS[0])})))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: SetSessionConfigOptionRequest, responder, _cx| {
                let v = serde_json::to_value(&r).unwrap_or_default();
                let value = v.get("value").and_then(Value::as_str).unwrap_or_default().to_owned();
                let sid = r.session_id.0.to_string();
                if v.get("configId").and_then(Value::as_str) != Some("model") || !MODELS.contains(&value.as_str()) {
                    return responder.respond_with_error(Error::new(-32602, format!("no such option value {value:?}")));
                }
                match s2.lock().unwrap().get_mut(&sid) {
                    Some(s) => s.model = value.clone(),
                    None => return responder.respond_with_error(Error::new(-32602, "unknown session")),
                }
                responder.respond(from::<SetSessionConfigOptionResponse>(json!({"configOptions": options(&value)})))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |n: CancelNotification, _cx| {
                if let Some(tx) = s3.lock().unwrap().get(n.session_id.0.as_ref()).and_then(|s| s.cancel.as_ref()) {
                    tx.send_replace(true);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |r: PromptRequest, responder, cx: ConnectionTo<Client>| {
                let sid = r.session_id.0.to_string();
                let (tx, rx) = watch::channel(false);
                match s4.lock().unwrap().get_mut(&sid) {
                    Some(s) => s.cancel = Some(tx),
                    None => return responder.respond_with_error(Error::new(-32602, "unknown session")),
                }
                let v = serde_json::to_value(&r.prompt).unwrap_or_default();
                let script: String = v
                    .as_array()
                    .map(|a| {
                        a.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                    })
                    .unwrap_or_default();
                let sessions = s4.clone();
                let c2 = cx.clone();
                cx.spawn(async move {
                    let mut turn = Turn { cx: c2, sid, sessions, cancel: rx, calls: 0 };
                    match turn.run(&script).await {
                        Ok(reason) => responder.respond(from::<PromptResponse>(json!({"stopReason": reason}))),
                        Err(e) => responder.respond_with_error(e),
                    }
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_to(transport)
        .await
}
