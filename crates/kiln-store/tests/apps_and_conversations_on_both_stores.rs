//! Apps belong to owners and keep their conversation, on SQLite and
//! PostgreSQL alike: an owner lists only its own apps, another owner's app
//! is as absent as an unknown one, and events come back in `seq` order after
//! the store is reopened (a server restart).

mod support;

use kiln_types::chat::{ChatEvent, EventBody, StopReason};
use kiln_types::{AppId, OwnerKey};
use support::stores;

fn owner(n: u8) -> OwnerKey {
    format!("00000000-0000-4000-8000-0000000000{n:02x}").parse().unwrap()
}

fn text(seq: u64, s: &str) -> ChatEvent {
    ChatEvent { seq, body: EventBody::Text { delta: s.into() } }
}

#[tokio::test]
async fn an_owner_lists_only_its_own_apps_newest_first() {
    let s = stores().await;
    for store in &s.all {
        let (alice, bob) = (owner(1).owner_id(), owner(2).owner_id());
        let (a1, a2, b1) = (AppId::random(), AppId::random(), AppId::random());
        store.create_app(&a1, &alice, "first", 1_000).await.unwrap();
        store.create_app(&a2, &alice, "second", 2_000).await.unwrap();
        store.create_app(&b1, &bob, "bob's", 1_500).await.unwrap();
        let names = |apps: Vec<kiln_store::App>| apps.into_iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(names(store.list_apps(&alice).await.unwrap()), ["second", "first"], "{}", store.kind());
        store.touch_app(&a1, 3_000).await.unwrap();
        assert_eq!(names(store.list_apps(&alice).await.unwrap()), ["first", "second"], "{}", store.kind());
        assert_eq!(names(store.list_apps(&bob).await.unwrap()), ["bob's"]);
        // Another owner's app is exactly as absent as an unknown one.
        assert!(store.owned_app(&b1, &alice).await.unwrap().is_none());
        assert!(store.owned_app(&AppId::random(), &alice).await.unwrap().is_none());
        assert!(store.rename_app(&b1, &alice, "mine now", 4_000).await.unwrap().is_none());
        assert_eq!(store.owned_app(&b1, &bob).await.unwrap().unwrap().name, "bob's");
        let r = store.rename_app(&a2, &alice, "Habits", 5_000).await.unwrap().unwrap();
        assert_eq!((r.name.as_str(), r.created_at, r.updated_at), ("Habits", 2_000, 5_000));
        // The store never holds the key itself, only its hash.
        assert_eq!(r.owner, alice);
        assert_ne!(r.owner.as_str(), owner(1).expose());
    }
}

#[tokio::test]
async fn a_conversation_is_appended_in_batches_and_loads_after_a_reopen() {
    let s = stores().await;
    let apps: Vec<AppId> = s.all.iter().map(|_| AppId::random()).collect();
    for (store, app) in s.all.iter().zip(&apps) {
        store.create_app(app, &owner(1).owner_id(), "chatty", 1_000).await.unwrap();
        assert_eq!(store.last_event_seq(app).await.unwrap(), 0);
        // More than one insert statement's worth in one batch.
        let batch: Vec<ChatEvent> = (1..=600).map(|i| text(i, &format!("d{i}"))).collect();
        store.append_events(app, &batch, 2_000).await.unwrap();
        let done = ChatEvent { seq: 601, body: EventBody::Done { stop_reason: StopReason::EndTurn } };
        store.append_events(app, &[done], 2_001).await.unwrap();
        // A seq is stored once: a replayed append is refused, not duplicated.
        assert!(store.append_events(app, &[text(5, "again")], 2_002).await.is_err(), "{}", store.kind());
    }
    for (store, app) in s.reopen().await.iter().zip(&apps) {
        assert_eq!(store.last_event_seq(app).await.unwrap(), 601, "{}", store.kind());
        let all = store.load_events(app, 0, 10_000).await.unwrap();
        assert_eq!(all.len(), 601);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(all[0], text(1, "d1"));
        assert!(all[600].body.is_done());
        let tail = store.load_events(app, 598, 2).await.unwrap();
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [599, 600]);
        assert!(store.load_events(&AppId::random(), 0, 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_session_keyed_by_an_app_id_binds_to_that_app() {
    let s = stores().await;
    for store in &s.all {
        let app = AppId::random();
        store.create_app(&app, &owner(3).owner_id(), "bound", 1_000).await.unwrap();
        let sess = store.bind_session(app.as_str(), &kiln_store::new_id(), "{}", None, 2_000).await.unwrap();
        assert_eq!(sess.app_id, app.as_str(), "{}", store.kind());
        // A key that names no app gets a fresh app, as before.
        let other = store.bind_session("not-an-app", &kiln_store::new_id(), "{}", None, 2_000).await.unwrap();
        assert_ne!(other.app_id, "not-an-app");
        assert_eq!(other.app_id.len(), 32);
    }
}
