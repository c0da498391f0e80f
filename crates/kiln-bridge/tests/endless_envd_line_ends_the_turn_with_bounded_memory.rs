//! A fake envd streams one NDJSON line that never ends. The first envd
//! client kept every byte and rescanned them on each frame (193 % CPU,
//! 611 MiB and rising, the turn never ending). Now the line is cut off at the
//! client's line limit: the turn ends at once with an `agent_protocol` error
//! and `done {error}`, it is not resumed (the same line would come again),
//! and the process's memory grows by far less than the bound.

#[path = "support/fake_envd.rs"]
mod fake_envd;

use std::time::{Duration, Instant};

use fake_envd::{Behaviour, FakeEnvd};
use kiln_bridge::TurnError;
use kiln_sandbox::envd_client::ClientError;
use kiln_sandbox::envd_client::limits::MAX_LINE;
use kiln_types::chat::{EventBody, StopReason};

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_line_ends_the_turn_quickly_with_bounded_memory() {
    let envd = FakeEnvd::start(Behaviour::EndlessLine);
    let before = fake_envd::rss_bytes();
    let t = Instant::now();
    let (result, events) = tokio::time::timeout(Duration::from_secs(30), fake_envd::turn(&envd.client()))
        .await
        .expect("the turn ends instead of reading forever");
    let elapsed = t.elapsed();
    let grown = fake_envd::rss_bytes().saturating_sub(before);
    eprintln!("ended after {elapsed:?}; RSS grew {} KiB; envd sent {} KiB", grown / 1024, envd.bytes_sent() / 1024);

    assert!(matches!(result, Err(TurnError::Envd(ClientError::TooLarge { .. }))), "{result:?}");
    assert!(
        matches!(&events[..], [EventBody::Error { code, .. }, EventBody::Done { stop_reason: StopReason::Error }] if code == "agent_protocol"),
        "{events:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);
    // Read up to the limit, plus what sat in socket buffers and one frame.
    assert!(envd.bytes_sent() < (MAX_LINE as u64) + (16 << 20), "{} bytes read", envd.bytes_sent());
    let resumed = envd.requests().iter().filter(|r| r.contains("/events")).count();
    assert_eq!(resumed, 0, "an over-long line is a protocol violation, not a broken connection");
}
