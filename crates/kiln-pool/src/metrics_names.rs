//! Metric names, in one place so dashboards and code agree.

pub const READY: &str = "kiln_pool_ready";
pub const WARMING: &str = "kiln_pool_warming";
pub const CLAIMS: &str = "kiln_pool_claims_total";
pub const CLAIM_SECONDS: &str = "kiln_pool_claim_seconds";
pub const PREWARM_SECONDS: &str = "kiln_pool_prewarm_seconds";
pub const PREWARM_FAILURES: &str = "kiln_pool_prewarm_failures_total";
pub const STALE_KILLED: &str = "kiln_pool_stale_killed_total";

/// Registers help texts with whatever recorder is installed.
pub fn describe_metrics() {
    metrics::describe_gauge!(READY, "Ready sandboxes in the pool (current spec hash).");
    metrics::describe_gauge!(WARMING, "Sandboxes being warmed for the pool.");
    metrics::describe_counter!(
        CLAIMS,
        "Sandbox acquisitions by result: hit (warm claim), miss (cold boot), reuse (session's own sandbox), dead (claimed row whose sandbox no longer answered)."
    );
    metrics::describe_histogram!(
        CLAIM_SECONDS,
        metrics::Unit::Seconds,
        "Server-side time to hand a session a sandbox, by result."
    );
    metrics::describe_histogram!(PREWARM_SECONDS, metrics::Unit::Seconds, "Duration of each prewarm phase.");
    metrics::describe_counter!(PREWARM_FAILURES, "Prewarms that failed, by phase.");
    metrics::describe_counter!(STALE_KILLED, "Stale pool rows whose sandboxes were killed.");
}
