//! `kiln chat`: a terminal client of the builder's chat API. Prints the
//! events as they stream (readable by default, raw NDJSON with `--json`) and
//! exits non-zero when the turn reports an `error`.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kiln_types::chat::{ChatEvent, EventBody, StopReason, ToolStatus};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// The server (default: $KILN_SERVER, else http://127.0.0.1:8080).
    #[arg(long)]
    server: Option<String>,
    /// The session to continue (a UUID); a new session when absent.
    #[arg(long)]
    session: Option<String>,
    /// vm: an agent in a sandbox; quick: one HTML file.
    #[arg(long, default_value = "vm", value_parser = ["vm", "quick"])]
    mode: String,
    /// Answer with the recorded demo replay.
    #[arg(long)]
    demo: bool,
    /// Print the raw NDJSON events.
    #[arg(long)]
    json: bool,
    /// What to build or change.
    prompt: String,
}

fn new_key() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    // A version-4 UUID, as crypto.randomUUID() makes.
    let v = format!("4{}", &h[13..16]);
    let var = format!("{:x}{}", (u8::from_str_radix(&h[16..17], 16).unwrap_or(8) & 0x3) | 0x8, &h[17..20]);
    format!("{}-{}-{v}-{var}-{}", &h[..8], &h[8..12], &h[20..32])
}

pub async fn run(a: ChatArgs) -> anyhow::Result<u8> {
    let server =
        a.server.or_else(|| std::env::var("KILN_SERVER").ok()).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let key = match a.session {
        Some(k) => k,
        None => {
            let k = new_key();
            eprintln!("session {k} (continue it with --session {k})");
            k
        }
    };
    let body = serde_json::json!({ "sessionKey": key, "prompt": a.prompt, "mode": a.mode, "demo": a.demo }).to_string();
    let uri: http::Uri = format!("{}/api/chat", server.trim_end_matches('/')).parse().context("bad --server URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// server URLs are supported");
    }
    let host = uri.host().context("--server has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/api/chat")
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let b = body.collect().await?.to_bytes();
        let msg = serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned());
        eprintln!("kiln chat: the server refused ({status}): {msg}");
        return Ok(2);
    }
    let mut printer = Printer { json: a.json, failed: false, in_text: false, titles: Default::default() };
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            printer.line(&line)?;
        }
    }
    if !buf.is_empty() {
        printer.line(&buf)?;
    }
    printer.end_text();
    Ok(if printer.failed { 1 } else { 0 })
}

struct Printer {
    json: bool,
    failed: bool,
    in_text: bool,
    /// Tool call titles by id (updates carry only what changed).
    titles: std::collections::HashMap<String, String>,
}

impl Printer {
    fn end_text(&mut self) {
        if self.in_text {
            println!();
            self.in_text = false;
        }
    }

    fn line(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        let text = std::str::from_utf8(raw).context("the server sent a line that is not UTF-8")?.trim();
        if text.is_empty() {
            return Ok(());
        }
        let ev: ChatEvent = serde_json::from_str(text).with_context(|| format!("not a chat event: {text}"))?;
        if matches!(ev.body, EventBody::Error { .. })
            || matches!(ev.body, EventBody::Done { stop_reason: StopReason::Error })
        {
            self.failed = true;
        }
        if self.json {
            println!("{text}");
            return Ok(());
        }
        use std::io::Write;
        match ev.body {
            EventBody::Text { delta } | EventBody::Html { delta } => {
                print!("{delta}");
                let _ = std::io::stdout().flush();
                self.in_text = true;
            }
            EventBody::Thought { .. } | EventBody::Usage(_) | EventBody::Plan { .. } => {}
            other => {
                self.end_text();
                if let EventBody::ToolCall(t) = &other
                    && let Some(title) = &t.title
                {
                    self.titles.insert(t.id.clone(), title.clone());
                }
                if let Some(s) = describe(&other, &self.titles) {
                    println!("{s}");
                }
            }
        }
        Ok(())
    }
}

fn describe(b: &EventBody, titles: &std::collections::HashMap<String, String>) -> Option<String> {
    Some(match b {
        EventBody::Session { mode, sandbox_id, preview_url, warm, claim_ms, boot_ms, model, .. } => {
            let start = match (warm, claim_ms, boot_ms) {
                (true, Some(ms), _) => format!("warm, {ms} ms"),
                (_, _, Some(ms)) => format!("cold boot, {ms} ms"),
                _ => "ready".into(),
            };
            let m = model.as_deref().map(|m| format!(" · model {m}")).unwrap_or_default();
            let sb = sandbox_id.as_deref().map(|s| format!(" sandbox {s}")).unwrap_or_default();
            format!("▸ {}{sb} ({start}){m}\n  preview: {preview_url}", mode.as_str())
        }
        EventBody::Boot { phase, ms } => format!("  booting: {phase} ({ms} ms)"),
        EventBody::ToolCall(t) => {
            let status = match t.status {
                Some(ToolStatus::Completed) => "✓",
                Some(ToolStatus::Failed) => "✗",
                Some(ToolStatus::InProgress) => return None,
                _ => "·",
            };
            let title = titles.get(&t.id).unwrap_or(&t.id);
            format!("  {status} {title}")
        }
        EventBody::File { path, op } => {
            format!("  {} {path}", if matches!(op, kiln_types::chat::FileOp::Delete) { "−" } else { "+" })
        }
        EventBody::Version(v) => {
            format!("✓ version {} ({} files): {}", &v.sha[..7.min(v.sha.len())], v.files.len(), v.message)
        }
        EventBody::Error { code, message, .. } => format!("✗ error ({code}): {message}"),
        EventBody::Done { stop_reason } => format!("■ done: {}", serde_json::to_value(stop_reason).ok()?.as_str()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_keys_are_uuids_the_server_accepts() {
        for _ in 0..50 {
            let k = super::new_key();
            assert!(k.parse::<kiln_types::SessionKey>().is_ok(), "{k}");
        }
    }
}
