//! Dev server supervisor: keeps Vite running on its port inside the sandbox.
//!
//! Vite is started directly with `node` (not through npm, which adds ~0.2 s of
//! start-up), restarted with exponential backoff when it exits, and probed
//! until `GET /` answers so that "ready" means a browser would get a page.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_types::envd::{DevServerState, DevServerStatus};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, watch};

const LOG_LINES: usize = 200;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct DevServer {
    inner: Arc<Inner>,
}

struct Inner {
    app_dir: PathBuf,
    port: u16,
    status: watch::Sender<DevServerStatus>,
    logs: Mutex<VecDeque<String>>,
    restart: Notify,
}

impl DevServer {
    /// A supervisor; `enabled = false` reports `Disabled` and starts nothing.
    pub fn new(app_dir: PathBuf, port: u16, enabled: bool) -> DevServer {
        let state = if enabled { DevServerState::Starting } else { DevServerState::Disabled };
        let (status, _) = watch::channel(DevServerStatus { state, port, pid: None, restarts: 0, log_tail: vec![] });
        let ds = DevServer {
            inner: Arc::new(Inner { app_dir, port, status, logs: Mutex::new(VecDeque::new()), restart: Notify::new() }),
        };
        if enabled {
            let me = ds.clone();
            tokio::spawn(async move { me.supervise().await });
        }
        ds
    }

    pub fn status(&self) -> DevServerStatus {
        let mut s = self.inner.status.borrow().clone();
        s.log_tail = self.inner.logs.lock().unwrap().iter().cloned().collect();
        s
    }

    /// Waits until the dev server is ready or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) {
        let mut rx = self.inner.status.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| s.state == DevServerState::Ready)).await;
    }

    /// Kills the running dev server; the supervisor starts a new one at once.
    pub fn restart(&self) {
        self.inner.restart.notify_one();
    }

    fn set(&self, f: impl FnOnce(&mut DevServerStatus)) {
        self.inner.status.send_modify(f);
    }

    fn log(&self, line: String) {
        let mut l = self.inner.logs.lock().unwrap();
        if l.len() == LOG_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    async fn supervise(self) {
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            let restart_requested = self.run_once().await;
            if restart_requested || started.elapsed() > HEALTHY_RUN {
                backoff = BACKOFF_START;
            }
            self.set(|s| {
                s.restarts += 1;
                s.pid = None;
                s.state = DevServerState::Backoff;
            });
            if !restart_requested {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            self.set(|s| s.state = DevServerState::Starting);
        }
    }

    /// Runs Vite until it exits; returns `true` if a restart was asked for.
    async fn run_once(&self) -> bool {
        let vite = self.inner.app_dir.join("node_modules/vite/bin/vite.js");
        let port = self.inner.port.to_string();
        let mut cmd = Command::new("node");
        cmd.arg(&vite)
            .args(["--host", "127.0.0.1", "--port", &port, "--strictPort"])
            .current_dir(&self.inner.app_dir)
            .env("BROWSER", "none")
            .env("NODE_ENV", "development")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match crate::reaper::spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                self.log(format!("[kiln-envd] cannot start vite: {e}"));
                return false;
            }
        };
        let pid = child.id();
        self.set(|s| s.pid = pid);
        self.log(format!("[kiln-envd] started vite (pid {})", pid.unwrap_or(0)));
        self.pump(child.stdout.take());
        self.pump(child.stderr.take());
        let probe = self.probe_until_ready();
        tokio::pin!(probe);
        let mut probing = true;
        loop {
            tokio::select! {
                status = child.wait() => {
                    self.log(format!("[kiln-envd] vite exited: {}", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())));
                    kill_group(pid);
                    return false;
                }
                () = &mut probe, if probing => {
                    probing = false;
                    self.set(|s| s.state = DevServerState::Ready);
                }
                () = self.inner.restart.notified() => {
                    self.log("[kiln-envd] restart requested".into());
                    kill_group(pid);
                    let _ = child.wait().await;
                    return true;
                }
            }
        }
    }

    async fn probe_until_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.inner.port);
        loop {
            if crate::proxy::get_ok(&addr, "/").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pump<R: AsyncRead + Unpin + Send + 'static>(&self, r: Option<R>) {
        let Some(r) = r else { return };
        let me = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                me.log(l);
            }
        });
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
}

/// Tells the dev server about each file the API wrote or deleted, at once,
/// through the template's `/__kiln/changed` hook (vite.config.ts): the
/// preview updates without waiting for the watcher's next poll. Polling
/// stays on for files that commands write. Failures (no dev server yet, an
/// app without the hook) cost nothing.
pub async fn notify_changes(port: u16, mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::files::Change>) {
    let addr = format!("127.0.0.1:{port}");
    while let Some(c) = rx.recv().await {
        let path = format!("/__kiln/changed?event={}&path={}", c.event, encode(&c.path));
        crate::proxy::get_ok(&addr, &path).await;
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
