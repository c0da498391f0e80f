//! A VM-mode turn: get the app its sandbox (reuse, warm claim or cold
//! boot, with `boot` progress), put the app's newest version back if the
//! sandbox is new to an app that has versions, then run the agent's turn
//! through envd and end it with a version (kiln-bridge).
//!
//! envd may hang or lie (it runs in the sandbox), so nothing here waits on
//! it without a bound: every envd call has the client's deadline, and once a
//! turn is cancelled the agent's part gets [`CANCEL_GRACE`] to end by itself
//! before the server ends it without envd. A claim or boot is never
//! abandoned (that would leak its sandbox); its envd calls are bounded too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_bridge::{AgentSession, GatewayNotices, VersionCtx};
use kiln_pool::{Acquired, BootPhase, Source};
use kiln_sandbox::EnvdClient;
use kiln_types::chat::{ChatMode, EventBody, StopReason, escape_control};
use kiln_versions::AppRepo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Prompt, Turn};
use crate::serve::AppState;

/// The host-side version context of a session's app in a sandbox.
pub fn version_ctx(st: &AppState, app_id: &str, sandbox: &kiln_types::SandboxId) -> Result<VersionCtx, String> {
    if !kiln_versions::valid_app_id(app_id) {
        return Err(format!("the store holds a malformed app id {app_id:?}"));
    }
    let repo = AppRepo::open(&st.cfg.data_dir, app_id).map_err(|e| e.to_string())?;
    Ok(VersionCtx {
        repo,
        work_tree: st.provider.app_dir(sandbox),
        template: kiln_sandbox::template::current(&st.cfg.data_dir).map(|t| t.app_dir),
    })
}

/// A sandbox for the app (the pool's session is keyed by the app id), with the app's files in it: the newest
/// version is restored into a sandbox the app has not used before. Boot
/// progress goes to `events` as it happens.
pub async fn acquire(
    st: &AppState,
    app: &kiln_types::AppId,
    events: mpsc::UnboundedSender<EventBody>,
) -> Result<(Acquired, VersionCtx), String> {
    let tx = events.clone();
    let progress = move |phase: BootPhase, ms: u64| {
        let _ = tx.send(EventBody::Boot { phase: phase.to_string(), ms });
    };
    let a = st.pool.acquire(app.as_str(), &progress).await.map_err(|e| e.to_string())?;
    if a.app_id != app.as_str() {
        return Err(format!("the pool bound app {app} to another app's row ({})", a.app_id));
    }
    let ctx = version_ctx(st, app.as_str(), &a.sandbox_id)?;
    if a.source != Source::Reuse {
        let t = Instant::now();
        let client = EnvdClient::new(a.endpoint.clone());
        let written = kiln_bridge::restore_latest(&client, &ctx).await.map_err(|e| e.to_string())?;
        if !written.is_empty() {
            let _ = events.send(EventBody::Boot { phase: "restore".into(), ms: t.elapsed().as_millis() as u64 });
        }
    }
    Ok((a, ctx))
}

pub async fn run(st: &Arc<AppState>, p: &Prompt, mut turn: Turn) {
    if !st.models.configured() && !p.demo {
        let msg = format!(
            "No model is configured, so there is no one to build with. {} Or try the demo (a recorded replay).",
            crate::models::HOW_TO
        );
        return turn.fail("no_model", msg, false);
    }
    let t0 = Instant::now();
    // Not abandoned on cancel: a half-done claim or boot would leak its
    // sandbox. A cancel takes effect as soon as it is done.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let claim = acquire(st, &p.app, tx);
    let forward = async {
        while let Some(ev) = rx.recv().await {
            turn.emit(ev);
        }
    };
    let (acquired, ()) = tokio::join!(claim, forward);
    if turn.is_cancelled() {
        return turn.finish(StopReason::Cancelled);
    }
    let (a, ctx) = match acquired {
        Ok(v) => v,
        Err(detail) => {
            let error = escape_control(&detail);
            tracing::error!(app = %p.app, %error, "no sandbox for a chat turn");
            return turn.fail(
                "sandbox_unavailable",
                "No sandbox could be started for this app; try again in a moment.",
                true,
            );
        }
    };
    let ms = t0.elapsed().as_millis() as u64;
    let cold = a.source == Source::Cold;
    turn.emit(EventBody::Session {
        mode: ChatMode::Vm,
        sandbox_id: Some(a.sandbox_id.to_string()),
        app_id: p.app.to_string(),
        preview_url: st.cfg.edge.preview_url(a.sandbox_id.as_str()),
        warm: !cold,
        claim_ms: (!cold).then_some(ms),
        boot_ms: cold.then_some(ms),
        model: Some(if p.demo {
            crate::models::DEMO.to_owned()
        } else {
            st.models.info().model.clone().unwrap_or_default()
        }),
        prompt: p.text.clone(),
    });
    let Some(agent) = AgentSession::parse(a.agent_session.as_deref()) else {
        let why = if st.cfg.agent.explicit_none {
            "This server runs sandboxes without an agent (KILN_AGENT=none); the preview works, but prompts need an agent."
        } else {
            "This server has no agent to run: kiln-agent is not installed next to the kiln binary. Rebuild Kiln \
             (cargo build --release -p kiln-agent) or set KILN_AGENT, then restart kiln serve."
        };
        return turn.fail("no_agent", why, false);
    };
    let client = EnvdClient::new(a.endpoint.clone());
    turn.set_agent(client.clone(), agent.session_id.clone());
    let cancel = turn.cancel_token();
    let sandbox = a.sandbox_id.to_string();
    let agent_turn = agent_turn(st, p, &client, &agent.session_id, &ctx, &sandbox, &mut turn);
    if unless_cancelled(&cancel, CANCEL_GRACE, agent_turn).await.is_none() {
        // envd did not end the cancelled turn within the grace period (it
        // may be hung, or hostile): end it here, keeping what changed.
        if !turn.is_done() {
            tracing::warn!(app = %p.app, %sandbox, "envd did not end a cancelled turn; ended by the server");
            match ctx.commit(&p.text).await {
                Ok(Some(v)) => turn.emit(EventBody::Version(v)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %escape_control(&e.to_string()), "committing a cancelled turn failed");
                }
            }
            turn.finish(StopReason::Cancelled);
        }
    }
    let _ = st.pool.store().touch_session(p.app.as_str(), crate::now_ms()).await;
}

/// How long a cancelled turn may take to end by itself (envd relays the
/// agent's `done {cancelled}`, the bridge commits the version) before the
/// server ends it without envd.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs `work` to its end, unless `cancel` fires and `work` has not ended
/// `grace` later: then it is dropped (with every envd connection it holds)
/// and `None` returned. So a cancelled turn ends within the grace period
/// whatever envd does.
pub async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    grace: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
    }
}

/// The agent's part of a turn: select the demo model if asked, then relay
/// the turn through kiln-bridge (which ends it with `version` and `done`).
async fn agent_turn(
    st: &AppState,
    p: &Prompt,
    client: &EnvdClient,
    session_id: &str,
    ctx: &VersionCtx,
    sandbox: &str,
    turn: &mut Turn,
) {
    // The demo is not among the models an agent offers, so it is set as a
    // plain config value (kiln-agent accepts any `scripted:` path).
    let demo =
        kiln_types::agent::SetConfigRequest { config_id: "model".into(), value: st.models.demo_agent_model.clone() };
    if p.demo
        && let Err(e) = client.agent_set_config(session_id, &demo).await
    {
        tracing::error!(%sandbox, error = %e, "selecting the demo model failed");
        return turn.fail("agent_error", "The agent did not accept the demo model; try again.", true);
    }
    let notices = GatewayNotices { sandbox: sandbox.to_owned(), rx: st.gateway.subscribe() };
    let (tx, mut rx) = mpsc::channel(256);
    let run = async {
        let r = kiln_bridge::run_turn_with(client, session_id, &p.text, Some(ctx), Some(notices), &tx).await;
        drop(tx);
        r
    };
    let forward = async {
        while let Some(ev) = rx.recv().await {
            turn.emit(ev);
        }
    };
    let (result, ()) = tokio::join!(run, forward);
    if let Err(e) = result {
        // The bridge has told the browser what happened (error, then done);
        // the log gets the details.
        let error = escape_control(&e.to_string()).into_owned();
        tracing::error!(app = %p.app, %sandbox, %error, "chat turn failed");
    }
    if !turn.is_done() {
        turn.fail("agent_error", "The agent's turn failed; the changes so far are kept. Try again.", true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_turn_ends_within_the_grace_period_even_if_envd_never_answers() {
        let (cancel, grace) = (CancellationToken::new(), Duration::from_millis(200));
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.cancel();
        });
        let t = Instant::now();
        assert_eq!(unless_cancelled(&cancel, grace, std::future::pending::<()>()).await, None);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
        // A turn that ends by itself (envd relayed `done {cancelled}`) keeps its result.
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(unless_cancelled(&cancel, grace, async { 7 }).await, Some(7));
    }
}
