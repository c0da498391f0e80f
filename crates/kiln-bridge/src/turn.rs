//! One prompt turn: stream the agent's events, and when the turn ends with
//! changed files, commit them and announce the version before `done`.
//!
//! The commit is taken from the host's view of the sandbox's `/app` (never
//! through the sandbox), after the agent's turn is over, so it captures
//! every change — files envd wrote for the agent and files its commands
//! wrote alike.

use std::path::PathBuf;

use futures::StreamExt;
use kiln_sandbox::EnvdClient;
use kiln_sandbox::envd_client::ClientError;
use kiln_types::chat::{EventBody, VersionEvent};
use kiln_versions::{AppRepo, VersionsError, snapshot};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("envd: {0}")]
    Envd(#[from] ClientError),
    #[error("versions: {0}")]
    Versions(#[from] VersionsError),
    #[error("the event receiver went away")]
    Closed,
}

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
                tracing::info!(path = %p, why = %why, "left out of the version");
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
    mut notices: Option<GatewayNotices>,
    tx: &mpsc::Sender<EventBody>,
) -> Result<(), TurnError> {
    if let Some(v) = versions {
        v.ensure_base().await?;
    }
    let mut last_seq = 0u64;
    let mut done = None;
    let mut stream: EventStream = Box::pin(client.agent_prompt(session_id, prompt).await?);
    let mut resumes = 0;
    let mut reported = std::collections::HashSet::new();
    loop {
        let next = match notices.as_mut() {
            Some(n) => tokio::select! {
                ev = stream.next() => ev,
                notice = n.rx.recv() => {
                    if let Ok(notice) = notice
                        && notice.sandbox == n.sandbox
                        && reported.insert(notice.code.clone())
                    {
                        let retryable = notice.code != "budget_exceeded";
                        let e = EventBody::Error { code: notice.code, message: notice.message, retryable };
                        tx.send(e).await.map_err(|_| TurnError::Closed)?;
                    }
                    continue;
                }
            },
            None => stream.next().await,
        };
        match next {
            Some(Ok(ev)) => {
                last_seq = ev.seq;
                if ev.body.is_done() {
                    done = Some(ev.body);
                    break;
                }
                tx.send(ev.body).await.map_err(|_| TurnError::Closed)?;
            }
            Some(Err(e)) if resumes < 5 => {
                resumes += 1;
                tracing::warn!(error = %e, after = last_seq, "turn stream broke; resuming");
                stream = Box::pin(client.agent_events(session_id, last_seq, true).await?);
            }
            Some(Err(e)) => return Err(e.into()),
            None if resumes < 5 => {
                // Closed without `done`: resume from the log.
                resumes += 1;
                stream = Box::pin(client.agent_events(session_id, last_seq, true).await?);
            }
            None => break,
        }
    }
    if let Some(v) = versions {
        match v.commit(prompt).await {
            Ok(Some(ev)) => tx.send(EventBody::Version(ev)).await.map_err(|_| TurnError::Closed)?,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "committing the turn's version failed");
                let msg = "the turn's changes could not be saved as a version; they are still in the app".into();
                tx.send(EventBody::Error { code: "version_failed".into(), message: msg, retryable: true })
                    .await
                    .map_err(|_| TurnError::Closed)?;
            }
        }
    }
    let done = done.unwrap_or(EventBody::Done { stop_reason: kiln_types::chat::StopReason::Error });
    tx.send(done).await.map_err(|_| TurnError::Closed)
}
