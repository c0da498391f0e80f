//! A real `kiln serve` whose app is bound to a fake envd (the test
//! double of `crates/kiln-bridge/tests/support`), standing in for envd in a
//! compromised sandbox. The app and its binding are written to the store
//! before the server starts, exactly as a first prompt and a claim would,
//! so the server reuses the sandbox like any live sandbox of the app.
//! - the fake's `session` event with `previewUrl=javascript:alert(1)`, its
//!   forged `version`, `boot` and `html` never reach the browser: the only
//!   `session` event is the server's own, with an `http:` preview URL;
//! - one endless NDJSON line ends the turn at once with an error, while the
//!   server's memory and CPU stay bounded;
//! - a turn whose envd falls silent is cancelled: `POST /api/apps/{id}/cancel`
//!   answers within 5 s, the turn ends with `done {cancelled}` although envd
//!   never answers again, and the session is unlocked;
//! - the next prompt works: the silent envd fails its health check, so the
//!   session gets a fresh, real sandbox and the agent answers there.

#[path = "../../kiln-bridge/tests/support/fake_envd.rs"]
mod fake_envd;
mod server;

use std::time::{Duration, Instant};

use fake_envd::{Behaviour, FakeEnvd};
use serde_json::{Value, json};
use server::Server;

const KEY: &str = "0b7e5d1c-2a3f-4b6c-9d8e-7f6a5b4c3d2e";
const APP: &str = "0b7e5d1c2a3f4b6c9d8e7f6a5b4c3d2e";
const FAKE_SANDBOX: &str = "feedfacefeedfacefeedfacefeedface";

fn chat(s: &Server, prompt: &str) -> Vec<Value> {
    let body = json!({"appId": APP, "prompt": prompt}).to_string();
    let a = server::request_as("POST", &format!("{}/api/chat", s.url), "localhost", None, Some(KEY), Some(&body))
        .expect("server answers");
    assert_eq!(a.status, 200, "{}", a.body);
    a.body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn errors(evs: &[Value]) -> Vec<&str> {
    evs.iter().filter(|e| e["type"] == "error").map(|e| e["code"].as_str().unwrap()).collect()
}

fn stop_reason(evs: &[Value]) -> &str {
    let last = evs.last().expect("events");
    assert_eq!(last["type"], "done", "{evs:?}");
    last["stopReason"].as_str().unwrap()
}

/// (resident bytes, CPU seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    let rss: u64 = rss.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks as f64 / 100.0)
}

#[test]
fn hostile_envd_cannot_script_the_builder_or_hang_a_session() {
    assert!(server::prerequisites(), "this test needs root and bubblewrap (it boots a real sandbox at the end)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let envd = {
        let _in = rt.enter();
        FakeEnvd::start(Behaviour::Impersonates)
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    rt.block_on(async {
        let store = kiln_store::connect(&format!("sqlite://{}", data.join("kiln.db").display())).await.unwrap();
        let ep = serde_json::to_string(&envd.endpoint()).unwrap();
        let agent = json!({"sessionId": "s1", "configOptions": []}).to_string();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let (app, owner): (kiln_types::AppId, kiln_types::OwnerKey) = (APP.parse().unwrap(), KEY.parse().unwrap());
        store.create_app(&app, &owner.owner_id(), "hostile", now).await.unwrap();
        store.bind_session(APP, FAKE_SANDBOX, &ep, Some(&agent), now).await.unwrap();
    });
    let model = server::scripted_model(dir.path(), "recovered.json", &json!({"turns": [{"text": "Recovered."}]}));
    let mut s = Server::start(&data, &[("KILN_POOL_TARGET_SIZE", "0"), ("KILN_MODEL", &model)]);
    s.wait_up();
    let pid = s.child.as_ref().unwrap().id();

    // 1. Impersonation: only the server's own session event, only http(s).
    let evs = chat(&s, "make an app");
    let raw = serde_json::to_string(&evs).unwrap();
    assert!(!raw.contains("javascript:") && !raw.contains("forged") && !raw.contains("passwd"), "{raw}");
    let sessions: Vec<_> = evs.iter().filter(|e| e["type"] == "session").collect();
    assert_eq!(sessions.len(), 1, "{evs:?}");
    let preview = sessions[0]["previewUrl"].as_str().unwrap();
    assert!(preview.starts_with(&format!("http://{FAKE_SANDBOX}.localhost:")), "{preview}");
    assert!(types(&evs).iter().all(|t| !["version", "boot", "html", "file"].contains(t)), "{evs:?}");
    assert!(evs.iter().any(|e| e["type"] == "text" && e["delta"] == "Still an agent."), "{evs:?}");
    assert_eq!(stop_reason(&evs), "end_turn");
    // The server's log names what was dropped and from which sandbox, with
    // the sandbox's file name escaped: no forged line, no escape sequence.
    let log = std::fs::read_to_string(&s.log).unwrap();
    let dropped = log.lines().filter(|l| l.contains("does not accept from a sandbox")).collect::<Vec<_>>().join("\n");
    assert!(dropped.contains(FAKE_SANDBOX) && dropped.contains("javascript:alert(1)"), "{dropped}");
    assert!(dropped.contains(r"src/\x1b[31mred\nline.tsx"), "{dropped}");
    assert!(!log.contains("\x1b[31mred") && !log.contains("red\nline"), "raw sandbox text in the log");

    // 2. One endless line: the turn ends at once, memory and CPU bounded.
    envd.set(Behaviour::EndlessLine);
    let (rss0, cpu0) = usage(pid);
    let t = Instant::now();
    let evs = chat(&s, "again");
    let (rss1, cpu1) = usage(pid);
    eprintln!("endless line: {:?}, RSS {} → {} MiB, CPU {:.2} s", t.elapsed(), rss0 >> 20, rss1 >> 20, cpu1 - cpu0);
    assert!(errors(&evs).contains(&"agent_protocol"), "{evs:?}");
    assert_eq!(stop_reason(&evs), "error");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(rss1.saturating_sub(rss0) < 64 << 20, "server RSS grew {} MiB", (rss1 - rss0) >> 20);
    assert!(cpu1 - cpu0 < 5.0, "server used {:.1} s of CPU", cpu1 - cpu0);

    // 3. envd falls silent mid-turn (and never answers anything again).
    envd.set(Behaviour::SilentStream);
    let prompts = envd.requests().len();
    let url = s.url.clone();
    let running = std::thread::spawn(move || {
        let body = json!({"appId": APP, "prompt": "and again"}).to_string();
        server::request_as("POST", &format!("{url}/api/chat"), "localhost", None, Some(KEY), Some(&body))
            .expect("server answers")
            .body
    });
    let t = Instant::now();
    while !envd.requests()[prompts..].iter().any(|r| r.ends_with("/prompt")) {
        assert!(t.elapsed() < Duration::from_secs(20), "the turn never reached envd: {:?}", envd.requests());
        std::thread::sleep(Duration::from_millis(50));
    }
    envd.set(Behaviour::Silent);
    let t = Instant::now();
    let cancel =
        server::request_as("POST", &format!("{}/api/apps/{APP}/cancel", s.url), "localhost", None, Some(KEY), None)
            .unwrap();
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    assert!(t.elapsed() < Duration::from_secs(5), "cancel took {:?}", t.elapsed());
    let body = running.join().unwrap();
    eprintln!("cancelled turn ended {:?} after the cancel", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10), "the cancelled turn took {:?} to end", t.elapsed());
    let evs: Vec<Value> = body.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stop_reason(&evs), "cancelled", "{evs:?}");
    let view =
        server::request_as("GET", &format!("{}/api/apps/{APP}", s.url), "localhost", None, Some(KEY), None).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&view.body).unwrap()["running"], false, "{}", view.body);

    // 4. The next prompt works: the silent envd fails health; a real sandbox replaces it.
    let evs = chat(&s, "are you there?");
    let session = evs.iter().find(|e| e["type"] == "session").unwrap_or_else(|| panic!("{evs:?}"));
    assert_ne!(session["sandboxId"], FAKE_SANDBOX, "{evs:?}");
    assert!(evs.iter().any(|e| e["type"] == "text" && e["delta"] == "Recovered."), "{evs:?}");
    assert_eq!(stop_reason(&evs), "end_turn", "{evs:?}");
    drop(envd);
    s.destroy();
}
