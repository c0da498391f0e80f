//! The builder's HTTP API against a real `kiln serve` (real sandboxes, real
//! Vite, kiln-agent replaying a scripted model): a prompt streams NDJSON
//! from `session` to `version` and `done`; the preview proxy serves the app
//! on `<sandbox id>.localhost`; a second prompt while one runs is a 409;
//! a dropped stream resumes with `/api/apps/{id}/events?after=`; cancel stops a turn;
//! versions restore; Quick mode stores an HTML version served at `/q/<id>`
//! under a strict CSP; `kiln chat` prints a turn and fails on an error; every
//! bad input (a missing owner key included) gets a 4xx with a message.

mod server;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{Server, request};

const KEY: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn app(heading: &str) -> String {
    format!("export default function App() {{\n  return <main><h1>{heading}</h1></main>;\n}}\n")
}

fn script() -> Value {
    let write = |h: &str| json!({"name": "write_file", "input": {"path": "src/App.tsx", "content": app(h)}});
    json!({"turns": [
        {"text": "Building it.", "tool_calls": [write("First heading")]},
        {"text": "Built."},
        {"delay_ms": 1500, "tool_calls": [write("Second heading")]},
        {"text": "Changed."},
        {"delay_ms": 20000, "text": "never streamed: this turn is cancelled"}
    ]})
}

fn quick_script() -> Value {
    json!({"turns": [{"text": "```html\n<!doctype html><html><body><h1>Quick hello</h1><script>document.title='q'</script></body></html>\n```"}]})
}

fn events(body: &str) -> Vec<Value> {
    body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("NDJSON line")).collect()
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A POST as the owner `KEY`.
fn post(s: &Server, path: &str, body: &str) -> server::Answer {
    server::request_as("POST", &format!("{}{path}", s.url), "localhost", None, Some(KEY), Some(body))
        .expect("server answers")
}

/// A GET as the owner `KEY`.
fn get(s: &Server, path: &str) -> server::Answer {
    server::request_as("GET", &format!("{}{path}", s.url), "localhost", None, Some(KEY), None).expect("server answers")
}

/// A turn of `app` (a new app when `None`).
fn chat(s: &Server, prompt: &str, mode: &str, app: Option<&str>) -> Vec<Value> {
    let mut body = json!({"prompt": prompt, "mode": mode});
    if let Some(a) = app {
        body["appId"] = a.into();
    }
    let a = post(s, "/api/chat", &body.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/x-ndjson");
    events(&a.body)
}

fn assert_4xx(a: &server::Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(a.body.contains(needle), "expected {needle:?} in {}", a.body);
}

/// Polls the preview through the proxy until `path` contains `needle`.
fn preview_shows(s: &Server, host: &str, path: &str, needle: &str) {
    let t = Instant::now();
    loop {
        let a = request("GET", &format!("{}{path}", s.url), host, None).unwrap();
        if a.status == 200 && a.body.contains(needle) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "preview never showed {needle:?}: {} {}", a.status, a.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn chat_api_builds_versions_and_refuses_bad_input() {
    if !server::prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = server::scripted_model(dir.path(), "script.json", &script());
    let quick = server::scripted_model(dir.path(), "quick.json", &quick_script());
    let mut s = Server::start(
        &dir.path().join("data"),
        &[("KILN_MODEL", &model), ("KILN_QUICK_MODEL", &quick), ("KILN_POOL_TARGET_SIZE", "1")],
    );
    s.wait_up();

    // Bad input: 4xx with a message, nothing started.
    assert_4xx(&post(&s, "/api/chat", "{not json"), 400, "body must be JSON");
    let no_key = request("POST", &format!("{}/api/chat", s.url), "localhost", Some(r#"{"prompt":"hi"}"#)).unwrap();
    assert_4xx(&no_key, 400, "X-Kiln-Key");
    let bad_key =
        server::request_as("GET", &format!("{}/api/apps", s.url), "localhost", None, Some("x"), None).unwrap();
    assert_4xx(&bad_key, 400, "X-Kiln-Key");
    assert_4xx(&post(&s, "/api/chat", r#"{"sessionKey":"x","prompt":"hi"}"#), 400, "unknown field");
    assert_4xx(&post(&s, "/api/chat", r#"{"appId":"x","prompt":"hi"}"#), 404, "invalid app id");
    let nobody = "0".repeat(32);
    assert_4xx(&post(&s, "/api/chat", &json!({"appId": nobody, "prompt": "hi"}).to_string()), 404, "no such app");
    assert_4xx(&post(&s, "/api/chat", &json!({"prompt": "  "}).to_string()), 400, "prompt is empty");
    assert_4xx(&post(&s, "/api/chat", &json!({"prompt": "x", "mode": "turbo"}).to_string()), 400, "mode must be");
    let long = "x".repeat(40 * 1024);
    assert_4xx(&post(&s, "/api/chat", &json!({"prompt": long}).to_string()), 413, "limit is 32 KiB");
    let huge = "x".repeat(100 * 1024);
    assert_4xx(&post(&s, "/api/chat", &json!({"prompt": huge}).to_string()), 413, "request body over 64 KiB");
    assert_eq!(get(&s, "/api/apps").body, r#"{"apps":[]}"#, "bad input made no app");
    assert_4xx(&get(&s, "/api/apps/not-an-id"), 404, "invalid app id");
    assert_4xx(&get(&s, &format!("/api/apps/{nobody}")), 404, "no such app");
    assert_4xx(&get(&s, &format!("/api/apps/{nobody}/events?after=0")), 404, "no such app");
    assert_4xx(&post(&s, &format!("/api/apps/{nobody}/cancel"), ""), 404, "no such app");
    assert_4xx(&post(&s, &format!("/api/apps/{nobody}/versions/zzz/restore"), ""), 400, "not a version id");
    assert_4xx(&get(&s, "/api/nope"), 404, "openapi.json");
    assert_eq!(request("DELETE", &format!("{}/api/chat", s.url), "localhost", None).unwrap().status, 405);

    let t = Instant::now();
    while server::status(&s, None)["ready"] != 1 {
        assert!(t.elapsed() < Duration::from_secs(120), "the pool never got a ready sandbox");
        std::thread::sleep(Duration::from_millis(100));
    }

    // First prompt: a warm claim, the agent's tool call and file, a version.
    let evs = chat(&s, "Make a page with a heading", "vm", None);
    let t = types(&evs);
    assert_eq!(t[0], "session", "{t:?}");
    assert_eq!(*t.last().unwrap(), "done");
    for w in ["tool_call", "file", "version", "text"] {
        assert!(t.contains(&w), "no {w} in {t:?}");
    }
    assert!(evs.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "seq strictly increases");
    let session = &evs[0];
    assert_eq!(session["mode"], "vm");
    assert_eq!(session["prompt"], "Make a page with a heading");
    assert_eq!(session["warm"], true, "the pool had a ready sandbox: {session}");
    let sandbox = session["sandboxId"].as_str().unwrap().to_owned();
    let app_id = session["appId"].as_str().unwrap().to_owned();
    assert_4xx(&get(&s, &format!("/api/apps/{app_id}/events?after=-1")), 400, "after must be");
    assert_4xx(&post(&s, &format!("/api/apps/{app_id}/versions/zzz/restore"), ""), 400, "not a version id");
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    assert_eq!(session["previewUrl"], format!("http://{sandbox}.localhost:{port}/"));
    assert_eq!(evs.last().unwrap()["stopReason"], "end_turn");
    let first_version = evs.iter().find(|e| e["type"] == "version").unwrap()["sha"].as_str().unwrap().to_owned();
    let turn1_last = evs.last().unwrap()["seq"].as_u64().unwrap();

    // The preview proxy: the live dev server on the sandbox's own host.
    let host = format!("{sandbox}.localhost:{port}");
    preview_shows(&s, &host, "/", "<div id=\"root\">");
    preview_shows(&s, &host, "/src/App.tsx", "First heading");
    // A preview host never reaches Kiln's API (the share link is read-only).
    let through =
        server::request_as("POST", &format!("{}/api/apps/{app_id}/cancel", s.url), &host, None, Some(KEY), None)
            .unwrap();
    assert!(!through.body.contains("nothing is running"), "the API answered on a preview host: {}", through.body);
    let unknown =
        request("GET", &format!("{}/", s.url), &format!("{}.localhost:{port}", "0".repeat(32)), None).unwrap();
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("not running"), "{}", unknown.body);
    let malformed = request("GET", &format!("{}/", s.url), &format!("nope.localhost:{port}"), None).unwrap();
    assert_eq!(malformed.status, 404);
    // A Host that is neither Kiln nor a preview (DNS rebinding) is refused.
    let outside =
        request("POST", &format!("{}/api/apps/{app_id}/cancel", s.url), &format!("evil.example:{port}"), Some("{}"))
            .unwrap();
    assert_eq!(outside.status, 421, "{}", outside.body);
    assert!(outside.body.contains("does not answer for Host"), "{}", outside.body);
    // Cross-site writes from browsers (another site, a preview, a sandboxed
    // quick app) are refused; Kiln's own page is not.
    let cancel_url = format!("{}/api/apps/{app_id}/cancel", s.url);
    for origin in ["http://evil.example", "null", &format!("http://{sandbox}.localhost:{port}")] {
        let a = server::request_as("POST", &cancel_url, "localhost", Some(origin), Some(KEY), None);
        assert_eq!(a.unwrap().status, 403, "Origin {origin}");
    }
    let own = server::request_as(
        "POST",
        &cancel_url,
        "localhost",
        Some(&format!("http://localhost:{port}")),
        Some(KEY),
        None,
    );
    assert_eq!(own.unwrap().status, 409, "Kiln's own page may cancel (nothing runs)");

    // Second prompt runs ~1.5 s; a third meanwhile is refused; the stream
    // of the running turn can be resumed from the last seq seen.
    let (url, app) = (s.url.clone(), app_id.clone());
    let second = std::thread::spawn(move || {
        let body = json!({"appId": app, "prompt": "Change the heading"}).to_string();
        server::request_as("POST", &format!("{url}/api/chat"), "localhost", None, Some(KEY), Some(&body)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(400));
    assert_4xx(
        &post(&s, "/api/chat", &json!({"appId": app_id, "prompt": "another"}).to_string()),
        409,
        "already running",
    );
    let resumed = events(&get(&s, &format!("/api/apps/{app_id}/events?after={turn1_last}")).body);
    let direct = events(&second.join().unwrap().body);
    assert_eq!(resumed, direct, "a resumed stream sees exactly the turn's events");
    assert_eq!(types(&direct)[0], "session");
    assert_eq!(direct[0]["warm"], true, "the session's own sandbox is reused");
    assert_eq!(direct[0]["sandboxId"], sandbox.as_str());
    preview_shows(&s, &host, "/src/App.tsx", "Second heading");

    // Cancel a running turn: the stream ends with done(cancelled).
    let (url, app) = (s.url.clone(), app_id.clone());
    let third = std::thread::spawn(move || {
        let body = json!({"appId": app, "prompt": "slow"}).to_string();
        server::request_as("POST", &format!("{url}/api/chat"), "localhost", None, Some(KEY), Some(&body)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    assert_eq!(post(&s, &format!("/api/apps/{app_id}/cancel"), "").status, 200);
    let cancelled = events(&third.join().unwrap().body);
    assert!(t0.elapsed() < Duration::from_secs(10), "cancel took {:?}", t0.elapsed());
    assert_eq!(cancelled.last().unwrap()["stopReason"], "cancelled", "{cancelled:?}");

    // The app: running sandbox, versions (template + 2 turns).
    let view: Value = serde_json::from_str(&get(&s, &format!("/api/apps/{app_id}")).body).unwrap();
    assert_eq!(view["sandbox"]["id"], sandbox.as_str());
    assert_eq!(view["sandbox"]["state"], "running");
    assert_eq!(view["running"], false);
    let versions = view["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(versions[0]["message"], "Change the heading");
    assert_eq!(versions[0]["files"], json!(["src/App.tsx"]));

    // Restore the first turn's version: the dev server serves it again.
    let r = post(&s, &format!("/api/apps/{app_id}/versions/{first_version}/restore"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    preview_shows(&s, &host, "/src/App.tsx", "First heading");
    let view: Value = serde_json::from_str(&get(&s, &format!("/api/apps/{app_id}")).body).unwrap();
    assert!(view["versions"][0]["message"].as_str().unwrap().starts_with("Restore version"), "{view}");
    assert_4xx(&post(&s, &format!("/api/apps/{app_id}/versions/{}/restore", "ab".repeat(20)), ""), 404, "no version");

    // Quick mode: HTML deltas, a version, and the share page with its CSP.
    let q = chat(&s, "A quick page", "quick", Some(&app_id));
    assert_eq!(q[0]["appId"], app_id.as_str(), "Quick mode is a mode of the same app");
    let qt = types(&q);
    assert_eq!(qt[0], "session");
    assert_eq!(q[0]["mode"], "quick");
    assert!(qt.contains(&"html") && qt.contains(&"version"), "{qt:?}");
    let html: String = q.iter().filter(|e| e["type"] == "html").map(|e| e["delta"].as_str().unwrap()).collect();
    assert!(html.contains("<h1>Quick hello</h1>"), "{html}");
    let share = q[0]["previewUrl"].as_str().unwrap();
    let path = &share[share.find("/q/").unwrap()..];
    let page = get(&s, path);
    assert_eq!(page.status, 200);
    assert!(page.body.starts_with("<!doctype html>") && !page.body.contains("```"), "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("sandbox allow-scripts"), "{csp}");
    assert_eq!(get(&s, &format!("/q/{}", "0".repeat(32))).status, 404);
    assert_eq!(get(&s, "/q/..%2f..%2fetc").status, 404);
    let view: Value = serde_json::from_str(&get(&s, &format!("/api/apps/{app_id}")).body).unwrap();
    assert_eq!(view["quick"]["versions"].as_array().unwrap().len(), 1);

    // The sandbox dies: the next prompt gets a new one with the newest
    // version restored into it. `kiln chat` prints that turn readably.
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let killed = std::process::Command::new(kiln)
        .args(["sandbox", "kill", &sandbox])
        .env("KILN_DATA_DIR", &s.data_dir)
        .output()
        .unwrap();
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let out = std::process::Command::new(kiln)
        .args(["chat", "--server", &s.url, "--key", KEY, "--app", &app_id, "Say hello"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("--app {app_id}")), "kiln chat names the app to continue: {stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "kiln chat never prints the key");
    // A new sandbox runs a new agent, whose script starts over.
    assert!(stdout.contains("Building it.") && stdout.contains("■ done: end_turn"), "{stdout}");
    assert!(stdout.contains("booting: restore"), "the newest version was restored: {stdout}");
    let view: Value = serde_json::from_str(&get(&s, &format!("/api/apps/{app_id}")).body).unwrap();
    let new_sandbox = view["sandbox"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_sandbox, sandbox, "a new sandbox replaced the dead one");
    assert!(stdout.contains(&new_sandbox), "{stdout}");
    preview_shows(&s, &format!("{new_sandbox}.localhost:{port}"), "/src/App.tsx", "First heading");
    let out = std::process::Command::new(kiln)
        .args(["chat", "--server", &s.url, "--key", KEY, "--app", &app_id, "--mode", "quick", "--json", "One more"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the quick script is used up: an error event must fail the command");
    let lines = events(&String::from_utf8_lossy(&out.stdout));
    assert!(lines.iter().any(|e| e["type"] == "error"), "{lines:?}");
    let other_owner = "00000000-0000-4000-8000-000000000001";
    let out = std::process::Command::new(kiln)
        .args(["chat", "--server", &s.url, "--key", other_owner, "--app", &app_id, "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "another owner's app is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such app"));
    let out =
        std::process::Command::new(kiln).args(["chat", "--server", &s.url, "--key", "bad", "x"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("X-Kiln-Key"));

    // The OpenAPI document is served and every documented route answers.
    let spec: Value = serde_json::from_str(&get(&s, "/api/openapi.json").body).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete =
            path.replace("{sha}", &first_version).replace("{id}", &"0".repeat(32)).replace("{path}", "app.js");
        for method in item.as_object().unwrap().keys() {
            let a = request(&method.to_uppercase(), &format!("{}{concrete}", s.url), "localhost", None).unwrap();
            assert!(a.status != 405 && !a.body.contains("no API route"), "{method} {path}: {} {}", a.status, a.body);
        }
    }
}
