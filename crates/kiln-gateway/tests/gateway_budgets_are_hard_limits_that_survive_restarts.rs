//! Budgets are limits, not after-the-fact checks: forty concurrent streams
//! against a 10,000-token budget are billed no more than the budget by the
//! (stand-in) provider; an OpenAI stream that did not ask for usage is made
//! to report it and is charged; a stream cut short is charged its whole
//! hold; a request that cannot be priced never leaves; and spend kept in
//! the store survives a restart, where the dead process's holds are charged.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kiln_gateway::{Gateway, GatewayConfig, StoreLedger};
use support::{AGENT_HEADERS, ANTHROPIC_KEY, OPENAI_KEY, call, messages_body, settled, stand_in};

const BUDGET: u64 = 10_000;

fn config(base: &str, session_budget_tokens: u64) -> GatewayConfig {
    GatewayConfig {
        anthropic_base: base.into(),
        anthropic_key: Some(ANTHROPIC_KEY.into()),
        openai_base: base.into(),
        openai_key: Some(OPENAI_KEY.into()),
        session_budget_tokens,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_streams_are_billed_no_more_than_a_10k_budget() {
    let provider = stand_in(Duration::from_millis(100), Some(OPENAI_KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(config(&provider.base, BUDGET));
    gw.attach("sb1", &socket, "session-a").unwrap();
    let body = messages_body(1_000);
    let hold = (body.len() as u64).div_ceil(3) + 1_000;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (socket, body) = (socket.clone(), body.clone());
        tasks.push(tokio::spawn(
            async move { call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, &body).await },
        ));
    }
    let (mut ok, mut refused) = (0u64, 0u64);
    for t in tasks {
        let (status, answer) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert!(
                    answer.contains("budget_exceeded") && answer.contains("KILN_GATEWAY_SESSION_BUDGET"),
                    "{answer}"
                );
                refused += 1;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let spend = settled(&gw, "session-a").await;
    let billed = provider.billed();
    eprintln!("{ok} streams ran, {refused} refused; billed {billed} of {BUDGET} (hold {hold})");
    assert_eq!(ok + refused, 40);
    assert!(ok >= BUDGET / hold, "{ok} streams ran; {} fit", BUDGET / hold);
    assert_eq!(provider.requests().len() as u64, ok, "a refused request never reaches the provider");
    assert!(billed <= BUDGET + hold, "the provider billed {billed} against a budget of {BUDGET} (hold {hold})");
    assert!(billed <= BUDGET, "holds make the overshoot zero: billed {billed}");
    assert_eq!(spend.spent, billed, "the session is charged what the provider reported");
    assert_eq!(gw.spent("session-a"), billed);
}

#[tokio::test]
async fn an_openai_stream_without_include_usage_is_made_to_report_it_and_charged() {
    let provider = stand_in(Duration::ZERO, Some(OPENAI_KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(config(&provider.base, BUDGET));
    gw.attach("sb1", &socket, "session-a").unwrap();
    let body = r#"{"model":"gpt-stand-in","max_completion_tokens":300,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [("authorization", "Bearer kiln-gateway"), ("content-type", "application/json")];
    let (status, answer) = call(&socket, "POST", "/openai/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"usage\""), "the caller sees the usage chunk too: {answer}");
    let seen = provider.requests();
    assert_eq!(seen[0].body["stream_options"]["include_usage"], true, "{:?}", seen[0].body);
    let spend = settled(&gw, "session-a").await;
    assert_eq!(spend.spent, provider.billed());
    assert!(spend.spent > 300, "{spend:?}");
}

#[tokio::test]
async fn a_stream_cut_short_is_charged_its_hold_and_unpriceable_requests_never_leave() {
    let provider = stand_in(Duration::ZERO, Some(OPENAI_KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let gw = Gateway::new(config(&provider.base, BUDGET));
    gw.attach("sb1", &socket, "session-a").unwrap();
    let body = r#"{"model":"cut-stream","max_tokens":500,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _) = call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, body).await;
    assert_eq!(status, 200);
    let hold = (body.len() as u64).div_ceil(3) + 500;
    assert_eq!(settled(&gw, "session-a").await.spent, hold, "no final usage: the whole hold is charged");

    for (path, body) in [
        ("/anthropic/v1/messages", r#"{"model":"m","messages":[]}"#),
        ("/anthropic/v1/messages", "not json"),
        ("/anthropic/v1/messages", r#"[{"model":"m","max_tokens":5}]"#),
        ("/openai/v1/chat/completions", r#"{"model":"m","stream":true,"messages":[]}"#),
        ("/openai/v1/responses", r#"{"model":"m","input":"hi","max_output_tokens":9,"previous_response_id":"r"}"#),
    ] {
        let (status, answer) = call(&socket, "POST", path, AGENT_HEADERS, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
    }
    let (_, answer) = call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, r#"{"model":"m"}"#).await;
    assert!(answer.contains("set `max_tokens`"), "{answer}");
    assert_eq!(provider.requests().len(), 1, "refused bodies never reach the provider");
}

#[tokio::test]
async fn spend_in_the_store_survives_a_restart_and_a_dead_processs_holds_are_charged() {
    let provider = stand_in(Duration::ZERO, Some(OPENAI_KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
    let socket = dir.path().join("host.sock");
    let body = messages_body(1_000);
    let hold = (body.len() as u64).div_ceil(3) + 1_000;
    let budget = 3 * hold;
    let first_spent = {
        let store = kiln_store::connect(&url).await.unwrap();
        let ledger = Arc::new(StoreLedger::new(store.clone(), "instance-a"));
        let gw = Gateway::open(config(&provider.base, budget), ledger.clone()).unwrap();
        gw.attach("sb1", &socket, "session-a").unwrap();
        assert_eq!(call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, &body).await.0, 200);
        let spent = settled(&gw, "session-a").await.spent;
        // A request in flight when the process dies: its hold is left behind.
        use kiln_gateway::SpendLedger;
        let caps = [kiln_store::SpendCap { scope: "session:session-a".into(), cap: budget }];
        ledger.reserve("in-flight", hold, &caps).await.unwrap();
        gw.detach("sb1");
        spent
    };
    assert_eq!(first_spent, provider.billed());

    // The next process of the same instance opens the same database.
    let store = kiln_store::connect(&url).await.unwrap();
    let ledger = Arc::new(StoreLedger::new(store, "instance-a"));
    assert_eq!(ledger.recover().await.unwrap(), 1);
    let gw = Gateway::open(config(&provider.base, budget), ledger).unwrap();
    gw.attach("sb1", &socket, "session-a").unwrap();
    let spend = gw.spend("session-a").await.unwrap();
    assert_eq!((spend.spent, spend.reserved), (first_spent + hold, 0));
    // Spent ≈ 2 holds of 3: one more fits, then the budget is spent.
    assert_eq!(call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, &body).await.0, 200);
    settled(&gw, "session-a").await;
    let (status, answer) = call(&socket, "POST", "/anthropic/v1/messages", AGENT_HEADERS, &body).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(provider.requests().len(), 2);
}
