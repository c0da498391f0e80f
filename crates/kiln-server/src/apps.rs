//! The app service: what the builder API does to apps, between the HTTP
//! handlers (which parse and answer) and the store, pool, chat hub and
//! version store (which it drives).
//!
//! Every operation takes the caller's [`OwnerKey`] and an [`AppId`] and
//! starts by checking ownership in the store ([`AppService::owned`]): an app
//! of another owner is answered exactly like an unknown id
//! ([`AppError::NotFound`]), so nobody learns that it exists. Ownership is
//! one query on an indexed column, so no route can forget it by accident —
//! the other methods take the [`App`] it returns.

use std::sync::Arc;

use futures::stream::BoxStream;
use kiln_sandbox::{EnvdClient, SandboxProvider};
use kiln_store::App;
use kiln_types::app::{AppList, AppSummary, name_from_prompt, valid_name};
use kiln_types::chat::{ChatEvent, ChatMode, EventBody, StopReason};
use kiln_types::{AppId, OwnerKey};
use kiln_versions::{AppRepo, Version};
use serde::Serialize;

use crate::chat::{self, Prompt, quick};
use crate::serve::AppState;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Unknown, or another owner's: the same answer either way.
    #[error("no such app: it is not one of yours (GET /api/apps lists them)")]
    NotFound,
    #[error("{0}")]
    BadInput(String),
    #[error("a prompt or restore is already running for this app; wait for it to finish or cancel it")]
    Busy,
    #[error("this app has no version {0}")]
    NoSuchVersion(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<kiln_store::StoreError> for AppError {
    fn from(e: kiln_store::StoreError) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// `GET /api/apps/{id}`: an app with its versions, sandbox, quick app and
/// whole conversation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub id: AppId,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub running: bool,
    /// The newest event `seq` of the conversation (0: none yet).
    pub last_seq: u64,
    pub versions: Vec<Version>,
    pub sandbox: Option<SandboxView>,
    pub quick: Option<QuickView>,
    pub events: Vec<ChatEvent>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxView {
    pub id: String,
    pub state: Option<kiln_types::SandboxState>,
    pub preview_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuickView {
    pub id: String,
    pub url: String,
    pub versions: Vec<Version>,
}

/// What a restore did.
pub struct Restored {
    pub version: Option<kiln_types::chat::VersionEvent>,
    pub preview_url: String,
}

pub struct AppService<'a> {
    st: &'a Arc<AppState>,
}

impl<'a> AppService<'a> {
    pub fn new(st: &'a Arc<AppState>) -> Self {
        AppService { st }
    }

    /// The app if `owner` owns it, else [`AppError::NotFound`].
    pub async fn owned(&self, owner: &OwnerKey, id: &AppId) -> Result<App, AppError> {
        self.st.pool.store().owned_app(id, &owner.owner_id()).await?.ok_or(AppError::NotFound)
    }

    fn summary(&self, a: App) -> AppSummary {
        AppSummary {
            running: self.st.chat.running(&a.id),
            id: a.id,
            name: a.name,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }

    pub async fn list(&self, owner: &OwnerKey) -> Result<AppList, AppError> {
        let apps = self.st.pool.store().list_apps(&owner.owner_id()).await?;
        Ok(AppList { apps: apps.into_iter().map(|a| self.summary(a)).collect() })
    }

    pub async fn rename(&self, owner: &OwnerKey, id: &AppId, name: &str) -> Result<AppSummary, AppError> {
        let name = valid_name(name).map_err(AppError::BadInput)?;
        let a = self.st.pool.store().rename_app(id, &owner.owner_id(), &name, crate::now_ms()).await?;
        Ok(self.summary(a.ok_or(AppError::NotFound)?))
    }

    pub async fn view(&self, owner: &OwnerKey, id: &AppId) -> Result<AppView, AppError> {
        let app = self.owned(owner, id).await?;
        let store = self.st.pool.store();
        let events = self.st.chat.events(id).await?;
        let session = store.get_session(id.as_str()).await?;
        let quick_id = store.get_quick_app(id.as_str()).await?;
        let (data_dir, app_id) = (self.st.cfg.data_dir.clone(), id.clone());
        let versions = blocking(move || AppRepo::open(&data_dir, app_id.as_str())?.list()).await?;
        let mut view = AppView {
            running: self.st.chat.running(id),
            last_seq: events.last().map_or(0, |e| e.seq),
            versions,
            sandbox: None,
            quick: None,
            events,
            id: app.id,
            name: app.name,
            created_at: app.created_at,
            updated_at: app.updated_at,
        };
        if let Some(sid) = session.and_then(|s| s.sandbox_id) {
            let list = self.st.provider.list().await.map_err(|e| AppError::Internal(e.to_string()))?;
            let state = list.into_iter().find(|i| i.id.as_str() == sid).map(|i| i.state);
            view.sandbox = Some(SandboxView { preview_url: self.st.cfg.edge.preview_url(&sid), id: sid, state });
        }
        if let Some(qid) = quick_id.filter(|q| quick::valid_quick_id(q)) {
            let (st, q) = (self.st.clone(), qid.clone());
            let versions = blocking(move || quick::repo(&st, &q)?.list()).await?;
            view.quick = Some(QuickView { url: format!("{}/q/{qid}", self.st.cfg.edge.public_url), id: qid, versions });
        }
        Ok(view)
    }

    /// Starts a turn: of `app` if given (the caller's), else of a new app
    /// named from the prompt. Returns the app and the turn's first `seq`.
    pub async fn prompt(
        &self,
        owner: &OwnerKey,
        app: Option<&AppId>,
        text: String,
        mode: ChatMode,
        demo: bool,
    ) -> Result<(AppId, u64), AppError> {
        let id = match app {
            Some(id) => self.owned(owner, id).await?.id,
            None => {
                let id = AppId::random();
                let name = name_from_prompt(&text);
                self.st.pool.store().create_app(&id, &owner.owner_id(), &name, crate::now_ms()).await?;
                tracing::info!(app = %id, owner = %owner.log_tag(), "new app");
                id
            }
        };
        let turn = self.st.chat.begin(&id).await?.map_err(|_| AppError::Busy)?;
        let first = turn.first_seq();
        chat::spawn(self.st, Prompt { app: id.clone(), text, mode, demo }, turn);
        Ok((id, first))
    }

    /// The app's events after `after`, following a running turn.
    pub async fn events(
        &self,
        owner: &OwnerKey,
        id: &AppId,
        after: u64,
    ) -> Result<BoxStream<'static, ChatEvent>, AppError> {
        self.owned(owner, id).await?;
        Ok(self.st.chat.stream(id, after).await?)
    }

    /// Cancels the app's running turn; `false` if none runs.
    pub async fn cancel(&self, owner: &OwnerKey, id: &AppId) -> Result<bool, AppError> {
        self.owned(owner, id).await?;
        Ok(self.st.chat.cancel(id).await)
    }

    /// Restores a version into the app's sandbox (a new one, with the newest
    /// version, if the old one is gone) and records it as a new version,
    /// under the app's turn lock.
    pub async fn restore(&self, owner: &OwnerKey, id: &AppId, sha: &str) -> Result<Restored, AppError> {
        if !(4..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AppError::BadInput(format!("{sha:?} is not a version id (4 to 40 hex digits)")));
        }
        self.owned(owner, id).await?;
        let (data_dir, app_id, s) = (self.st.cfg.data_dir.clone(), id.clone(), sha.to_owned());
        let known = blocking(move || Ok(AppRepo::open(&data_dir, app_id.as_str())?.files_at(&s).is_ok())).await?;
        if !known {
            return Err(AppError::NoSuchVersion(sha.to_owned()));
        }
        let mut turn = self.st.chat.begin(id).await?.map_err(|_| AppError::Busy)?;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let result = async {
            let (a, ctx) = chat::vm::acquire(self.st, id, tx).await?;
            let client = EnvdClient::new(a.endpoint.clone());
            let v = kiln_bridge::restore_version(&client, &ctx, sha).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((a.sandbox_id, v))
        }
        .await;
        match result {
            Ok((sandbox, v)) => {
                if let Some(v) = &v {
                    turn.emit(EventBody::Version(v.clone()));
                }
                turn.finish(StopReason::EndTurn);
                let _ = self.st.pool.store().touch_app(id, crate::now_ms()).await;
                Ok(Restored { version: v, preview_url: self.st.cfg.edge.preview_url(sandbox.as_str()) })
            }
            Err(e) => {
                turn.fail("restore_failed", "the version could not be restored; try again", true);
                Err(AppError::Internal(format!("restoring {sha}: {e}")))
            }
        }
    }
}

/// Runs git work (it forks and waits) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, kiln_versions::VersionsError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))
}
