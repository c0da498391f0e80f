//! The pool manager: top-up, prewarm tasks, acquire (reuse / claim / cold
//! boot), stale cleanup, idle reaping, drain and start-up reclaim.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_sandbox::{Endpoint, EnvdClient, SandboxProvider};
use kiln_store::{NewEntry, StaleRules, Store, now_ms};
use kiln_types::envd::DevServerState;
use kiln_types::{CpuPriority, SandboxId, SandboxSpec};
use serde::Serialize;

use crate::metrics_names as m;
use crate::{PoolError, WarmCtx, WarmUp};

/// How long a health check of a claimed or reused sandbox may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Sandboxes to keep ready (after clamping to `max_target`).
    pub target: u32,
    /// Largest target a top-up may ask for.
    pub max_target: u32,
    /// Rows older than this are stale (the sandbox itself idles out later).
    pub max_age: Duration,
    /// A warming row whose lease is not renewed for this long is stale.
    pub lease: Duration,
    /// A session's sandbox is killed after this long without activity.
    pub idle_timeout: Duration,
    /// How long a boot may wait for the dev server.
    pub dev_ready_timeout: Duration,
    /// How long the refill after a claim waits before booting: the person
    /// who claimed is loading their preview right then, and on a small
    /// host a booting sandbox would take a share of the CPU from it.
    pub claim_refill_delay: Duration,
    pub spec: SandboxSpec,
    /// This server instance; recorded as the owner of the rows it reserves.
    pub instance: String,
}

impl PoolConfig {
    pub fn new(spec: SandboxSpec, instance: impl Into<String>) -> PoolConfig {
        PoolConfig {
            target: 1,
            max_target: 16,
            max_age: Duration::from_secs(45 * 60),
            lease: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60 * 60),
            dev_ready_timeout: Duration::from_secs(60),
            claim_refill_delay: Duration::from_secs(1),
            spec,
            instance: instance.into(),
        }
    }
}

/// Steps of a boot, reported to a cold-booting caller as they finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootPhase {
    /// Namespaces, overlay and envd are up.
    Create,
    /// The dev server answers.
    DevServer,
    /// The agent hook ran (see [`WarmUp`]).
    Agent,
}

impl fmt::Display for BootPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootPhase::Create => "create",
            BootPhase::DevServer => "dev_server",
            BootPhase::Agent => "agent",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopupResult {
    pub ready: u32,
    pub warming: u32,
    pub spawned: u32,
    pub target: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstReady {
    pub sandbox_id: String,
    pub ready_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub ready: u32,
    pub warming: u32,
    pub stale: u32,
    pub target: u32,
    pub spec_hash: String,
    pub first_ready: Option<FirstReady>,
}

/// Where an acquired sandbox came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The session's own sandbox, still alive.
    Reuse,
    /// Claimed from the pool.
    Warm,
    /// Booted on the spot (the pool was empty).
    Cold,
}

#[derive(Debug, Clone)]
pub struct Acquired {
    pub sandbox_id: SandboxId,
    pub endpoint: Endpoint,
    pub app_id: String,
    pub source: Source,
    /// Server-side time from the request to a usable sandbox.
    pub ms: u64,
    /// Time the claim hook (agent re-initialization) took, on a warm claim.
    pub reinit_ms: Option<u64>,
    /// The claim hook had to restart the agent (new credentials) and open
    /// a new ACP session.
    pub agent_restarted: bool,
    pub agent_session: Option<String>,
}

#[derive(Clone)]
pub struct PoolManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    provider: Arc<dyn SandboxProvider>,
    warmup: Arc<dyn WarmUp>,
    cfg: PoolConfig,
    /// Background refills are coalesced: a burst of claims asks for one
    /// top-up (plus at most one more queued behind it), not one each.
    refill: tokio::sync::Semaphore,
    refill_queued: std::sync::atomic::AtomicBool,
    /// The claim batcher's queue (started on first use).
    claims: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ClaimRequest>>,
}

type ClaimReply = Result<Option<(kiln_store::Entry, kiln_store::Session)>, String>;

struct ClaimRequest {
    session_key: String,
    reply: tokio::sync::oneshot::Sender<ClaimReply>,
}

/// Most claims one batch transaction serves.
const CLAIM_BATCH: usize = 64;

/// Group commit: claims that arrive while a batch is in the database wait
/// and go together in the next one, so a burst of N claimants costs a
/// single-writer store (SQLite) one transaction instead of N.
async fn claim_loop(
    store: Arc<dyn Store>,
    provider: Arc<dyn SandboxProvider>,
    max_age_ms: i64,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ClaimRequest>,
) {
    let mut deferred: std::collections::VecDeque<ClaimRequest> = std::collections::VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < CLAIM_BATCH {
            let Ok(r) = rx.try_recv() else { break };
            // One session twice in a batch would bind two sandboxes to it.
            if batch.iter().any(|b| b.session_key == r.session_key) {
                deferred.push_back(r);
            } else {
                batch.push(r);
            }
        }
        let keys: Vec<String> = batch.iter().map(|r| r.session_key.clone()).collect();
        let result = async {
            let spec = provider.spec_hash().await.map_err(|e| e.to_string())?;
            let now = now_ms();
            let rules = StaleRules { now_ms: now, max_age_ms };
            store.claim_for_sessions(&spec, &rules, &keys, now).await.map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(pairs) => {
                let mut pairs = pairs.into_iter();
                for r in batch {
                    let _ = r.reply.send(Ok(pairs.next()));
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl PoolManager {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn SandboxProvider>,
        warmup: Arc<dyn WarmUp>,
        cfg: PoolConfig,
    ) -> Self {
        let refill = tokio::sync::Semaphore::new(1);
        let refill_queued = std::sync::atomic::AtomicBool::new(false);
        let claims = std::sync::OnceLock::new();
        PoolManager { inner: Arc::new(Inner { store, provider, warmup, cfg, refill, refill_queued, claims }) }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn rules(&self, now_ms: i64) -> StaleRules {
        StaleRules { now_ms, max_age_ms: self.inner.cfg.max_age.as_millis() as i64 }
    }

    /// Cleans up stale rows, reserves the deficit and spawns one prewarm per
    /// reserved row. Returns at once; the prewarms run in the background.
    pub async fn topup(&self, target: Option<u32>) -> Result<TopupResult, PoolError> {
        let max = self.inner.cfg.max_target;
        let target = match target {
            Some(t) if t > max => return Err(PoolError::TargetTooLarge { got: t, max }),
            Some(t) => t,
            None => self.inner.cfg.target,
        };
        let spec_hash = self.inner.provider.spec_hash().await?;
        self.cleanup(&spec_hash).await?;
        let now = now_ms();
        let lease_ms = self.inner.cfg.lease.as_millis() as i64;
        let owner = self.inner.cfg.instance.clone();
        let make = move || NewEntry {
            id: kiln_store::new_id(),
            sandbox_id: SandboxId::random().to_string(),
            owner: owner.clone(),
            created_at: now,
            lease_expires_at: now + lease_ms,
        };
        let r = self.inner.store.reserve(&spec_hash, target, &self.rules(now), &make).await?;
        let spawned = r.reserved.len() as u32;
        for e in r.reserved {
            let me = self.clone();
            tokio::spawn(async move { me.prewarm(e.id, e.sandbox_id).await });
        }
        metrics::gauge!(m::READY).set(f64::from(r.ready));
        metrics::gauge!(m::WARMING).set(f64::from(r.warming + spawned));
        Ok(TopupResult { ready: r.ready, warming: r.warming + spawned, spawned, target })
    }

    /// Removes stale rows and kills their sandboxes (in the background: the
    /// rows are already gone, so nobody can claim them).
    async fn cleanup(&self, spec_hash: &str) -> Result<usize, PoolError> {
        let stale = self.inner.store.take_stale(spec_hash, &self.rules(now_ms())).await?;
        for e in &stale {
            tracing::info!(sandbox = %e.sandbox_id, status = e.status.as_str(), "killing stale pool sandbox");
            metrics::counter!(m::STALE_KILLED).increment(1);
            self.spawn_kill(&e.sandbox_id);
        }
        Ok(stale.len())
    }

    fn spawn_kill(&self, sandbox_id: &str) {
        let Ok(id) = sandbox_id.parse::<SandboxId>() else { return };
        let provider = self.inner.provider.clone();
        tokio::spawn(async move {
            match provider.kill(&id).await {
                Ok(()) | Err(kiln_sandbox::ProviderError::NotFound(_)) => {}
                Err(e) => tracing::error!(sandbox = %id, error = %e, "killing a sandbox failed"),
            }
        });
    }

    async fn kill_now(&self, id: &SandboxId) {
        match self.inner.provider.kill(id).await {
            Ok(()) | Err(kiln_sandbox::ProviderError::NotFound(_)) => {}
            Err(e) => tracing::error!(sandbox = %id, error = %e, "killing a sandbox failed"),
        }
    }

    /// One prewarm task: boot under the row's sandbox id while renewing the
    /// row's lease; mark it ready, or clean up everything on failure.
    async fn prewarm(self, row: String, sandbox: String) {
        let Ok(id) = sandbox.parse::<SandboxId>() else {
            let _ = self.inner.store.delete_entry(&row).await;
            return;
        };
        let store = self.inner.store.clone();
        let lease = self.inner.cfg.lease;
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let renew_row = row.clone();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_lease(&renew_row, now_ms() + lease.as_millis() as i64).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = lost_tx.send(());
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "renewing a pool lease failed; retrying"),
                }
            }
        });
        let result = tokio::select! {
            r = self.boot(&id, CpuPriority::Background, &|phase, ms| {
                metrics::histogram!(m::PREWARM_SECONDS, "phase" => phase.to_string()).record(ms as f64 / 1000.0);
            }) => r,
            _ = lost_rx => Err(PoolError::Boot { sandbox: sandbox.clone(), phase: BootPhase::Create, detail: "the pool row was reclaimed as stale".into() }),
        };
        renewer.abort();
        match result {
            Ok((endpoint, agent)) => {
                let ep = serde_json::to_string(&endpoint).expect("endpoint serializes");
                match self.inner.store.mark_ready(&row, now_ms(), &ep, agent.as_deref()).await {
                    Ok(true) => tracing::debug!(sandbox = %id, "pool sandbox ready"),
                    Ok(false) => {
                        tracing::info!(sandbox = %id, "pool row vanished while warming; killing its sandbox");
                        self.kill_now(&id).await;
                    }
                    Err(e) => {
                        tracing::error!(sandbox = %id, error = %e, "marking a pool sandbox ready failed");
                        self.kill_now(&id).await;
                        let _ = self.inner.store.delete_entry(&row).await;
                    }
                }
            }
            Err(e) => {
                let phase = match &e {
                    PoolError::Boot { phase, .. } => phase.to_string(),
                    _ => "create".into(),
                };
                metrics::counter!(m::PREWARM_FAILURES, "phase" => phase).increment(1);
                tracing::error!(sandbox = %id, error = %e, "prewarm failed");
                self.kill_now(&id).await;
                let _ = self.inner.store.delete_entry(&row).await;
            }
        }
    }

    /// The boot steps shared by prewarm and cold boot. `report` hears each
    /// finished phase with its duration in ms.
    async fn boot(
        &self,
        id: &SandboxId,
        priority: CpuPriority,
        report: &(dyn Fn(BootPhase, u64) + Send + Sync),
    ) -> Result<(Endpoint, Option<String>), PoolError> {
        let fail = |phase, detail: String| PoolError::Boot { sandbox: id.to_string(), phase, detail };
        let t = Instant::now();
        let created = self
            .inner
            .provider
            .create_as(id, &self.inner.cfg.spec)
            .await
            .map_err(|e| fail(BootPhase::Create, e.to_string()))?;
        report(BootPhase::Create, t.elapsed().as_millis() as u64);
        if priority != CpuPriority::Interactive {
            self.set_priority(id, priority).await;
        }
        let client = EnvdClient::new(created.endpoint.clone());
        if self.inner.cfg.spec.dev_server {
            let t = Instant::now();
            let h = client
                .wait_dev_ready(self.inner.cfg.dev_ready_timeout)
                .await
                .map_err(|e| fail(BootPhase::DevServer, e.to_string()))?;
            if h.dev_server.state != DevServerState::Ready {
                let tail = h.dev_server.log_tail.iter().rev().take(20).rev().cloned().collect::<Vec<_>>().join("\n");
                return Err(fail(BootPhase::DevServer, format!("dev server not ready: {tail}")));
            }
            // Have Vite transform the whole module graph now (React, the
            // app, Tailwind's CSS), so the person's first preview paint is
            // served from its cache. Best effort: a failure only costs time.
            if let Err(e) = kiln_sandbox::graph::fetch_module_graph(&client, kiln_types::envd::DEV_SERVER_PORT).await {
                tracing::debug!(sandbox = %id, error = %e, "warming the module graph failed");
            }
            report(BootPhase::DevServer, t.elapsed().as_millis() as u64);
        }
        let t = Instant::now();
        let ctx = WarmCtx { sandbox_id: id, host_socket: self.inner.provider.host_socket(id), session_key: None };
        let agent = self.inner.warmup.prewarm(&client, &ctx).await.map_err(|e| fail(BootPhase::Agent, e))?;
        report(BootPhase::Agent, t.elapsed().as_millis() as u64);
        Ok((created.endpoint, agent))
    }

    /// Best effort: a sandbox at the wrong weight still works, only slower
    /// (or faster) under contention.
    async fn set_priority(&self, id: &SandboxId, priority: CpuPriority) {
        if let Err(e) = self.inner.provider.set_cpu_priority(id, priority).await {
            tracing::warn!(sandbox = %id, ?priority, error = %e, "setting a sandbox's CPU priority failed");
        }
    }

    async fn answers(client: &EnvdClient) -> bool {
        matches!(tokio::time::timeout(HEALTH_TIMEOUT, client.health()).await, Ok(Ok(_)))
    }

    /// A sandbox for `session_key`: its own if still alive, else a warm
    /// claim, else a cold boot (phases reported through `progress`).
    pub async fn acquire(
        &self,
        session_key: &str,
        progress: &(dyn Fn(BootPhase, u64) + Send + Sync),
    ) -> Result<Acquired, PoolError> {
        let t0 = Instant::now();
        let store = &self.inner.store;
        if let Some(s) = store.get_session(session_key).await?
            && let (Some(sb), Some(ep)) = (&s.sandbox_id, &s.endpoint)
            && let (Ok(id), Ok(endpoint)) = (sb.parse::<SandboxId>(), serde_json::from_str::<Endpoint>(ep))
        {
            let client = EnvdClient::new(endpoint.clone());
            let ctx = WarmCtx {
                sandbox_id: &id,
                host_socket: self.inner.provider.host_socket(&id),
                session_key: Some(session_key),
            };
            if Self::answers(&client).await {
                if let Err(e) = self.inner.warmup.on_reuse(&client, &ctx).await {
                    tracing::warn!(sandbox = %id, error = %e, "re-attaching a session's sandbox failed");
                }
                store.touch_session(session_key, now_ms()).await?;
                let ms = t0.elapsed().as_millis() as u64;
                metrics::counter!(m::CLAIMS, "result" => "reuse").increment(1);
                return Ok(Acquired {
                    sandbox_id: id,
                    endpoint,
                    app_id: s.app_id,
                    source: Source::Reuse,
                    ms,
                    reinit_ms: None,
                    agent_restarted: false,
                    agent_session: s.agent_session,
                });
            }
            // Gone (expired, crashed, reclaimed): make sure, then replace it.
            self.spawn_kill(sb);
        }

        // Claim (batched with concurrent claimants; the row is taken and the
        // session bound in one transaction), then make sure it answers.
        while let Some((entry, session)) = self.claim_batched(session_key).await? {
            let endpoint: Endpoint = serde_json::from_str(entry.endpoint.as_deref().unwrap_or("null"))?;
            let client = EnvdClient::new(endpoint.clone());
            let Ok(id) = entry.sandbox_id.parse::<SandboxId>() else { continue };
            if !Self::answers(&client).await {
                tracing::warn!(sandbox = %id, "claimed a pool sandbox that no longer answers; trying the next");
                metrics::counter!(m::CLAIMS, "result" => "dead").increment(1);
                self.spawn_kill(&entry.sandbox_id);
                continue;
            }
            // Someone is waiting for this one now: it outweighs the refills.
            self.set_priority(&id, CpuPriority::Interactive).await;
            let t = Instant::now();
            let ctx = WarmCtx {
                sandbox_id: &id,
                host_socket: self.inner.provider.host_socket(&id),
                session_key: Some(session_key),
            };
            let claimed = match self.inner.warmup.on_claim(&client, &ctx, entry.agent_session.as_deref()).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "claim hook failed; trying the next sandbox");
                    self.spawn_kill(&entry.sandbox_id);
                    continue;
                }
            };
            let reinit_ms = t.elapsed().as_millis() as u64;
            let agent = claimed.agent_session;
            if agent != entry.agent_session {
                let ep = serde_json::to_string(&endpoint)?;
                store.bind_session(session_key, &entry.sandbox_id, &ep, agent.as_deref(), now_ms()).await?;
            }
            self.spawn_topup();
            let ms = t0.elapsed().as_millis() as u64;
            metrics::counter!(m::CLAIMS, "result" => "hit").increment(1);
            metrics::histogram!(m::CLAIM_SECONDS, "result" => "hit").record(t0.elapsed().as_secs_f64());
            return Ok(Acquired {
                sandbox_id: id,
                endpoint,
                app_id: session.app_id,
                source: Source::Warm,
                ms,
                reinit_ms: Some(reinit_ms),
                agent_restarted: claimed.restarted,
                agent_session: agent,
            });
        }

        // Miss: boot inline, reporting each phase, then refill behind us.
        let id = SandboxId::random();
        let booted = self.boot(&id, CpuPriority::Interactive, progress).await;
        let (endpoint, agent) = match booted {
            Ok(v) => v,
            Err(e) => {
                self.kill_now(&id).await;
                return Err(e);
            }
        };
        // A cold sandbox was warmed with the pool's credentials; hand it over
        // exactly like a claimed one.
        let ctx = WarmCtx {
            sandbox_id: &id,
            host_socket: self.inner.provider.host_socket(&id),
            session_key: Some(session_key),
        };
        let client = EnvdClient::new(endpoint.clone());
        let agent = match self.inner.warmup.on_claim(&client, &ctx, agent.as_deref()).await {
            Ok(c) => c.agent_session,
            Err(e) => {
                self.kill_now(&id).await;
                return Err(PoolError::Boot { sandbox: id.to_string(), phase: BootPhase::Agent, detail: e });
            }
        };
        let ep = serde_json::to_string(&endpoint)?;
        let s = store.bind_session(session_key, id.as_str(), &ep, agent.as_deref(), now_ms()).await?;
        self.spawn_topup();
        let ms = t0.elapsed().as_millis() as u64;
        metrics::counter!(m::CLAIMS, "result" => "miss").increment(1);
        metrics::histogram!(m::CLAIM_SECONDS, "result" => "miss").record(t0.elapsed().as_secs_f64());
        Ok(Acquired {
            sandbox_id: id,
            endpoint,
            app_id: s.app_id,
            source: Source::Cold,
            ms,
            reinit_ms: None,
            agent_restarted: false,
            agent_session: agent,
        })
    }

    async fn claim_batched(
        &self,
        session_key: &str,
    ) -> Result<Option<(kiln_store::Entry, kiln_store::Session)>, PoolError> {
        let tx = self.inner.claims.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let max_age_ms = self.inner.cfg.max_age.as_millis() as i64;
            tokio::spawn(claim_loop(self.inner.store.clone(), self.inner.provider.clone(), max_age_ms, rx));
            tx
        });
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(ClaimRequest { session_key: session_key.to_owned(), reply })
            .map_err(|_| PoolError::Claim("the claim queue is closed".into()))?;
        rx.await.map_err(|_| PoolError::Claim("the claim batcher stopped".into()))?.map_err(PoolError::Claim)
    }

    /// Refills in the background after `claim_refill_delay`; failures are
    /// logged. Calls that arrive while a refill waits or runs collapse into
    /// a single follow-up refill, which sees every claim made meanwhile.
    pub fn spawn_topup(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.refill_queued.swap(true, Ordering::AcqRel) {
            return; // a queued refill will cover this claim
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.inner.cfg.claim_refill_delay).await;
            let _running = me.inner.refill.acquire().await.expect("never closed");
            me.inner.refill_queued.store(false, Ordering::Release);
            if let Err(e) = me.topup(None).await {
                tracing::error!(error = %e, "background top-up failed");
            }
        });
    }

    pub async fn status(&self) -> Result<PoolStatus, PoolError> {
        let spec_hash = self.inner.provider.spec_hash().await?;
        let rules = self.rules(now_ms());
        let c = self.inner.store.counts(&spec_hash, &rules).await?;
        let first = self.inner.store.first_ready(&spec_hash, &rules).await?;
        metrics::gauge!(m::READY).set(f64::from(c.ready));
        metrics::gauge!(m::WARMING).set(f64::from(c.warming));
        Ok(PoolStatus {
            ready: c.ready,
            warming: c.warming,
            stale: c.stale,
            target: self.inner.cfg.target,
            spec_hash,
            first_ready: first.map(|e| FirstReady { sandbox_id: e.sandbox_id, ready_at_ms: e.ready_at.unwrap_or(0) }),
        })
    }

    /// Kills the sandboxes of sessions idle for longer than the timeout.
    pub async fn reap_idle(&self) -> Result<usize, PoolError> {
        let before = now_ms() - self.inner.cfg.idle_timeout.as_millis() as i64;
        let idle = self.inner.store.take_idle_sessions(before).await?;
        for s in &idle {
            if let Some(sb) = &s.sandbox_id {
                tracing::info!(session = %s.session_key, sandbox = %sb, "session idle; killing its sandbox");
                if let Ok(id) = sb.parse() {
                    self.kill_now(&id).await;
                }
            }
        }
        Ok(idle.len())
    }

    /// Empties the pool: removes every row and kills its sandbox.
    pub async fn drain(&self) -> Result<usize, PoolError> {
        let rows = self.inner.store.drain().await?;
        for e in &rows {
            if let Ok(id) = e.sandbox_id.parse() {
                self.kill_now(&id).await;
            }
        }
        metrics::gauge!(m::READY).set(0.0);
        metrics::gauge!(m::WARMING).set(0.0);
        Ok(rows.len())
    }

    /// Start-up recovery: this instance's warming rows belong to its previous
    /// process (prewarm tasks do not survive a restart), so they are removed
    /// and their sandboxes killed now rather than when their leases expire.
    pub async fn recover_own_warming(&self) -> Result<usize, PoolError> {
        let rows = self.inner.store.take_warming_of(&self.inner.cfg.instance).await?;
        for e in &rows {
            if let Ok(id) = e.sandbox_id.parse() {
                self.kill_now(&id).await;
            }
        }
        Ok(rows.len())
    }

    /// Start-up reclaim: kills every sandbox of `server_owner` that no row
    /// knows about, and every sandbox of any owner whose processes are gone.
    /// Other owners' sandboxes (operator `cli` ones) that are running or
    /// still being created are left alone.
    pub async fn reclaim_unknown(&self, server_owner: &str) -> Result<Vec<SandboxId>, PoolError> {
        let known: HashSet<String> = self.inner.store.known_sandboxes().await?.into_iter().collect();
        let keep = |id: &SandboxId, owner: &str, state: kiln_types::SandboxState| {
            known.contains(id.as_str()) || (owner != server_owner && state != kiln_types::SandboxState::Exited)
        };
        Ok(self.inner.provider.reclaim(&keep).await?)
    }

    /// Every `interval`: top up (which cleans stale rows first) and reap
    /// idle sessions. Runs until the runtime stops.
    pub fn spawn_maintenance(&self, interval: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = me.topup(None).await {
                    tracing::error!(error = %e, "periodic top-up failed");
                }
                if let Err(e) = me.reap_idle().await {
                    tracing::error!(error = %e, "reaping idle sessions failed");
                }
            }
        });
    }
}
