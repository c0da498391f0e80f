//! Putting a version back into a sandbox.
//!
//! Restores go through envd's file API — the same confined writes the agent
//! gets — so the dev server sees ordinary file changes and hot-reloads, and
//! the host never writes into a directory the sandbox controls. Only files
//! that differ are written; files the version does not have are deleted.

use kiln_sandbox::EnvdClient;
use kiln_types::chat::{VersionEvent, escape_control};
use kiln_versions::{Entry, Snapshot, snapshot};

use crate::turn::{TurnError, VersionCtx, blocking};

/// The longest a whole restore may take. Each file call has its own
/// deadline, but a slow (or hostile) envd answering just inside it for every
/// file would otherwise hold the session's lock for minutes.
pub const RESTORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Makes the sandbox's files equal to `target`, within [`RESTORE_DEADLINE`].
/// Returns the paths changed.
async fn apply(client: &EnvdClient, ctx: &VersionCtx, target: Snapshot) -> Result<Vec<String>, TurnError> {
    tokio::time::timeout(RESTORE_DEADLINE, apply_all(client, ctx, target)).await.map_err(|_| {
        TurnError::Envd(kiln_sandbox::envd_client::ClientError::Timeout {
            what: "a whole restore",
            after: RESTORE_DEADLINE,
        })
    })?
}

async fn apply_all(client: &EnvdClient, ctx: &VersionCtx, target: Snapshot) -> Result<Vec<String>, TurnError> {
    let tree = ctx.work_tree.clone();
    let current = blocking(move || snapshot::take(&tree)).await?;
    let mut changed = Vec::new();
    for (path, e) in &target.entries {
        if current.entries.get(path) == Some(e) {
            continue;
        }
        match e {
            Entry::File { data, .. } => {
                client.write_file(path, data.clone()).await?;
                changed.push(path.clone());
            }
            Entry::Symlink { .. } => {
                let path = escape_control(path);
                tracing::warn!(%path, "symlinks are not restored through the file API; skipped");
            }
        }
    }
    for path in current.entries.keys().filter(|p| !target.entries.contains_key(*p)) {
        client.delete_file(path, false).await?;
        changed.push(path.clone());
    }
    changed.sort();
    Ok(changed)
}

/// Restores version `sha` into a running sandbox and records the restore
/// as a new version (so the history stays linear and nothing is lost).
pub async fn restore_version(
    client: &EnvdClient,
    ctx: &VersionCtx,
    sha: &str,
) -> Result<Option<VersionEvent>, TurnError> {
    let (repo, s) = (ctx.repo.clone(), sha.to_owned());
    let target = blocking(move || repo.files_at(&s)).await?;
    apply(client, ctx, target).await?;
    let short = &sha[..sha.len().min(7)];
    ctx.commit(&format!("Restore version {short}")).await
}

/// Puts an app's newest version into a brand-new sandbox (its old one
/// expired, crashed or was reclaimed). Returns the paths written.
pub async fn restore_latest(client: &EnvdClient, ctx: &VersionCtx) -> Result<Vec<String>, TurnError> {
    let repo = ctx.repo.clone();
    let Some(head) = blocking(move || repo.head()).await? else { return Ok(vec![]) };
    let repo = ctx.repo.clone();
    let target = blocking(move || repo.files_at(&head)).await?;
    apply(client, ctx, target).await
}
