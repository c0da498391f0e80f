//! The scripted provider: replays a JSON file of model turns.
//!
//! For tests and for the clearly labelled demo mode. Each model call takes
//! the next turn of the script; the format is in `docs/scripted-model.md`:
//!
//! ```json
//! {"turns": [
//!   {"text": "I'll build it.", "tool_calls": [{"name": "write_file", "input": {"path": "src/App.tsx", "content": "…"}}]},
//!   {"thinking": "Check it.", "text": "Done: a counter app."}
//! ]}
//! ```

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{Block, ModelError, ModelProvider, ModelRequest, ModelStop, Reply, Sink, StreamEvent, TokenUsage};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub turns: Vec<ScriptTurn>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ScriptCall>,
    /// Pause before the turn (to watch it stream, or to test cancellation).
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCall {
    pub name: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug)]
pub struct Scripted {
    script: Script,
    next: Mutex<usize>,
}

impl Scripted {
    pub fn new(script: Script) -> Scripted {
        Scripted { script, next: Mutex::new(0) }
    }

    /// Reads and checks a script file; errors name the file and the problem.
    pub fn from_file(path: &std::path::Path) -> Result<Scripted, String> {
        let raw = std::fs::read_to_string(path).map_err(|e| format!("cannot read script {}: {e}", path.display()))?;
        let script: Script =
            serde_json::from_str(&raw).map_err(|e| format!("script {} is not valid: {e}", path.display()))?;
        if script.turns.is_empty() {
            return Err(format!("script {} has no turns", path.display()));
        }
        Ok(Scripted::new(script))
    }

    /// Turns not yet played.
    pub fn remaining(&self) -> usize {
        self.script.turns.len() - *self.next.lock().unwrap()
    }
}

#[async_trait]
impl ModelProvider for Scripted {
    async fn call(&self, _req: &ModelRequest, sink: Sink<'_>) -> Result<Reply, ModelError> {
        let (n, turn) = {
            let mut next = self.next.lock().unwrap();
            let turn =
                self.script.turns.get(*next).cloned().ok_or(ModelError::ScriptExhausted(self.script.turns.len()))?;
            *next += 1;
            (*next, turn)
        };
        if turn.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
        }
        let mut content = Vec::new();
        let mut chars = 0;
        if let Some(t) = turn.thinking {
            sink(StreamEvent::Thinking(t.clone()));
            chars += t.len();
            content.push(Block::Thinking { thinking: t, signature: String::new() });
        }
        if let Some(t) = turn.text {
            for word in t.split_inclusive(' ') {
                sink(StreamEvent::Text(word.to_owned()));
            }
            chars += t.len();
            content.push(Block::Text { text: t });
        }
        let calls = !turn.tool_calls.is_empty();
        for (i, c) in turn.tool_calls.into_iter().enumerate() {
            chars += c.input.to_string().len();
            content.push(Block::ToolUse { id: format!("script-{n}-{}", i + 1), name: c.name, input: c.input });
        }
        let stop = if calls { ModelStop::ToolUse } else { ModelStop::EndTurn };
        Ok(Reply { content, stop, usage: TokenUsage { input: 0, output: (chars / 4) as u64 } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, RetryPolicy, call_with_retries};

    fn req() -> ModelRequest {
        ModelRequest {
            model: "scripted".into(),
            system: String::new(),
            messages: vec![Message::user("hi")],
            tools: vec![],
            max_tokens: 100,
        }
    }

    #[tokio::test]
    async fn turns_replay_in_order_and_then_run_out() {
        let script: Script = serde_json::from_str(
            r#"{"turns": [
                {"text": "Writing it.", "tool_calls": [{"name": "write_file", "input": {"path": "a", "content": "b"}}, {"name": "list_files"}]},
                {"thinking": "Looks right.", "text": "Done."}
            ]}"#,
        )
        .unwrap();
        let p = Scripted::new(script);
        let seen = Mutex::new(Vec::new());
        let sink = |e: StreamEvent| seen.lock().unwrap().push(e);
        let r1 = call_with_retries(&p, &req(), &sink, &RetryPolicy::default()).await.unwrap();
        assert_eq!(r1.stop, ModelStop::ToolUse);
        assert_eq!(r1.tool_calls()[1], ("script-1-2", "list_files", &serde_json::json!({})));
        assert_eq!(seen.lock().unwrap()[..2], [StreamEvent::Text("Writing ".into()), StreamEvent::Text("it.".into())]);
        let r2 = p.call(&req(), &sink).await.unwrap();
        assert_eq!((r2.stop.clone(), r2.text()), (ModelStop::EndTurn, "Done.".to_owned()));
        assert_eq!(p.remaining(), 0);
        assert!(matches!(p.call(&req(), &sink).await, Err(ModelError::ScriptExhausted(2))));
    }

    #[test]
    fn bad_scripts_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("kiln-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (body, needle) in
            [("{", "not valid"), (r#"{"turns": []}"#, "no turns"), (r#"{"turns": [{"txt": "typo"}]}"#, "unknown field")]
        {
            let f = dir.join("s.json");
            std::fs::write(&f, body).unwrap();
            let e = Scripted::from_file(&f).unwrap_err();
            assert!(e.contains(needle) && e.contains("s.json"), "{e}");
        }
        assert!(Scripted::from_file(&dir.join("missing.json")).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
