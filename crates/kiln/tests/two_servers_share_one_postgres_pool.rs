//! Two `kiln serve` processes on one PostgreSQL: both top up and both claim;
//! no sandbox is ever claimed twice and ready + warming never exceeds the
//! target.

mod server;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use server::{Server, call, status};

const TOKEN: &str = "two-servers-admin-token";
const TARGET: u64 = 4;

#[test]
fn two_servers_top_up_and_claim_without_double_claims_or_overshoot() {
    if !server::prerequisites() {
        return;
    }
    let base =
        std::env::var("KILN_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kiln_two_{}", kiln_store::new_id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Err(e) = rt.block_on(kiln_store::connect_postgres_schema(&base, &schema)) {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and PostgreSQL is unusable: {e}");
        eprintln!("SKIPPED: PostgreSQL unusable: {e}");
        return;
    }
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("KILN_DATABASE_URL", url.as_str()), ("KILN_POOL_TARGET_SIZE", "4"), ("KILN_POOL_ADMIN_TOKEN", TOKEN)];
    let mut a = Server::start(da.path(), &env);
    let mut b = Server::start(db.path(), &env);
    a.wait_up();
    b.wait_up();

    // Watch ready + warming from both sides for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = [a.url.clone(), b.url.clone()]
        .into_iter()
        .map(|u| {
            let (stop, max_seen) = (stop.clone(), max_seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some((200, body)) = server::get(&format!("{u}/api/vm/prewarm"), Some(TOKEN)) {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        max_seen
                            .fetch_max(v["ready"].as_u64().unwrap() + v["warming"].as_u64().unwrap(), Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    let wait_full = |s: &Server| {
        let t = Instant::now();
        loop {
            let st = status(s, Some(TOKEN));
            if st["ready"] == TARGET {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "pool never filled: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_full(&a);
    // Both top up again at once: nothing to spawn.
    for s in [&a, &b] {
        let (code, body) = call("POST", &format!("{}/api/vm/prewarm", s.url), None, Some(TOKEN)).unwrap();
        assert_eq!(code, 200, "{body}");
    }

    // Eight sessions claim at once, half through each server.
    let claims: Vec<_> = (0..8u32)
        .map(|i| {
            let u = if i % 2 == 0 { a.url.clone() } else { b.url.clone() };
            std::thread::spawn(move || {
                let body = format!(r#"{{"sessionKey": "7a1b2c3d-0000-4000-8000-{i:012x}"}}"#);
                let (code, resp) = call("POST", &format!("{u}/api/vm/claim"), Some(&body), Some(TOKEN)).unwrap();
                assert_eq!(code, 200, "{resp}");
                serde_json::from_str::<serde_json::Value>(&resp).unwrap()
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = claims.into_iter().map(|c| c.join().unwrap()).collect();
    let ids: HashSet<&str> = results.iter().map(|r| r["sandboxId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8, "a sandbox was handed to two sessions: {results:?}");
    let warm = results.iter().filter(|r| r["source"] == "warm").count();
    assert!(warm >= TARGET as usize, "only {warm} warm claims with {TARGET} ready sandboxes: {results:?}");

    wait_full(&b);
    stop.store(true, Ordering::SeqCst);
    for w in watchers {
        w.join().unwrap();
    }
    let max = max_seen.load(Ordering::SeqCst);
    assert!(max <= TARGET, "ready + warming reached {max}, over the target {TARGET}");
    assert!(max > 0);
    a.destroy();
    b.destroy();
    rt.block_on(kiln_store::drop_postgres_schema(&base, &schema)).unwrap();
}
