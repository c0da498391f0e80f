//! What a request may cost at most, read from its body before it is sent.
//!
//! A hold must cover the worst case, so a billed request must say how much
//! it may generate: `max_tokens` (Anthropic messages, chat completions; or
//! `max_completion_tokens`) or `max_output_tokens` (Responses), times `n`
//! choices. A request without one is refused with 400 rather than given a
//! cap of Kiln's choosing: the field a server accepts differs between
//! OpenAI-compatible servers and models, and Anthropic requires it anyway.
//! Responses requests whose input lives on the provider
//! (`previous_response_id`, `conversation`, `prompt`) or whose answer
//! outlives the request (`background`) cannot be priced and are refused.
//!
//! Input is estimated as one token per three bytes of the JSON body — an
//! over-estimate for text in any script (English runs ~4 bytes a token, CJK
//! ~3) — except inline base64 images, which providers bill by pixels, not
//! bytes: each counts at most [`IMAGE_TOKENS`]. Chat-completion streams get
//! `stream_options.include_usage = true` forced in, so their usage is
//! reported and charged.

use serde_json::{Map, Value};

use crate::route::{Endpoint, Route};

/// Most tokens one inline image is estimated at (providers bill images by
/// size: ~1,600 tokens for Anthropic's largest, ~2,500 for OpenAI's).
pub const IMAGE_TOKENS: u64 = 5_000;

/// Largest `n` (choices) accepted for chat completions.
const MAX_CHOICES: u64 = 128;

/// A request ready to send: its body and its hold.
#[derive(Debug, PartialEq)]
pub struct Priced {
    pub body: bytes::Bytes,
    /// Tokens to hold; 0 for requests that are not billed.
    pub tokens: u64,
}

/// Why a body is refused (→ 400).
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// Checks and prices the body of an allowed POST route.
pub fn price(route: &Route, body: &[u8]) -> Result<Priced, BadRequest> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the request body must be a JSON object: {e}")))?;
    let Some(obj) = v.as_object_mut() else { return Err(bad("the request body must be a JSON object")) };
    if obj.get("model").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(bad("the request body must name a `model`"));
    }
    let output = match route.endpoint {
        Endpoint::CountTokens => 0,
        Endpoint::Messages => cap(obj, &["max_tokens"])?,
        Endpoint::ChatCompletions => {
            if obj.get("stream").and_then(Value::as_bool) == Some(true) {
                let opts = obj.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
                match opts.as_object_mut() {
                    Some(o) => o.insert("include_usage".into(), Value::Bool(true)),
                    None => return Err(bad("`stream_options` must be an object")),
                };
            }
            let n = match obj.get("n") {
                None | Some(Value::Null) => 1,
                Some(x) => x
                    .as_u64()
                    .filter(|n| (1..=MAX_CHOICES).contains(n))
                    .ok_or_else(|| bad(format!("`n` must be a whole number from 1 to {MAX_CHOICES}")))?,
            };
            cap(obj, &["max_completion_tokens", "max_tokens"])?.saturating_mul(n)
        }
        Endpoint::Responses => {
            for field in ["previous_response_id", "conversation", "prompt"] {
                if obj.get(field).is_some_and(|x| !x.is_null()) {
                    return Err(bad(format!(
                        "`{field}` is not supported through Kiln's gateway: the input it adds cannot be priced \
                         before the request; send the whole input"
                    )));
                }
            }
            if obj.get("background").and_then(Value::as_bool) == Some(true) {
                return Err(bad("`background` responses are not supported through Kiln's gateway"));
            }
            cap(obj, &["max_output_tokens"])?
        }
        Endpoint::Models | Endpoint::Model(_) => 0,
    };
    let body = if route.endpoint == Endpoint::ChatCompletions {
        bytes::Bytes::from(serde_json::to_vec(&v).map_err(|e| bad(e.to_string()))?)
    } else {
        bytes::Bytes::copy_from_slice(body)
    };
    let tokens = match route.endpoint {
        Endpoint::CountTokens => 0,
        _ => input_estimate(body.len(), &v).saturating_add(output).min(crate::budget::MAX_TOKENS),
    };
    Ok(Priced { body, tokens })
}

/// The output cap: the largest of `fields` present (each a whole number
/// ≥ 1); none present is refused.
fn cap(obj: &Map<String, Value>, fields: &[&str]) -> Result<u64, BadRequest> {
    let names = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ");
    let mut max = None;
    for f in fields {
        match obj.get(*f) {
            None | Some(Value::Null) => {}
            Some(x) => {
                let n =
                    x.as_u64().filter(|n| *n >= 1).ok_or_else(|| bad(format!("`{f}` must be a whole number ≥ 1")))?;
                max = max.max(Some(n));
            }
        }
    }
    max.ok_or_else(|| {
        bad(format!(
            "set {names}: Kiln's model gateway reserves a request's largest possible cost against the budget \
             before sending it, so every request must cap its output"
        ))
    })
}

/// Input tokens, estimated from the body's size with inline images counted
/// by [`IMAGE_TOKENS`] instead of their bytes.
pub fn input_estimate(body_len: usize, v: &Value) -> u64 {
    let mut image_bytes = 0u64;
    let mut images = 0u64;
    walk_images(v, &mut image_bytes, &mut images, 0);
    let text_bytes = (body_len as u64).saturating_sub(image_bytes);
    text_bytes.div_ceil(3) + (image_bytes.div_ceil(3)).min(images.saturating_mul(IMAGE_TOKENS))
}

/// Finds base64 images: Anthropic's `{"type":"base64","media_type":
/// "image/…","data":…}` sources and OpenAI's `data:image/…` URLs.
fn walk_images(v: &Value, bytes: &mut u64, images: &mut u64, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::String(s) if s.starts_with("data:image/") => {
            *bytes += s.len() as u64;
            *images += 1;
        }
        Value::Array(a) => a.iter().for_each(|x| walk_images(x, bytes, images, depth + 1)),
        Value::Object(o) => {
            let image = o.get("type").and_then(Value::as_str) == Some("base64")
                && o.get("media_type").and_then(Value::as_str).is_some_and(|m| m.starts_with("image/"));
            for (k, x) in o {
                match (image, k.as_str(), x) {
                    (true, "data", Value::String(s)) => {
                        *bytes += s.len() as u64;
                        *images += 1;
                    }
                    _ => walk_images(x, bytes, images, depth + 1),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::parse;

    fn priced(path: &str, body: &Value) -> Result<Priced, BadRequest> {
        let r = parse(&http::Method::POST, &path.parse().unwrap()).unwrap();
        price(&r, body.to_string().as_bytes())
    }

    #[test]
    fn the_hold_is_input_bytes_over_three_plus_the_output_cap() {
        let body =
            serde_json::json!({"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
        let p = priced("/anthropic/v1/messages", &body).unwrap();
        assert_eq!(p.tokens, (body.to_string().len() as u64).div_ceil(3) + 1000);
        let p = priced(
            "/openai/v1/chat/completions",
            &serde_json::json!({"model": "m", "max_tokens": 10, "max_completion_tokens": 50, "n": 2}),
        )
        .unwrap();
        assert!(p.tokens >= 100 && p.tokens < 130, "{}", p.tokens);
        let p =
            priced("/anthropic/v1/messages/count_tokens", &serde_json::json!({"model": "m", "messages": []})).unwrap();
        assert_eq!(p.tokens, 0);
    }

    #[test]
    fn requests_that_cannot_be_priced_are_refused() {
        for (path, body) in [
            ("/anthropic/v1/messages", serde_json::json!({"model": "m", "messages": []})),
            ("/anthropic/v1/messages", serde_json::json!({"model": "m", "max_tokens": 0})),
            ("/anthropic/v1/messages", serde_json::json!({"max_tokens": 10})),
            ("/anthropic/v1/messages", serde_json::json!(["not", "an", "object"])),
            ("/openai/v1/chat/completions", serde_json::json!({"model": "m", "stream": true})),
            ("/openai/v1/chat/completions", serde_json::json!({"model": "m", "max_tokens": 5, "n": 1000})),
            ("/openai/v1/responses", serde_json::json!({"model": "m", "input": "hi"})),
            (
                "/openai/v1/responses",
                serde_json::json!({"model": "m", "max_output_tokens": 9, "previous_response_id": "r"}),
            ),
            ("/openai/v1/responses", serde_json::json!({"model": "m", "max_output_tokens": 9, "background": true})),
        ] {
            assert!(priced(path, &body).is_err(), "{path} {body}");
        }
        let r = parse(&http::Method::POST, &"/anthropic/v1/messages".parse().unwrap()).unwrap();
        assert!(price(&r, b"model=m&max_tokens=5").is_err());
    }

    #[test]
    fn chat_streams_are_forced_to_report_usage() {
        let p = priced("/openai/v1/chat/completions", &serde_json::json!({"model": "m", "max_tokens": 5, "stream": true, "stream_options": {"include_usage": false, "x": 1}})).unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }

    #[test]
    fn inline_images_count_by_image_not_by_byte() {
        let png = "A".repeat(600_000);
        let body = serde_json::json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}]});
        let p = priced("/anthropic/v1/messages", &body).unwrap();
        assert!(p.tokens <= 2 * IMAGE_TOKENS + 100 + 100, "{}", p.tokens);
        assert!(p.tokens >= 2 * IMAGE_TOKENS + 100, "{}", p.tokens);
    }
}
