//! Row types and the staleness rules both stores apply.

use serde::Serialize;

/// A pool row's lifecycle; stored as `warming` / `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Warming,
    Ready,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Warming => "warming",
            EntryStatus::Ready => "ready",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: String,
    pub status: EntryStatus,
    pub spec_hash: String,
    pub sandbox_id: String,
    /// How to reach the sandbox (provider-specific JSON); set when ready.
    pub endpoint: Option<String>,
    /// The agent session warmed in the sandbox (JSON), if any.
    pub agent_session: Option<String>,
    pub created_at: i64,
    pub ready_at: Option<i64>,
    pub lease_expires_at: i64,
    /// The server instance that reserved the row.
    pub owner: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    id: String,
    status: String,
    spec_hash: String,
    sandbox_id: String,
    endpoint: Option<String>,
    agent_session: Option<String>,
    created_at: i64,
    ready_at: Option<i64>,
    lease_expires_at: i64,
    owner: String,
}

impl TryFrom<EntryRow> for Entry {
    type Error = crate::StoreError;
    fn try_from(r: EntryRow) -> Result<Entry, Self::Error> {
        let status = match r.status.as_str() {
            "warming" => EntryStatus::Warming,
            "ready" => EntryStatus::Ready,
            other => {
                return Err(crate::StoreError::Corrupt { table: "pool_entries", detail: format!("status {other:?}") });
            }
        };
        Ok(Entry {
            id: r.id,
            status,
            spec_hash: r.spec_hash,
            sandbox_id: r.sandbox_id,
            endpoint: r.endpoint,
            agent_session: r.agent_session,
            created_at: r.created_at,
            ready_at: r.ready_at,
            lease_expires_at: r.lease_expires_at,
            owner: r.owner,
        })
    }
}

pub(crate) fn entries(rows: Vec<EntryRow>) -> crate::Result<Vec<Entry>> {
    rows.into_iter().map(Entry::try_from).collect()
}

/// What a reserve inserts for one row. The sandbox id is chosen before the
/// sandbox exists, so a crash between reserving and creating still leaves a
/// row that names what to clean up.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub id: String,
    pub sandbox_id: String,
    pub owner: String,
    pub created_at: i64,
    pub lease_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// Ready and warming rows before the reservation.
    pub ready: u32,
    pub warming: u32,
    /// The rows inserted (the deficit).
    pub reserved: Vec<NewEntryRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewEntryRef {
    pub id: String,
    pub sandbox_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub ready: u32,
    pub warming: u32,
    /// Rows that the next cleanup will remove.
    pub stale: u32,
}

/// When a row is stale, evaluated at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRules {
    pub now_ms: i64,
    /// Rows created before `now_ms − max_age_ms` are stale.
    pub max_age_ms: i64,
}

impl StaleRules {
    pub fn min_created(&self) -> i64 {
        self.now_ms - self.max_age_ms
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Session {
    pub session_key: String,
    pub app_id: String,
    pub sandbox_id: Option<String>,
    pub endpoint: Option<String>,
    pub agent_session: Option<String>,
    pub created_at: i64,
    pub last_active_at: i64,
}

/// An app as the store knows it: who owns it (the SHA-256 of the owner's
/// key), what it is called, when it was made and last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: kiln_types::AppId,
    pub owner: kiln_types::OwnerId,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AppRow {
    id: String,
    owner: String,
    name: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<AppRow> for App {
    type Error = crate::StoreError;
    fn try_from(r: AppRow) -> Result<App, Self::Error> {
        let id =
            r.id.parse().map_err(|_| crate::StoreError::Corrupt { table: "apps", detail: format!("id {:?}", r.id) })?;
        Ok(App {
            id,
            owner: kiln_types::OwnerId::from_stored(r.owner),
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
