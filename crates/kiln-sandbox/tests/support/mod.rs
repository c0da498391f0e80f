//! Shared set-up for the root integration tests: a data directory under
//! cargo's target dir, kiln-envd built, the template built once (a file lock
//! in `template::build` makes that safe across test processes).
//!
//! Prerequisites (root, bubblewrap, Node) missing: under `CI=true` the test
//! fails; elsewhere it is skipped with a message saying what is missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kiln_sandbox::{Created, EnvdClient, LocalConfig, LocalProvider, SandboxProvider};
use kiln_types::{Limits, SandboxId, SandboxSpec};

pub struct Env {
    pub data_dir: PathBuf,
    pub config: LocalConfig,
}

fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("these tests create namespaces, overlays and cgroups and must run as root".into());
    }
    for (cmd, pkg) in [("bwrap", "bubblewrap"), ("node", "nodejs"), ("npm", "npm")] {
        if std::process::Command::new(cmd).arg("--version").output().is_err() {
            return Some(format!("{cmd} is not installed (apt-get install {pkg})"));
        }
    }
    None
}

/// The shared environment, or `None` (test skipped) outside CI when the
/// host cannot run sandboxes.
pub fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        if let Some(why) = missing_prerequisite() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and a prerequisite is missing: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Some(build_env())
    })
    .as_ref()
}

/// Skips (returns) the calling test when [`env`] is `None`.
#[macro_export]
macro_rules! require_env {
    () => {
        match support::env() {
            Some(e) => e,
            None => return,
        }
    };
}

fn target_dir() -> PathBuf {
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned()
}

fn build_env() -> Env {
    let envd_bin = target_dir().join("kiln-envd");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        // The whole workspace's binaries, as scripts/test builds them: one
        // package alone resolves shared dependencies with other features and
        // rebuilt them mid-run (kiln_testkit::built does the same).
        .args(["build", "-q", "--workspace", "--bins"])
        .status()
        .expect("running cargo to build kiln-envd");
    assert!(status.success(), "building kiln-envd failed");
    assert!(envd_bin.exists(), "{} missing after build", envd_bin.display());
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = LocalConfig { data_dir: data_dir.clone(), envd_bin, uid: 61000, extra_ro: vec![], extra_bins: vec![] };
    // Called from inside a test's runtime: build on a thread of our own.
    let cfg = config.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let p = LocalProvider::new(cfg).unwrap();
            kiln_sandbox::template::build(&p, &SandboxSpec::app(), None).await.expect("template build");
        });
    })
    .join()
    .expect("template build thread");
    Env { data_dir, config }
}

impl Env {
    pub fn provider(&self) -> LocalProvider {
        LocalProvider::new(self.config.clone()).unwrap().with_owner("test")
    }
}

/// Kills its sandbox when dropped, so a failing assertion leaks nothing.
pub struct Guard {
    pub provider: LocalProvider,
    pub created: Created,
}

impl Guard {
    pub async fn new(env: &Env, spec: SandboxSpec) -> Guard {
        let provider = env.provider();
        let created = provider.create(&spec).await.expect("create sandbox");
        Guard { provider, created }
    }
    pub fn id(&self) -> &SandboxId {
        &self.created.info.id
    }
    pub fn client(&self) -> EnvdClient {
        EnvdClient::new(self.created.endpoint.clone())
    }
    /// Runs `sh -c script` inside; returns (exit code, stdout, stderr).
    pub async fn sh(&self, script: &str) -> (i32, String, String) {
        let req = kiln_types::envd::ExecRequest {
            cmd: "sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout_ms: Some(60_000),
            ..Default::default()
        };
        let out = self.client().exec_collect(&req).await.expect("exec");
        (out.code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
    pub async fn wait_dev_ready(&self) {
        let h = self.client().wait_dev_ready(Duration::from_secs(30)).await.expect("health");
        assert_eq!(
            h.dev_server.state,
            kiln_types::envd::DevServerState::Ready,
            "dev server log: {:?}",
            h.dev_server.log_tail
        );
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.provider.kill_blocking(&self.created.info.id);
    }
}

/// The sandbox's group in one cgroup hierarchy (`pids`, `memory`, …).
pub fn cgroup_dir(env: &Env, hierarchy: &str, id: &SandboxId) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(hierarchy).join(kiln_sandbox::cgroup::parent_for(&env.data_dir)).join(id.as_str())
}

pub fn spec(limits: Limits, dev_server: bool) -> SandboxSpec {
    SandboxSpec { limits, dev_server, egress: false, agent: None }
}

/// Leftovers of a sandbox on the host: mounts, cgroup dirs, its directory
/// and processes in its cgroups. Empty means clean.
pub fn leftovers(env: &Env, id: &SandboxId) -> Vec<String> {
    leftovers_in(&env.data_dir, id)
}

/// [`leftovers`] for a sandbox of any data directory.
pub fn leftovers_in(data_dir: &Path, id: &SandboxId) -> Vec<String> {
    let mut out = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mounts.lines().filter(|l| l.contains(id.as_str())) {
        out.push(format!("mount: {l}"));
    }
    for h in ["unified", "memory", "pids", "cpu", "freezer"] {
        let Ok(parents) = std::fs::read_dir(Path::new("/sys/fs/cgroup").join(h)) else { continue };
        for parent in parents.flatten().filter(|p| p.file_name().to_string_lossy().starts_with("kiln")) {
            let p = parent.path().join(id.as_str());
            if p.exists() {
                out.push(format!("cgroup: {}", p.display()));
            }
        }
    }
    let dir = data_dir.join("sandboxes").join(id.as_str());
    if dir.exists() {
        out.push(format!("directory: {}", dir.display()));
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        // A zombie holds nothing but its pid until its parent reaps it;
        // `zombie_children` checks that reaping happens.
        if cg.contains(id.as_str()) && process_state(pid) != Some('Z') {
            out.push(format!("process: {pid}"));
        }
    }
    out
}

fn process_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Zombie children of this process: sandbox monitors nobody reaped.
pub fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            out.push(name);
        }
    }
    out
}
