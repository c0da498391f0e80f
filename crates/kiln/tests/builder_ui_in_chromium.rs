//! The builder as a person uses it, in real headless Chromium (Debian's
//! `chromium`, driven through `chromedriver`) against a real `kiln serve`:
//! the landing page prewarms and creates a session key; a prompt streams
//! tool cards and the preview shows the app; an edit hot-updates the preview
//! without a reload (state typed into the app survives); a broken build is
//! shown and the fix clears it; restoring the first version brings its
//! heading back; Quick mode renders its HTML and `/q/<id>` serves it.
//! Screenshots are saved under `target/tmp/e2e/`.

mod browser;
mod server;

use std::time::{Duration, Instant};

use browser::{Guard, Ui, blocking, browser_prerequisites, metric, start_browser};
use fantoccini::Locator;
use serde_json::{Value, json};
use server::Server;

fn title_tsx(heading: &str) -> String {
    format!("export default function Title() {{\n  return <h1 className=\"text-3xl font-bold\">{heading}</h1>;\n}}\n")
}

const APP_TSX: &str = r#"import { useState } from "react";
import Title from "./Title";

export default function App() {
  const [name, setName] = useState("");
  return (
    <main className="p-8 space-y-4">
      <Title />
      <input aria-label="Name" className="border rounded px-3 py-2" value={name} onChange={(e) => setName(e.target.value)} />
      <p>Hello {name}</p>
    </main>
  );
}
"#;

fn script() -> Value {
    let title = |h: &str| json!({"name": "write_file", "input": {"path": "src/Title.tsx", "content": title_tsx(h)}});
    let broken = "export default function Title() {\n  return <h1>Broken heading</h1;\n}\n";
    json!({"turns": [
        {"text": "I'll make a page with a title and a name field.", "tool_calls": [
            title("First heading"),
            {"name": "write_file", "input": {"path": "src/App.tsx", "content": APP_TSX}}
        ]},
        {"text": "Built."},
        {"tool_calls": [title("Second heading")]},
        {"text": "Changed the title."},
        {"tool_calls": [{"name": "write_file", "input": {"path": "src/Title.tsx", "content": broken}}]},
        {"text": "That broke the build."},
        {"tool_calls": [title("Fixed heading")]},
        {"text": "Fixed."},
        {"text": "A slow one.", "tool_calls": [{"name": "write_file", "input": {"path": "src/Note.ts", "content": "export const note = 1;\n"}}]},
        {"delay_ms": 4000, "text": "All done."}
    ]})
}

fn quick_script() -> Value {
    json!({"turns": [{"text": "<!doctype html>\n<html><head><title>q</title></head>\n<body><h1>Quick hello</h1><p>one file</p></body></html>\n"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_ui_in_chromium() {
    if !server::prerequisites() || !browser_prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = server::scripted_model(dir.path(), "script.json", &script());
    let quick = server::scripted_model(dir.path(), "quick.json", &quick_script());
    let data = dir.path().join("data");
    let s = tokio::task::spawn_blocking(move || {
        let mut s = Server::start(
            &data,
            &[("KILN_MODEL", &model), ("KILN_QUICK_MODEL", &quick), ("KILN_POOL_TARGET_SIZE", "1")],
        );
        s.wait_up();
        s
    })
    .await
    .unwrap();
    let url = s.url.clone();
    let s = Guard(Some(s));
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let (_driver, c) = start_browser(&dir.path().join("profile")).await;
    let ui = Ui { c, shots };
    // The UI is on `localhost` (not 127.0.0.1) so previews are `*.localhost`.
    let port = url.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://localhost:{port}");

    // Landing: a prewarm request, a session key in localStorage.
    let before = metric(&url, "kiln_pool_prewarm_requests_total").await;
    ui.c.goto(&base).await.unwrap();
    ui.until("the landing page", 20, "return !!document.querySelector('#landing-prompt')").await;
    let key = ui.js("return localStorage.getItem('kiln.sessionKey')").await;
    assert!(key.as_str().is_some_and(|k| k.parse::<kiln_types::OwnerKey>().is_ok()), "owner key: {key}");
    let t = Instant::now();
    while metric(&url, "kiln_pool_prewarm_requests_total").await <= before {
        assert!(t.elapsed() < Duration::from_secs(10), "the landing page never asked for a prewarm");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let u = url.clone();
    let st: Value =
        blocking(move || serde_json::from_str(&server::get(&format!("{u}/api/vm/prewarm"), None).unwrap().1).unwrap())
            .await;
    assert!(st["ready"].as_u64().unwrap() + st["warming"].as_u64().unwrap() >= 1, "{st}");
    ui.shot("01-landing").await;

    // First prompt from the landing page.
    let prompt = ui.c.find(Locator::Css("#landing-prompt")).await.unwrap();
    prompt.send_keys("A page with a title and a name field").await.unwrap();
    ui.c.find(Locator::Css("#landing-send")).await.unwrap().click().await.unwrap();
    ui.until("tool cards", 60, "return document.querySelectorAll('#messages .card').length >= 2").await;
    ui.preview_shows("h1", "First heading", 60).await;
    ui.wait_idle().await;
    ui.until("a version", 20, "return Number(document.getElementById('versions-count').textContent) >= 2").await;
    let cards = ui.js("return [...document.querySelectorAll('#messages .card .title')].map(e => e.textContent)").await;
    assert!(cards.to_string().contains("Wrote src/Title.tsx"), "{cards}");
    ui.shot("02-first-prompt").await;

    // An edit of one component: hot update, no reload, typed state kept.
    ui.until("the preview to settle", 20, "return window.kiln.preview.settled()").await;
    ui.preview_shows("h1", "First heading", 10).await;
    ui.c.enter_parent_frame().await.unwrap();
    ui.c.find(Locator::Css("iframe.live")).await.unwrap().enter_frame().await.unwrap();
    ui.c.find(Locator::Css("input[aria-label=Name]")).await.unwrap().send_keys("Ada").await.unwrap();
    let reloads = ui.js("return window.kiln.preview.stats.reloads").await;
    ui.send("Change the title").await;
    ui.preview_shows("h1", "Second heading", 30).await;
    ui.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the 800 ms window
    assert_eq!(
        ui.in_preview("input[aria-label=Name]", Some("value")).await.as_deref(),
        Some("Ada"),
        "state survived HMR"
    );
    assert_eq!(ui.js("return window.kiln.preview.stats.reloads").await, reloads, "HMR, not a reload");
    ui.shot("03-hmr-kept-state").await;

    // A broken build is shown; the fixing edit clears it.
    ui.send("Break it").await;
    ui.until("the build error", 30, "return !document.getElementById('build-error').hidden").await;
    let err = ui.js("return document.getElementById('build-error-text').textContent").await;
    assert!(err.as_str().is_some_and(|e| e.contains("Title.tsx")), "{err}");
    ui.wait_idle().await;
    ui.shot("04-build-error").await;
    ui.send("Fix it").await;
    ui.preview_shows("h1", "Fixed heading", 30).await;
    ui.until("the error to clear", 20, "return document.getElementById('build-error').hidden").await;
    ui.wait_idle().await;

    // Restore the first version.
    ui.restore("A page with a title and a name field").await;
    ui.preview_shows("h1", "First heading", 30).await;
    ui.wait_idle().await;
    ui.shot("05-restored").await;

    // Phone width: the builder still works (tabs).
    ui.c.set_window_size(390, 844).await.unwrap();
    ui.shot("06-phone-chat").await;
    ui.c.find(Locator::Css("#tabs button[data-tab=preview]")).await.unwrap().click().await.unwrap();
    ui.preview_shows("h1", "First heading", 10).await;
    ui.shot("07-phone-preview").await;
    ui.c.find(Locator::Css("#tabs button[data-tab=chat]")).await.unwrap().click().await.unwrap();
    ui.c.set_window_size(1280, 800).await.unwrap();

    // Quick mode: progressive HTML in a sandboxed frame; /q/<id> serves it.
    ui.c.find(Locator::XPath("//input[@name='mode2' and @value='quick']/following-sibling::span"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    ui.send("A quick hello page").await;
    ui.wait_idle().await;
    ui.c.enter_parent_frame().await.unwrap();
    let frame = ui.c.find(Locator::Css("#quick-frame")).await.unwrap();
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some("allow-scripts"));
    frame.enter_frame().await.unwrap();
    let h1 = ui.c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "Quick hello");
    ui.shot("08-quick").await;
    let share = ui.js("return window.kiln.state.shareUrl").await;
    let share = share.as_str().unwrap().to_owned();
    assert!(share.contains("/q/"), "{share}");
    let path = &share[share.find("/q/").unwrap()..];
    let q = format!("{url}{path}");
    let (code, body) = blocking(move || server::get(&q, None)).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("<h1>Quick hello</h1>"), "{body}");

    // Reload the page mid-stream: the transcript comes back from the log and
    // the running turn's stream resumes to its end, with no duplicate cards.
    ui.c.find(Locator::XPath("//input[@name='mode2' and @value='vm']/following-sibling::span"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let before = ui.js("return document.querySelectorAll('#messages .card').length").await.as_u64().unwrap();
    ui.send("A slow change").await;
    ui.until(
        "the slow turn's card",
        30,
        &format!("return document.querySelectorAll('#messages .card').length > {before}"),
    )
    .await;
    // A reload of the app's own address (/a/<id>); `/` is the landing page.
    ui.c.refresh().await.unwrap();
    ui.until("the session to come back", 20, "return !document.getElementById('builder').hidden && document.querySelectorAll('#messages .msg.user').length >= 6").await;
    assert_eq!(ui.js("return window.kiln.state.running").await, Value::Bool(true), "reloaded while the turn ran");
    ui.wait_idle().await;
    let ids = ui.js("return [...document.querySelectorAll('#messages .card')].map(c => c.dataset.toolId)").await;
    let ids: Vec<String> = serde_json::from_value(ids).unwrap();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate cards: {ids:?}");
    assert_eq!(ids.len() as u64, before + 1, "{ids:?}");
    let text = ui.js("return document.getElementById('messages').innerText").await;
    assert!(text.as_str().unwrap().ends_with("All done.") || text.as_str().unwrap().contains("All done.\n"), "{text}");
    ui.shot("09-reloaded-mid-stream").await;

    ui.c.clone().close().await.unwrap();
    drop(s);
}
