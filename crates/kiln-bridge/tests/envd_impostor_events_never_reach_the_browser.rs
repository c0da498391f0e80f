//! A fake envd (sandbox code impersonating it) sends what only the host may
//! say: a `session` event whose preview URL is `javascript:alert(1)` (the
//! builder once loaded it as the preview iframe's `src`, in Kiln's origin),
//! a forged `version`, `boot` and `html`, an unknown event type, and file
//! events whose paths climb out of `/app` or carry a newline and an escape
//! sequence. The turn forwards none of them, and still forwards the agent's
//! own text and `done`.

#[path = "support/fake_envd.rs"]
mod fake_envd;

use fake_envd::{Behaviour, FakeEnvd};
use kiln_types::chat::{EventBody, StopReason};

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_forwards_no_session_version_boot_html_or_bad_paths_from_envd() {
    let envd = FakeEnvd::start(Behaviour::Impersonates);
    let (result, events) = fake_envd::turn(&envd.client()).await;
    result.expect("the impostor's extra events are dropped, not fatal");
    assert_eq!(
        events,
        vec![EventBody::Text { delta: "Still an agent.".into() }, EventBody::Done { stop_reason: StopReason::EndTurn },],
        "only the agent's own, well-formed events pass"
    );
    let shown = serde_json::to_string(&events).unwrap();
    assert!(!shown.contains("javascript:") && !shown.contains("forged") && !shown.contains("passwd"), "{shown}");
    assert_eq!(envd.requests(), vec!["POST /v1/agent/sessions/s1/prompt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_envd_says_in_an_error_is_escaped_when_displayed() {
    // The fake's 404 body is JSON; an impostor's could hold escape
    // sequences: they reach logs only through ClientError's Display.
    let envd = FakeEnvd::start(Behaviour::Honest);
    let err = envd.client().dev_server().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    let e = kiln_sandbox::envd_client::ClientError::Status {
        status: http_404(),
        code: "x\u{1b}[31m".into(),
        message: "line one\nforged line\u{202e}".into(),
    };
    let shown = e.to_string();
    assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'), "{shown:?}");
    assert!(shown.contains("line one\\nforged line\\u{202e}") && shown.contains("x\\x1b[31m"), "{shown}");
}

fn http_404() -> http::StatusCode {
    http::StatusCode::NOT_FOUND
}
