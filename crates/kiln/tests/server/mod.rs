//! Runs real `kiln serve` processes for tests: each with its own data
//! directory (so start-up reclaim never meets another test's sandboxes) and
//! a free loopback port. Only processes started here are ever killed, by PID.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_sandbox::{LocalConfig, LocalProvider};

pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// Writes a scripted model's turns to `dir/name` (docs/scripted-model.md)
/// and returns the `KILN_MODEL` value that selects it.
pub fn scripted_model(dir: &Path, name: &str, turns: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, turns.to_string()).unwrap();
    format!("scripted:{}", path.display())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `kiln-envd` (and `kiln-agent`, which the server finds next to `kiln`),
/// built from this checkout once per test binary: `cargo test -p kiln`
/// alone builds neither, and a stale one would test old code.
pub fn envd_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            kiln_testkit::built("kiln-agent", "kiln-agent");
            kiln_testkit::built("kiln-envd", "kiln-envd")
        })
        .clone()
}

impl Server {
    /// Starts a server on `data_dir` with extra `KILN_*` settings.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        envd_bin();
        std::fs::create_dir_all(data_dir).unwrap();
        let port = free_port();
        let mut all: Vec<(String, String)> = vec![
            ("KILN_DATA_DIR".into(), data_dir.display().to_string()),
            ("KILN_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("KILN_POOL_MAINTENANCE_INTERVAL".into(), "1s".into()),
        ];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut s = Server {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            env: all,
            log: data_dir.join("server.log"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("serve").env_remove("KILN_CONFIG").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().unwrap());
    }

    /// Waits until `/api/health` answers.
    pub fn wait_up(&mut self) {
        let t = Instant::now();
        while get(&format!("{}/api/health", self.url), None).map(|r| r.0) != Some(200) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("server exited with {status}; log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "server never came up; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.sigkill();
        self.spawn();
    }

    /// Kills the server and every sandbox left in its data directory (also
    /// what dropping it does, so a failing test leaks nothing).
    pub fn destroy(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sigkill();
        reclaim_all(&self.data_dir);
    }
}

/// Kills and removes every sandbox in `data_dir`.
pub fn reclaim_all(data_dir: &Path) {
    let cfg = LocalConfig {
        data_dir: data_dir.to_owned(),
        envd_bin: envd_bin(),
        uid: 61000,
        extra_ro: vec![],
        extra_bins: vec![],
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let p = LocalProvider::new(cfg).unwrap();
        p.reclaim(&|_, _, _| false).await.unwrap();
    });
}

/// A blocking HTTP call with `curl`-like semantics: (status, body).
pub fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> Option<(u16, String)> {
    let mut headers = vec![("host", "localhost".to_owned())];
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    send(method, url, &headers, body).map(|a| (a.status, a.body))
}

/// A full answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// An HTTP call with an explicit `Host` header (preview hosts) and a JSON
/// body; `None` if the server could not be reached.
pub fn request(method: &str, url: &str, host: &str, body: Option<&str>) -> Option<Answer> {
    request_from(method, url, host, None, body)
}

/// [`request`] with an `Origin` header, as a browser page would send.
pub fn request_from(method: &str, url: &str, host: &str, origin: Option<&str>, body: Option<&str>) -> Option<Answer> {
    request_as(method, url, host, origin, None, body)
}

/// [`request_from`] as an owner: `key` goes in `X-Kiln-Key`.
pub fn request_as(
    method: &str,
    url: &str,
    host: &str,
    origin: Option<&str>,
    key: Option<&str>,
    body: Option<&str>,
) -> Option<Answer> {
    let mut headers = vec![("host", host.to_owned()), ("content-type", "application/json".to_owned())];
    if let Some(o) = origin {
        headers.push(("origin", o.to_owned()));
    }
    if let Some(k) = key {
        headers.push(("x-kiln-key", k.to_owned()));
    }
    send(method, url, &headers, body)
}

/// Everything the server wrote to stderr and stdout so far (its log).
pub fn log_text(s: &Server) -> String {
    std::fs::read_to_string(&s.log).unwrap_or_default()
}

/// One HTTP/1.1 request on a fresh connection, blocking; `None` if the
/// server could not be reached.
fn send(method: &str, url: &str, headers: &[(&str, String)], body: Option<&str>) -> Option<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let uri: http::Uri = url.parse().ok()?;
        let stream = tokio::net::TcpStream::connect((uri.host()?, uri.port_u16()?)).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(uri.path_and_query()?.as_str());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned()))).ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let b = body.collect().await.ok()?.to_bytes();
        Some(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&b).into_owned(),
        })
    })
}

pub fn get(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    call("GET", url, None, token)
}

pub fn status(s: &Server, token: Option<&str>) -> serde_json::Value {
    let (code, body) = get(&format!("{}/api/vm/prewarm", s.url), token).expect("status answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub fn prerequisites() -> bool {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("must run as root")
    } else if Command::new("bwrap").arg("--version").output().is_err() {
        Some("bubblewrap is not installed")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and a prerequisite is missing: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}
