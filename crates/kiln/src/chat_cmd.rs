//! `kiln chat`: a terminal client of the builder's chat API. Prints the
//! events as they stream (readable by default, raw NDJSON with `--json`) and
//! exits non-zero when the turn reports an `error`.
//!
//! The owner key goes in the `X-Kiln-Key` header, never in a URL or on
//! stdout: `--key`, else `$KILN_KEY`, else the key kept in
//! `~/.config/kiln/key` (made, mode 0600, on first use). The app id the
//! server answers with is printed to stderr so the next call can continue
//! the app with `--app`.
//!
//! Most of what it prints was written in a sandbox (the agent's text, tool
//! titles, file names), so every such string goes through
//! [`escape_control`] first: a file named with a newline or an ANSI escape
//! sequence shows as `\n` or `\x1b[…`, and cannot clear the terminal,
//! recolour it or forge a line of output.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kiln_types::app::OWNER_HEADER;
use kiln_types::chat::{ChatEvent, EventBody, StopReason, ToolStatus, escape_control, escape_control_text};
use kiln_types::{AppId, OwnerKey};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// The server (default: $KILN_SERVER, else http://127.0.0.1:8080).
    #[arg(long)]
    server: Option<String>,
    /// Your owner key (a UUID); default $KILN_KEY, else the one kept in
    /// ~/.config/kiln/key (made on first use).
    #[arg(long)]
    key: Option<String>,
    /// The app to continue (its id); a new app when absent.
    #[arg(long)]
    app: Option<String>,
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

/// Where the default owner key is kept.
fn key_file() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
    Some(base.join("kiln").join("key"))
}

/// The key in `path`, or a new one written there (0600) on first use.
fn load_or_create_key(path: &std::path::Path) -> anyhow::Result<OwnerKey> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().with_context(|| format!("{} does not hold an owner key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let k = new_key();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(f, "{k}")?;
            eprintln!(
                "kiln chat: made a new owner key in {} (your apps belong to it; keep it private)",
                path.display()
            );
            Ok(k.parse()?)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn owner_key(flag: Option<String>) -> anyhow::Result<OwnerKey> {
    if let Some(k) = flag.or_else(|| std::env::var("KILN_KEY").ok()) {
        return Ok(k.trim().parse()?);
    }
    let path = key_file().context("neither --key, $KILN_KEY, $XDG_CONFIG_HOME nor $HOME is set")?;
    load_or_create_key(&path)
}

pub async fn run(a: ChatArgs) -> anyhow::Result<u8> {
    let server =
        a.server.or_else(|| std::env::var("KILN_SERVER").ok()).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let key = owner_key(a.key)?;
    let app: Option<AppId> = a.app.as_deref().map(str::parse).transpose()?;
    let mut body = serde_json::json!({ "prompt": a.prompt, "mode": a.mode, "demo": a.demo });
    if let Some(app) = &app {
        body["appId"] = app.as_str().into();
    }
    let body = body.to_string();
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
        .header(OWNER_HEADER, key.expose())
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
        eprintln!("kiln chat: the server refused ({status}): {}", escape_control(&msg));
        return Ok(2);
    }
    let mut printer =
        Printer { json: a.json, failed: false, in_text: false, app_shown: false, titles: Default::default() };
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
    app_shown: bool,
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
        let ev: ChatEvent =
            serde_json::from_str(text).with_context(|| format!("not a chat event: {}", escape_control(text)))?;
        if matches!(ev.body, EventBody::Error { .. })
            || matches!(ev.body, EventBody::Done { stop_reason: StopReason::Error })
        {
            self.failed = true;
        }
        if let EventBody::Session { app_id, .. } = &ev.body
            && !self.app_shown
        {
            // On stderr: --json keeps stdout pure NDJSON.
            let id = escape_control(app_id);
            eprintln!("app {id} (continue it with --app {id})");
            self.app_shown = true;
        }
        if self.json {
            println!("{}", json_safe(text));
            return Ok(());
        }
        use std::io::Write;
        match ev.body {
            EventBody::Text { delta } | EventBody::Html { delta } => {
                print!("{}", escape_control_text(&delta));
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
                    println!("{}", escape_control_text(&s));
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
            let m = model.as_deref().map(|m| format!(" · model {}", escape_control(m))).unwrap_or_default();
            let sb = sandbox_id.as_deref().map(|s| format!(" sandbox {}", escape_control(s))).unwrap_or_default();
            format!("▸ {}{sb} ({start}){m}\n  preview: {}", mode.as_str(), escape_control(preview_url))
        }
        EventBody::Boot { phase, ms } => format!("  booting: {} ({ms} ms)", escape_control(phase)),
        EventBody::ToolCall(t) => {
            let status = match t.status {
                Some(ToolStatus::Completed) => "✓",
                Some(ToolStatus::Failed) => "✗",
                Some(ToolStatus::InProgress) => return None,
                _ => "·",
            };
            let title = titles.get(&t.id).unwrap_or(&t.id);
            format!("  {status} {}", escape_control(title))
        }
        EventBody::File { path, op } => {
            let sign = if matches!(op, kiln_types::chat::FileOp::Delete) { "−" } else { "+" };
            format!("  {sign} {}", escape_control(path))
        }
        EventBody::Version(v) => {
            let sha = v.sha.get(..7).unwrap_or(&v.sha);
            format!("✓ version {} ({} files): {}", escape_control(sha), v.files.len(), escape_control(&v.message))
        }
        EventBody::Error { code, message, .. } => {
            format!("✗ error ({}): {}", escape_control(code), escape_control(message))
        }
        EventBody::Done { stop_reason } => format!("■ done: {}", serde_json::to_value(stop_reason).ok()?.as_str()?),
        _ => return None,
    })
}

/// A JSON line as it came, with the characters JSON leaves raw but a
/// terminal acts on (DEL, C1 controls, bidi overrides) written as `\uXXXX`
/// escapes: the same JSON, safe to print. (The server already escapes C0.)
fn json_safe(line: &str) -> std::borrow::Cow<'_, str> {
    if matches!(escape_control(line), std::borrow::Cow::Borrowed(_)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if matches!(escape_control(c.encode_utf8(&mut [0; 4])), std::borrow::Cow::Borrowed(_)) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_strings_are_printed_with_visible_escapes() {
        let titles = Default::default();
        let file = EventBody::File { path: "src/a\nb\x1b[31m.tsx".into(), op: kiln_types::chat::FileOp::Write };
        assert_eq!(describe(&file, &titles).unwrap(), "  + src/a\\nb\\x1b[31m.tsx");
        let err = EventBody::Error { code: "x".into(), message: "\x1b[2Jgone\u{202e}".into(), retryable: true };
        assert_eq!(describe(&err, &titles).unwrap(), "✗ error (x): \\x1b[2Jgone\\u{202e}");
        let line = "{\"delta\":\"a\u{202e}b\u{9b}c\"}";
        let safe = json_safe(line);
        assert_eq!(safe, "{\"delta\":\"a\\u202eb\\u009bc\"}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["delta"], "a\u{202e}b\u{9b}c", "still the same JSON");
    }

    #[test]
    fn new_keys_are_uuids_the_server_accepts() {
        for _ in 0..50 {
            let k = super::new_key();
            assert!(k.parse::<OwnerKey>().is_ok(), "{k}");
        }
    }

    #[test]
    fn the_default_key_is_made_once_private_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln").join("key");
        let first = load_or_create_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), first);
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create_key(&path).unwrap_err().to_string().contains("does not hold an owner key"));
    }
}
