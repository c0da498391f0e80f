//! Concurrency, on both stores: concurrent claimants always get different
//! rows, and concurrent top-ups never overshoot the target.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::{MINUTE, add_ready, maker, rules, stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_claimants_fifty_rows_fifty_winners_fourteen_misses() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        add_ready(store.as_ref(), "s", 50, now).await;
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.claim("s", &rules(now)).await.unwrap().map(|e| e.id) }));
        }
        let mut winners = Vec::new();
        let mut misses = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(id) => winners.push(id),
                None => misses += 1,
            }
        }
        let distinct: HashSet<_> = winners.iter().collect();
        assert_eq!((winners.len(), distinct.len(), misses), (50, 50, 14), "{}", store.kind());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_claim_and_insert_operations_never_double_claim() {
    const ROWS: usize = 5_000;
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        let started = std::time::Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let inserter = {
            let store = store.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while ids.len() < ROWS {
                    ids.extend(add_ready(store.as_ref(), "s", 25, now).await);
                }
                done.store(true, Ordering::SeqCst);
                ids
            })
        };
        let mut claimants = Vec::new();
        for _ in 0..64 {
            let store = store.clone();
            let done = done.clone();
            claimants.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    match store.claim("s", &rules(now)).await.unwrap() {
                        Some(e) => got.push(e.id),
                        None if finished => return got,
                        // A real claimant that misses goes off to cold-boot;
                        // spinning here would only starve the inserter.
                        None => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
                    }
                }
            }));
        }
        let inserted = inserter.await.unwrap();
        let mut claimed = Vec::new();
        for c in claimants {
            claimed.extend(c.await.unwrap());
        }
        let distinct: HashSet<_> = claimed.iter().collect();
        eprintln!("{}: {} inserts + {} claims in {:?}", store.kind(), inserted.len(), claimed.len(), started.elapsed());
        assert_eq!(claimed.len(), distinct.len(), "{}: a row was claimed twice", store.kind());
        assert_eq!(claimed.len(), inserted.len(), "{}: every inserted row is claimed exactly once", store.kind());
        assert_eq!(distinct, inserted.iter().collect::<HashSet<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_topups_with_target_five_never_overshoot() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        add_ready(store.as_ref(), "s", 1, now).await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { store.reserve("s", 5, &rules(now), &maker(now, MINUTE)).await.unwrap() },
            ));
        }
        let mut reserved = 0;
        for t in tasks {
            let r = t.await.unwrap();
            assert!(r.ready + r.warming + r.reserved.len() as u32 <= 5, "{}: overshoot {r:?}", store.kind());
            reserved += r.reserved.len();
        }
        assert_eq!(reserved, 4, "{}", store.kind());
        let c = store.counts("s", &rules(now)).await.unwrap();
        assert_eq!(c.ready + c.warming, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batched_claims_bind_each_row_to_exactly_one_session() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        add_ready(store.as_ref(), "s", 50, now).await;
        // 32 batches of 1–4 sessions (80 sessions for 50 rows), all at once,
        // as 32 server processes' batchers would send them.
        let mut tasks = Vec::new();
        for b in 0..32usize {
            let store = store.clone();
            let keys: Vec<String> = (0..(b % 4 + 1)).map(|i| format!("session-{b}-{i}")).collect();
            tasks.push(tokio::spawn(
                async move { store.claim_for_sessions("s", &rules(now), &keys, now).await.unwrap() },
            ));
        }
        let mut rows = Vec::new();
        let mut sessions = HashSet::new();
        for t in tasks {
            for (entry, session) in t.await.unwrap() {
                assert_eq!(session.sandbox_id.as_deref(), Some(entry.sandbox_id.as_str()), "{}", store.kind());
                assert_eq!(session.endpoint, entry.endpoint);
                assert!(sessions.insert(session.session_key.clone()), "a session was bound twice");
                rows.push(entry.id);
            }
        }
        let distinct: HashSet<_> = rows.iter().collect();
        assert_eq!((rows.len(), distinct.len()), (50, 50), "{}: every row to exactly one session", store.kind());
        let mut known = store.known_sandboxes().await.unwrap();
        known.sort();
        known.dedup();
        assert_eq!(known.len(), 50);
        // Each bound session has its app.
        for key in sessions.iter().take(5) {
            let s = store.get_session(key).await.unwrap().unwrap();
            assert!(!s.app_id.is_empty());
        }
    }
}
