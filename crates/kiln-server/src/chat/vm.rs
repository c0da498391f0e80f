//! A VM-mode turn: get the session its sandbox (reuse, warm claim or cold
//! boot, with `boot` progress), put the app's newest version back if the
//! sandbox is new to an app that has versions, then run the agent's turn
//! through envd and end it with a version (kiln-bridge).

use std::sync::Arc;
use std::time::Instant;

use kiln_bridge::{AgentSession, GatewayNotices, VersionCtx};
use kiln_pool::{Acquired, BootPhase, Source};
use kiln_sandbox::EnvdClient;
use kiln_types::chat::{ChatMode, EventBody, StopReason};
use kiln_versions::AppRepo;
use tokio::sync::mpsc;

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

/// A sandbox for the session, with the app's files in it: the newest
/// version is restored into a sandbox the app has not used before. Boot
/// progress goes to `events` as it happens.
pub async fn acquire(
    st: &AppState,
    key: &str,
    events: mpsc::UnboundedSender<EventBody>,
) -> Result<(Acquired, VersionCtx), String> {
    let tx = events.clone();
    let progress = move |phase: BootPhase, ms: u64| {
        let _ = tx.send(EventBody::Boot { phase: phase.to_string(), ms });
    };
    let a = st.pool.acquire(key, &progress).await.map_err(|e| e.to_string())?;
    let ctx = version_ctx(st, &a.app_id, &a.sandbox_id)?;
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
    let claim = acquire(st, p.key.as_str(), tx);
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
            tracing::error!(session = %p.key.as_str(), error = %detail, "no sandbox for a chat turn");
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
        app_id: a.app_id.clone(),
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
    // The demo is not among the models an agent offers, so it is set as a
    // plain config value (kiln-agent accepts any `scripted:` path).
    let demo =
        kiln_types::agent::SetConfigRequest { config_id: "model".into(), value: st.models.demo_agent_model.clone() };
    if p.demo
        && let Err(e) = client.agent_set_config(&agent.session_id, &demo).await
    {
        tracing::error!(error = %e, "selecting the demo model failed");
        return turn.fail("agent_error", "The agent did not accept the demo model; try again.", true);
    }
    turn.set_agent(client.clone(), agent.session_id.clone());
    let notices = GatewayNotices { sandbox: a.sandbox_id.to_string(), rx: st.gateway.subscribe() };
    let (tx, mut rx) = mpsc::channel(256);
    let run = async {
        let r = kiln_bridge::run_turn_with(&client, &agent.session_id, &p.text, Some(&ctx), Some(notices), &tx).await;
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
        tracing::error!(session = %p.key.as_str(), sandbox = %a.sandbox_id, error = %e, "chat turn failed");
        turn.fail("agent_error", "The agent's turn failed; the changes so far are kept. Try again.", true);
    } else if !turn.is_done() {
        turn.finish(StopReason::Error);
    }
    let _ = st.pool.store().touch_session(p.key.as_str(), crate::now_ms()).await;
}
