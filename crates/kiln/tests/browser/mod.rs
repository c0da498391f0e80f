//! A real headless Chromium (Debian's `chromium` through `chromedriver`)
//! for the UI tests, and helpers that poll the page and its preview frame.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::server::{self, Server};

pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn browser_prerequisites() -> bool {
    let missing =
        ["/usr/bin/chromium", "/usr/bin/chromedriver"].into_iter().find(|p| !std::path::Path::new(p).exists());
    match missing {
        None => true,
        Some(p) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and {p} is missing (scripts/setup.sh installs it)")
        }
        Some(p) => {
            eprintln!("SKIPPED: {p} is missing; run scripts/setup.sh");
            false
        }
    }
}

pub async fn start_browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = server::free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let client = ClientBuilder::rustls()
        .expect("TLS setup")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    (driver, client)
}

pub struct Ui {
    pub c: Client,
    pub shots: std::path::PathBuf,
}

impl Ui {
    pub async fn shot(&self, name: &str) {
        self.c.enter_parent_frame().await.unwrap();
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c.enter_parent_frame().await.unwrap();
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Polls `check` (run at the top level) until it returns true.
    pub async fn until(&self, what: &str, secs: u64, check: &str) {
        let t = Instant::now();
        loop {
            if self.js(check).await == Value::Bool(true) {
                return;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                self.shot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                let log = self.js("return document.getElementById('messages').innerText").await;
                panic!("timed out waiting for {what}; transcript: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Text of `css` inside the live preview frame (None while loading).
    pub async fn in_preview(&self, css: &str, prop: Option<&str>) -> Option<String> {
        self.in_frame("iframe.live", css, prop).await
    }

    /// Text (or the property `prop`) of `css` inside the top-level frame
    /// `frame` (None while loading); back at the top level afterwards.
    pub async fn in_frame(&self, frame: &str, css: &str, prop: Option<&str>) -> Option<String> {
        self.c.enter_parent_frame().await.ok()?;
        let f = self.c.find(Locator::Css(frame)).await.ok()?;
        f.enter_frame().await.ok()?;
        let found = self.c.find(Locator::Css(css)).await.ok();
        let v = match (found, prop) {
            (None, _) => None,
            (Some(e), Some(p)) => e.prop(p).await.ok().flatten(),
            (Some(e), None) => e.text().await.ok(),
        };
        self.c.enter_parent_frame().await.ok()?;
        v
    }

    /// Waits until `css` in the top-level frame `frame` reads `want`.
    pub async fn frame_shows(&self, frame: &str, css: &str, want: &str, secs: u64) {
        let t = Instant::now();
        loop {
            let got = self.in_frame(frame, css, None).await;
            if got.as_deref() == Some(want) {
                return;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                self.shot(&format!("timeout-frame-{}", want.replace(' ', "-"))).await;
                panic!("{frame} never showed {want:?} in {css} (last: {got:?})");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Runs an async script at the top level: it ends by calling
    /// `arguments[arguments.length - 1]` with its result.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.c.enter_parent_frame().await.unwrap();
        self.c.execute_async(script, args).await.unwrap()
    }

    pub async fn preview_shows(&self, css: &str, want: &str, secs: u64) {
        let t = Instant::now();
        loop {
            let got = self.in_preview(css, None).await;
            if got.as_deref() == Some(want) {
                return;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                self.shot(&format!("timeout-preview-{}", want.replace(' ', "-"))).await;
                panic!("the preview never showed {want:?} in {css} (last: {got:?})");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn send(&self, prompt: &str) {
        self.c.enter_parent_frame().await.unwrap();
        let box_ = self.c.find(Locator::Css("#prompt")).await.unwrap();
        box_.send_keys(prompt).await.unwrap();
        self.c.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();
    }

    /// Opens the version list and clicks Restore on the version whose
    /// message contains `message`.
    pub async fn restore(&self, message: &str) {
        self.c.enter_parent_frame().await.unwrap();
        self.c.find(Locator::Css("#versions-btn")).await.unwrap().click().await.unwrap();
        for li in self.c.find_all(Locator::Css("#versions-list li")).await.unwrap() {
            if li.text().await.unwrap().contains(message) {
                li.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
                return;
            }
        }
        panic!("no version {message:?} with a restore button");
    }

    pub async fn wait_idle(&self) {
        self.until("the turn to end", 90, "return !window.kiln.state.running").await;
    }
}

/// Runs the harness's blocking HTTP helpers off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

pub async fn metric(url: &str, name: &'static str) -> f64 {
    let url = format!("{url}/metrics");
    let (_, body) = blocking(move || server::get(&url, None)).await.unwrap();
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Drops the server (kill + reclaim, which block) on a plain thread, also
/// when the test panics.
pub struct Guard(pub Option<Server>);

impl Drop for Guard {
    fn drop(&mut self) {
        let s = self.0.take();
        let _ = std::thread::spawn(move || drop(s)).join();
    }
}
