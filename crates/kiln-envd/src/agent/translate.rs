//! ACP `session/update` → Kiln chat events.
//!
//! Translation works on the update's JSON form rather than the SDK's enums:
//! the schema marks them non-exhaustive and grows every release, and an
//! update kind Kiln does not show (mode changes, command lists) must pass by
//! silently instead of failing the turn.

use kiln_types::chat::{EventBody, PlanEntry, ToolCallEvent, ToolStatus, Usage};
use serde_json::Value;

/// Longest tool output kept in an event (the agent has the full text).
pub const MAX_TOOL_OUTPUT: usize = 8 * 1024;

pub fn translate(update: &Value) -> Option<EventBody> {
    let kind = update.get("sessionUpdate")?.as_str()?;
    match kind {
        "agent_message_chunk" => Some(EventBody::Text { delta: content_text(update.get("content")?)? }),
        "agent_thought_chunk" => Some(EventBody::Thought { delta: content_text(update.get("content")?)? }),
        "tool_call" | "tool_call_update" => Some(EventBody::ToolCall(tool_call(update, kind == "tool_call")?)),
        "plan" => {
            let entries = update
                .get("entries")?
                .as_array()?
                .iter()
                .map(|e| PlanEntry {
                    content: str_of(e, "content").unwrap_or_default(),
                    status: str_of(e, "status").unwrap_or_else(|| "pending".into()),
                    priority: str_of(e, "priority").unwrap_or_else(|| "medium".into()),
                })
                .collect();
            Some(EventBody::Plan { entries })
        }
        "usage_update" => Some(EventBody::Usage(Usage {
            used: update.get("used").and_then(Value::as_u64),
            size: update.get("size").and_then(Value::as_u64),
            ..Default::default()
        })),
        _ => None,
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Text of a content block; other block kinds (images, resources) are
/// named rather than dropped.
fn content_text(block: &Value) -> Option<String> {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => str_of(block, "text"),
        Some(other) => Some(format!("[{other}]")),
        None => None,
    }
}

fn tool_call(u: &Value, first: bool) -> Option<ToolCallEvent> {
    let status = match u.get("status").and_then(Value::as_str) {
        Some("pending") => Some(ToolStatus::Pending),
        Some("in_progress") => Some(ToolStatus::InProgress),
        Some("completed") => Some(ToolStatus::Completed),
        Some("failed") => Some(ToolStatus::Failed),
        _ if first => Some(ToolStatus::Pending),
        _ => None,
    };
    let output = u.get("content").and_then(Value::as_array).map(|items| {
        let mut out = String::new();
        for item in items {
            match item.get("type").and_then(Value::as_str) {
                Some("content") => {
                    if let Some(t) = item.get("content").and_then(content_text) {
                        out.push_str(&t);
                    }
                }
                Some("diff") => {
                    out.push_str(&format!("[diff {}]", str_of(item, "path").unwrap_or_default()));
                }
                Some("terminal") => {
                    out.push_str(&format!("[terminal {}]", str_of(item, "terminalId").unwrap_or_default()));
                }
                _ => {}
            }
        }
        truncate(out, MAX_TOOL_OUTPUT)
    });
    let locations = u
        .get("locations")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|x| str_of(x, "path")).collect())
        .unwrap_or_default();
    Some(ToolCallEvent {
        id: str_of(u, "toolCallId")?,
        title: str_of(u, "title"),
        kind: str_of(u, "kind").or_else(|| first.then(|| "other".into())),
        status,
        input: u.get("rawInput").cloned(),
        output: output.filter(|o| !o.is_empty()),
        locations,
    })
}

/// Keeps the last `max` bytes (the end of an output is what explains it),
/// cut at a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s.replace_range(..cut, "…");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_tool_calls_and_plans_translate() {
        let t = translate(&json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Hi"}}));
        assert_eq!(t, Some(EventBody::Text { delta: "Hi".into() }));
        let c = translate(&json!({"sessionUpdate":"tool_call","toolCallId":"c1","title":"Write App.tsx",
            "kind":"edit","rawInput":{"path":"src/App.tsx"},"locations":[{"path":"/app/src/App.tsx"}]}))
        .unwrap();
        let EventBody::ToolCall(c) = c else { panic!() };
        assert_eq!(c.status, Some(ToolStatus::Pending));
        assert_eq!(c.locations, vec!["/app/src/App.tsx".to_owned()]);
        let u = translate(&json!({"sessionUpdate":"tool_call_update","toolCallId":"c1","status":"completed",
            "content":[{"type":"content","content":{"type":"text","text":"ok"}}]}))
        .unwrap();
        let EventBody::ToolCall(u) = u else { panic!() };
        assert_eq!((u.status, u.output.as_deref(), u.kind), (Some(ToolStatus::Completed), Some("ok"), None));
        assert!(translate(&json!({"sessionUpdate":"current_mode_update","currentModeId":"x"})).is_none());
    }

    #[test]
    fn truncation_keeps_the_end_on_a_char_boundary() {
        let s = truncate("ééééé".into(), 5);
        assert!(s.starts_with('…') && s.ends_with("éé"));
    }
}
