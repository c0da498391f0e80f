//! The one [`Store`] implementation, on sqlx's `Any` driver.
//!
//! SQLite and PostgreSQL accept the same statements here (`$N` parameters,
//! `RETURNING`, `ON CONFLICT`); the two places they must differ are the
//! serialization of reserve and the row lock of claim, chosen by [`Kind`].

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

use crate::model::{AppRow, EntryRow, NewEntryRef, entries};
use crate::{
    App, Counts, Entry, NewEntry, Reservation, Result, ScopeSpend, Session, SpendCap, SpendHold, SpendReservation,
    StaleRules, Store, StoreError,
};
use kiln_types::chat::ChatEvent;
use kiln_types::{AppId, OwnerId};

mod spend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
    kind: Kind,
}

/// Key of the advisory lock that serializes reserves on PostgreSQL.
const RESERVE_LOCK: i64 = 0x6b69_6c6e_7265_7376; // "kilnresv"

const INSERT_ENTRY: &str = "INSERT INTO pool_entries (id, status, spec_hash, sandbox_id, created_at, lease_expires_at, owner) \
     VALUES ($1, 'warming', $2, $3, $4, $5, $6)";
const COUNTS: &str = "SELECT status, COUNT(*) AS n FROM pool_entries \
     WHERE spec_hash = $1 AND created_at >= $2 AND (status = 'ready' OR lease_expires_at >= $3) GROUP BY status";
const TOTAL: &str = "SELECT COUNT(*) AS n FROM pool_entries";
const RENEW: &str = "UPDATE pool_entries SET lease_expires_at = $2 WHERE id = $1 AND status = 'warming'";
const MARK_READY: &str = "UPDATE pool_entries SET status = 'ready', ready_at = $2, endpoint = $3, agent_session = $4 \
     WHERE id = $1 AND status = 'warming'";
const DELETE_ENTRY: &str = "DELETE FROM pool_entries WHERE id = $1";
const ANY_READY: &str = "SELECT id FROM pool_entries \
     WHERE status = 'ready' AND spec_hash = $1 AND created_at >= $2 LIMIT 1";
const CLAIM_MANY_SQLITE: &str = "DELETE FROM pool_entries WHERE id IN (SELECT id FROM pool_entries \
     WHERE status = 'ready' AND spec_hash = $1 AND created_at >= $2 ORDER BY ready_at, created_at, id LIMIT $3) RETURNING *";
const CLAIM_MANY_POSTGRES: &str = "DELETE FROM pool_entries WHERE id IN (SELECT id FROM pool_entries \
     WHERE status = 'ready' AND spec_hash = $1 AND created_at >= $2 ORDER BY ready_at, created_at, id LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING *";
/// Binds a session to a sandbox; a new session gets the app its key names
/// if there is one (the builder's sessions are keyed by app id), else app
/// `$2`; an existing one keeps its app (returned either way).
const BIND: &str = "INSERT INTO sessions \
     (session_key, app_id, sandbox_id, endpoint, agent_session, created_at, last_active_at) \
     VALUES ($1, COALESCE((SELECT id FROM apps WHERE id = $1), $2), $3, $4, $5, $6, $6) ON CONFLICT (session_key) DO UPDATE SET \
     sandbox_id = excluded.sandbox_id, endpoint = excluded.endpoint, agent_session = excluded.agent_session, \
     last_active_at = excluded.last_active_at RETURNING *";
const ENSURE_APP: &str = "INSERT INTO apps (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
const TAKE_STALE: &str = "DELETE FROM pool_entries \
     WHERE spec_hash <> $1 OR created_at < $2 OR (status = 'warming' AND lease_expires_at < $3) RETURNING *";
const FIRST_READY: &str = "SELECT * FROM pool_entries WHERE status = 'ready' AND spec_hash = $1 AND created_at >= $2 \
     ORDER BY ready_at, created_at, id LIMIT 1";
const DRAIN: &str = "DELETE FROM pool_entries RETURNING *";
const TAKE_WARMING_OF: &str = "DELETE FROM pool_entries WHERE status = 'warming' AND owner = $1 RETURNING *";
const KNOWN: &str =
    "SELECT sandbox_id FROM pool_entries UNION SELECT sandbox_id FROM sessions WHERE sandbox_id IS NOT NULL";
const GET_SESSION: &str = "SELECT * FROM sessions WHERE session_key = $1";
const TOUCH: &str = "UPDATE sessions SET last_active_at = $2 WHERE session_key = $1";
const IDLE: &str = "SELECT * FROM sessions WHERE sandbox_id IS NOT NULL AND last_active_at < $1";
const QUICK_APP: &str =
    "INSERT INTO quick_apps (session_key, id, created_at) VALUES ($1, $2, $3) ON CONFLICT (session_key) DO NOTHING";
const GET_QUICK_APP: &str = "SELECT id FROM quick_apps WHERE session_key = $1";
const UNBIND_IF_IDLE: &str = "UPDATE sessions SET sandbox_id = NULL, endpoint = NULL, agent_session = NULL \
     WHERE session_key = $1 AND sandbox_id = $2 AND last_active_at < $3";

const CREATE_APP: &str = "INSERT INTO apps (id, owner, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
     RETURNING id, owner, name, created_at, updated_at";
const OWNED_APP: &str = "SELECT id, owner, name, created_at, updated_at FROM apps WHERE id = $1 AND owner = $2";
const LIST_APPS: &str =
    "SELECT id, owner, name, created_at, updated_at FROM apps WHERE owner = $1 ORDER BY updated_at DESC, id";
const RENAME_APP: &str = "UPDATE apps SET name = $3, updated_at = $4 WHERE id = $1 AND owner = $2 \
     RETURNING id, owner, name, created_at, updated_at";
const TOUCH_APP: &str = "UPDATE apps SET updated_at = $2 WHERE id = $1";
const LOAD_EVENTS: &str = "SELECT body FROM app_events WHERE app_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
const LAST_EVENT: &str = "SELECT COALESCE(MAX(seq), 0) AS n FROM app_events WHERE app_id = $1";
/// Events per insert statement (4 parameters each).
const EVENTS_PER_INSERT: usize = 250;

impl SqlStore {
    pub async fn connect(url: &str, pg_schema: Option<&str>) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Kind::Postgres
        } else {
            return Err(StoreError::Url(url.chars().take(40).collect()));
        };
        let url = match (kind, pg_schema) {
            (Kind::Sqlite, _) if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            (Kind::Postgres, Some(schema)) => {
                create_schema(url, schema).await?;
                // libpq-style options: every connection gets the schema first on its path.
                format!("{url}{}options=-c%20search_path%3D{schema}", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == Kind::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == Kind::Sqlite {
                        // WAL: readers never block the writer; busy_timeout: a
                        // writer waits for the lock instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        match kind {
            Kind::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Kind::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(SqlStore { pool, kind })
    }

    /// A write transaction serialized against every other reserve.
    async fn begin_serialized(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.kind {
            Kind::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Kind::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(RESERVE_LOCK).execute(&mut *tx).await?;
                Ok(tx)
            }
        }
    }

    /// The transaction a claim runs in, or `None` when the pool is visibly
    /// empty: under WAL that read takes no lock, so a miss never queues for
    /// SQLite's single writer lock.
    async fn begin_claim(
        &self,
        spec_hash: &str,
        rules: &StaleRules,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Any>>> {
        if self.kind == Kind::Sqlite {
            let any =
                sqlx::query(ANY_READY).bind(spec_hash).bind(rules.min_created()).fetch_optional(&self.pool).await?;
            if any.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(self.begin_write().await?))
    }

    /// A write transaction (SQLite takes the write lock up front, so a
    /// read-then-write never fails on a stale snapshot).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.kind {
            Kind::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Kind::Postgres => Ok(self.pool.begin().await?),
        }
    }
}

async fn create_schema(url: &str, schema: &str) -> Result<()> {
    check_schema_name(schema)?;
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await?;
    let stmt = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    pool.execute(sqlx::AssertSqlSafe(stmt)).await?;
    pool.close().await;
    Ok(())
}

pub(crate) async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    check_schema_name(schema)?;
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await?;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).await?;
    pool.close().await;
    Ok(())
}

fn check_schema_name(schema: &str) -> Result<()> {
    if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(StoreError::Url(format!("schema name {schema:?} must be [a-z0-9_]+")));
    }
    Ok(())
}

/// Binds inside a transaction: two statements, the app row second (the
/// foreign key is checked at commit).
async fn bind_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &str,
    sandbox_id: &str,
    endpoint: &str,
    agent_session: Option<&str>,
    now_ms: i64,
) -> Result<Session> {
    let s: Session = sqlx::query_as(BIND)
        .bind(key)
        .bind(crate::new_id())
        .bind(sandbox_id)
        .bind(endpoint)
        .bind(agent_session.map(str::to_owned))
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query(ENSURE_APP).bind(&s.app_id).bind(now_ms).execute(&mut **tx).await?;
    Ok(s)
}

/// Takes (deletes and returns) up to `n` of the oldest ready, non-stale
/// rows, oldest first. The one claim statement: single and batched claims
/// both run it.
async fn take_ready(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: Kind,
    spec_hash: &str,
    rules: &StaleRules,
    n: usize,
) -> Result<Vec<Entry>> {
    let sql = if kind == Kind::Sqlite { CLAIM_MANY_SQLITE } else { CLAIM_MANY_POSTGRES };
    let rows: Vec<EntryRow> =
        sqlx::query_as(sql).bind(spec_hash).bind(rules.min_created()).bind(n as i64).fetch_all(&mut **tx).await?;
    let mut taken = entries(rows)?;
    // RETURNING has no order: hand out the oldest first.
    taken.sort_by(|a, b| (a.ready_at, a.created_at, &a.id).cmp(&(b.ready_at, b.created_at, &b.id)));
    Ok(taken)
}

/// Binds `claimed[i]` to `sessions[i]` for every i, in two statements
/// whatever the batch size: one multi-row session upsert, one multi-row app
/// insert (the foreign key is checked at commit).
async fn bind_many(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    claimed: &[Entry],
    sessions: &[String],
    now_ms: i64,
) -> Result<Vec<(Entry, Session)>> {
    // Only placeholders are interpolated: the values are all bound.
    let rows: Vec<String> = (0..claimed.len())
        .map(|i| {
            let b = i * 5;
            format!(
                "(${}, COALESCE((SELECT id FROM apps WHERE id = ${}), ${}), ${}, ${}, ${}, ${n}, ${n})",
                b + 1,
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                n = claimed.len() * 5 + 1
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO sessions (session_key, app_id, sandbox_id, endpoint, agent_session, created_at, last_active_at) \
         VALUES {} ON CONFLICT (session_key) DO UPDATE SET sandbox_id = excluded.sandbox_id, \
         endpoint = excluded.endpoint, agent_session = excluded.agent_session, \
         last_active_at = excluded.last_active_at RETURNING *",
        rows.join(", ")
    );
    let mut q = sqlx::query_as::<_, Session>(sqlx::AssertSqlSafe(sql));
    for (entry, key) in claimed.iter().zip(sessions) {
        q = q
            .bind(key.clone())
            .bind(crate::new_id())
            .bind(entry.sandbox_id.clone())
            .bind(entry.endpoint.clone().unwrap_or_default())
            .bind(entry.agent_session.clone());
    }
    let bound: Vec<Session> = q.bind(now_ms).fetch_all(&mut **tx).await?;

    let apps: Vec<String> = (0..bound.len()).map(|i| format!("(${}, ${})", i + 1, bound.len() + 1)).collect();
    let sql = format!("INSERT INTO apps (id, created_at) VALUES {} ON CONFLICT (id) DO NOTHING", apps.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for s in &bound {
        q = q.bind(s.app_id.clone());
    }
    q.bind(now_ms).execute(&mut **tx).await?;

    let mut out = Vec::with_capacity(claimed.len());
    for (entry, key) in claimed.iter().zip(sessions) {
        let s = bound.iter().find(|s| &s.session_key == key).cloned().ok_or_else(|| StoreError::Corrupt {
            table: "sessions",
            detail: format!("upsert returned no row for session {key}"),
        })?;
        out.push((entry.clone(), s));
    }
    Ok(out)
}

fn seq_to_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Corrupt { table: "app_events", detail: format!("seq {seq} out of range") })
}

fn counts_from(rows: &[sqlx::any::AnyRow]) -> Result<(u32, u32)> {
    let (mut ready, mut warming) = (0, 0);
    for r in rows {
        let status: String = r.try_get("status")?;
        let n: i64 = r.try_get("n")?;
        match status.as_str() {
            "ready" => ready = n as u32,
            "warming" => warming = n as u32,
            _ => {}
        }
    }
    Ok((ready, warming))
}

#[async_trait]
impl Store for SqlStore {
    fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }

    async fn reserve(
        &self,
        spec_hash: &str,
        target: u32,
        rules: &StaleRules,
        make: &(dyn Fn() -> NewEntry + Send + Sync),
    ) -> Result<Reservation> {
        let mut tx = self.begin_serialized().await?;
        let rows = sqlx::query(COUNTS)
            .bind(spec_hash)
            .bind(rules.min_created())
            .bind(rules.now_ms)
            .fetch_all(&mut *tx)
            .await?;
        let (ready, warming) = counts_from(&rows)?;
        let deficit = target.saturating_sub(ready + warming);
        let mut reserved = Vec::with_capacity(deficit as usize);
        for _ in 0..deficit {
            let e = make();
            sqlx::query(INSERT_ENTRY)
                .bind(&e.id)
                .bind(spec_hash)
                .bind(&e.sandbox_id)
                .bind(e.created_at)
                .bind(e.lease_expires_at)
                .bind(&e.owner)
                .execute(&mut *tx)
                .await?;
            reserved.push(NewEntryRef { id: e.id, sandbox_id: e.sandbox_id });
        }
        tx.commit().await?;
        Ok(Reservation { ready, warming, reserved })
    }

    async fn renew_lease(&self, id: &str, until_ms: i64) -> Result<bool> {
        let r = sqlx::query(RENEW).bind(id).bind(until_ms).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }

    async fn mark_ready(&self, id: &str, now_ms: i64, endpoint: &str, agent_session: Option<&str>) -> Result<bool> {
        let r = sqlx::query(MARK_READY)
            .bind(id)
            .bind(now_ms)
            .bind(endpoint)
            .bind(agent_session.map(str::to_owned))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_entry(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query(DELETE_ENTRY).bind(id).execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn claim(&self, spec_hash: &str, rules: &StaleRules) -> Result<Option<Entry>> {
        let mut tx = match self.begin_claim(spec_hash, rules).await? {
            Some(tx) => tx,
            None => return Ok(None),
        };
        let taken = take_ready(&mut tx, self.kind, spec_hash, rules, 1).await?;
        tx.commit().await?;
        Ok(taken.into_iter().next())
    }

    async fn take_stale(&self, spec_hash: &str, rules: &StaleRules) -> Result<Vec<Entry>> {
        let rows: Vec<EntryRow> = sqlx::query_as(TAKE_STALE)
            .bind(spec_hash)
            .bind(rules.min_created())
            .bind(rules.now_ms)
            .fetch_all(&self.pool)
            .await?;
        entries(rows)
    }

    async fn counts(&self, spec_hash: &str, rules: &StaleRules) -> Result<Counts> {
        let rows = sqlx::query(COUNTS)
            .bind(spec_hash)
            .bind(rules.min_created())
            .bind(rules.now_ms)
            .fetch_all(&self.pool)
            .await?;
        let (ready, warming) = counts_from(&rows)?;
        let total: i64 = sqlx::query(TOTAL).fetch_one(&self.pool).await?.try_get("n")?;
        Ok(Counts { ready, warming, stale: (total as u32).saturating_sub(ready + warming) })
    }

    async fn first_ready(&self, spec_hash: &str, rules: &StaleRules) -> Result<Option<Entry>> {
        let row: Option<EntryRow> =
            sqlx::query_as(FIRST_READY).bind(spec_hash).bind(rules.min_created()).fetch_optional(&self.pool).await?;
        row.map(Entry::try_from).transpose()
    }

    async fn drain(&self) -> Result<Vec<Entry>> {
        let rows: Vec<EntryRow> = sqlx::query_as(DRAIN).fetch_all(&self.pool).await?;
        entries(rows)
    }

    async fn take_warming_of(&self, owner: &str) -> Result<Vec<Entry>> {
        let rows: Vec<EntryRow> = sqlx::query_as(TAKE_WARMING_OF).bind(owner).fetch_all(&self.pool).await?;
        entries(rows)
    }

    async fn known_sandboxes(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(KNOWN).fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get::<String, _>("sandbox_id").map_err(StoreError::from)).collect()
    }

    async fn bind_session(
        &self,
        key: &str,
        sandbox_id: &str,
        endpoint: &str,
        agent_session: Option<&str>,
        now_ms: i64,
    ) -> Result<Session> {
        let mut tx = self.begin_write().await?;
        let s = bind_in(&mut tx, key, sandbox_id, endpoint, agent_session, now_ms).await?;
        tx.commit().await?;
        Ok(s)
    }

    async fn claim_for_sessions(
        &self,
        spec_hash: &str,
        rules: &StaleRules,
        sessions: &[String],
        now_ms: i64,
    ) -> Result<Vec<(Entry, Session)>> {
        if sessions.is_empty() {
            return Ok(vec![]);
        }
        let mut tx = match self.begin_claim(spec_hash, rules).await? {
            Some(tx) => tx,
            None => return Ok(vec![]),
        };
        let mut claimed = take_ready(&mut tx, self.kind, spec_hash, rules, sessions.len()).await?;
        claimed.truncate(sessions.len());
        let out = if claimed.is_empty() { vec![] } else { bind_many(&mut tx, &claimed, sessions, now_ms).await? };
        tx.commit().await?;
        Ok(out)
    }

    async fn get_session(&self, key: &str) -> Result<Option<Session>> {
        Ok(sqlx::query_as(GET_SESSION).bind(key).fetch_optional(&self.pool).await?)
    }

    async fn touch_session(&self, key: &str, now_ms: i64) -> Result<bool> {
        Ok(sqlx::query(TOUCH).bind(key).bind(now_ms).execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn quick_app(&self, key: &str, new_id: &str, now_ms: i64) -> Result<String> {
        sqlx::query(QUICK_APP).bind(key).bind(new_id).bind(now_ms).execute(&self.pool).await?;
        self.get_quick_app(key)
            .await?
            .ok_or(StoreError::Corrupt { table: "quick_apps", detail: "the row inserted a moment ago is gone".into() })
    }

    async fn get_quick_app(&self, key: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(GET_QUICK_APP).bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.0))
    }

    async fn take_idle_sessions(&self, idle_before_ms: i64) -> Result<Vec<Session>> {
        let candidates: Vec<Session> = sqlx::query_as(IDLE).bind(idle_before_ms).fetch_all(&self.pool).await?;
        let mut taken = Vec::new();
        for s in candidates {
            let Some(sandbox) = &s.sandbox_id else { continue };
            // Only if still idle and still bound to the same sandbox: a touch
            // or a rebind in between wins.
            let r = sqlx::query(UNBIND_IF_IDLE)
                .bind(&s.session_key)
                .bind(sandbox)
                .bind(idle_before_ms)
                .execute(&self.pool)
                .await?;
            if r.rows_affected() == 1 {
                taken.push(s);
            }
        }
        Ok(taken)
    }

    async fn create_app(&self, id: &AppId, owner: &OwnerId, name: &str, now_ms: i64) -> Result<App> {
        let row: AppRow = sqlx::query_as(CREATE_APP)
            .bind(id.as_str())
            .bind(owner.as_str())
            .bind(name)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
        App::try_from(row)
    }

    async fn owned_app(&self, id: &AppId, owner: &OwnerId) -> Result<Option<App>> {
        let row: Option<AppRow> =
            sqlx::query_as(OWNED_APP).bind(id.as_str()).bind(owner.as_str()).fetch_optional(&self.pool).await?;
        row.map(App::try_from).transpose()
    }

    async fn list_apps(&self, owner: &OwnerId) -> Result<Vec<App>> {
        let rows: Vec<AppRow> = sqlx::query_as(LIST_APPS).bind(owner.as_str()).fetch_all(&self.pool).await?;
        rows.into_iter().map(App::try_from).collect()
    }

    async fn rename_app(&self, id: &AppId, owner: &OwnerId, name: &str, now_ms: i64) -> Result<Option<App>> {
        let row: Option<AppRow> = sqlx::query_as(RENAME_APP)
            .bind(id.as_str())
            .bind(owner.as_str())
            .bind(name)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(App::try_from).transpose()
    }

    async fn touch_app(&self, id: &AppId, now_ms: i64) -> Result<()> {
        sqlx::query(TOUCH_APP).bind(id.as_str()).bind(now_ms).execute(&self.pool).await?;
        Ok(())
    }

    async fn append_events(&self, id: &AppId, events: &[ChatEvent], now_ms: i64) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(EVENTS_PER_INSERT) {
            // Only placeholders are interpolated: the values are all bound.
            let rows: Vec<String> =
                (0..chunk.len()).map(|i| format!("($1, ${}, $2, ${})", 3 + 2 * i, 4 + 2 * i)).collect();
            let sql = format!("INSERT INTO app_events (app_id, seq, created_at, body) VALUES {}", rows.join(", "));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str().to_owned()).bind(now_ms);
            for e in chunk {
                let body = serde_json::to_string(e)
                    .map_err(|err| StoreError::Corrupt { table: "app_events", detail: err.to_string() })?;
                q = q.bind(seq_to_i64(e.seq)?).bind(body);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_events(&self, id: &AppId, after: u64, limit: u32) -> Result<Vec<ChatEvent>> {
        let rows: Vec<(String,)> = sqlx::query_as(LOAD_EVENTS)
            .bind(id.as_str())
            .bind(seq_to_i64(after)?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(body,)| {
                serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt { table: "app_events", detail: format!("{e}") })
            })
            .collect()
    }

    async fn last_event_seq(&self, id: &AppId) -> Result<u64> {
        let n: i64 = sqlx::query(LAST_EVENT).bind(id.as_str()).fetch_one(&self.pool).await?.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn spend_reserve(&self, hold: &SpendHold<'_>, caps: &[SpendCap]) -> Result<SpendReservation> {
        self.spend_reserve_in(hold, caps).await
    }

    async fn spend_settle(&self, id: &str, charged: u64, now_ms: i64) -> Result<Vec<(String, ScopeSpend)>> {
        self.spend_settle_in(id, charged, now_ms).await
    }

    async fn spend_settle_abandoned(&self, holder: &str, now_ms: i64) -> Result<u64> {
        self.spend_settle_abandoned_in(holder, now_ms).await
    }

    async fn spend(&self, scope: &str) -> Result<ScopeSpend> {
        self.spend_get(scope).await
    }
}
