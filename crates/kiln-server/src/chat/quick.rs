//! Quick mode: no sandbox. The model writes one self-contained HTML file;
//! its text streams to the browser as `html` deltas (rendered progressively
//! in a sandboxed iframe), and the finished file becomes a version of the
//! session's quick app, served at `/q/<id>` under a strict CSP.
//!
//! The quick app's versions are a git directory like any app's
//! (`<data>/apps/quick-<id>.git`, one file: `index.html`). Its id is random
//! and public (it is in the share link); the app id and its owner's key stay private.

use std::sync::{Arc, Mutex};

use kiln_agent::model::{Message, ModelRequest, RetryPolicy, StreamEvent, call_with_retries};
use kiln_types::chat::{ChatMode, EventBody, StopReason, VersionEvent};
use kiln_versions::{AppRepo, Entry, Snapshot};

use super::{Prompt, Turn};
use crate::serve::AppState;

/// The instructions Quick mode gives the model (reviewed like code).
pub const QUICK_PROMPT: &str = include_str!("../../../../prompts/quick.md");
/// Largest HTML file kept.
pub const MAX_HTML: usize = 2 * 1024 * 1024;

/// A quick app id: 128 random bits, hex.
pub fn valid_quick_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn repo(st: &AppState, id: &str) -> Result<AppRepo, kiln_versions::VersionsError> {
    assert!(valid_quick_id(id));
    AppRepo::open(&st.cfg.data_dir, &format!("quick-{id}"))
}

/// The HTML of a quick app's version (`None`: the newest).
pub fn html_at(st: &AppState, id: &str, sha: Option<&str>) -> Result<Option<Vec<u8>>, kiln_versions::VersionsError> {
    let repo = repo(st, id)?;
    let Some(sha) = sha.map(str::to_owned).or(repo.head()?) else { return Ok(None) };
    let snap = repo.files_at(&sha)?;
    Ok(snap.entries.get("index.html").map(|e| e.bytes().to_vec()))
}

/// The document inside a model's answer: without a Markdown fence or any
/// chatter around `<!doctype html>` … `</html>`.
pub fn extract_html(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<!doctype").or_else(|| lower.find("<html")).unwrap_or(0);
    let end = lower.rfind("</html>").map(|i| i + "</html>".len()).unwrap_or(text.len());
    let body = if start < end { &text[start..end] } else { text };
    body.trim().trim_start_matches("```html").trim_start_matches("```").trim_end_matches("```").trim().to_owned()
}

pub async fn run(st: &Arc<AppState>, p: &Prompt, mut turn: Turn) {
    if !st.models.configured() && !p.demo {
        let msg = format!("No model is configured. {} Or try the demo (a recorded replay).", crate::models::HOW_TO);
        return turn.fail("no_model", msg, false);
    }
    let new_id = hex::encode(rand::random::<[u8; 16]>());
    let id = match st.pool.store().quick_app(p.app.as_str(), &new_id, crate::now_ms()).await {
        Ok(id) if valid_quick_id(&id) => id,
        Ok(id) => {
            tracing::error!(id, "the store holds a malformed quick app id");
            return turn.fail("internal", "internal error; the server log has the details", true);
        }
        Err(e) => {
            tracing::error!(error = %e, "recording the quick app failed");
            return turn.fail("internal", "internal error; the server log has the details", true);
        }
    };
    let provider = match st.chat_models.quick(p.app.as_str(), p.demo, &st.models) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "the quick model could not be set up");
            return turn.fail("no_model", e.to_string(), false);
        }
    };
    turn.emit(EventBody::Session {
        mode: ChatMode::Quick,
        sandbox_id: None,
        app_id: p.app.to_string(),
        preview_url: format!("{}/q/{id}", st.cfg.edge.public_url),
        warm: true,
        claim_ms: Some(0),
        boot_ms: None,
        model: Some(if p.demo { crate::models::DEMO.to_owned() } else { provider.1.clone() }),
        prompt: p.text.clone(),
    });
    let current = {
        let (st2, id2) = (st.clone(), id.clone());
        tokio::task::spawn_blocking(move || html_at(&st2, &id2, None)).await.ok().and_then(Result::ok).flatten()
    };
    let user = match current {
        Some(html) => format!(
            "Here is the current app:\n\n{}\n\nChange it as follows, and answer with the whole new file:\n{}",
            String::from_utf8_lossy(&html),
            p.text
        ),
        None => p.text.clone(),
    };
    let req = ModelRequest {
        model: provider.1.clone(),
        system: QUICK_PROMPT.to_owned(),
        messages: vec![Message::user(user)],
        tools: vec![],
        max_tokens: 16_000,
    };
    // Deltas leave the sink synchronously; the turn emits them in order.
    let pending = Mutex::new(Vec::new());
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<()>();
    let sink = |e: StreamEvent| {
        pending.lock().unwrap().push(match e {
            StreamEvent::Text(t) => EventBody::Html { delta: t },
            StreamEvent::Thinking(t) => EventBody::Thought { delta: t },
        });
        let _ = wake.send(());
    };
    let cancel = turn.cancel_token();
    let policy = RetryPolicy::default();
    let call = call_with_retries(provider.0.as_ref(), &req, &sink, &policy);
    tokio::pin!(call);
    let reply = loop {
        tokio::select! {
            r = &mut call => break Some(r),
            Some(()) = woken.recv() => {
                for ev in pending.lock().unwrap().drain(..) {
                    turn.emit(ev);
                }
            }
            () = cancel.cancelled() => break None,
        }
    };
    for ev in pending.lock().unwrap().drain(..) {
        turn.emit(ev);
    }
    let reply = match reply {
        None => return turn.finish(StopReason::Cancelled),
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "quick model call failed");
            return turn.fail("model_error", e.to_string(), e.retryable());
        }
    };
    let html = extract_html(&reply.text());
    if html.is_empty() || html.len() > MAX_HTML {
        return turn.fail(
            "model_error",
            "The model's answer held no HTML page (or one over 2 MiB); try rephrasing.",
            true,
        );
    }
    let (st2, id2, msg) = (st.clone(), id.clone(), p.text.clone());
    let committed = tokio::task::spawn_blocking(move || {
        let repo = repo(&st2, &id2)?;
        let mut snap = Snapshot::default();
        snap.entries.insert("index.html".into(), Entry::File { data: html.into_bytes(), executable: false });
        repo.commit(&snap, &msg)
    })
    .await;
    match committed {
        Ok(Ok(Some(v))) => turn.emit(EventBody::Version(VersionEvent {
            sha: v.sha,
            parent: v.parent,
            message: v.message,
            files: v.files,
        })),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing a quick version failed");
            turn.emit(EventBody::Error {
                code: "version_failed".into(),
                message: "The page could not be saved as a version.".into(),
                retryable: true,
            });
        }
        Err(e) => tracing::error!(error = %e, "the quick version task panicked"),
    }
    let usage = kiln_types::chat::Usage {
        input_tokens: Some(reply.usage.input),
        output_tokens: Some(reply.usage.output),
        ..Default::default()
    };
    turn.emit(EventBody::Usage(usage));
    turn.finish(StopReason::EndTurn);
}

/// Quick-mode providers per session: a script's position (the demo's, a
/// test's) belongs to the session, so the provider is kept between turns.
#[derive(Default)]
pub struct QuickProviders {
    by_session: Mutex<std::collections::HashMap<(String, bool), QuickProvider>>,
}

type QuickProvider = (Arc<dyn kiln_agent::model::ModelProvider>, String);

impl QuickProviders {
    pub fn quick(
        &self,
        key: &str,
        demo: bool,
        models: &crate::models::Models,
    ) -> Result<QuickProvider, crate::models::ModelsError> {
        let mut m = self.by_session.lock().unwrap();
        if m.len() > 10_000 {
            m.clear();
        }
        if let Some(p) = m.get(&(key.to_owned(), demo)) {
            return Ok(p.clone());
        }
        let p = models.quick_provider(demo)?;
        m.insert((key.to_owned(), demo), p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_cut_out_of_chatter_and_fences() {
        let doc = "<!doctype html>\n<html><body>hi</body></html>";
        assert_eq!(extract_html(doc), doc);
        assert_eq!(extract_html(&format!("Sure! Here it is:\n```html\n{doc}\n```\nEnjoy.")), doc);
        assert_eq!(extract_html("<html><p>x</p></html> trailing"), "<html><p>x</p></html>");
        assert_eq!(extract_html("no html at all"), "no html at all");
        assert!(valid_quick_id(&"a".repeat(32)));
        assert!(!valid_quick_id(&"A".repeat(32)));
        assert!(!valid_quick_id("../../etc"));
    }
}
