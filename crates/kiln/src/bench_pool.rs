//! `kiln bench pool`: what a warm claim costs the server, and how fast the
//! pool refills.
//!
//! Claim latency is the whole server-side `acquire` path — the store's
//! atomic claim, a health check of the claimed sandbox's envd, the claim
//! hook and the session bind — measured per claim while 1 or 50 claimants
//! run at once. Fifty real sandboxes are booted once; each round inserts
//! ready rows pointing at them (one sandbox per concurrent claimant, as in
//! real life), so the health checks are real without booting 50 sandboxes
//! per round. The pool's target is 0: claims start no refills that would
//! compete for the CPU with what is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_pool::{NoWarmUp, PoolConfig, PoolManager, Source};
use kiln_sandbox::{LocalProvider, SandboxProvider};
use kiln_store::{NewEntry, StaleRules, Store};

use crate::bench::percentile;

pub async fn run(claims: usize, refill: u32, pg_url: &str) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let provider = Arc::new(crate::cli::provider(&cfg, "bench")?);
    kiln_sandbox::template::build(&provider, &cfg.app_spec(), None).await?;
    let mut spec = cfg.app_spec();
    spec.dev_server = false; // envd is what a claim talks to; Vite would only eat memory
    let mut sandboxes = Vec::new();
    for _ in 0..5 {
        let batch = futures::future::join_all((0..10).map(|_| provider.create(&spec))).await;
        for c in batch {
            sandboxes.push(c?);
        }
    }
    let endpoints: Vec<String> =
        sandboxes.iter().map(|c| serde_json::to_string(&c.endpoint)).collect::<Result<_, _>>()?;

    let dir = tempfile_dir(&cfg.data_dir)?;
    let mut stores: Vec<Arc<dyn Store>> =
        vec![kiln_store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await?];
    let schema = format!("kiln_bench_{}", kiln_store::new_id());
    match kiln_store::connect_postgres_schema(pg_url, &schema).await {
        Ok(pg) => stores.push(pg),
        Err(e) => eprintln!("PostgreSQL skipped ({e}); set KILN_BENCH_DATABASE_URL"),
    }

    println!("kiln bench pool: server-side warm claim (store claim + envd health + session bind)");
    for store in &stores {
        for concurrency in [1usize, 50] {
            let mut lat =
                claim_latencies(store.clone(), provider.clone(), &cfg, &endpoints, claims, concurrency).await?;
            let (p50, p95, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.95), percentile(&mut lat, 0.99));
            println!(
                "  {:<8} {concurrency:>2} concurrent: {:>5} claims  p50 {p50:>6.2} ms  p95 {p95:>6.2} ms  p99 {p99:>6.2} ms",
                store.kind(),
                lat.len()
            );
        }
    }
    for c in &sandboxes {
        provider.kill(&c.info.id).await?;
    }
    drop_schema(pg_url, &schema).await;

    let rate = refill_rate(stores[0].clone(), provider.clone(), &cfg, refill).await?;
    println!(
        "  refill: {refill} sandboxes from empty to ready in {:.2} s = {:.2} sandboxes/s",
        f64::from(refill) / rate,
        rate
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

fn tempfile_dir(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let d = data_dir.join(format!("bench-{}", kiln_store::new_id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

async fn claim_latencies(
    store: Arc<dyn Store>,
    provider: Arc<LocalProvider>,
    cfg: &kiln_server::Config,
    endpoints: &[String],
    claims: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut pc = PoolConfig::new(cfg.app_spec(), format!("bench-{}", kiln_store::new_id()));
    pc.target = 0;
    let pool = PoolManager::new(store.clone(), provider.clone() as Arc<dyn SandboxProvider>, Arc::new(NoWarmUp), pc);
    let spec = provider.spec_hash().await?;
    let mut out = Vec::with_capacity(claims);
    while out.len() < claims {
        // One round: `concurrency` ready rows, then as many claimants at once.
        let now = kiln_store::now_ms();
        let rules = StaleRules { now_ms: now, max_age_ms: 3_600_000 };
        let make = move || NewEntry {
            id: kiln_store::new_id(),
            sandbox_id: kiln_types::SandboxId::random().to_string(),
            owner: "bench".into(),
            created_at: now,
            lease_expires_at: now + 60_000,
        };
        let r = store.reserve(&spec, concurrency as u32, &rules, &make).await?;
        for (e, ep) in r.reserved.iter().zip(endpoints.iter().cycle()) {
            store.mark_ready(&e.id, now, ep, None).await?;
        }
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let pool = pool.clone();
            let key = format!("{}-0000-4000-8000-{}", &kiln_store::new_id()[..8], &kiln_store::new_id()[..12]);
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let a = pool.acquire(&key, &|_, _| {}).await;
                (t.elapsed().as_secs_f64() * 1000.0, a.map(|a| a.source))
            }));
        }
        for t in tasks {
            let (ms, source) = t.await?;
            anyhow::ensure!(matches!(source, Ok(Source::Warm)), "a bench claim was not a warm hit: {source:?}");
            out.push(ms);
        }
    }
    Ok(out)
}

async fn refill_rate(
    store: Arc<dyn Store>,
    provider: Arc<LocalProvider>,
    cfg: &kiln_server::Config,
    n: u32,
) -> anyhow::Result<f64> {
    let mut pc = PoolConfig::new(cfg.app_spec(), format!("bench-refill-{}", kiln_store::new_id()));
    pc.target = n;
    pc.max_target = n;
    let pool = PoolManager::new(store, provider as Arc<dyn SandboxProvider>, Arc::new(NoWarmUp), pc);
    pool.drain().await?;
    let t = Instant::now();
    pool.topup(None).await?;
    loop {
        let s = pool.status().await?;
        if s.ready >= n {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "refill stalled: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    pool.drain().await?;
    Ok(f64::from(n) / secs)
}

async fn drop_schema(url: &str, schema: &str) {
    sqlx_drop(url, schema).await.unwrap_or_else(|e| eprintln!("could not drop bench schema {schema}: {e}"));
}

async fn sqlx_drop(url: &str, schema: &str) -> anyhow::Result<()> {
    kiln_store::drop_postgres_schema(url, schema).await?;
    Ok(())
}
