//! Apps against a real `kiln serve` (real sandbox, kiln-agent replaying the
//! demo): the app is the durable thing and the browser's key is its owner's
//! credential.
//! - a demo turn makes a new app named from the prompt; after a server
//!   restart on the same data directory, `GET /api/apps/{id}` still shows the
//!   whole conversation and `/events?after=0` replays it, and the next turn
//!   numbers on from it;
//! - another owner lists none of it and gets the same 404 as for an unknown
//!   id on every `/api/apps/{id}*` route (and on `POST /api/chat` with that
//!   `appId`);
//! - the owner key appears in no line the server wrote (stderr and stdout)
//!   and is accepted in no URL (a key in a path or query string is not a key);
//! - a rename with an empty, whitespace-only, huge or multi-line name is a 400.

mod server;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::Server;

const ALICE: &str = "5d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a";
const MALLORY: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

fn call(s: &Server, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> server::Answer {
    server::request_as(method, &format!("{}{path}", s.url), "localhost", None, key, body).expect("server answers")
}

fn json_of(a: &server::Answer) -> Value {
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

fn ndjson(body: &str) -> Vec<Value> {
    body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("NDJSON line")).collect()
}

fn seqs(evs: &[Value]) -> Vec<u64> {
    evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn apps_keep_their_conversation_across_a_restart_and_stay_with_their_owner() {
    if !server::prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(
        &data,
        &[("KILN_POOL_TARGET_SIZE", "1"), ("ANTHROPIC_API_KEY", ""), ("OPENAI_API_KEY", ""), ("KILN_LOG", "debug")],
    );
    s.wait_up();
    let t = Instant::now();
    while server::status(&s, None)["ready"] != 1 {
        assert!(t.elapsed() < Duration::from_secs(120), "the pool never got a ready sandbox");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A demo turn with no appId: a new app of Alice's, named from the prompt.
    let prompt = "Build a bill splitter for friends who share dinners, with tips and rounding rules";
    let body = json!({"prompt": prompt, "mode": "vm", "demo": true}).to_string();
    let turn1 = ndjson(&call(&s, "POST", "/api/chat", Some(ALICE), Some(&body)).body);
    assert_eq!(turn1[0]["type"], "session", "{turn1:?}");
    assert_eq!(turn1.last().unwrap()["stopReason"], "end_turn", "{turn1:?}");
    let app = turn1[0]["appId"].as_str().unwrap().to_owned();
    let list = json_of(&call(&s, "GET", "/api/apps", Some(ALICE), None));
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
    let name = list["apps"][0]["name"].as_str().unwrap().to_owned();
    assert!(name.ends_with('…') && prompt.starts_with(name.trim_end_matches('…')), "{name}");
    assert_eq!(list["apps"][0]["id"], app.as_str());
    assert_eq!(list["apps"][0]["running"], false);

    // Rename: bad names are 400s and change nothing; a good one sticks.
    let app_path = format!("/api/apps/{app}");
    for (bad, needle) in [
        (json!({"name": ""}), "name is empty"),
        (json!({"name": "   "}), "name is empty"),
        (json!({"name": "x".repeat(121)}), "limit is 120"),
        (json!({"name": "two\nlines"}), "one line"),
        (json!({"title": "x"}), "unknown field"),
    ] {
        let a = call(&s, "PATCH", &app_path, Some(ALICE), Some(&bad.to_string()));
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body.contains(needle), "{needle}: {}", a.body);
    }
    let a = call(&s, "PATCH", &app_path, Some(ALICE), Some("not json"));
    assert_eq!(a.status, 400, "{}", a.body);
    let renamed = json_of(&call(&s, "PATCH", &app_path, Some(ALICE), Some(r#"{"name":"  Split it  "}"#)));
    assert_eq!(renamed["name"], "Split it");

    // Another owner: nothing listed, and every route answers like an unknown id.
    assert_eq!(json_of(&call(&s, "GET", "/api/apps", Some(MALLORY), None))["apps"], json!([]));
    let unknown = "f".repeat(32);
    let version = turn1.iter().find(|e| e["type"] == "version").unwrap()["sha"].as_str().unwrap().to_owned();
    for id in [app.as_str(), unknown.as_str()] {
        let rename = r#"{"name":"mine"}"#;
        let chat = json!({"prompt": "hi", "appId": id}).to_string();
        for (method, path, body) in [
            ("GET", format!("/api/apps/{id}"), None),
            ("PATCH", format!("/api/apps/{id}"), Some(rename)),
            ("GET", format!("/api/apps/{id}/events?after=0"), None),
            ("POST", format!("/api/apps/{id}/cancel"), None),
            ("POST", format!("/api/apps/{id}/versions/{version}/restore"), None),
            ("POST", "/api/chat".to_owned(), Some(chat.as_str())),
        ] {
            let a = call(&s, method, &path, Some(MALLORY), body);
            assert_eq!(a.status, 404, "{method} {path}: {}", a.body);
            assert!(a.body.contains("no such app"), "{method} {path}: {}", a.body);
            assert!(!a.body.contains("Split it"), "{}", a.body);
        }
    }
    // Mallory's probing changed nothing of Alice's.
    assert_eq!(json_of(&call(&s, "GET", &app_path, Some(ALICE), None))["name"], "Split it");

    // The key is accepted only in its header: not in a path, not in a query.
    for path in [format!("/api/apps?key={ALICE}"), format!("/api/apps/{ALICE}"), format!("{app_path}?xKilnKey={ALICE}")]
    {
        let a = call(&s, "GET", &path, None, None);
        assert!(a.status == 400 || a.status == 404, "{path}: {} {}", a.status, a.body);
        assert!(!a.body.contains(&app), "{path} answered with the app: {}", a.body);
    }

    // What the app shows before the restart.
    let before = json_of(&call(&s, "GET", &app_path, Some(ALICE), None));
    let events_before = before["events"].as_array().unwrap().clone();
    assert_eq!(seqs(&events_before), seqs(&turn1), "the whole turn is in the app's conversation");
    assert_eq!(before["lastSeq"], turn1.last().unwrap()["seq"]);
    assert!(!before["versions"].as_array().unwrap().is_empty());

    // Restart on the same data directory (SIGKILL: nothing gets to flush).
    s.restart();
    s.wait_up();
    let after = json_of(&call(&s, "GET", &app_path, Some(ALICE), None));
    assert_eq!(after["events"], Value::from(events_before.clone()), "the conversation survived the restart");
    assert_eq!(after["name"], "Split it");
    assert_eq!(after["running"], false);
    assert_eq!(after["versions"], before["versions"]);
    let replay = ndjson(&call(&s, "GET", &format!("{app_path}/events?after=0"), Some(ALICE), None).body);
    assert_eq!(Value::from(replay), Value::from(events_before), "/events?after=0 replays it");
    let last = turn1.last().unwrap()["seq"].as_u64().unwrap();
    let tail = ndjson(&call(&s, "GET", &format!("{app_path}/events?after={}", last - 2), Some(ALICE), None).body);
    assert_eq!(seqs(&tail), [last - 1, last]);

    // The next turn continues the app and its numbering.
    let body = json!({"prompt": "Make it dark", "appId": app, "demo": true}).to_string();
    let turn2 = ndjson(&call(&s, "POST", "/api/chat", Some(ALICE), Some(&body)).body);
    assert_eq!(turn2[0]["appId"], app.as_str(), "{turn2:?}");
    assert_eq!(turn2[0]["seq"].as_u64().unwrap(), last + 1, "one sequence per app across restarts");
    let all = json_of(&call(&s, "GET", &app_path, Some(ALICE), None));
    assert_eq!(all["events"].as_array().unwrap().len(), turn1.len() + turn2.len());
    assert_eq!(json_of(&call(&s, "GET", "/api/apps", Some(ALICE), None))["apps"].as_array().unwrap().len(), 1);

    // The key never reached the server's log (debug level, both runs);
    // its hash may, in short form only.
    let log = server::log_text(&s);
    assert!(log.contains("new app"), "the log is captured: {log}");
    for secret in [ALICE, MALLORY, &ALICE.replace('-', ""), &ALICE[..8]] {
        assert!(!log.contains(secret), "the server logged a key: {secret}");
    }
    s.destroy();
}
