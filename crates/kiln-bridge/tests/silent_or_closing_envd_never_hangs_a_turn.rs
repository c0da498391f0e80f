//! A fake envd that never answers once left a session "running" forever and
//! `POST /api/chat/cancel` hanging for 11 minutes. Every envd call has a
//! deadline now: a cancel gives up after 5 s, a health check after 10 s (so
//! the pool replaces the sandbox), and a turn whose stream goes quiet can be
//! dropped at once by the chat layer. An envd that closes every connection
//! gets at most five resumes, with backoff, then the turn ends with an error.

#[path = "support/fake_envd.rs"]
mod fake_envd;

use std::time::{Duration, Instant};

use fake_envd::{Behaviour, FakeEnvd};
use kiln_bridge::{MAX_RESUMES, RESUME_BACKOFF, TurnError};
use kiln_sandbox::envd_client::ClientError;
use kiln_sandbox::envd_client::limits::{CANCEL_TIMEOUT, HEALTH_TIMEOUT};
use kiln_types::chat::{EventBody, StopReason};

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_health_return_within_their_deadlines_when_envd_is_silent() {
    let envd = FakeEnvd::start(Behaviour::Silent);
    let client = envd.client();
    let t = Instant::now();
    let (cancel, health) = tokio::join!(client.agent_cancel("s1"), client.health());
    assert!(matches!(cancel, Err(ClientError::Timeout { .. })), "{cancel:?}");
    assert!(matches!(health, Err(ClientError::Timeout { .. })), "{health:?}");
    assert!(t.elapsed() < HEALTH_TIMEOUT + Duration::from_secs(2), "{:?}", t.elapsed());
    let t = Instant::now();
    let _ = client.agent_cancel("s1").await;
    let took = t.elapsed();
    assert!(took >= CANCEL_TIMEOUT - Duration::from_millis(100) && took < CANCEL_TIMEOUT + Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_on_a_silent_stream_is_dropped_at_once_and_lets_go_of_envd() {
    let envd = FakeEnvd::start(Behaviour::SilentStream);
    let client = envd.client();
    let turn = fake_envd::turn(&client);
    // The chat layer's cancel drops the turn; nothing in it waits on envd.
    let cut = tokio::time::timeout(Duration::from_millis(500), turn).await;
    assert!(cut.is_err(), "a silent stream does not end by itself within 0.5 s");
    // The connection was released: the next call gets a fresh one at once.
    envd.set(Behaviour::Honest);
    let t = Instant::now();
    client.health().await.expect("honest again");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_envd_that_closes_at_once_ends_the_turn_with_an_error() {
    let envd = FakeEnvd::start(Behaviour::CloseImmediately);
    let t = Instant::now();
    let (result, events) = fake_envd::turn(&envd.client()).await;
    assert!(matches!(result, Err(TurnError::Envd(_))), "{result:?}");
    assert!(
        matches!(&events[..], [EventBody::Error { code, .. }, EventBody::Done { stop_reason: StopReason::Error }] if code == "agent_unreachable"),
        "{events:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_of_a_stream_that_keeps_closing_are_bounded_and_backed_off() {
    let envd = FakeEnvd::start(Behaviour::Truncates);
    let t = Instant::now();
    let (result, events) = fake_envd::turn(&envd.client()).await;
    let elapsed = t.elapsed();
    assert!(matches!(result, Err(TurnError::Lost { resumes: MAX_RESUMES })), "{result:?}");
    assert_eq!(events[0], EventBody::Text { delta: "cut short".into() });
    assert!(matches!(events.last(), Some(EventBody::Done { stop_reason: StopReason::Error })), "{events:?}");
    let resumes = envd.requests().iter().filter(|r| r.contains("/events?after=1&follow=true")).count();
    assert_eq!(resumes as u32, MAX_RESUMES, "{:?}", envd.requests());
    // 0.25 + 0.5 + 1 + 2 + 4 s of backoff: no tight loop.
    let backoff: Duration = (0..MAX_RESUMES).map(|i| RESUME_BACKOFF * 2u32.pow(i)).sum();
    assert!(elapsed >= backoff && elapsed < backoff + Duration::from_secs(3), "{elapsed:?}");
}
