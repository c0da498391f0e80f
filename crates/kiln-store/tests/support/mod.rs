//! Both real stores for every test: a fresh SQLite file, and a fresh schema
//! in the PostgreSQL that `KILN_TEST_DATABASE_URL` names (default: the
//! machine's `postgres://postgres@127.0.0.1:5432/test`). PostgreSQL
//! unreachable: the test fails under `CI=true` and runs on SQLite alone
//! (saying so) elsewhere.
#![allow(dead_code)]

use std::sync::Arc;

use kiln_store::{NewEntry, StaleRules, Store};

pub struct Stores {
    pub all: Vec<Arc<dyn Store>>,
    dir: tempfile::TempDir,
    pg_schema: Option<(String, String)>,
}

pub fn pg_url() -> String {
    std::env::var("KILN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = kiln_store::connect(&sqlite_url(&dir)).await.unwrap();
    let mut all = vec![sqlite];
    let url = pg_url();
    let schema = format!("kiln_test_{}", kiln_store::new_id());
    let pg_schema = match kiln_store::connect_postgres_schema(&url, &schema).await {
        Ok(pg) => {
            all.push(pg);
            Some((url, schema))
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and PostgreSQL at {url} is unusable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED the PostgreSQL half: {url}: {e}");
            None
        }
    };
    Stores { all, dir, pg_schema }
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("kiln.db").display())
}

impl Stores {
    /// New handles on the same databases (as a restarted server opens
    /// them), in the order of `all`.
    pub async fn reopen(&self) -> Vec<Arc<dyn Store>> {
        let mut all = vec![kiln_store::connect(&sqlite_url(&self.dir)).await.unwrap()];
        if let Some((url, schema)) = &self.pg_schema {
            all.push(kiln_store::connect_postgres_schema(url, schema).await.unwrap());
        }
        all
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        let Some((url, schema)) = self.pg_schema.take() else { return };
        // Drop runs inside the test's runtime: clean up from a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = rt.block_on(kiln_store::drop_postgres_schema(&url, &schema));
        })
        .join();
    }
}

pub const MINUTE: i64 = 60_000;

pub fn rules(now_ms: i64) -> StaleRules {
    StaleRules { now_ms, max_age_ms: 45 * MINUTE }
}

pub fn maker(now_ms: i64, lease_ms: i64) -> impl Fn() -> NewEntry + Send + Sync {
    move || NewEntry {
        id: kiln_store::new_id(),
        sandbox_id: kiln_store::new_id(),
        owner: "test".into(),
        created_at: now_ms,
        lease_expires_at: now_ms + lease_ms,
    }
}

/// Inserts `n` ready rows of `spec` created at `now_ms` (ready in order).
pub async fn add_ready(store: &dyn Store, spec: &str, n: u32, now_ms: i64) -> Vec<String> {
    let c = store.counts(spec, &rules(now_ms)).await.unwrap();
    let r = store.reserve(spec, c.ready + c.warming + n, &rules(now_ms), &maker(now_ms, MINUTE)).await.unwrap();
    let mut ids = Vec::new();
    for (i, e) in r.reserved.iter().enumerate() {
        assert!(store.mark_ready(&e.id, now_ms + i as i64, "{}", None).await.unwrap());
        ids.push(e.id.clone());
    }
    ids
}
