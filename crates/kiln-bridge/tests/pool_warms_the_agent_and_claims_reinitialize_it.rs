//! The warm pool with a real agent: a prewarmed row is ready only once the
//! agent is initialized with the pool's credentials, has a session with the
//! system prompt and the default model selected, and the row carries that
//! session. A claim re-initializes with the claimant's credentials: the same
//! credentials keep the warm agent and session; different ones restart only
//! the agent process and open a new session, and the claim says so.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_bridge::{AcpWarmUp, AgentSession, AgentSetup};
use kiln_pool::{PoolConfig, PoolManager, Source};
use kiln_sandbox::SandboxProvider;
use kiln_store::StaleRules;

fn creds(token: &str) -> BTreeMap<String, String> {
    [("KILN_TOKEN".to_owned(), token.to_owned())].into_iter().collect()
}

fn key(n: u32) -> String {
    format!("6a1f0c2e-7b3d-4c5e-9f80-{n:012x}")
}

async fn wait_ready(pool: &PoolManager) {
    let t = Instant::now();
    loop {
        let s = pool.status().await.unwrap();
        if s.ready >= 1 && s.warming == 0 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never ready: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prewarm_opens_the_session_and_claims_reuse_or_restart_the_agent() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    let provider: Arc<dyn SandboxProvider> = Arc::new(common::provider(env));
    let setup = AgentSetup {
        pool_credentials: creds("pool"),
        system_prompt: Some("You are Kiln's app builder.".into()),
        mcp_servers: vec![],
        model: Some("testy-large".into()),
    };
    let claimant = key(2);
    let warm = AcpWarmUp::new(setup, None)
        .with_claim_credentials(move |k| if k == claimant { creds("own-key") } else { creds("pool") });
    let mut cfg = PoolConfig::new(common::spec(), format!("test-{}", kiln_store::new_id()));
    cfg.target = 1;
    let pool = PoolManager::new(store.clone(), provider.clone(), Arc::new(warm), cfg);

    pool.topup(None).await.unwrap();
    wait_ready(&pool).await;
    let hash = provider.spec_hash().await.unwrap();
    let rules = StaleRules { now_ms: kiln_store::now_ms(), max_age_ms: 3_600_000 };
    let row = store.first_ready(&hash, &rules).await.unwrap().expect("a ready row");
    let warmed = AgentSession::parse(row.agent_session.as_deref()).expect("the row carries the agent session");
    let model = warmed.config_options.as_array().unwrap().iter().find(|o| o["category"] == "model").unwrap().clone();
    assert_eq!(model["currentValue"], "testy-large", "the default model is selected before the row is ready");
    assert_eq!(warmed.agent_info["name"], "kiln-testy");

    // Same credentials: the warm agent and its session are handed over.
    let a = pool.acquire(&key(1), &|_, _| {}).await.unwrap();
    assert_eq!(a.source, Source::Warm);
    assert!(!a.agent_restarted);
    assert!(a.reinit_ms.is_some());
    let s1 = AgentSession::parse(a.agent_session.as_deref()).unwrap();
    assert_eq!(s1.session_id, warmed.session_id);
    let client = kiln_sandbox::EnvdClient::new(a.endpoint.clone());
    assert_eq!(client.agent_status().await.unwrap().starts, 1);

    // Different credentials: only the agent process restarts, with a new session.
    pool.topup(None).await.unwrap();
    wait_ready(&pool).await;
    let rules = StaleRules { now_ms: kiln_store::now_ms(), max_age_ms: 3_600_000 };
    let row = store.first_ready(&hash, &rules).await.unwrap().expect("a ready row");
    let ep: kiln_sandbox::Endpoint = serde_json::from_str(row.endpoint.as_deref().unwrap()).unwrap();
    let uptime_before = kiln_sandbox::EnvdClient::new(ep).health().await.unwrap().uptime_ms;
    let b = pool.acquire(&key(2), &|_, _| {}).await.unwrap();
    assert_eq!(b.sandbox_id.as_str(), row.sandbox_id);
    assert_eq!(b.source, Source::Warm);
    assert!(b.agent_restarted, "the claim reports the restart");
    let s2 = AgentSession::parse(b.agent_session.as_deref()).unwrap();
    let client = kiln_sandbox::EnvdClient::new(b.endpoint.clone());
    let st = client.agent_status().await.unwrap();
    assert_eq!(st.starts, 2, "the agent restarted once");
    assert_eq!(st.sessions.iter().map(|s| s.session_id.clone()).collect::<Vec<_>>(), vec![s2.session_id.clone()]);
    let h = client.health().await.unwrap();
    assert!(h.uptime_ms >= uptime_before, "the sandbox itself was not restarted");
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    kiln_bridge::run_turn(&client, &s2.session_id, "env KILN_TOKEN\nsay |\nmodel\nsay |\nsystem", None, &tx)
        .await
        .unwrap();
    drop(tx);
    let mut ev = vec![];
    while let Some(e) = rx.recv().await {
        ev.push(e);
    }
    assert_eq!(common::text(&ev), "own-key|testy-large|You are Kiln's app builder.");
    // The session record keeps the new agent session.
    assert_eq!(store.get_session(&key(2)).await.unwrap().unwrap().agent_session, b.agent_session);

    pool.drain().await.unwrap();
    for id in [a.sandbox_id, b.sandbox_id] {
        provider.kill(&id).await.unwrap();
        assert!(support::leftovers(env, &id).is_empty());
    }
}
