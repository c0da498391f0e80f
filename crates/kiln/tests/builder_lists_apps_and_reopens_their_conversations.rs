//! Apps last, in real headless Chromium against a real `kiln serve` with the
//! demo model: a person builds an app (two turns), clicks New app and builds
//! a second one in Quick mode; the landing page lists both under "Your apps"
//! (newest first, as links); opening the first shows its whole conversation
//! (both turns), its versions and its preview at its own address
//! (`/a/<app id>`), and so does a reload of that address; the back button
//! returns to the landing; renaming it in the top bar (Enter saves, Escape
//! cancels, an empty name is refused with the server's words) shows the new
//! name in the list; an unknown app id says so and links back. The browser's
//! owner key travels only in a header: no URL the page requested or showed
//! contains it, and neither does the server's log. Screenshots of the landing
//! and of a reopened app, at 1280x800 and 390x844, are saved under
//! `target/tmp/e2e/`.

mod browser;
mod server;

use std::collections::BTreeSet;

use browser::{Guard, Ui, blocking, browser_prerequisites, start_browser};
use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::Value;
use server::Server;

/// Every address this page asked for (scripts, styles, API calls, frames)
/// and its own address: collected before each full page load, which empties
/// the list.
async fn note_urls(ui: &Ui, seen: &mut BTreeSet<String>) {
    let v = ui
        .js("return performance.getEntriesByType('resource').map(e => e.name)
                .concat(performance.getEntriesByType('navigation').map(e => e.name), [location.href],
                        [...document.querySelectorAll('iframe')].map(f => f.getAttribute('src') || ''))")
        .await;
    seen.extend(v.as_array().unwrap().iter().map(|u| u.as_str().unwrap_or_default().to_owned()));
}

/// The landing's list: (name, link) of each row, top to bottom.
async fn listed(ui: &Ui) -> Vec<(String, String)> {
    let v = ui
        .js("return [...document.querySelectorAll('#apps-list a.app-row')]
                .map(a => [a.querySelector('.app-row-name').textContent, a.getAttribute('href')])")
        .await;
    serde_json::from_value(v).unwrap()
}

/// What the transcript shows of each turn: the prompts and version notes.
async fn turns(ui: &Ui) -> Vec<String> {
    let v = ui
        .js("return [...document.querySelectorAll('#messages .msg.user, #messages .version-note')].map(e => e.textContent)")
        .await;
    serde_json::from_value(v).unwrap()
}

/// The page fits its width: nothing scrolls sideways, the chat included.
async fn fits(ui: &Ui, what: &str) {
    let w = ui
        .js("const m = document.getElementById('messages');
             return [document.documentElement.scrollWidth, innerWidth, m.scrollWidth, m.clientWidth]")
        .await;
    let w: Vec<u64> = serde_json::from_value(w).unwrap();
    assert!(w[0] <= w[1] && w[2] <= w[3], "{what} is wider than the window: {w:?}");
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn click(ui: &Ui, css: &str) {
    ui.c.enter_parent_frame().await.unwrap();
    ui.c.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_lists_apps_and_reopens_their_conversations() {
    if !server::prerequisites() || !browser_prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = blocking(move || {
        let mut s = Server::start(&data, &[("KILN_MODEL", "demo"), ("KILN_POOL_TARGET_SIZE", "1")]);
        s.wait_up();
        s
    })
    .await;
    let url = s.url.clone();
    let log = s.log.clone();
    let s = Guard(Some(s));
    let port = url.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://localhost:{port}");
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let (_driver, c) = start_browser(&dir.path().join("profile")).await;
    let ui = Ui { c, shots };
    let mut seen = BTreeSet::new();

    // A first visit: no apps, so no "Your apps" heading at all.
    ui.c.goto(&base).await.unwrap();
    ui.until("the config", 20, "return !!(window.kiln && window.kiln.state.config)").await;
    let key = ui.js("return localStorage.getItem('kiln.sessionKey')").await.as_str().unwrap().to_owned();
    assert!(is_uuid(&key), "the owner key is a UUID: {key}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // the list request answers
    assert_eq!(ui.js("return document.getElementById('your-apps').hidden").await, Value::Bool(true));

    // App 1, two turns: the address becomes the app's own.
    ui.c.find(Locator::Css("#landing-prompt"))
        .await
        .unwrap()
        .send_keys("A bill splitter with tip presets")
        .await
        .unwrap();
    click(&ui, "#landing-send").await;
    ui.preview_shows("h1", "Split the bill", 90).await;
    ui.wait_idle().await;
    ui.until("the app's address", 10, "return /^\\/a\\/[0-9a-f]{32}$/.test(location.pathname)").await;
    let first = ui.js("return location.pathname").await.as_str().unwrap().to_owned();
    ui.until("the app's name in the top bar", 10, "return document.getElementById('app-name').textContent.length > 0")
        .await;
    ui.until("the preview to settle", 20, "return window.kiln.preview.settled()").await;
    ui.send("Make it dark").await;
    ui.preview_shows("h1", "Split the bill ☾", 30).await;
    ui.wait_idle().await;
    ui.until("two versions", 20, "return Number(document.getElementById('versions-count').textContent) >= 2").await;
    let first_turns = turns(&ui).await;
    assert_eq!(first_turns.len(), 4, "two prompts, two versions: {first_turns:?}");
    assert_eq!(first_turns[0], "A bill splitter with tip presets");
    assert_eq!(first_turns[2], "Make it dark");
    let first_versions = ui.js("return document.getElementById('versions-count').textContent").await;
    let first_name = ui.js("return document.getElementById('app-name').textContent").await.as_str().unwrap().to_owned();

    // New app: the landing, with app 1 listed; a Quick build makes app 2.
    click(&ui, "#new-app").await;
    ui.until("the landing", 10, "return !document.getElementById('landing').hidden && location.pathname === '/'").await;
    ui.until("app 1 in the list", 10, "return document.querySelectorAll('#apps-list a').length === 1").await;
    ui.c.find(Locator::XPath("//input[@name='mode' and @value='quick']/following-sibling::span"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    ui.c.find(Locator::Css("#landing-prompt")).await.unwrap().send_keys("A focus timer").await.unwrap();
    click(&ui, "#landing-send").await;
    ui.wait_idle().await;
    ui.frame_shows("#quick-frame", "h1", "Focus timer", 30).await;
    ui.until("app 2's address", 10, "return /^\\/a\\/[0-9a-f]{32}$/.test(location.pathname)").await;
    let second = ui.js("return location.pathname").await.as_str().unwrap().to_owned();
    assert_ne!(first, second, "a new app, not the first one again");
    assert_eq!(turns(&ui).await.first().map(String::as_str), Some("A focus timer"), "a fresh conversation");

    // The landing lists both, newest first, as links to their builders.
    click(&ui, "#home").await;
    ui.until("both apps listed", 10, "return document.querySelectorAll('#apps-list a').length === 2").await;
    let list = listed(&ui).await;
    assert_eq!(list.iter().map(|(_, href)| href.as_str()).collect::<Vec<_>>(), [second.as_str(), first.as_str()]);
    assert_eq!(list[1].0, first_name);
    let meta = ui.js("return document.querySelector('#apps-list .app-meta').textContent").await;
    assert!(meta.as_str().unwrap().starts_with("edited "), "{meta}");
    ui.shot("apps-01-landing-desktop").await;
    ui.c.set_window_size(390, 844).await.unwrap();
    fits(&ui, "the landing at phone width").await;
    ui.js("document.getElementById('your-apps').scrollIntoView({ block: 'nearest' })").await;
    ui.shot("apps-02-landing-phone").await;
    ui.c.set_window_size(1280, 800).await.unwrap();

    // Open app 1: both turns, its versions, its preview.
    click(&ui, &format!("#apps-list a[href='{first}']")).await;
    ui.until(
        "app 1's conversation",
        20,
        "return !window.kiln.state.running && document.querySelectorAll('#messages .version-note').length === 2",
    )
    .await;
    assert_eq!(ui.js("return location.pathname").await, Value::from(first.clone()));
    assert_eq!(turns(&ui).await, first_turns, "the whole conversation");
    assert_eq!(ui.js("return document.getElementById('versions-count').textContent").await, first_versions);
    ui.preview_shows("h1", "Split the bill ☾", 60).await;

    // The back button returns to the landing; forward reopens the app.
    ui.c.back().await.unwrap();
    ui.until(
        "the landing after back",
        10,
        "return !document.getElementById('landing').hidden && location.pathname === '/'",
    )
    .await;
    ui.until("both apps listed", 10, "return document.querySelectorAll('#apps-list a').length === 2").await;
    ui.js("history.forward()").await;
    ui.until("app 1 after forward", 20, "return document.querySelectorAll('#messages .version-note').length === 2")
        .await;

    // A reload of its address: still the whole conversation.
    note_urls(&ui, &mut seen).await;
    ui.c.refresh().await.unwrap();
    ui.until(
        "app 1 after a reload",
        20,
        "return !!window.kiln && window.kiln.state.replaying === false && !window.kiln.state.running
                && document.querySelectorAll('#messages .version-note').length === 2",
    )
    .await;
    assert_eq!(turns(&ui).await, first_turns, "the whole conversation after a reload");
    assert_eq!(ui.js("return document.getElementById('versions-count').textContent").await, first_versions);
    ui.preview_shows("h1", "Split the bill ☾", 60).await;
    ui.shot("apps-03-reopened-desktop").await;
    ui.c.set_window_size(390, 844).await.unwrap();
    fits(&ui, "the reopened app's chat at phone width").await;
    ui.shot("apps-04-reopened-phone").await;
    ui.c.set_window_size(1280, 800).await.unwrap();

    // Rename: Escape cancels, an empty name is refused in the server's words,
    // Enter saves.
    click(&ui, "#app-name").await;
    let input = ui.c.find(Locator::Css("#app-name-input")).await.unwrap();
    input.send_keys(&format!("Not this{}", Key::Escape)).await.unwrap();
    ui.until("the rename to be cancelled", 5, "return document.getElementById('app-name-input').hidden").await;
    assert_eq!(ui.js("return document.getElementById('app-name').textContent").await, Value::from(first_name.clone()));
    click(&ui, "#app-name").await;
    // The field opens with the name selected: typing replaces it. (No
    // WebDriver clear: it blurs the field, and blur saves.)
    let input = ui.c.find(Locator::Css("#app-name-input")).await.unwrap();
    input.send_keys(&format!("   {}", Key::Enter)).await.unwrap();
    ui.until("the refusal", 10, "return !document.getElementById('rename-error').hidden").await;
    let refusal = ui.js("return document.getElementById('rename-error').textContent").await;
    assert!(refusal.as_str().unwrap().contains("name"), "the server's message: {refusal}");
    assert_eq!(ui.js("return document.getElementById('app-name').textContent").await, Value::from(first_name.clone()));
    click(&ui, "#app-name").await;
    let input = ui.c.find(Locator::Css("#app-name-input")).await.unwrap();
    input.send_keys(&format!("Tip splitter{}", Key::Enter)).await.unwrap();
    ui.until("the new name", 10, "return document.getElementById('app-name').textContent === 'Tip splitter' && document.getElementById('rename-error').hidden").await;
    assert!(ui.c.title().await.unwrap().starts_with("Tip splitter"));
    click(&ui, "#home").await;
    ui.until(
        "the renamed app in the list",
        10,
        "return [...document.querySelectorAll('#apps-list .app-row-name')].some(e => e.textContent === 'Tip splitter')",
    )
    .await;
    assert_eq!(listed(&ui).await.iter().find(|(_, h)| *h == first).map(|(n, _)| n.as_str()), Some("Tip splitter"));

    // An app that is not this browser's: said plainly, with a way back.
    note_urls(&ui, &mut seen).await;
    ui.c.goto(&format!("{base}/a/{}", "0".repeat(32))).await.unwrap();
    ui.until("the not-found page", 20, "return !document.getElementById('missing').hidden").await;
    let missing = ui.js("return document.getElementById('missing').innerText").await;
    assert!(missing.as_str().unwrap().contains("This app was not found"), "{missing}");
    assert_eq!(ui.js("return document.getElementById('builder').hidden").await, Value::Bool(true));
    click(&ui, "#missing-back").await;
    ui.until(
        "the landing",
        10,
        "return !document.getElementById('landing').hidden && document.querySelectorAll('#apps-list a').length === 2",
    )
    .await;

    // The owner key was in no address the page requested or showed, nor in
    // the server's log.
    note_urls(&ui, &mut seen).await;
    assert!(seen.iter().any(|u| u.contains("/api/apps")), "the collection missed the API calls: {seen:?}");
    let leaked: Vec<_> = seen.iter().filter(|u| u.to_lowercase().contains(&key.to_lowercase())).collect();
    assert!(leaked.is_empty(), "the owner key is in URLs: {leaked:?}");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log.to_lowercase().contains(&key.to_lowercase()), "the owner key is in the server's log");

    ui.c.clone().close().await.unwrap();
    drop(s);
}
