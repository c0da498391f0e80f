//! Counting tokens in answers as they stream past, without holding them.
//!
//! Both API families report usage inside the body, in a `usage` object:
//! Anthropic in `message_start` (input so far) and `message_delta`
//! (cumulative, final), OpenAI chat in the last chunk (the gateway forces
//! `stream_options.include_usage`), the Responses API in
//! `response.completed`, and any plain JSON answer at its top level. The tap
//! looks at each complete line (SSE `data:` lines, or the whole body when it
//! is one JSON document), reads only `usage` objects (never text the model
//! wrote), and keeps the largest value seen per counter, so cumulative
//! reports are not summed. Anthropic's cached input (`cache_read_…`,
//! `cache_creation_input_tokens`) is input too.
//!
//! A report is *final* unless it came in `message_start`: only a final one
//! tells what the whole answer cost. Without it (a stream cut short, a
//! server that reports nothing) the gateway charges the request's hold.

/// Longest line kept while waiting for its end; longer lines are skipped
/// (usage never sits in a huge line).
const MAX_LINE: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct UsageTap {
    line: Vec<u8>,
    overflow: bool,
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    /// A final usage report was seen.
    pub final_seen: bool,
}

impl UsageTap {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                if !self.overflow {
                    let line = std::mem::take(&mut self.line);
                    self.scan(&line);
                }
                self.line.clear();
                self.overflow = false;
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
    }

    /// Call at the end of the body (a JSON answer has no trailing newline);
    /// returns the tokens reported.
    pub fn finish(&mut self) -> u64 {
        if !self.overflow && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan(&line);
        }
        self.total()
    }

    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.cached).saturating_add(self.output)
    }

    fn scan(&mut self, line: &[u8]) {
        let s = String::from_utf8_lossy(line);
        let s = s.trim();
        let json = s.strip_prefix("data:").map_or(s, str::trim);
        if !json.starts_with('{') {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return };
        let start = v.get("type").and_then(|t| t.as_str()) == Some("message_start");
        // Where the usage object sits: top level, or one object down
        // (`message` in message_start, `response` in Responses events).
        let mut found = false;
        for holder in std::iter::once(&v).chain(v.as_object().into_iter().flat_map(|o| o.values())) {
            if let Some(u) = holder.get("usage").and_then(|u| u.as_object()) {
                found |= self.read(u);
            }
        }
        if found && !start {
            self.final_seen = true;
        }
    }

    /// Reads one `usage` object; whether it reported anything.
    fn read(&mut self, u: &serde_json::Map<String, serde_json::Value>) -> bool {
        let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64);
        let input = n("input_tokens").or(n("prompt_tokens"));
        let output = n("output_tokens").or(n("completion_tokens"));
        let cache = [n("cache_read_input_tokens"), n("cache_creation_input_tokens")];
        let cached = cache.iter().any(Option::is_some).then(|| cache.iter().flatten().sum::<u64>());
        for (slot, v) in [(&mut self.input, input), (&mut self.output, output), (&mut self.cached, cached)] {
            if let Some(v) = v {
                *slot = (*slot).max(v);
            }
        }
        input.is_some() || output.is_some() || cached.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_counts_input_once_and_the_last_output() {
        let mut t = UsageTap::default();
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        // Fed in awkward pieces.
        for piece in stream.as_bytes().chunks(7) {
            t.feed(piece);
        }
        assert_eq!(t.finish(), 145);
        assert!(t.final_seen);
    }

    #[test]
    fn a_stream_cut_after_message_start_has_no_final_report() {
        let mut t = UsageTap::default();
        t.feed(
            b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        );
        assert_eq!(t.finish(), 26);
        assert!(!t.final_seen);
    }

    #[test]
    fn openai_final_chunk_responses_events_and_plain_json_bodies() {
        let mut t = UsageTap::default();
        t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        assert_eq!((t.finish(), t.final_seen), (13, true));
        let mut t = UsageTap::default();
        t.feed(b"data: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n");
        assert!(!t.final_seen);
        t.feed(b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":4}}}\n\n");
        assert_eq!((t.finish(), t.final_seen), (12, true));
        let mut t = UsageTap::default();
        t.feed(br#"{"id":"x","usage":{"input_tokens":5,"output_tokens":6}}"#);
        assert_eq!((t.finish(), t.final_seen), (11, true));
    }

    #[test]
    fn text_the_model_wrote_is_not_usage() {
        let mut t = UsageTap::default();
        t.feed(br#"{"content":[{"type":"tool_use","input":{"usage":{"output_tokens":999999}}}],"usage":{"input_tokens":5,"output_tokens":6}}"#);
        assert_eq!(t.finish(), 11);
    }
}
