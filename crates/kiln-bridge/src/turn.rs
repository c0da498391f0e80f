//! One prompt turn: stream the agent's events, and when the turn ends with
//! changed files, commit them and announce the version before `done`.
//!
//! The commit is taken from the host's view of the sandbox's `/app` (never
//! through the sandbox), after the agent's turn is over, so it captures
//! every change — files envd wrote for the agent and files its commands
//! wrote alike.
//!
//! envd is not trusted: its events pass through [`crate::contract`] (only
//! the agent's own kinds, bounded fields), the client bounds its lines and
//! silences, a broken stream is resumed at most [`MAX_RESUMES`] times with
//! backoff, and a turn that fails still ends with `error`, its version and
//! `done`, so the chat never waits on a sandbox that stopped answering.

use std::path::PathBuf;

use futures::StreamExt;
use kiln_sandbox::EnvdClient;
use kiln_sandbox::envd_client::ClientError;
use kiln_types::chat::{EventBody, StopReason, VersionEvent, escape_control};
use kiln_versions::{AppRepo, VersionsError, snapshot};
use tokio::sync::mpsc;

use crate::contract::{self, Contract, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("envd: {0}")]
    Envd(#[from] ClientError),
    #[error("versions: {0}")]
    Versions(#[from] VersionsError),
    #[error("the event receiver went away")]
    Closed,
    #[error("envd sent more events or text than one turn may carry")]
    Flood,
    #[error("the stream from envd broke {resumes} times; gave up")]
    Lost { resumes: u32 },
}

/// Resumes of one turn's stream before it is given up.
pub const MAX_RESUMES: u32 = 5;
/// Wait before the first resume; doubled for each next one (0.25 s … 4 s,
/// 7.75 s in all), so an envd that closes at once is not asked in a loop.
pub const RESUME_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);

/// Where a turn's version goes.
#[derive(Clone, Debug)]
pub struct VersionCtx {
    pub repo: AppRepo,
    /// The host's view of the sandbox's `/app`.
    pub work_tree: PathBuf,
    /// The built template's app directory: the first version of every app.
    pub template: Option<PathBuf>,
}

impl VersionCtx {
    /// Commits the template as the app's first version if it has none, so
    /// that the first turn's version lists only what the turn changed.
    pub async fn ensure_base(&self) -> Result<(), TurnError> {
        if self.repo.head()?.is_some() {
            return Ok(());
        }
        let Some(t) = self.template.clone() else { return Ok(()) };
        let repo = self.repo.clone();
        blocking(move || {
            let snap = snapshot::take(&t)?;
            repo.commit(&snap, "Start from the template").map(drop)
        })
        .await
    }

    /// Commits the work tree if it changed.
    pub async fn commit(&self, message: &str) -> Result<Option<VersionEvent>, TurnError> {
        self.ensure_base().await?;
        let (repo, tree, msg) = (self.repo.clone(), self.work_tree.clone(), message.to_owned());
        let v = blocking(move || {
            let snap = snapshot::take(&tree)?;
            for (p, why) in &snap.skipped {
                tracing::info!(path = %escape_control(p), why = %escape_control(why), "left out of the version");
            }
            repo.commit(&snap, &msg)
        })
        .await?;
        Ok(v.map(|v| VersionEvent { sha: v.sha, parent: v.parent, message: v.message, files: v.files }))
    }
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<kiln_types::chat::ChatEvent, ClientError>> + Send>>;

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VersionsError> + Send + 'static,
) -> Result<T, TurnError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TurnError::Versions(VersionsError::Io("version task".into(), std::io::Error::other(e))))?
        .map_err(TurnError::from)
}

/// Runs one turn, sending each event to `tx`; a `version` event precedes
/// the final `done` when files changed. If the stream from envd breaks, the
/// turn is picked up again with `events?after=` (the agent kept going).
///
/// The events sent always end with `done` (unless `tx` is closed), even
/// when the turn fails: then an `error` event says why, the version keeps
/// what changed so far, and the failure is also returned for the log.
pub async fn run_turn(
    client: &EnvdClient,
    session_id: &str,
    prompt: &str,
    versions: Option<&VersionCtx>,
    tx: &mpsc::Sender<EventBody>,
) -> Result<(), TurnError> {
    run_turn_with(client, session_id, prompt, versions, None, tx).await
}

/// The model gateway's refusals for one sandbox, shown in its turns.
#[derive(Debug)]
pub struct GatewayNotices {
    pub sandbox: String,
    pub rx: tokio::sync::broadcast::Receiver<kiln_gateway::Notice>,
}

/// [`run_turn`], also turning the gateway's refusals for this sandbox
/// (budget spent, no key configured) into `error` events as they happen.
pub async fn run_turn_with(
    client: &EnvdClient,
    session_id: &str,
    prompt: &str,
    versions: Option<&VersionCtx>,
    notices: Option<GatewayNotices>,
    tx: &mpsc::Sender<EventBody>,
) -> Result<(), TurnError> {
    if let Some(v) = versions {
        v.ensure_base().await?;
    }
    // The sandbox names the turn in logs; without notices, its socket does.
    let sandbox = notices.as_ref().map_or_else(|| client.socket().display().to_string(), |n| n.sandbox.clone());
    let mut contract = Contract::new(sandbox);
    let relayed = relay(client, session_id, prompt, notices, &mut contract, tx).await;
    contract.report();
    let done = match &relayed {
        Ok(done) => done.clone(),
        Err(TurnError::Closed) => return Err(TurnError::Closed),
        Err(e) => {
            // The agent may still be working: ask envd to stop it (bounded,
            // in the background; the turn ends now either way).
            let (c, s) = (client.clone(), session_id.to_owned());
            tokio::spawn(async move { c.agent_cancel(&s).await });
            let (code, message) = describe(e);
            tx.send(EventBody::Error { code: code.into(), message, retryable: true })
                .await
                .map_err(|_| TurnError::Closed)?;
            None
        }
    };
    if let Some(v) = versions {
        match v.commit(prompt).await {
            Ok(Some(ev)) => tx.send(EventBody::Version(ev)).await.map_err(|_| TurnError::Closed)?,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %escape_control(&e.to_string()), "committing the turn's version failed");
                let msg = "the turn's changes could not be saved as a version; they are still in the app".into();
                tx.send(EventBody::Error { code: "version_failed".into(), message: msg, retryable: true })
                    .await
                    .map_err(|_| TurnError::Closed)?;
            }
        }
    }
    let done = done.unwrap_or(EventBody::Done { stop_reason: StopReason::Error });
    tx.send(done).await.map_err(|_| TurnError::Closed)?;
    relayed.map(drop)
}

/// Streams the turn's events from envd through the contract to `tx` until
/// envd's `done` (returned). Resumes after broken connections, with backoff.
async fn relay(
    client: &EnvdClient,
    session_id: &str,
    prompt: &str,
    mut notices: Option<GatewayNotices>,
    contract: &mut Contract,
    tx: &mpsc::Sender<EventBody>,
) -> Result<Option<EventBody>, TurnError> {
    let mut stream: EventStream = Box::pin(client.agent_prompt(session_id, prompt).await?);
    let mut resumes = 0;
    let mut reported = std::collections::HashSet::new();
    loop {
        let next = match notices.as_mut() {
            Some(n) => tokio::select! {
                ev = stream.next() => ev,
                notice = n.rx.recv() => {
                    match notice {
                        Ok(notice) if notice.sandbox == n.sandbox && reported.insert(notice.code.clone()) => {
                            let retryable = notice.code != "budget_exceeded";
                            let e = EventBody::Error { code: notice.code, message: notice.message, retryable };
                            tx.send(e).await.map_err(|_| TurnError::Closed)?;
                        }
                        // No more notices: stop listening (recv would return at once, forever).
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => notices = None,
                        _ => {}
                    }
                    continue;
                }
            },
            None => stream.next().await,
        };
        let broke = match next {
            Some(Ok(ev)) => match contract.admit(ev) {
                Verdict::Forward(body) if body.is_done() => return Ok(Some(body)),
                Verdict::Forward(body) => {
                    tx.send(body).await.map_err(|_| TurnError::Closed)?;
                    continue;
                }
                Verdict::Drop => continue,
                Verdict::Flood => return Err(TurnError::Flood),
            },
            Some(Err(ClientError::Decode(_))) => {
                contract.undecodable();
                if contract.flooded() {
                    return Err(TurnError::Flood);
                }
                continue;
            }
            Some(Err(e)) if !e.is_transport() => return Err(e.into()),
            Some(Err(e)) => e.to_string(),
            None => "closed without done".to_owned(),
        };
        // The connection broke or closed early; the agent may be going on.
        if resumes == MAX_RESUMES {
            return Err(TurnError::Lost { resumes });
        }
        tokio::time::sleep(RESUME_BACKOFF * 2u32.pow(resumes)).await;
        resumes += 1;
        tracing::warn!(
            sandbox = %escape_control(contract.sandbox()),
            error = %escape_control(&broke),
            after = contract.last_seq(),
            resumes,
            "turn stream broke; resuming"
        );
        stream = match client.agent_events(session_id, contract.last_seq(), true).await {
            Ok(s) => Box::pin(s),
            // envd is gone or restarting: counts as a try, with its backoff.
            Err(e) if e.is_transport() || matches!(e, ClientError::Connect { .. }) => {
                Box::pin(futures::stream::empty())
            }
            Err(e) => return Err(e.into()),
        };
    }
}

/// The `error` event for a failed turn: a stable code and what happened.
fn describe(e: &TurnError) -> (&'static str, String) {
    const KEPT: &str = "the changes so far are kept; try again";
    match e {
        TurnError::Flood | TurnError::Envd(ClientError::TooLarge { .. } | ClientError::Decode(_)) => (
            "agent_protocol",
            format!("The sandbox sent more than the chat protocol allows, so the turn was stopped; {KEPT}."),
        ),
        TurnError::Envd(ClientError::Timeout { what, after }) => (
            "agent_timeout",
            format!("The sandbox did not send {what} within {} s, so the turn was stopped; {KEPT}.", after.as_secs()),
        ),
        TurnError::Envd(ClientError::Status { message, .. }) => {
            let m = contract::head(escape_control(message).into_owned(), 300);
            ("agent_error", format!("The agent did not run the turn: {m}"))
        }
        _ => (
            "agent_unreachable",
            format!("The connection to the sandbox's agent broke and could not be resumed; {KEPT}."),
        ),
    }
}
