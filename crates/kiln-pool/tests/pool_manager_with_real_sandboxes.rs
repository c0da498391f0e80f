//! The pool manager end to end with real sandboxes, on both stores:
//! top-up fills (at a low CPU weight), claims hit in order, get the normal
//! weight back and refill, a session reuses its
//! sandbox, an empty pool cold-boots with phases, stale rows and failed
//! prewarms leave nothing behind, idle sessions are reaped, and a restarted
//! server recovers its predecessor's rows.

#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kiln_pool::{BootPhase, NoWarmUp, PoolConfig, PoolManager, Source};
use kiln_sandbox::{Created, EnvdClient, ProviderError, SandboxProvider};
use kiln_store::Store;
use kiln_types::{CpuPriority, SandboxId, SandboxInfo, SandboxSpec};

/// Delegates to the real local provider and remembers what it created.
struct Recording {
    inner: kiln_sandbox::LocalProvider,
    created: Mutex<Vec<SandboxId>>,
}

#[async_trait]
impl SandboxProvider for Recording {
    async fn create_as(&self, id: &SandboxId, spec: &SandboxSpec) -> Result<Created, ProviderError> {
        self.created.lock().unwrap().push(id.clone());
        self.inner.create_as(id, spec).await
    }
    async fn spec_hash(&self) -> Result<String, ProviderError> {
        self.inner.spec_hash().await
    }
    async fn reclaim(&self, keep: kiln_sandbox::provider::KeepFn<'_>) -> Result<Vec<SandboxId>, ProviderError> {
        self.inner.reclaim(keep).await
    }
    async fn kill(&self, id: &SandboxId) -> Result<(), ProviderError> {
        self.inner.kill(id).await
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError> {
        self.inner.list().await
    }
    async fn connect(&self, id: &SandboxId) -> Result<EnvdClient, ProviderError> {
        self.inner.connect(id).await
    }
    async fn set_cpu_priority(&self, id: &SandboxId, p: CpuPriority) -> Result<(), ProviderError> {
        self.inner.set_cpu_priority(id, p).await
    }
}

/// The sandbox's CPU weight as the kernel has it: `("cpu.shares", n)` on a
/// v1 cpu hierarchy or `("cpu.weight", n)` on v2; `None` without a cpu
/// controller (then sandboxes cannot be weighed at all).
fn cpu_weight(id: &SandboxId) -> Option<(&'static str, u32)> {
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    roots.extend(std::fs::read_dir("/sys/fs/cgroup").ok()?.flatten().map(|e| e.path()));
    for root in roots {
        for parent in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if !parent.file_name().to_string_lossy().starts_with(kiln_sandbox::cgroup::PARENT_PREFIX) {
                continue;
            }
            for file in ["cpu.shares", "cpu.weight"] {
                if let Ok(v) = std::fs::read_to_string(parent.path().join(id.as_str()).join(file)) {
                    return Some((file, v.trim().parse().unwrap()));
                }
            }
        }
    }
    None
}

struct Fixture {
    pool: PoolManager,
    provider: Arc<Recording>,
    env: &'static support::Env,
    refill_delay: Duration,
}

impl Fixture {
    fn new(
        env: &'static support::Env,
        store: Arc<dyn Store>,
        owner: &str,
        tweak: impl FnOnce(&mut PoolConfig),
    ) -> Fixture {
        let provider = Arc::new(Recording { inner: env.provider().with_owner(owner), created: Mutex::new(vec![]) });
        let mut cfg = PoolConfig::new(SandboxSpec::app(), format!("test-{}", kiln_store::new_id()));
        cfg.target = 0;
        tweak(&mut cfg);
        let refill_delay = cfg.claim_refill_delay;
        let pool = PoolManager::new(store, provider.clone() as Arc<dyn SandboxProvider>, Arc::new(NoWarmUp), cfg);
        Fixture { pool, provider, env, refill_delay }
    }

    async fn wait_ready(&self, n: u32) {
        let t = Instant::now();
        loop {
            let s = self.pool.status().await.unwrap();
            if s.ready >= n && s.warming == 0 {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "pool never reached {n} ready: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills everything this fixture created and asserts nothing is left.
    /// A refill that a claim queued starts after the refill delay; it is let
    /// start and finish first, or it would boot a sandbox after the kills
    /// below that the ending test process would leave running.
    async fn finish(self) {
        tokio::time::sleep(self.refill_delay + Duration::from_millis(300)).await;
        let t = Instant::now();
        while self.pool.status().await.unwrap().warming > 0 {
            assert!(t.elapsed() < Duration::from_secs(60), "a refill never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pool.drain().await.unwrap();
        let created = self.provider.created.lock().unwrap().clone();
        for id in &created {
            let _ = self.provider.inner.kill(id).await;
        }
        for id in &created {
            assert_eq!(support::leftovers(self.env, id), Vec::<String>::new(), "{id}");
        }
    }
}

async fn eventually_gone(env: &support::Env, id: &SandboxId) {
    let t = Instant::now();
    while !support::leftovers(env, id).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "{id} still there: {:?}", support::leftovers(env, id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(n: u32) -> String {
    format!("3f2b8c1e-9a4d-4e6f-8b2a-{n:012x}")
}

#[tokio::test(flavor = "multi_thread")]
async fn topup_fills_claims_hit_and_the_pool_refills_on_both_stores() {
    let env = require_env!();
    let (stores, schema) = kiln_store_test_stores().await;
    for store in stores.iter() {
        let f = Fixture::new(env, store.clone(), "test", |c| c.target = 2);
        let t = f.pool.topup(None).await.unwrap();
        assert_eq!((t.spawned, t.target), (2, 2), "{}", store.kind());
        // A second top-up while those warm spawns nothing.
        assert_eq!(f.pool.topup(None).await.unwrap().spawned, 0);
        f.wait_ready(2).await;
        let first = f.pool.status().await.unwrap().first_ready.unwrap().sandbox_id;
        let weight = cpu_weight(&first.parse().unwrap());
        match weight {
            Some(w) => {
                assert!(matches!(w, ("cpu.shares", 128) | ("cpu.weight", 12)), "a warm sandbox weighs less: {w:?}")
            }
            None if std::env::var("CI").as_deref() == Ok("true") => panic!("no cpu cgroup controller on a CI host"),
            None => eprintln!("no cpu cgroup controller here: CPU weights not checked"),
        }

        let a = f.pool.acquire(&key(1), &|_, _| {}).await.unwrap();
        assert_eq!(a.source, Source::Warm);
        assert_eq!(a.sandbox_id.as_str(), first, "the oldest ready sandbox is claimed first");
        EnvdClient::new(a.endpoint.clone()).health().await.expect("claimed sandbox answers");
        if weight.is_some() {
            let w = cpu_weight(&a.sandbox_id).unwrap();
            assert!(
                matches!(w, ("cpu.shares", 1024) | ("cpu.weight", 100)),
                "a claimed sandbox weighs normally: {w:?}"
            );
        }
        // The claim spawned a refill: back to two ready.
        f.wait_ready(2).await;
        let again = f.pool.acquire(&key(1), &|_, _| {}).await.unwrap();
        assert_eq!((again.source, &again.sandbox_id), (Source::Reuse, &a.sandbox_id));
        assert_eq!(again.app_id, a.app_id);
        let b = f.pool.acquire(&key(2), &|_, _| {}).await.unwrap();
        assert_eq!(b.source, Source::Warm);
        assert_ne!(b.sandbox_id, a.sandbox_id);
        f.finish().await;
    }
    if let Some((url, schema)) = schema {
        kiln_store::drop_postgres_schema(&url, &schema).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_pool_cold_boots_and_reports_each_phase() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    let f = Fixture::new(env, store, "test", |_| {});
    let phases = Arc::new(Mutex::new(Vec::new()));
    let p = phases.clone();
    let a = f.pool.acquire(&key(3), &move |phase, _ms| p.lock().unwrap().push(phase)).await.unwrap();
    assert_eq!(a.source, Source::Cold);
    assert_eq!(*phases.lock().unwrap(), [BootPhase::Create, BootPhase::DevServer, BootPhase::Agent]);
    EnvdClient::new(a.endpoint.clone()).health().await.unwrap();
    if let Some(w) = cpu_weight(&a.sandbox_id) {
        assert!(matches!(w, ("cpu.shares", 1024) | ("cpu.weight", 100)), "someone waits for a cold boot: {w:?}");
    }
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_rows_and_expired_leases_are_killed_by_the_next_topup() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    let f = Fixture::new(env, store.clone(), "test", |_| {});
    let old_spec = f.provider.inner.create(&SandboxSpec::app()).await.unwrap().info.id;
    let dead_lease = f.provider.inner.create(&SandboxSpec::app()).await.unwrap().info.id;
    let now = kiln_store::now_ms();
    let rules = kiln_store::StaleRules { now_ms: now, max_age_ms: 45 * 60_000 };
    let spec = f.provider.spec_hash().await.unwrap();
    for (id, spec_hash, lease) in [(&old_spec, "an-older-template", 60_000), (&dead_lease, spec.as_str(), -1)] {
        let sid = id.to_string();
        let make = move || kiln_store::NewEntry {
            id: kiln_store::new_id(),
            sandbox_id: sid.clone(),
            owner: "someone-else".into(),
            created_at: now,
            lease_expires_at: now + lease,
        };
        let c = store.counts(spec_hash, &rules).await.unwrap();
        let r = store.reserve(spec_hash, c.ready + c.warming + 1, &rules, &make).await.unwrap();
        if spec_hash != spec {
            store.mark_ready(&r.reserved[0].id, now, "{}", None).await.unwrap();
        }
    }
    assert_eq!(f.pool.status().await.unwrap().stale, 2);
    f.pool.topup(Some(0)).await.unwrap();
    eventually_gone(env, &old_spec).await;
    eventually_gone(env, &dead_lease).await;
    assert_eq!(f.pool.status().await.unwrap().stale, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_prewarm_kills_its_sandbox_and_deletes_its_row() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    // No dev server can answer within a millisecond: the prewarm fails.
    let f = Fixture::new(env, store, "test", |c| {
        c.target = 1;
        c.dev_ready_timeout = Duration::from_millis(1);
    });
    assert_eq!(f.pool.topup(None).await.unwrap().spawned, 1);
    let t = Instant::now();
    loop {
        let s = f.pool.status().await.unwrap();
        if s.warming == 0 {
            assert_eq!(s.ready, 0);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = f.provider.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    eventually_gone(env, &created[0]).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_lose_their_sandbox_and_the_next_acquire_gets_a_new_one() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    let f = Fixture::new(env, store, "test", |c| c.idle_timeout = Duration::from_millis(200));
    let a = f.pool.acquire(&key(4), &|_, _| {}).await.unwrap();
    assert_eq!(f.pool.reap_idle().await.unwrap(), 0, "active session reaped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.pool.reap_idle().await.unwrap(), 1);
    eventually_gone(env, &a.sandbox_id).await;
    let b = f.pool.acquire(&key(4), &|_, _| {}).await.unwrap();
    assert_ne!(b.sandbox_id, a.sandbox_id);
    assert_ne!(b.source, Source::Reuse);
    assert_eq!(b.app_id, a.app_id, "the session keeps its app across sandboxes");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_recovers_its_warming_rows_and_reclaims_unknown_sandboxes() {
    let env = require_env!();
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    let owner = format!("server-{}", kiln_store::new_id());
    let f = Fixture::new(env, store.clone(), &owner, |_| {});
    let instance = f.pool.config().instance.clone();
    let spec = f.provider.spec_hash().await.unwrap();
    // The dead predecessor: a warming row with its sandbox, an unknown
    // sandbox, and a session-bound one (known: must survive).
    let warming = f.provider.inner.create(&SandboxSpec::app()).await.unwrap().info.id;
    let unknown = f.provider.inner.create(&SandboxSpec::app()).await.unwrap().info.id;
    let bound = f.provider.inner.create(&SandboxSpec::app()).await.unwrap().info.id;
    let now = kiln_store::now_ms();
    let wid = warming.to_string();
    let inst = instance.clone();
    let make = move || kiln_store::NewEntry {
        id: kiln_store::new_id(),
        sandbox_id: wid.clone(),
        owner: inst.clone(),
        created_at: now,
        lease_expires_at: now + 60_000,
    };
    store.reserve(&spec, 1, &kiln_store::StaleRules { now_ms: now, max_age_ms: 60_000 }, &make).await.unwrap();
    store.bind_session(&key(5), bound.as_str(), "{}", None, now).await.unwrap();

    assert_eq!(f.pool.recover_own_warming().await.unwrap(), 1);
    let reclaimed = f.pool.reclaim_unknown(&owner).await.unwrap();
    assert!(reclaimed.contains(&unknown), "{reclaimed:?}");
    assert!(!reclaimed.contains(&bound));
    for id in [&warming, &unknown] {
        eventually_gone(env, id).await;
    }
    assert!(
        support::leftovers(env, &bound).iter().any(|l| l.starts_with("directory")),
        "the session's sandbox was killed"
    );
    f.provider.inner.kill(&bound).await.unwrap();
    f.finish().await;
}

/// Both stores, as in kiln-store's tests (PostgreSQL required under
/// CI=true), and the PostgreSQL schema to drop afterwards.
async fn kiln_store_test_stores() -> (Vec<Arc<dyn Store>>, Option<(String, String)>) {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let mut all = vec![kiln_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap()];
    let url =
        std::env::var("KILN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kiln_pool_test_{}", kiln_store::new_id());
    match kiln_store::connect_postgres_schema(&url, &schema).await {
        Ok(pg) => {
            all.push(pg);
            (all, Some((url, schema)))
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and PostgreSQL is unusable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED the PostgreSQL half: {e}");
            (all, None)
        }
    }
}
