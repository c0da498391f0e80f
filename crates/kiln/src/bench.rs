//! `kiln bench sandbox`: create → envd ready, create → first 200 on `/`,
//! create → whole module graph, and idle memory of a sandbox.

use std::time::{Duration, Instant};

use clap::Subcommand;
use kiln_sandbox::SandboxProvider;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Sandbox start-up latency and idle memory.
    Sandbox {
        /// Number of sandboxes to create, one after another.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Warm-claim latency (1 and 50 concurrent claimants, SQLite and
    /// PostgreSQL) and pool refill throughput.
    Pool {
        /// Claims measured per concurrency level and store.
        #[arg(long, default_value_t = 1000)]
        claims: usize,
        /// Sandboxes to refill for the throughput figure.
        #[arg(long, default_value_t = 8)]
        refill: u32,
        /// PostgreSQL to measure on (a fresh schema is created and dropped).
        #[arg(long, env = "KILN_BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
        postgres: String,
    },
    /// The agent bridge: ACP initialize (cold, unchanged credentials,
    /// changed credentials), session set-up, a prompt turn to its version
    /// and to the preview, and a restore.
    Bridge {
        /// Sandboxes to measure, one after another.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// The ACP agent program (copied into the sandbox); default: the
        /// deterministic `kiln-testy` next to `kiln`.
        #[arg(long)]
        agent: Option<std::path::PathBuf>,
    },
    /// The builder in headless Chromium: click Build (warm pool) → first
    /// preview paint, and an agent's file write → `hmr:after`.
    E2e {
        /// Sessions to measure, one after another.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
}

/// Median and 95th percentile (nearest rank) of `xs`.
pub fn percentiles(xs: &mut [f64]) -> (f64, f64) {
    (percentile(xs, 0.5), percentile(xs, 0.95))
}

/// The `p` quantile (nearest rank) of `xs`; sorts `xs`.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1]
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<u8> {
    match cmd {
        BenchCmd::Sandbox { runs } => sandbox(runs.max(1)).await,
        BenchCmd::Pool { claims, refill, postgres } => {
            crate::bench_pool::run(claims.max(50), refill.max(1), &postgres).await
        }
        BenchCmd::Bridge { runs, agent } => crate::bench_bridge::run(runs.max(1), agent).await,
        BenchCmd::E2e { runs } => crate::bench_e2e::run(runs.max(1)).await,
    }
}

async fn sandbox(runs: usize) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let p = crate::cli::provider(&cfg, "bench")?;
    kiln_sandbox::template::build(&p, &cfg.app_spec(), None).await?;
    let (mut envd, mut first, mut graph, mut rss) = (vec![], vec![], vec![], vec![]);
    let mut modules = 0;
    for i in 0..runs {
        let t = Instant::now();
        let c = p.create(&cfg.app_spec()).await?;
        envd.push(t.elapsed().as_secs_f64() * 1000.0);
        let client = kiln_sandbox::EnvdClient::new(c.endpoint.clone());
        let port = kiln_types::envd::DEV_SERVER_PORT;
        loop {
            let (status, _) =
                kiln_sandbox::graph::proxy_get(&client, port, "/").await.unwrap_or((0, Default::default()));
            if status == 200 {
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "dev server of {} never answered", c.info.id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        let stats = kiln_sandbox::graph::fetch_module_graph(&client, port).await?;
        graph.push(t.elapsed().as_secs_f64() * 1000.0);
        modules = stats.modules;
        // Let it settle to idle, then read its memory from the cgroup.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(kiln_sandbox::local::memory_usage_mib(&p, &c.info.id).unwrap_or(f64::NAN));
        p.kill(&c.info.id).await?;
        eprintln!(
            "run {}/{runs}: envd {:.0} ms, first 200 {:.0} ms, graph {:.0} ms",
            i + 1,
            envd[i],
            first[i],
            graph[i]
        );
    }
    println!("kiln bench sandbox: {runs} runs, {modules} modules in the page's graph");
    for (name, xs, unit) in [
        ("create → envd ready", &mut envd, "ms"),
        ("create → first 200 on /", &mut first, "ms"),
        ("create → full module graph", &mut graph, "ms"),
        ("idle sandbox RSS (cgroup)", &mut rss, "MiB"),
    ] {
        let (p50, p95) = percentiles(xs);
        println!("  {name:<30} median {p50:>7.1} {unit}   p95 {p95:>7.1} {unit}");
    }
    Ok(0)
}

/// Prints one `name median p95` line.
pub fn report(name: &str, xs: &mut [f64], unit: &str) {
    let (p50, p95) = percentiles(xs);
    println!("  {name:<46} median {p50:>7.1} {unit}   p95 {p95:>7.1} {unit}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_use_nearest_rank() {
        let mut xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(super::percentiles(&mut xs), (10.0, 19.0));
        assert_eq!(super::percentiles(&mut [5.0]), (5.0, 5.0));
    }
}
