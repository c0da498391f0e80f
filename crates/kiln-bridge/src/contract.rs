//! What the host accepts from envd during a turn.
//!
//! envd runs inside the sandbox, so the host assumes it may be an impostor:
//! a fake envd once sent a `session` event with `previewUrl=javascript:…`,
//! the host passed it on, and the builder ran it in Kiln's origin. So:
//! - only the agent's own kinds pass (`text`, `thought`, `tool_call`, `plan`,
//!   `file`, `usage`, `error`, `done`). `session`, `version`, `boot` and
//!   `html` carry URLs and identities the host emits itself; they, and lines
//!   that are not events at all, are dropped and logged (the first of each
//!   kind in a turn, with the sandbox id; a count at the end of the turn);
//! - every field has a size bound (long text is cut, not refused), ids and
//!   paths must be well-formed (a file path is relative, without `..`,
//!   control or bidi characters) or the event is dropped;
//! - `seq` must increase (resuming relies on it);
//! - a turn carries at most [`MAX_EVENTS_PER_TURN`] events and
//!   [`MAX_TURN_BYTES`] of text: past that it is a flood and ends the turn.
//!
//! The chat log keeps 10,000 events per session, so these bounds are also
//! what keeps a session's memory on the server bounded.

use std::collections::BTreeMap;

use kiln_types::chat::{ChatEvent, EventBody, PlanEntry, ToolCallEvent, escape_control};

pub const MAX_TEXT_DELTA: usize = 16 * 1024;
pub const MAX_TOOL_ID: usize = 128;
pub const MAX_TITLE: usize = 512;
/// Serialized; a larger input is replaced by a note (the UI never shows it
/// whole, and `write_file`'s input is a whole file).
pub const MAX_TOOL_INPUT: usize = 64 * 1024;
/// envd keeps 8 KiB of a tool's output; the end of an output explains it.
pub const MAX_TOOL_OUTPUT: usize = 16 * 1024;
pub const MAX_LOCATIONS: usize = 32;
pub const MAX_PATH: usize = 1024;
pub const MAX_PLAN_ENTRIES: usize = 64;
pub const MAX_PLAN_TEXT: usize = 1024;
pub const MAX_ERROR_CODE: usize = 64;
pub const MAX_ERROR_MESSAGE: usize = 4096;
/// envd's own log holds 20,000 events; a long turn streams a few thousand.
pub const MAX_EVENTS_PER_TURN: usize = 100_000;
pub const MAX_TURN_BYTES: usize = 32 << 20;

const TOOL_KINDS: &[&str] =
    &["read", "edit", "delete", "move", "search", "execute", "think", "fetch", "switch_mode", "other"];

/// What to do with one event from envd.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Forward(EventBody),
    Drop,
    /// Over the turn's budget: end the turn.
    Flood,
}

/// The checks of one turn, with what it dropped.
pub struct Contract {
    sandbox: String,
    last_seq: u64,
    events: usize,
    bytes: usize,
    dropped: BTreeMap<&'static str, usize>,
}

impl Contract {
    pub fn new(sandbox: String) -> Contract {
        Contract { sandbox, last_seq: 0, events: 0, bytes: 0, dropped: BTreeMap::new() }
    }

    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    /// The `seq` to resume after.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn admit(&mut self, ev: ChatEvent) -> Verdict {
        if ev.seq <= self.last_seq {
            return self.drop("seq_not_increasing", &ev.seq.to_string());
        }
        self.last_seq = ev.seq;
        self.events += 1;
        if self.events > MAX_EVENTS_PER_TURN {
            return Verdict::Flood;
        }
        let body = match ev.body {
            EventBody::Session { preview_url, .. } => return self.drop("session", &preview_url),
            EventBody::Version(v) => return self.drop("version", &v.sha),
            EventBody::Boot { phase, .. } => return self.drop("boot", &phase),
            EventBody::Html { .. } => return self.drop("html", ""),
            EventBody::Text { delta } => EventBody::Text { delta: head(delta, MAX_TEXT_DELTA) },
            EventBody::Thought { delta } => EventBody::Thought { delta: head(delta, MAX_TEXT_DELTA) },
            EventBody::ToolCall(t) => match tool_call(t) {
                Some(t) => EventBody::ToolCall(t),
                None => return self.drop("tool_call_bad_id", ""),
            },
            EventBody::Plan { entries } => EventBody::Plan { entries: plan(entries) },
            EventBody::File { path, op } if valid_path(&path) => EventBody::File { path, op },
            EventBody::File { path, .. } => return self.drop("file_bad_path", &path),
            EventBody::Error { code, message, retryable } => {
                let ok = !code.is_empty()
                    && code.len() <= MAX_ERROR_CODE
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let code = if ok { code } else { "agent_error".into() };
                EventBody::Error { code, message: head(message, MAX_ERROR_MESSAGE), retryable }
            }
            b @ (EventBody::Usage(_) | EventBody::Done { .. }) => b,
        };
        self.bytes += size(&body);
        if self.bytes > MAX_TURN_BYTES {
            return Verdict::Flood;
        }
        Verdict::Forward(body)
    }

    /// A line that is not a chat event at all (an unknown `type`, a
    /// malformed field).
    pub fn undecodable(&mut self) {
        self.events += 1;
        self.drop("undecodable", "");
    }

    /// Whether the turn is over its event budget (undecodable lines count).
    pub fn flooded(&self) -> bool {
        self.events > MAX_EVENTS_PER_TURN
    }

    /// Drops an event; the first of each kind in a turn is logged, with
    /// what it carried (cut and escaped: it is the sandbox's text).
    fn drop(&mut self, what: &'static str, detail: &str) -> Verdict {
        let n = self.dropped.entry(what).or_default();
        *n += 1;
        if *n == 1 {
            let mut cut = detail.len().min(200);
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            let detail = escape_control(&detail[..cut]).into_owned();
            tracing::warn!(
                sandbox = %escape_control(&self.sandbox),
                event = what,
                %detail,
                "envd sent an event the host does not accept from a sandbox; dropped (logged once per kind and turn)"
            );
        }
        Verdict::Drop
    }

    /// Logs what the turn dropped, if more than was logged as it happened.
    pub fn report(&self) {
        if self.dropped.values().any(|n| *n > 1) {
            tracing::warn!(sandbox = %escape_control(&self.sandbox), dropped = ?self.dropped, "envd events dropped in this turn");
        }
    }
}

/// A path relative to `/app`, as envd's file events name them.
pub fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATH
        && !p.starts_with('/')
        && matches!(escape_control(p), std::borrow::Cow::Borrowed(_))
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn tool_call(t: ToolCallEvent) -> Option<ToolCallEvent> {
    let id_ok = !t.id.is_empty() && t.id.len() <= MAX_TOOL_ID && t.id.bytes().all(|b| b.is_ascii_graphic());
    if !id_ok {
        return None;
    }
    let input = t.input.map(|v| {
        let n = serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len());
        if n <= MAX_TOOL_INPUT { v } else { serde_json::Value::String(format!("[{n} bytes of input not shown]")) }
    });
    let locations = t
        .locations
        .into_iter()
        .filter(|l| l.len() <= MAX_PATH && matches!(escape_control(l), std::borrow::Cow::Borrowed(_)))
        .take(MAX_LOCATIONS)
        .collect();
    Some(ToolCallEvent {
        id: t.id,
        title: t.title.map(|s| escape_control(&head(s, MAX_TITLE)).into_owned()),
        kind: t.kind.map(|k| if TOOL_KINDS.contains(&k.as_str()) { k } else { "other".into() }),
        status: t.status,
        input,
        output: t.output.map(|o| tail(o, MAX_TOOL_OUTPUT)),
        locations,
    })
}

fn plan(entries: Vec<PlanEntry>) -> Vec<PlanEntry> {
    let one_of = |s: String, allowed: &[&str], default: &str| {
        if allowed.contains(&s.as_str()) { s } else { default.to_owned() }
    };
    entries
        .into_iter()
        .take(MAX_PLAN_ENTRIES)
        .map(|e| PlanEntry {
            content: head(e.content, MAX_PLAN_TEXT),
            status: one_of(e.status, &["pending", "in_progress", "completed"], "pending"),
            priority: one_of(e.priority, &["high", "medium", "low"], "medium"),
        })
        .collect()
}

/// Roughly what an event costs to keep: its strings.
fn size(b: &EventBody) -> usize {
    match b {
        EventBody::Text { delta } | EventBody::Thought { delta } => delta.len(),
        EventBody::ToolCall(t) => {
            let input = t.input.as_ref().map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()));
            t.id.len()
                + t.title.as_ref().map_or(0, String::len)
                + t.output.as_ref().map_or(0, String::len)
                + t.locations.iter().map(String::len).sum::<usize>()
                + input
        }
        EventBody::Plan { entries } => entries.iter().map(|e| e.content.len() + 16).sum(),
        EventBody::File { path, .. } => path.len(),
        EventBody::Error { code, message, .. } => code.len() + message.len(),
        _ => 16,
    }
}

/// The first `max` bytes (at a character boundary), marked when cut.
pub fn head(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str("… [cut]");
    s
}

/// The last `max` bytes (at a character boundary), marked when cut.
fn tail(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[cut] …{}", &s[cut..])
}

#[cfg(test)]
mod tests {
    use kiln_types::chat::{ChatMode, FileOp};

    use super::*;

    fn ev(seq: u64, body: EventBody) -> ChatEvent {
        ChatEvent { seq, body }
    }

    #[test]
    fn only_the_agents_own_kinds_pass() {
        let mut c = Contract::new("sb".into());
        let session = EventBody::Session {
            mode: ChatMode::Vm,
            sandbox_id: None,
            app_id: "a".into(),
            preview_url: "javascript:alert(1)".into(),
            warm: true,
            claim_ms: None,
            boot_ms: None,
            model: None,
            prompt: String::new(),
        };
        assert_eq!(c.admit(ev(1, session)), Verdict::Drop);
        assert_eq!(c.admit(ev(2, EventBody::Boot { phase: "x".into(), ms: 1 })), Verdict::Drop);
        assert_eq!(c.admit(ev(3, EventBody::Html { delta: "<script>".into() })), Verdict::Drop);
        let text = EventBody::Text { delta: "hi".into() };
        assert_eq!(c.admit(ev(4, text.clone())), Verdict::Forward(text.clone()));
        assert_eq!(c.admit(ev(4, text)), Verdict::Drop, "a repeated seq");
        assert_eq!(c.last_seq(), 4);
    }

    #[test]
    fn paths_ids_and_sizes_are_checked() {
        for bad in ["/etc/passwd", "../x", "a//b", "a/./b", "", "a\nb", "\u{1b}[31mred", "a\u{202e}b"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert!(valid_path("src/App.tsx") && valid_path("public/ünï code.svg"));
        let mut c = Contract::new("sb".into());
        let file = |p: &str| EventBody::File { path: p.into(), op: FileOp::Write };
        assert_eq!(c.admit(ev(1, file("../../etc/passwd"))), Verdict::Drop);
        let long = EventBody::Text { delta: "é".repeat(MAX_TEXT_DELTA) };
        let Verdict::Forward(EventBody::Text { delta }) = c.admit(ev(2, long)) else { panic!() };
        assert!(delta.len() <= MAX_TEXT_DELTA + 16 && delta.ends_with("[cut]"));
        let t = ToolCallEvent { id: "x".repeat(MAX_TOOL_ID + 1), ..Default::default() };
        assert_eq!(c.admit(ev(3, EventBody::ToolCall(t))), Verdict::Drop);
        let t = ToolCallEvent {
            id: "call-1".into(),
            title: Some("run \u{1b}[2J".into()),
            kind: Some("<img>".into()),
            output: Some("y".repeat(MAX_TOOL_OUTPUT * 2)),
            input: Some(serde_json::json!({"content": "z".repeat(MAX_TOOL_INPUT)})),
            ..Default::default()
        };
        let Verdict::Forward(EventBody::ToolCall(t)) = c.admit(ev(4, EventBody::ToolCall(t))) else { panic!() };
        assert_eq!((t.title.as_deref(), t.kind.as_deref()), (Some("run \\x1b[2J"), Some("other")));
        assert!(t.output.unwrap().len() <= MAX_TOOL_OUTPUT + 16);
        assert!(t.input.unwrap().is_string());
        let err = EventBody::Error { code: "Bad Code!".into(), message: "m".into(), retryable: false };
        let Verdict::Forward(EventBody::Error { code, .. }) = c.admit(ev(5, err)) else { panic!() };
        assert_eq!(code, "agent_error");
    }

    #[test]
    fn a_flood_of_bytes_ends_the_turn() {
        let mut c = Contract::new("sb".into());
        let big = "x".repeat(MAX_TEXT_DELTA);
        let n = MAX_TURN_BYTES / MAX_TEXT_DELTA;
        for seq in 1..=n as u64 {
            assert!(matches!(c.admit(ev(seq, EventBody::Text { delta: big.clone() })), Verdict::Forward(_)));
        }
        assert_eq!(c.admit(ev(n as u64 + 1, EventBody::Text { delta: big })), Verdict::Flood);
    }
}
