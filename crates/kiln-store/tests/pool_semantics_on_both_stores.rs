//! The warm pool's rules, table-driven, on SQLite and PostgreSQL alike.

mod support;

use support::{MINUTE, add_ready, maker, rules, stores};

const SPEC: &str = "spec-a";

#[tokio::test]
async fn deficit_is_target_minus_ready_minus_warming_never_negative() {
    // (ready, warming, target) → rows reserved
    let table = [(0, 0, 1, 1), (0, 0, 5, 5), (2, 0, 5, 3), (2, 3, 5, 0), (1, 1, 1, 0), (4, 0, 2, 0), (0, 2, 0, 0)];
    for store in stores().await.all.iter() {
        for (ready, warming, target, want) in table {
            let store = store.as_ref();
            let spec = format!("deficit-{ready}-{warming}-{target}");
            let now = kiln_store::now_ms();
            add_ready(store, &spec, ready, now).await;
            store.reserve(&spec, ready + warming, &rules(now), &maker(now, MINUTE)).await.unwrap();
            let r = store.reserve(&spec, target, &rules(now), &maker(now, MINUTE)).await.unwrap();
            assert_eq!(
                (r.ready, r.warming, r.reserved.len() as u32),
                (ready, warming, want),
                "{} {spec}",
                store.kind()
            );
        }
    }
}

#[tokio::test]
async fn a_new_spec_hash_retires_every_older_row() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        add_ready(store.as_ref(), "old", 2, now).await;
        store.reserve("old", 3, &rules(now), &maker(now, MINUTE)).await.unwrap();
        let c = store.counts("new", &rules(now)).await.unwrap();
        assert_eq!((c.ready, c.warming, c.stale), (0, 0, 3), "{}", store.kind());
        assert!(store.claim("new", &rules(now)).await.unwrap().is_none());
        let stale = store.take_stale("new", &rules(now)).await.unwrap();
        assert_eq!(stale.len(), 3);
        assert_eq!(store.counts("new", &rules(now)).await.unwrap().stale, 0);
    }
}

#[tokio::test]
async fn rows_past_the_age_cap_are_stale_and_never_claimed() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        let old = add_ready(store.as_ref(), SPEC, 1, now - 46 * MINUTE).await;
        let fresh = add_ready(store.as_ref(), SPEC, 1, now - 44 * MINUTE).await;
        let c = store.counts(SPEC, &rules(now)).await.unwrap();
        assert_eq!((c.ready, c.stale), (1, 1), "{}", store.kind());
        assert_eq!(store.claim(SPEC, &rules(now)).await.unwrap().unwrap().id, fresh[0]);
        assert!(store.claim(SPEC, &rules(now)).await.unwrap().is_none(), "an over-age row was claimed");
        let stale = store.take_stale(SPEC, &rules(now)).await.unwrap();
        assert_eq!(stale.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), old);
    }
}

#[tokio::test]
async fn a_warming_row_whose_lease_expired_is_stale_and_renewal_keeps_it_alive() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        let r = store.reserve(SPEC, 2, &rules(now), &maker(now, 10_000)).await.unwrap();
        let (dead, alive) = (&r.reserved[0], &r.reserved[1]);
        assert!(store.renew_lease(&alive.id, now + 60_000).await.unwrap());
        let later = now + 30_000;
        let c = store.counts(SPEC, &rules(later)).await.unwrap();
        assert_eq!((c.warming, c.stale), (1, 1), "{}", store.kind());
        // A top-up at that moment refills the dead row's slot.
        let stale = store.take_stale(SPEC, &rules(later)).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].sandbox_id, dead.sandbox_id, "the stale row names the sandbox to kill");
        assert!(!store.renew_lease(&dead.id, later + 60_000).await.unwrap(), "a reaped row must not be renewable");
        assert!(!store.mark_ready(&dead.id, later, "{}", None).await.unwrap(), "a reaped row must not turn ready");
        // A ready row's old lease does not make it stale.
        assert!(store.mark_ready(&alive.id, later, "{}", None).await.unwrap());
        let c = store.counts(SPEC, &rules(now + 10 * MINUTE)).await.unwrap();
        assert_eq!((c.ready, c.stale), (1, 0));
    }
}

#[tokio::test]
async fn claims_take_the_oldest_ready_row_first_and_miss_on_an_empty_pool() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        assert!(store.claim(SPEC, &rules(now)).await.unwrap().is_none(), "empty pool must miss");
        let ids = add_ready(store.as_ref(), SPEC, 3, now).await;
        store.reserve(SPEC, 4, &rules(now), &maker(now, MINUTE)).await.unwrap();
        let first = store.first_ready(SPEC, &rules(now)).await.unwrap().unwrap();
        assert_eq!(first.id, ids[0]);
        for want in &ids {
            let got = store.claim(SPEC, &rules(now)).await.unwrap().unwrap();
            assert_eq!(&got.id, want, "{}", store.kind());
            assert_eq!(got.status, kiln_store::EntryStatus::Ready);
        }
        assert!(store.claim(SPEC, &rules(now)).await.unwrap().is_none(), "a warming row must not be claimable");
        assert_eq!(store.drain().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn sessions_bind_touch_and_expire() {
    for store in stores().await.all.iter() {
        let now = kiln_store::now_ms();
        let s = store.bind_session("k1", "sb1", "{}", Some("{\"acp\":1}"), now).await.unwrap();
        assert_eq!(s.sandbox_id.as_deref(), Some("sb1"));
        let again = store.bind_session("k1", "sb2", "{}", None, now + 1).await.unwrap();
        assert_eq!(again.app_id, s.app_id, "rebinding keeps the session's app");
        store.bind_session("k2", "sb3", "{}", None, now).await.unwrap();
        assert!(store.touch_session("k2", now + 50 * MINUTE).await.unwrap());
        assert!(!store.touch_session("nope", now).await.unwrap());
        let mut known = store.known_sandboxes().await.unwrap();
        known.sort();
        assert_eq!(known, ["sb2", "sb3"]);
        let idle = store.take_idle_sessions(now + 30 * MINUTE).await.unwrap();
        assert_eq!(
            idle.iter().map(|s| (s.session_key.as_str(), s.sandbox_id.as_deref())).collect::<Vec<_>>(),
            [("k1", Some("sb2"))]
        );
        let k1 = store.get_session("k1").await.unwrap().unwrap();
        assert_eq!(k1.sandbox_id, None, "{}", store.kind());
        assert!(store.take_idle_sessions(now + 30 * MINUTE).await.unwrap().is_empty());
    }
}
