//! A new user with no model configured, in real headless Chromium: the UI
//! says no model is set and how to set one, offers the demo (labelled as a
//! replay), and with it builds the sample app, edits it (hot update), restores
//! the first version and shares the live preview link — which serves the app
//! to anyone with it. Quick mode works with the demo too.

mod browser;
mod server;

use std::time::Duration;

use browser::{Guard, Ui, blocking, browser_prerequisites, start_browser};
use fantoccini::Locator;
use serde_json::Value;
use server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_model_builds_edits_restores_and_shares() {
    if !server::prerequisites() || !browser_prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No KILN_MODEL and no keys: nothing configured.
    let s = blocking(move || {
        let mut s =
            Server::start(&data, &[("KILN_POOL_TARGET_SIZE", "1"), ("ANTHROPIC_API_KEY", ""), ("OPENAI_API_KEY", "")]);
        s.wait_up();
        s
    })
    .await;
    let url = s.url.clone();
    let s = Guard(Some(s));
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-demo");
    std::fs::create_dir_all(&shots).unwrap();
    let (_driver, c) = start_browser(&dir.path().join("profile")).await;
    let ui = Ui { c, shots };
    let port = url.rsplit(':').next().unwrap().to_owned();
    ui.c.goto(&format!("http://localhost:{port}")).await.unwrap();

    // The notice: no model, how to set one, and the demo.
    ui.until("the no-model notice", 20, "return !document.getElementById('no-model').hidden").await;
    let notice = ui.js("return document.getElementById('no-model').innerText").await;
    let notice = notice.as_str().unwrap();
    assert!(notice.contains("No model is configured") && notice.contains("ANTHROPIC_API_KEY"), "{notice}");
    assert!(notice.contains("Try the demo") && notice.contains("replay"), "{notice}");
    ui.shot("01-no-model").await;

    // Build with the demo.
    ui.c.find(Locator::Css("#use-demo")).await.unwrap().click().await.unwrap();
    ui.preview_shows("h1", "Split the bill", 90).await;
    ui.wait_idle().await;
    let badge = ui.js("return document.getElementById('model-badge').textContent").await;
    assert_eq!(badge, Value::from("Demo replay"));
    let transcript = ui.js("return document.getElementById('messages').innerText").await;
    assert!(transcript.as_str().unwrap().contains("Demo replay"), "labelled as a replay: {transcript}");
    ui.shot("02-demo-built").await;

    // Edit: the demo's next step is a dark theme and a moon in the title.
    ui.until("the preview to settle", 20, "return window.kiln.preview.settled()").await;
    ui.send("Make it dark").await;
    ui.preview_shows("h1", "Split the bill ☾", 30).await;
    ui.wait_idle().await;
    ui.shot("03-demo-edited").await;

    // Restore the first version.
    ui.restore("A bill splitter").await;
    ui.preview_shows("h1", "Split the bill", 30).await;
    ui.wait_idle().await;

    // Share: the link is the live preview, and it serves the app.
    ui.c.find(Locator::Css("#share-btn")).await.unwrap().click().await.unwrap();
    let share = ui.js("return window.kiln.state.shareUrl").await.as_str().unwrap().to_owned();
    assert!(share.starts_with("http://") && share.contains(".localhost:"), "{share}");
    let toast = ui.js("return document.getElementById('toast').textContent").await;
    assert!(!toast.as_str().unwrap_or("").is_empty(), "the share button says what it did");
    ui.c.goto(&share).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    loop {
        let h1 = ui.c.find(Locator::Css("h1")).await.ok();
        let text = match h1 {
            Some(e) => e.text().await.unwrap_or_default(),
            None => String::new(),
        };
        if text == "Split the bill" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the share link never showed the app ({text:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ui.shot("04-shared-link").await;

    ui.c.clone().close().await.unwrap();
    drop(s);
}
