//! Counting tokens in answers as they stream past, without holding them.
//!
//! Both API families report usage inside the body: Anthropic in
//! `message_start` (input) and `message_delta` (cumulative output), OpenAI
//! in the last chunk when `stream_options.include_usage` is set, or in a
//! plain JSON answer. The counter looks at each complete line (SSE `data:`
//! lines, or the whole body when it is one JSON document) and keeps the
//! largest value seen per counter, so cumulative reports are not summed.

/// Longest line kept while waiting for its end; longer lines are skipped
/// (usage never sits in a huge line).
const MAX_LINE: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct UsageTap {
    line: Vec<u8>,
    overflow: bool,
    pub input: u64,
    pub output: u64,
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

    /// Call at the end of the body (a JSON answer has no trailing newline).
    pub fn finish(&mut self) -> u64 {
        if !self.overflow && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan(&line);
        }
        self.input + self.output
    }

    fn scan(&mut self, line: &[u8]) {
        let s = String::from_utf8_lossy(line);
        let s = s.trim();
        let json = s.strip_prefix("data:").map_or(s, str::trim);
        if !json.starts_with('{') {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return };
        self.walk(&v, 0);
    }

    fn walk(&mut self, v: &serde_json::Value, depth: usize) {
        if depth > 4 {
            return;
        }
        if let Some(o) = v.as_object() {
            for (k, x) in o {
                match (k.as_str(), x.as_u64()) {
                    ("input_tokens" | "prompt_tokens", Some(n)) => self.input = self.input.max(n),
                    ("output_tokens" | "completion_tokens", Some(n)) => self.output = self.output.max(n),
                    _ => self.walk(x, depth + 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_counts_input_once_and_the_last_output() {
        let mut t = UsageTap::default();
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        // Fed in awkward pieces.
        for piece in stream.as_bytes().chunks(7) {
            t.feed(piece);
        }
        assert_eq!(t.finish(), 40);
    }

    #[test]
    fn openai_final_chunk_and_plain_json_bodies() {
        let mut t = UsageTap::default();
        t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        assert_eq!(t.finish(), 13);
        let mut t = UsageTap::default();
        t.feed(br#"{"id":"x","usage":{"input_tokens":5,"output_tokens":6}}"#);
        assert_eq!(t.finish(), 11);
    }
}
