//! Kiln's database, behind one [`Store`] trait with two implementations:
//! SQLite (the embedded default, one file in the data directory) and
//! PostgreSQL (several server instances sharing one pool).
//!
//! The two behaviours that make the pool correct live here, as single
//! atomic operations, because only the database can arbitrate between
//! processes:
//! - **reserve**: count ready + warming rows for the current spec hash and
//!   insert the deficit as `warming` rows, in one transaction serialized
//!   against every other reserve (SQLite `BEGIN IMMEDIATE`; PostgreSQL a
//!   transaction-scoped advisory lock), so concurrent top-ups never overshoot;
//! - **claim**: take the oldest ready row and remove it in one statement
//!   (PostgreSQL `FOR UPDATE SKIP LOCKED`, so concurrent claimants get
//!   different rows; SQLite `DELETE … RETURNING` inside `BEGIN IMMEDIATE`).
//!
//! The model gateway's token budget is the third: a hold is checked against
//! every cap and recorded in one transaction ([`spend`]).
//!
//! Queries are built at run time (`query_as` + `FromRow`), so building Kiln
//! needs no database.

mod model;
pub mod spend;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use kiln_types::chat::ChatEvent;
use kiln_types::{AppId, OwnerId};
pub use model::{App, Counts, Entry, EntryStatus, NewEntry, Reservation, Session, StaleRules};
pub use spend::{ScopeSpend, SpendCap, SpendHold, SpendReservation};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://<file> or postgres://…")]
    Url(String),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Atomically: count ready + warming rows of `spec_hash` that are not
    /// stale, and insert `max(0, target − ready − warming)` warming rows
    /// built by `make` (called once per row).
    async fn reserve(
        &self,
        spec_hash: &str,
        target: u32,
        rules: &StaleRules,
        make: &(dyn Fn() -> NewEntry + Send + Sync),
    ) -> Result<Reservation>;

    /// Extends a warming row's lease; `false` if the row is gone or ready.
    async fn renew_lease(&self, id: &str, until_ms: i64) -> Result<bool>;

    /// Turns a warming row into a ready one; `false` if the row is gone.
    async fn mark_ready(&self, id: &str, now_ms: i64, endpoint: &str, agent_session: Option<&str>) -> Result<bool>;

    async fn delete_entry(&self, id: &str) -> Result<bool>;

    /// Takes (removes and returns) the oldest ready, non-stale row of
    /// `spec_hash`; `None` is a miss.
    async fn claim(&self, spec_hash: &str, rules: &StaleRules) -> Result<Option<Entry>>;

    /// Group commit for bursts of claims: takes up to `sessions.len()` of
    /// the oldest ready, non-stale rows of `spec_hash` and binds them, in
    /// order, to `sessions`, all in one transaction. Fewer pairs than
    /// sessions means the pool ran out for the rest.
    async fn claim_for_sessions(
        &self,
        spec_hash: &str,
        rules: &StaleRules,
        sessions: &[String],
        now_ms: i64,
    ) -> Result<Vec<(Entry, Session)>>;

    /// Removes and returns every stale row: another spec hash, older than
    /// the age cap, or warming with an expired lease.
    async fn take_stale(&self, spec_hash: &str, rules: &StaleRules) -> Result<Vec<Entry>>;

    async fn counts(&self, spec_hash: &str, rules: &StaleRules) -> Result<Counts>;

    /// The oldest ready, non-stale row of `spec_hash` (not removed).
    async fn first_ready(&self, spec_hash: &str, rules: &StaleRules) -> Result<Option<Entry>>;

    /// Removes and returns every pool row.
    async fn drain(&self) -> Result<Vec<Entry>>;

    /// Removes and returns the warming rows `owner` reserved: at start-up, a
    /// server's own warming rows were left by its previous, dead process.
    async fn take_warming_of(&self, owner: &str) -> Result<Vec<Entry>>;

    /// Every sandbox id a row (pool or session) refers to.
    async fn known_sandboxes(&self) -> Result<Vec<String>>;

    /// Binds `sandbox_id` to the session, creating the session and its app
    /// on first use. Returns the session.
    async fn bind_session(
        &self,
        key: &str,
        sandbox_id: &str,
        endpoint: &str,
        agent_session: Option<&str>,
        now_ms: i64,
    ) -> Result<Session>;

    async fn get_session(&self, key: &str) -> Result<Option<Session>>;

    /// Records activity; `false` if there is no such session.
    async fn touch_session(&self, key: &str, now_ms: i64) -> Result<bool>;

    /// Unbinds and returns the sessions whose sandbox has been idle since
    /// before `idle_before_ms` (the returned rows carry the old sandbox).
    async fn take_idle_sessions(&self, idle_before_ms: i64) -> Result<Vec<Session>>;

    /// The quick-mode app of a session: `new_id` is recorded on first use
    /// (atomically: two racing first prompts get the same app).
    async fn quick_app(&self, key: &str, new_id: &str, now_ms: i64) -> Result<String>;

    /// The quick-mode app of a session, if it has one.
    async fn get_quick_app(&self, key: &str) -> Result<Option<String>>;

    /// Records a new app of `owner`.
    async fn create_app(&self, id: &AppId, owner: &OwnerId, name: &str, now_ms: i64) -> Result<App>;

    /// The app if `owner` owns it: `None` for unknown ids and other
    /// owners' apps alike (callers answer both with the same 404).
    async fn owned_app(&self, id: &AppId, owner: &OwnerId) -> Result<Option<App>>;

    /// `owner`'s apps, most recently updated first.
    async fn list_apps(&self, owner: &OwnerId) -> Result<Vec<App>>;

    /// Renames an app of `owner`; `None` if it is not theirs.
    async fn rename_app(&self, id: &AppId, owner: &OwnerId, name: &str, now_ms: i64) -> Result<Option<App>>;

    /// Marks an app as changed now.
    async fn touch_app(&self, id: &AppId, now_ms: i64) -> Result<()>;

    /// Appends events to an app's conversation, in one transaction (a
    /// `seq` already stored is an error: the log's numbering is the store's).
    async fn append_events(&self, id: &AppId, events: &[ChatEvent], now_ms: i64) -> Result<()>;

    /// The app's stored events with `seq > after`, oldest first, at most `limit`.
    async fn load_events(&self, id: &AppId, after: u64, limit: u32) -> Result<Vec<ChatEvent>>;

    /// The newest stored `seq` of the app (0: none).
    async fn last_event_seq(&self, id: &AppId) -> Result<u64>;

    /// Atomically: holds `hold.tokens` in every scope of `caps` if each
    /// stays within its cap (`spent + reserved + tokens ≤ cap`); otherwise
    /// holds nothing and names the first scope that would go over.
    async fn spend_reserve(&self, hold: &SpendHold<'_>, caps: &[SpendCap]) -> Result<SpendReservation>;

    /// Ends hold `id`: releases its tokens and charges `charged` to each of
    /// its scopes, returning their spend after. A hold settles once: settling
    /// it again (or after [`Store::spend_settle_abandoned`]) changes nothing
    /// and returns nothing.
    async fn spend_settle(&self, id: &str, charged: u64, now_ms: i64) -> Result<Vec<(String, ScopeSpend)>>;

    /// Charges every hold of `holder` in full and removes it: at start-up, a
    /// server's holds are requests its previous, dead process had in flight.
    /// Returns how many requests they were.
    async fn spend_settle_abandoned(&self, holder: &str, now_ms: i64) -> Result<u64>;

    /// A scope's spend (zero if it never spent).
    async fn spend(&self, scope: &str) -> Result<ScopeSpend>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`) and runs its
/// migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(sql::SqlStore::connect(url, None).await?))
}

/// PostgreSQL with every table in `schema` (created if missing): lets tests
/// and side-by-side deployments share one database.
pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(sql::SqlStore::connect(url, Some(schema)).await?))
}

/// Drops a schema made by [`connect_postgres_schema`] and everything in it.
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
    sql::drop_schema(url, schema).await
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A fresh random row id (128 bits, hex).
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
