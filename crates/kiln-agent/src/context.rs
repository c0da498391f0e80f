//! Keeping the conversation within the model's context window.
//!
//! Old tool output is what grows fastest and matters least once the model
//! has acted on it, so it goes first: its text is replaced by a note saying
//! it was trimmed (the blocks stay, so every tool call keeps its result, as
//! the APIs require). Only if that is not enough are old text blocks cut.

use crate::model::{Block, Message};

/// Rough token estimate: 4 bytes a token.
pub fn estimate(system: &str, messages: &[Message]) -> u64 {
    let mut bytes = system.len();
    for m in messages {
        for b in &m.content {
            bytes += match b {
                Block::Text { text } => text.len(),
                Block::Thinking { thinking, .. } => thinking.len(),
                Block::ToolUse { input, name, .. } => input.to_string().len() + name.len(),
                Block::ToolResult { content, .. } => content.len(),
            };
        }
    }
    (bytes / 4) as u64
}

pub const TRIMMED: &str = "[older tool output trimmed to keep the conversation within the model's context window]";

/// Trims until the estimate is under `budget` tokens; the newest `keep`
/// messages are never touched. Returns how many blocks were trimmed.
pub fn trim(system: &str, messages: &mut [Message], budget: u64, keep: usize) -> usize {
    let mut trimmed = 0;
    let end = messages.len().saturating_sub(keep);
    for pass in 0..2 {
        for i in 0..end {
            if estimate(system, messages) <= budget {
                return trimmed;
            }
            for b in &mut messages[i].content {
                match b {
                    Block::ToolResult { content, .. } if content.len() > TRIMMED.len() && content != TRIMMED => {
                        *content = TRIMMED.to_owned();
                        trimmed += 1;
                    }
                    Block::Text { text } if pass == 1 && i > 0 && text.len() > 400 => {
                        let head: String = text.chars().take(200).collect();
                        *text = format!("{head} [… trimmed for context]");
                        trimmed += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn old_tool_output_goes_first_and_recent_messages_stay() {
        let big = "x".repeat(40_000);
        let mut msgs = vec![Message::user("build it")];
        for i in 0..4 {
            msgs.push(Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: format!("t{i}"),
                    name: "read_file".into(),
                    input: serde_json::json!({}),
                }],
            });
            msgs.push(Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: format!("t{i}"),
                    content: big.clone(),
                    is_error: false,
                }],
            });
        }
        assert!(estimate("", &msgs) > 30_000);
        let n = trim("", &mut msgs, 25_000, 2);
        assert!(n >= 2 && estimate("", &msgs) <= 25_000, "{n}");
        assert!(matches!(&msgs[2].content[0], Block::ToolResult { content, .. } if content == TRIMMED));
        assert!(matches!(&msgs[8].content[0], Block::ToolResult { content, .. } if content.len() == 40_000));
        assert!(matches!(&msgs[0].content[0], Block::Text { text } if text == "build it"));
    }
}
