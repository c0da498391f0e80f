//! Kiln's chat events: the one definition of the NDJSON stream that envd
//! produces from ACP `session/update`s, the server extends with `session`,
//! `boot` and `version`, and the browser and `kiln chat` read.
//!
//! One JSON object per line, each carrying `seq` (strictly increasing within a
//! log) and `type`. A client that loses its connection asks for the events
//! after the last `seq` it saw; `docs/chat-events.md` is the prose version.
//!
//! Every string in these events may come from a sandbox (the agent, its
//! commands, file names it chose), so [`escape_control`] lives here too: the
//! one way Kiln renders such a string into a log line or a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One line of the chat stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened. Tagged by `type` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// First event of a chat turn on the server: which sandbox (or, in
    /// quick mode, which quick app) serves it, and the prompt it answers.
    Session {
        mode: ChatMode,
        #[serde(rename = "sandboxId", default, skip_serializing_if = "Option::is_none")]
        sandbox_id: Option<String>,
        #[serde(rename = "appId")]
        app_id: String,
        #[serde(rename = "previewUrl")]
        preview_url: String,
        warm: bool,
        #[serde(rename = "claimMs", default, skip_serializing_if = "Option::is_none")]
        claim_ms: Option<u64>,
        #[serde(rename = "bootMs", default, skip_serializing_if = "Option::is_none")]
        boot_ms: Option<u64>,
        /// The model answering, e.g. `anthropic:claude-sonnet-4-5`, or
        /// `demo` for the scripted replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        prompt: String,
    },
    /// Quick mode: a piece of the single HTML file being written.
    Html { delta: String },
    /// Progress of a cold boot (`create`, `dev_server`, `agent`, `restore`).
    Boot { phase: String, ms: u64 },
    /// Streamed assistant text.
    Text { delta: String },
    /// Streamed reasoning.
    Thought { delta: String },
    /// A tool call, first announced and then updated in place by `id`.
    ToolCall(ToolCallEvent),
    /// The agent's plan (the whole plan each time; entries replace the last).
    Plan { entries: Vec<PlanEntry> },
    /// A file envd wrote (or deleted) on the agent's behalf.
    File { path: String, op: FileOp },
    /// A commit made at the end of a turn that changed files.
    Version(VersionEvent),
    /// Token usage so far in this session (cumulative where the agent says so).
    Usage(Usage),
    /// Something went wrong; `retryable` says whether trying again may help.
    Error { code: String, message: String, retryable: bool },
    /// The turn ended.
    Done {
        #[serde(rename = "stopReason")]
        stop_reason: StopReason,
    },
}

/// How a prompt is answered: by an agent in a sandbox, or as one HTML file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMode {
    #[default]
    Vm,
    Quick,
}

impl ChatMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatMode::Vm => "vm",
            ChatMode::Quick => "quick",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCallEvent {
    pub id: String,
    /// Absent on an update that does not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// ACP tool kind: read, edit, delete, move, search, execute, think, fetch, other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ToolStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Text of the tool's result content, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Files the call touches, when the agent says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub content: String,
    pub status: String,
    pub priority: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Write,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEvent {
    pub sha: String,
    pub parent: Option<String>,
    pub message: String,
    pub files: Vec<String>,
}

/// Token counts (a turn's, from the agent's prompt answer) and context
/// window use (from ACP `usage_update`); each field only when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, rename = "inputTokens", skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, rename = "outputTokens", skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Context window tokens in use and the window's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Why a turn ended (ACP's stop reasons, plus `error` when it failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    MaxTurnRequests,
    Refusal,
    Cancelled,
    Error,
}

impl EventBody {
    /// The last event of a turn.
    pub fn is_done(&self) -> bool {
        matches!(self, EventBody::Done { .. })
    }
}

/// Renders a sandbox-supplied string so that printing it cannot move the
/// cursor, recolour or clear a terminal, forge a log line, or reorder what a
/// reader sees: control characters (C0, DEL, C1: `\n`, `\x1b`, …), the
/// Unicode line separators and the bidirectional overrides and isolates
/// become visible escapes (`\n`, `\x1b`, `\u{202e}`). Borrowed, unchanged,
/// when there is nothing to escape (the usual case).
pub fn escape_control(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// [`escape_control`] for multi-line text (the agent's messages): line
/// feeds and tabs stay as they are; everything else is escaped the same way.
pub fn escape_control_text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn needs_escape(c: char, keep_lines: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_lines,
        // Cc: C0 controls, DEL and the C1 controls (U+0080–U+009F, which
        // some terminals take as 8-bit escape sequences).
        c if c.is_control() => true,
        // Arabic letter mark, LRM/RLM, the embeddings and overrides, the
        // isolates, and the line/paragraph separators.
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        '\u{2028}' | '\u{2029}' => true,
        _ => false,
    }
}

fn escape(s: &str, keep_lines: bool) -> Cow<'_, str> {
    let Some(first) = s.find(|c| needs_escape(c, keep_lines)) else { return Cow::Borrowed(s) };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if !needs_escape(c, keep_lines) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:04x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_renders_newlines_escape_sequences_and_bidi_overrides_visibly() {
        assert_eq!(escape_control("src/a\nb\x1b[31m.tsx"), "src/a\\nb\\x1b[31m.tsx");
        assert_eq!(escape_control("\r\t\0\x7f\u{9b}"), "\\r\\t\\x00\\x7f\\x9b");
        assert_eq!(escape_control("evil\u{202e}fdp.exe\u{2066}\u{2028}"), "evil\\u{202e}fdp.exe\\u{2066}\\u{2028}");
        assert!(matches!(escape_control("src/App.tsx — ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(escape_control_text("line 1\n\tline 2\x1b[2J"), "line 1\n\tline 2\\x1b[2J");
    }

    #[test]
    fn events_are_flat_objects_tagged_by_type() {
        let e = ChatEvent { seq: 7, body: EventBody::Text { delta: "hi".into() } };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"seq":7,"type":"text","delta":"hi"}"#);
        let d: ChatEvent = serde_json::from_str(r#"{"seq":9,"type":"done","stopReason":"end_turn"}"#).unwrap();
        assert_eq!(d.body, EventBody::Done { stop_reason: StopReason::EndTurn });
        let t = ChatEvent {
            seq: 1,
            body: EventBody::ToolCall(ToolCallEvent {
                id: "t1".into(),
                status: Some(ToolStatus::InProgress),
                ..Default::default()
            }),
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"seq":1,"type":"tool_call","id":"t1","status":"in_progress"}"#);
        assert_eq!(serde_json::from_str::<ChatEvent>(&s).unwrap(), t);
    }
}
