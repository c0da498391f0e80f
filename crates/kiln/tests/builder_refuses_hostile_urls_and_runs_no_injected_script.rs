//! What a compromised sandbox can make the builder do, in real headless
//! Chromium against a real `kiln serve`: nothing in Kiln's origin.
//!
//! The attack this answers (issue 11): a fake envd sent a `session` event
//! with `previewUrl: "javascript:…"`; the builder made it an iframe's src and
//! the page's CSP (`'unsafe-inline'`, kept for Quick mode's `srcdoc` frame)
//! let it run, read the session key and call Kiln's API. The server no longer
//! relays such events, and the browser side holds on its own, which is what
//! this test checks. It feeds hostile events to the UI's own handler (the
//! `onEvent` the stream reader calls, imported from `/assets/app.js`: exactly
//! where a hostile stream's events land) — `javascript:`, `data:` and
//! off-domain preview URLs, HTML in tool titles, paths, outputs, errors and
//! versions — and checks that no script ran (`window.__pwned`), no frame was
//! pointed anywhere but a preview host or Kiln's own quick pages, every
//! refusal and every hostile string is shown as text, and the page's CSP
//! has no `'unsafe-inline'` for scripts and enforces Trusted Types (an HTML
//! sink or a `javascript:` frame set behind the UI's back still runs nothing).
//!
//! Quick mode, whose progressive `srcdoc` rendering was the reason for
//! `'unsafe-inline'`, keeps working through its opaque-origin shell: the
//! demo's quick turn renders and its script runs; a quick app whose script
//! probes for the builder's storage, its parent and the network finds none of
//! them; HTML fed in pieces shows while it streams, with its script run once,
//! when the turn ends; a reload shows the stored app again (`/q/<id>`).
//! Screenshots (desktop and phone) are saved under `target/tmp/e2e/`.

mod browser;
mod server;

use std::time::Duration;

use browser::{Guard, Ui, blocking, browser_prerequisites, start_browser};
use fantoccini::Locator;
use serde_json::{Value, json};
use server::Server;

/// A quick app that reports what its own script could reach. Top-level
/// `const`s: a second run in the same window would throw, so `ran` proves
/// it ran exactly once.
const PROBE_APP: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Probe</title></head>
<body><h1>Probe app</h1><p id="ran">not run</p><p id="storage"></p><p id="parent"></p><p id="origin"></p><p id="net">pending</p>
<script>
const probe = (f) => { try { return "read:" + f(); } catch (e) { return "blocked:" + e.name; } };
const ran = document.getElementById("ran");
ran.textContent = "ran";
document.getElementById("storage").textContent = probe(() => localStorage.getItem("kiln.sessionKey"));
document.getElementById("parent").textContent = probe(() => parent.localStorage.getItem("kiln.sessionKey"));
document.getElementById("origin").textContent = self.origin;
fetch("/api/config").then(() => "reached", () => "blocked").then((t) => { document.getElementById("net").textContent = t; });
</script></body></html>
"#;

const FRAME: &str = "#quick-frame";

/// What the quick frame shows in `css` ("" if nothing).
async fn probe(ui: &Ui, css: &str) -> String {
    ui.in_frame(FRAME, css, None).await.unwrap_or_default()
}

/// Feeds `events` to the builder's own event handler, in order.
async fn feed(ui: &Ui, events: Value) {
    let r = ui
        .js_async(
            "const evs = arguments[0], done = arguments[arguments.length - 1];
             import('/assets/app.js').then((m) => { for (const ev of evs) m.onEvent(ev); done('ok'); },
                                           (e) => done(String(e)));",
            vec![events],
        )
        .await;
    assert_eq!(r, Value::from("ok"), "the UI's module could not be driven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_refuses_hostile_urls_and_runs_no_injected_script() {
    if !server::prerequisites() || !browser_prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let quick = server::scripted_model(dir.path(), "quick.json", &json!({"turns": [{"text": PROBE_APP}]}));
    let data = dir.path().join("data");
    // The demo answers VM turns and `"demo": true` quick turns; other quick
    // turns get the probe.
    let s = blocking(move || {
        let mut s = Server::start(
            &data,
            &[("KILN_MODEL", "demo"), ("KILN_QUICK_MODEL", &quick), ("KILN_POOL_TARGET_SIZE", "1")],
        );
        s.wait_up();
        s
    })
    .await;
    let url = s.url.clone();
    let s = Guard(Some(s));
    let port = url.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://localhost:{port}");

    // The page's policy: this origin's script files only, Trusted Types, not
    // frameable; the quick shell's: the quick apps' sandbox.
    let u = url.clone();
    let page = blocking(move || server::request("GET", &format!("{u}/"), "localhost", None)).await.unwrap();
    let csp = page.headers["content-security-policy"].to_str().unwrap().to_owned();
    let script_src = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).expect("a script-src");
    assert_eq!(script_src, "script-src 'self'", "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'") && csp.contains("trusted-types 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let u = url.clone();
    let shell = blocking(move || server::request("GET", &format!("{u}/assets/quick-frame.html"), "localhost", None))
        .await
        .unwrap();
    let shell_csp = shell.headers["content-security-policy"].to_str().unwrap().to_owned();
    assert!(shell_csp.contains("sandbox allow-scripts") && shell_csp.contains("default-src 'none'"), "{shell_csp}");
    assert!(shell_csp.contains("frame-ancestors 'self'") && !shell_csp.contains("script-src 'self'"), "{shell_csp}");
    let u = url.clone();
    let cfg = blocking(move || server::get(&format!("{u}/api/config"), None)).await.unwrap().1;
    let cfg: Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["previewDomain"], "localhost", "{cfg}");
    assert_eq!(cfg["publicUrl"], Value::from(base.clone()), "{cfg}");

    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let (_driver, c) = start_browser(&dir.path().join("profile")).await;
    let ui = Ui { c, shots };
    ui.c.goto(&base).await.unwrap();
    ui.until("the config", 20, "return !!(window.kiln && window.kiln.state.config)").await;
    // The UI itself must never need what its policy forbids.
    ui.js("window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`))").await;
    let key = ui.js("return localStorage.getItem('kiln.sessionKey')").await;
    let key = key.as_str().expect("a session key").to_owned();

    // 1. Quick mode with the demo: it streams into the shell, the finished
    //    file's script runs (Start → Pause).
    ui.js("window.kiln.state.demo = true").await; // what "Try the demo" sets
    ui.c.find(Locator::XPath("//input[@name='mode' and @value='quick']/following-sibling::span"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    ui.c.find(Locator::Css("#landing-prompt")).await.unwrap().send_keys("A focus timer").await.unwrap();
    ui.c.find(Locator::Css("#landing-send")).await.unwrap().click().await.unwrap();
    ui.wait_idle().await;
    ui.frame_shows(FRAME, "h1", "Focus timer", 20).await;
    let frame = ui.c.find(Locator::Css(FRAME)).await.unwrap();
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some("allow-scripts"));
    assert_eq!(frame.attr("srcdoc").await.unwrap(), None, "no srcdoc: it would inherit the page's CSP");
    ui.shot("hostile-01-quick-desktop").await;
    ui.c.enter_parent_frame().await.unwrap();
    ui.c.find(Locator::Css(FRAME)).await.unwrap().enter_frame().await.unwrap();
    ui.c.find(Locator::Css("#go")).await.unwrap().click().await.unwrap();
    ui.frame_shows(FRAME, "#go", "Pause", 10).await;
    ui.c.set_window_size(390, 844).await.unwrap();
    ui.c.find(Locator::Css("#tabs button[data-tab=preview]")).await.unwrap().click().await.unwrap();
    ui.frame_shows(FRAME, "h1", "Focus timer", 10).await;
    ui.shot("hostile-02-quick-phone").await;
    ui.c.find(Locator::Css("#tabs button[data-tab=chat]")).await.unwrap().click().await.unwrap();
    ui.shot("hostile-03-quick-phone-chat").await;
    ui.c.set_window_size(1280, 800).await.unwrap();

    // 2. A quick app's own script runs, in an opaque origin: no storage of
    //    Kiln's, no parent, no network.
    ui.js("window.kiln.state.demo = false").await;
    ui.send("Probe what you can reach").await;
    ui.wait_idle().await;
    ui.frame_shows(FRAME, "#ran", "ran", 20).await;
    assert!(probe(&ui, "#storage").await.starts_with("blocked:"), "{}", probe(&ui, "#storage").await);
    assert!(probe(&ui, "#parent").await.starts_with("blocked:"), "{}", probe(&ui, "#parent").await);
    assert_eq!(probe(&ui, "#origin").await, "null", "an opaque origin");
    ui.frame_shows(FRAME, "#net", "blocked", 10).await;
    let share = ui.js("return window.kiln.state.shareUrl").await.as_str().unwrap().to_owned();
    assert!(share.starts_with(&format!("{base}/q/")), "{share}");
    let quick_id = share.rsplit('/').next().unwrap().to_owned();

    // 3. Progressive rendering: HTML fed in pieces shows as it comes; its
    //    script runs once, when the turn ends.
    let session = |url: &str, mode: &str| json!({"type": "session", "mode": mode, "appId": quick_id, "previewUrl": url, "warm": true, "prompt": "x"});
    feed(
        &ui,
        json!([session(&share, "quick"), {"type": "html", "delta": "<!doctype html><html><body><h1 id=\"h\">Streaming</h1>"}]),
    )
    .await;
    ui.frame_shows(FRAME, "#h", "Streaming", 10).await;
    feed(&ui, json!([{"type": "html", "delta": "<p id=\"more\">more</p><script>document.getElementById('h').textContent += ' + script';</script>"}])).await;
    ui.frame_shows(FRAME, "#more", "more", 10).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ui.in_frame(FRAME, "#h", None).await.as_deref(), Some("Streaming"), "no script while streaming");
    feed(&ui, json!([{"type": "done", "stopReason": "end_turn"}])).await;
    ui.frame_shows(FRAME, "#h", "Streaming + script", 10).await;

    // 4. Hostile events, as a compromised sandbox's stream would carry them.
    let sandbox = "0123456789abcdef0123456789abcdef";
    let good_preview = format!("http://{sandbox}.localhost:{port}/");
    let img = |n: u32| format!("<img src=x onerror=\"window.top.__pwned={n}\">");
    let hostile = json!([
        session("javascript:window.__pwned=1", "vm"),
        session("data:text/html,<script>parent.__pwned=2</script>", "vm"),
        session("http://evil.example/", "vm"),
        session(&format!("http://{sandbox}.localhost.evil.example:{port}/"), "vm"),
        session(&format!("http://{sandbox}@evil.example/"), "vm"),
        session("javascript:window.__pwned=3", "quick"),
        session(&format!("http://evil.example/q/{quick_id}"), "quick"),
        session(&format!("{base}/api/config#/q/{quick_id}"), "quick"),
        {"type": "tool_call", "id": "t1", "title": img(4), "kind": "edit", "status": "completed <b>x</b>",
         "input": {"path": format!("src/{}.tsx", img(5))}, "output": format!("<script>window.__pwned=6</script>{}", img(7))},
        {"type": "tool_call", "id": img(8), "title": "Browser: navigate", "input": {"url": "javascript:window.__pwned=9"}},
        {"type": "tool_call", "id": "t3", "title": {"html": img(10)}, "kind": "execute", "input": {"command": img(11)}},
        {"type": "text", "delta": img(12)},
        {"type": "thought", "delta": img(13)},
        {"type": "error", "code": "agent_error", "message": img(14)},
        {"type": "version", "sha": img(15), "files": "not a list"},
        {"type": "boot", "phase": {"x": 1}, "ms": "soon"},
        {"type": "tool_call"},
        null,
        "a string",
    ]);
    feed(&ui, hostile).await;
    // A well-formed preview address still passes, and a file event with a
    // hostile path only reloads it.
    feed(&ui, json!([session(&good_preview, "vm"), {"type": "file", "path": img(16), "op": "write"}])).await;
    // A build error posted by a window that is not the live preview.
    ui.js(&format!(
        "window.postMessage({{source: 'kiln-preview', type: 'hmr:error', error: {{message: {}}}}}, '*')",
        Value::from(img(17))
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // images error, frames load

    assert_eq!(ui.js("return window.__pwned").await, Value::Null, "an injected script ran in the builder");
    let transcript = ui.js("return document.getElementById('messages').textContent").await;
    let transcript = transcript.as_str().unwrap();
    for (n, want) in [
        (1, "Refused to open \"javascript:window.__pwned=1\""),
        (2, "Refused to open \"data:text/html,<script>parent.__pwned=2</script>\""),
        (3, "Refused to open \"http://evil.example/\""),
        (4, "Refused to open \"javascript:window.__pwned=3\""),
        (5, &format!("Refused to open \"http://evil.example/q/{quick_id}\"")),
        (6, &format!("Wrote src/{}.tsx", img(5))),
        (7, &format!("<script>window.__pwned=6</script>{}", img(7))),
        (8, "Opened javascript:window.__pwned=9 in Chromium"),
        (9, &img(11)),
        (10, &img(12)),
        (11, &img(13)),
        (12, &img(14)),
    ] {
        assert!(transcript.contains(want), "#{n}: {want:?} is not in the transcript as text: {transcript}");
    }
    let refusals = ui.js("return [...document.querySelectorAll('#messages .msg.error')].filter(e => e.textContent.startsWith('Refused to open')).length").await;
    assert_eq!(refusals, Value::from(8), "each hostile address is refused once, in words");
    let injected = ui
        .js("return document.querySelectorAll('#messages img, #messages script, #messages b, #build-error-text *').length")
        .await;
    assert_eq!(injected, Value::from(0), "hostile text became elements");
    let classes = ui.js("return [...document.querySelectorAll('#messages .card')].map(c => c.className)").await;
    assert!(classes.as_array().unwrap().iter().all(|c| !c.as_str().unwrap().contains('<')), "{classes}");
    assert_eq!(ui.js("return document.getElementById('build-error').hidden").await, Value::Bool(true));

    // Every frame: nothing, about:blank, the preview host, or Kiln's own
    // quick pages; the Open button refuses a corrupted share link.
    let srcs = ui.js("return [...document.querySelectorAll('iframe')].map(f => f.getAttribute('src') || '')").await;
    let allowed = |s: &str| {
        s.is_empty()
            || s == "about:blank"
            || s.starts_with(&good_preview)
            || s.starts_with(&format!("{base}/assets/quick-frame.html?g="))
            || s.starts_with(&format!("{base}/q/{quick_id}"))
    };
    for s in srcs.as_array().unwrap() {
        assert!(allowed(s.as_str().unwrap()), "a frame was pointed at {s} ({srcs})");
    }
    assert!(srcs.to_string().contains(&good_preview), "the good preview address was refused: {srcs}");
    assert_eq!(ui.js("return window.kiln.state.shareUrl").await, Value::from(good_preview.clone()));
    let windows = ui.c.windows().await.unwrap().len();
    ui.js("window.kiln.state.shareUrl = 'javascript:window.__pwned=18'").await;
    ui.c.find(Locator::Css("#open-btn")).await.unwrap().click().await.unwrap();
    ui.c.find(Locator::Css("#share-btn")).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ui.c.windows().await.unwrap().len(), windows, "Open opened a window");
    let last =
        ui.js("return [...document.querySelectorAll('#messages .msg.error')].slice(-2).map(e => e.textContent)").await;
    assert!(
        last.as_array().unwrap().iter().all(|m| m.as_str().unwrap().contains("javascript:window.__pwned=18")),
        "{last}"
    );
    ui.shot("hostile-04-refused").await;

    assert_eq!(ui.js("return window.__violations").await, json!([]), "the UI broke its own CSP");

    // Behind the UI's back the browser still runs nothing: HTML sinks throw
    // (Trusted Types) and a `javascript:` frame does not run (CSP).
    let sinks = ui
        .js("const out = [];
             for (const f of [() => document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__pwned=19\">'),
                              () => { document.getElementById('messages').innerHTML = '<img src=x onerror=\"window.__pwned=20\">'; },
                              () => { document.createElement('iframe').srcdoc = '<script>parent.__pwned=21</script>'; }]) {
               try { f(); out.push('allowed'); } catch (e) { out.push(e.name); }
             }
             return out;")
        .await;
    assert_eq!(sinks, json!(["TypeError", "TypeError", "TypeError"]), "HTML sinks must throw");
    ui.js("document.getElementById('preview-b').src = 'javascript:window.top.__pwned=22'").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ui.js("return window.__pwned").await, Value::Null, "a javascript: frame ran");

    // 5. A reload: the session comes back, the quick app with it; the stored
    //    app (`/q/<id>`, the quick apps' CSP) is as blind as the streamed one.
    // A reload of the app's own address (/a/<id>); `/` is the landing page.
    ui.c.refresh().await.unwrap();
    ui.until(
        "the session to come back",
        30,
        "return window.kiln.state.replaying === false && !window.kiln.state.running",
    )
    .await;
    ui.frame_shows(FRAME, "#ran", "ran", 20).await;
    assert_eq!(ui.js("return localStorage.getItem('kiln.sessionKey')").await, Value::from(key));
    ui.js(&format!("window.kiln.preview.quickShow({})", Value::from(share.clone()))).await;
    ui.until(
        "the stored app",
        10,
        &format!("return document.getElementById('quick-frame').getAttribute('src') === '{base}/q/{quick_id}'"),
    )
    .await;
    ui.frame_shows(FRAME, "#ran", "ran", 20).await;
    assert!(probe(&ui, "#storage").await.starts_with("blocked:"), "{}", probe(&ui, "#storage").await);
    assert_eq!(probe(&ui, "#origin").await, "null");
    assert_eq!(ui.js("return window.__pwned").await, Value::Null);

    ui.c.clone().close().await.unwrap();
    drop(s);
}
