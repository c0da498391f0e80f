//! The model gateway's spend ledger, on SQLite and PostgreSQL alike: a hold
//! fits under every cap or holds nothing, concurrent holds never overshoot,
//! a settle counts once, a dead process's holds are charged in full, and
//! spend survives reopening the database.

mod support;

use kiln_store::{ScopeSpend, SpendCap, SpendHold, SpendReservation, Store};
use support::stores;

fn cap(scope: &str, cap: u64) -> SpendCap {
    SpendCap { scope: scope.into(), cap }
}

async fn hold(store: &dyn Store, id: &str, tokens: u64, caps: &[SpendCap]) -> SpendReservation {
    let h = SpendHold { id, holder: "instance-a", tokens, now_ms: kiln_store::now_ms() };
    store.spend_reserve(&h, caps).await.unwrap()
}

#[tokio::test]
async fn a_hold_fits_under_every_cap_or_holds_nothing() {
    for store in stores().await.all.iter() {
        let store = store.as_ref();
        let caps = [cap("session:a", 100), cap("global:d", 1_000)];
        let held = hold(store, "r1", 60, &caps).await;
        assert_eq!(held, SpendReservation::Held(vec![ScopeSpend { spent: 0, reserved: 60 }; 2]), "{}", store.kind());
        // 60 + 41 > 100: refused, and the global scope holds nothing more.
        let refused = hold(store, "r2", 41, &caps).await;
        assert_eq!(
            refused,
            SpendReservation::Refused {
                scope: "session:a".into(),
                spend: ScopeSpend { spent: 0, reserved: 60 },
                cap: 100
            }
        );
        assert_eq!(store.spend("global:d").await.unwrap(), ScopeSpend { spent: 0, reserved: 60 });
        // Exactly up to the cap fits.
        assert!(matches!(hold(store, "r3", 40, &caps).await, SpendReservation::Held(_)));
        // A second session is limited by the global cap: 900 left there.
        let other = [cap("session:b", 10_000), cap("global:d", 1_000)];
        assert!(
            matches!(hold(store, "r4", 901, &other).await, SpendReservation::Refused { scope, .. } if scope == "global:d")
        );
        assert_eq!(store.spend("session:b").await.unwrap(), ScopeSpend::default());
    }
}

#[tokio::test]
async fn a_settle_charges_usage_releases_the_hold_and_counts_once() {
    for store in stores().await.all.iter() {
        let store = store.as_ref();
        let caps = [cap("session:a", 100), cap("global:d", 1_000)];
        hold(store, "r1", 60, &caps).await;
        let after = store.spend_settle("r1", 25, kiln_store::now_ms()).await.unwrap();
        let want = ScopeSpend { spent: 25, reserved: 0 };
        assert_eq!(after, vec![("global:d".into(), want), ("session:a".into(), want)], "{}", store.kind());
        assert!(store.spend_settle("r1", 25, kiln_store::now_ms()).await.unwrap().is_empty(), "settled once");
        assert_eq!(store.spend("session:a").await.unwrap(), want);
        // Usage above the hold is charged as reported: spent may pass the cap,
        // and then nothing more fits.
        hold(store, "r2", 70, &caps).await;
        store.spend_settle("r2", 90, kiln_store::now_ms()).await.unwrap();
        assert_eq!(store.spend("session:a").await.unwrap(), ScopeSpend { spent: 115, reserved: 0 });
        assert!(matches!(hold(store, "r3", 1, &caps).await, SpendReservation::Refused { .. }));
        assert_eq!(store.spend("never:seen").await.unwrap(), ScopeSpend::default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_holds_never_overshoot_the_cap() {
    for store in stores().await.all.iter() {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let caps = [cap("session:c", 10_000), cap("global:c", u64::MAX)];
                matches!(hold(store.as_ref(), &format!("r{i}"), 1_067, &caps).await, SpendReservation::Held(_))
            }));
        }
        let mut held = 0;
        for t in tasks {
            held += u64::from(t.await.unwrap());
        }
        assert_eq!(held, 9, "{}: 9 × 1067 ≤ 10000 < 10 × 1067", store.kind());
        assert_eq!(store.spend("session:c").await.unwrap().reserved, 9 * 1_067);
    }
}

#[tokio::test]
async fn a_dead_processs_holds_are_charged_in_full_and_spend_survives_reopening() {
    let stores = stores().await;
    for store in stores.all.iter() {
        let store = store.as_ref();
        let caps = [cap("session:r", 1_000), cap("global:r", 1_000_000)];
        hold(store, "done", 100, &caps).await;
        store.spend_settle("done", 40, kiln_store::now_ms()).await.unwrap();
        hold(store, "cut-1", 200, &caps).await;
        hold(store, "cut-2", 300, &caps).await;
        let other = SpendHold { id: "elsewhere", holder: "instance-b", tokens: 5, now_ms: 0 };
        store.spend_reserve(&other, &caps).await.unwrap();
    }
    // The "restarted" server opens the same databases.
    for store in stores.reopen().await.iter() {
        let store = store.as_ref();
        assert_eq!(
            store.spend("session:r").await.unwrap(),
            ScopeSpend { spent: 40, reserved: 505 },
            "{}",
            store.kind()
        );
        assert_eq!(store.spend_settle_abandoned("instance-a", kiln_store::now_ms()).await.unwrap(), 2);
        // Another instance's request in flight is left to that instance.
        assert_eq!(store.spend("session:r").await.unwrap(), ScopeSpend { spent: 540, reserved: 5 });
        assert_eq!(store.spend("global:r").await.unwrap(), ScopeSpend { spent: 540, reserved: 5 });
        assert!(store.spend_settle("cut-1", 1, kiln_store::now_ms()).await.unwrap().is_empty(), "already charged");
        assert_eq!(store.spend_settle_abandoned("instance-a", kiln_store::now_ms()).await.unwrap(), 0);
    }
}
