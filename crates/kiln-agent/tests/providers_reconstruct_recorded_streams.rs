//! The model providers against a local HTTP server replaying recorded SSE
//! streams (written from the providers' documented examples): the exact
//! text, thinking and tool calls are reconstructed, usage is read, and
//! 429 / overloaded answers are retried while nothing has streamed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use kiln_agent::model::anthropic::Anthropic;
use kiln_agent::model::openai::OpenAi;
use kiln_agent::model::{
    Block, Message, ModelError, ModelProvider, ModelRequest, ModelStop, RetryPolicy, StreamEvent, ToolSpec,
    call_with_retries,
};
use serde_json::{Value, json};

struct Canned {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

fn sse(name: &str) -> Canned {
    let body = std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Canned { status: 200, headers: vec![("content-type", "text/event-stream")], body }
}

type Seen = Arc<Mutex<Vec<(String, http::HeaderMap, Value)>>>;

/// Serves the canned answers in order; records every request.
async fn server(answers: Vec<Canned>) -> (String, Seen) {
    let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (queue, s) = (queue.clone(), s.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            s.lock().unwrap().push((parts.uri.path().to_owned(), parts.headers, json));
            let c = queue.lock().unwrap().pop_front().expect("an answer for every request");
            let mut r = http::Response::builder().status(c.status);
            for (k, v) in c.headers {
                r = r.header(k, v);
            }
            r.body(Body::from(c.body)).unwrap()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn request() -> ModelRequest {
    ModelRequest {
        model: "m".into(),
        system: "You build apps.".into(),
        messages: vec![Message::user("Make a page")],
        tools: vec![ToolSpec {
            name: "write_file".into(),
            description: "Write a file".into(),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }],
        max_tokens: 1024,
    }
}

async fn call(p: &dyn ModelProvider) -> (Result<kiln_agent::model::Reply, ModelError>, Vec<StreamEvent>) {
    let got = Mutex::new(Vec::new());
    let sink = |e: StreamEvent| got.lock().unwrap().push(e);
    let policy =
        RetryPolicy { attempts: 3, first_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) };
    let r = call_with_retries(p, &request(), &sink, &policy).await;
    (r, got.into_inner().unwrap())
}

#[tokio::test]
async fn anthropic_text_only() {
    let (base, seen) = server(vec![sse("anthropic_text.sse")]).await;
    let (r, events) = call(&Anthropic::new(&base, "sk-test")).await;
    let r = r.unwrap();
    assert_eq!(r.text(), "Hello!");
    assert_eq!(events, vec![StreamEvent::Text("Hello".into()), StreamEvent::Text("!".into())]);
    assert_eq!((r.stop, r.usage.input, r.usage.output), (ModelStop::EndTurn, 25, 15));
    let (path, headers, body) = &seen.lock().unwrap()[0];
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], "sk-test");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!((body["stream"].clone(), body["system"].clone()), (json!(true), json!("You build apps.")));
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn anthropic_tool_arguments_split_across_deltas() {
    let (base, _) = server(vec![sse("anthropic_tool_split.sse")]).await;
    let r = call(&Anthropic::new(&base, "k")).await.0.unwrap();
    assert_eq!(r.stop, ModelStop::ToolUse);
    assert_eq!(r.text(), "Okay, let me write it.");
    assert_eq!(
        r.tool_calls(),
        vec![(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "write_file",
            &json!({"path": "src/App.tsx", "content": "<h1>Hi \"there\"</h1>\n"})
        )]
    );
}

#[tokio::test]
async fn anthropic_parallel_tool_calls_and_empty_arguments() {
    let (base, _) = server(vec![sse("anthropic_parallel_tools.sse")]).await;
    let r = call(&Anthropic::new(&base, "k")).await.0.unwrap();
    assert_eq!(
        r.tool_calls(),
        vec![("toolu_a", "read_file", &json!({"path": "src/App.tsx"})), ("toolu_b", "list_files", &json!({}))]
    );
}

#[tokio::test]
async fn anthropic_thinking_block() {
    let (base, _) = server(vec![sse("anthropic_thinking.sse")]).await;
    let (r, events) = call(&Anthropic::new(&base, "k")).await;
    let r = r.unwrap();
    assert_eq!(
        r.content[0],
        Block::Thinking {
            thinking: "Let me think step by step.".into(),
            signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into()
        }
    );
    assert_eq!(r.text(), "The answer is 42.");
    assert_eq!(events[0], StreamEvent::Thinking("Let me think ".into()));
}

#[tokio::test]
async fn anthropic_overloaded_mid_stream_is_retried() {
    let (base, seen) = server(vec![sse("anthropic_overloaded.sse"), sse("anthropic_text.sse")]).await;
    let r = call(&Anthropic::new(&base, "k")).await.0.unwrap();
    assert_eq!(r.text(), "Hello!");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_429_then_success_and_4xx_is_not_retried() {
    let too_many = Canned {
        status: 429,
        headers: vec![("retry-after", "0"), ("content-type", "application/json")],
        body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
    };
    let (base, seen) = server(vec![too_many, sse("anthropic_text.sse")]).await;
    assert_eq!(call(&Anthropic::new(&base, "k")).await.0.unwrap().text(), "Hello!");
    assert_eq!(seen.lock().unwrap().len(), 2);

    let bad_key = Canned {
        status: 401,
        headers: vec![],
        body: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into(),
    };
    let (base, seen) = server(vec![bad_key]).await;
    let e = call(&Anthropic::new(&base, "k")).await.0.unwrap_err();
    assert!(matches!(e, ModelError::Fatal { status: Some(401), .. }), "{e:?}");
    assert!(e.to_string().contains("invalid x-api-key"));
    assert_eq!(seen.lock().unwrap().len(), 1);

    let down = || Canned { status: 503, headers: vec![], body: "upstream down".into() };
    let (base, seen) = server(vec![down(), down(), down()]).await;
    let e = call(&Anthropic::new(&base, "k")).await.0.unwrap_err();
    assert!(e.retryable() && e.to_string().contains("503"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 3, "retries run out after the policy's attempts");
}

#[tokio::test]
async fn openai_text_usage_and_request_shape() {
    let (base, seen) = server(vec![sse("openai_text_and_usage.sse")]).await;
    let (r, events) = call(&OpenAi::new(format!("{base}/v1"), "sk-oa")).await;
    let r = r.unwrap();
    assert_eq!(r.text(), "Hello world");
    assert_eq!(events.len(), 2);
    assert_eq!((r.stop, r.usage.input, r.usage.output), (ModelStop::EndTurn, 9, 12));
    let (path, headers, body) = &seen.lock().unwrap()[0];
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(headers["authorization"], "Bearer sk-oa");
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "You build apps."}));
    assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
}

#[tokio::test]
async fn openai_parallel_tool_calls_by_index() {
    let (base, _) = server(vec![sse("openai_parallel_tools_indexed.sse")]).await;
    let r = call(&OpenAi::new(&base, "k")).await.0.unwrap();
    assert_eq!(r.stop, ModelStop::ToolUse);
    assert_eq!(
        r.tool_calls(),
        vec![("call_abc", "read_file", &json!({"path": "index.html"})), ("call_def", "run", &json!({"command": "ls"}))]
    );
    assert_eq!(r.usage.input, 80);
}

#[tokio::test]
async fn openai_without_indexes_ids_only_first() {
    let (base, _) = server(vec![sse("openai_tools_no_index.sse")]).await;
    let r = call(&OpenAi::new(&base, "k")).await.0.unwrap();
    assert_eq!(r.stop, ModelStop::ToolUse, "finish_reason stop with tool calls still means tool use");
    assert_eq!(
        r.tool_calls(),
        vec![("call_1", "write_file", &json!({"path": "a.txt", "content": "x"})), ("call_2", "list_files", &json!({}))]
    );
}

#[tokio::test]
async fn openai_arguments_in_one_piece_without_id() {
    let (base, _) = server(vec![sse("openai_tools_one_piece_no_id.sse")]).await;
    let r = call(&OpenAi::new(&base, "k")).await.0.unwrap();
    assert_eq!(r.tool_calls(), vec![("call_0", "search", &json!({"query": "useState"}))]);
}

#[tokio::test]
async fn tool_results_round_trip_into_both_request_shapes() {
    let mut req = request();
    req.messages.push(Message {
        role: kiln_agent::model::Role::Assistant,
        content: vec![
            Block::Text { text: "Reading.".into() },
            Block::ToolUse { id: "t1".into(), name: "read_file".into(), input: json!({"path": "a"}) },
        ],
    });
    req.messages.push(Message {
        role: kiln_agent::model::Role::User,
        content: vec![Block::ToolResult { tool_use_id: "t1".into(), content: "hello".into(), is_error: false }],
    });
    let a = Anthropic::body(&req);
    assert_eq!(a["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(
        a["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "t1", "content": "hello", "is_error": false})
    );
    let o = OpenAi::body(&req);
    assert_eq!(o["messages"][2]["tool_calls"][0]["function"]["arguments"], r#"{"path":"a"}"#);
    assert_eq!(o["messages"][3], json!({"role": "tool", "tool_call_id": "t1", "content": "hello"}));
}
