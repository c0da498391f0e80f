//! Host prerequisites, checked by `kiln doctor` and at server start.
//!
//! Each check says what it found and, when it fails, the one thing to do
//! about it. `Fail` means the main job cannot run; `Warn` means it runs with
//! less (e.g. a limit the kernel cannot enforce).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::cgroup::{Layout, Version};
use crate::sys::HostSys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when it is not `Ok`.
    pub fix: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, detail: detail.into(), fix: String::new() }
    }
    fn bad(name: &'static str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status, detail: detail.into(), fix: fix.into() }
    }
}

pub struct Inputs<'a> {
    pub data_dir: &'a Path,
    pub envd_bin: Option<PathBuf>,
    pub uid: u32,
}

const APT: &str = "apt-get install -y bubblewrap chromium git nodejs npm (or run the README's first command)";

pub fn run_all(inp: &Inputs<'_>) -> Vec<Check> {
    let mut v = vec![root(), bwrap(), namespaces(inp.uid), overlayfs()];
    v.extend(cgroups());
    v.push(node());
    v.push(tool("npm", &["--version"], "npm", Status::Fail));
    v.push(tool("chromium", &["--version"], "chromium (the agent's browser)", Status::Fail));
    v.push(tool("git", &["--version"], "git (app versions)", Status::Fail));
    v.push(tool("pasta", &["--version"], "pasta (optional sandbox egress)", Status::Warn));
    v.push(tun());
    v.push(envd(inp.envd_bin.as_deref()));
    v.push(data_dir(inp.data_dir));
    v.push(template(inp.data_dir));
    v
}

fn root() -> Check {
    if rustix::process::geteuid().is_root() {
        Check::ok("root", "running as root (needed to mount overlays and manage cgroups)")
    } else {
        Check::bad(
            "root",
            Status::Fail,
            "not running as root",
            "run kiln as root; sandbox processes themselves run as an unprivileged uid",
        )
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status.success().then(|| {
        let s = if o.stdout.is_empty() { &o.stderr } else { &o.stdout };
        String::from_utf8_lossy(s).lines().next().unwrap_or("").trim().to_owned()
    })
}

fn tool(cmd: &'static str, args: &[&str], what: &'static str, missing: Status) -> Check {
    match run(cmd, args) {
        Some(v) => Check::ok(cmd, format!("{what}: {v}")),
        None => Check::bad(cmd, missing, format!("{what} not found"), format!("install it: {APT}")),
    }
}

fn bwrap() -> Check {
    match run("bwrap", &["--version"]) {
        Some(v) => Check::ok("bubblewrap", v),
        None => Check::bad("bubblewrap", Status::Fail, "bwrap not found", "apt-get install -y bubblewrap"),
    }
}

/// Actually creates the namespaces a sandbox uses, as the sandbox uid.
fn namespaces(uid: u32) -> Check {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("bwrap");
    c.args(crate::local::bwrap::NAMESPACE_FLAGS)
        .args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
        .args(["--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]);
    if rustix::process::geteuid().is_root() {
        c.uid(uid).gid(uid);
    }
    match c.output() {
        Ok(o) if o.status.success() => {
            Check::ok("namespaces", format!("user, mount, pid, ipc, uts, net and cgroup namespaces work as uid {uid}"))
        }
        Ok(o) => Check::bad(
            "namespaces",
            Status::Fail,
            format!("bwrap could not create the namespaces: {}", String::from_utf8_lossy(&o.stderr).trim()),
            "allow unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000",
        ),
        Err(e) => {
            Check::bad("namespaces", Status::Fail, format!("cannot run bwrap: {e}"), "apt-get install -y bubblewrap")
        }
    }
}

fn overlayfs() -> Check {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        Check::ok("overlayfs", "overlay filesystem available")
    } else {
        Check::bad("overlayfs", Status::Fail, "the kernel has no overlay filesystem", "modprobe overlay")
    }
}

fn cgroups() -> Vec<Check> {
    let layout = Layout::detect(&HostSys);
    let e = layout.enforcement();
    let one = |name: &'static str, v: Option<Version>, status: Status| match v {
        Some(Version::V2) => Check::ok(name, "enforced with cgroup v2"),
        Some(Version::V1) => Check::ok(name, "enforced with cgroup v1 (cgroup v2 on this host lacks the controller)"),
        None => Check::bad(
            name,
            status,
            "no cgroup controller available: this limit is NOT enforced",
            "mount the controller (cgroup v1) or enable it in cgroup v2's subtree_control",
        ),
    };
    vec![
        one("memory limit", e.memory, Status::Fail),
        one("pids limit", e.pids, Status::Fail),
        one("cpu limit", e.cpu, Status::Warn),
        Check::ok("kill", format!("sandbox kill uses {}", e.kill)),
    ]
}

/// pasta runs as the sandbox uid and must open `/dev/net/tun` itself.
fn tun() -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata("/dev/net/tun") {
        Ok(m) if m.permissions().mode() & 0o006 == 0o006 => {
            Check::ok("tun", "/dev/net/tun is usable by the sandbox uid")
        }
        Ok(m) => Check::bad(
            "tun",
            Status::Warn,
            format!("/dev/net/tun is mode {:o}: sandboxes with egress cannot start", m.permissions().mode() & 0o777),
            "chmod 0666 /dev/net/tun (what udev does on Debian); scripts/setup.sh does it",
        ),
        Err(_) => Check::bad(
            "tun",
            Status::Warn,
            "/dev/net/tun is missing: sandboxes with egress cannot start",
            "load the tun module (modprobe tun)",
        ),
    }
}

fn node() -> Check {
    let Some(v) = run("node", &["--version"]) else {
        return Check::bad(
            "node",
            Status::Fail,
            "node not found",
            "install Node.js ≥ 20.19 (apt-get install -y nodejs)",
        );
    };
    let nums: Vec<u32> = v.trim_start_matches('v').split('.').filter_map(|x| x.parse().ok()).collect();
    let ok = matches!(nums.as_slice(), [maj, min, ..] if (*maj, *min) >= (20, 19));
    if ok {
        Check::ok("node", format!("Node {v}"))
    } else {
        Check::bad(
            "node",
            Status::Fail,
            format!("Node {v} is older than 20.19 (Vite 8 needs ≥ 20.19)"),
            "install Node.js ≥ 20.19",
        )
    }
}

fn envd(p: Option<&Path>) -> Check {
    match p {
        Some(p) if p.exists() => Check::ok("kiln-envd", p.display().to_string()),
        _ => Check::bad(
            "kiln-envd",
            Status::Fail,
            "kiln-envd binary not found next to kiln",
            "build it: cargo build --release --bins (or set KILN_ENVD_BIN)",
        ),
    }
}

fn data_dir(d: &Path) -> Check {
    let probe = d.join(".doctor-probe");
    match std::fs::create_dir_all(d).and_then(|()| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Check::ok("data dir", format!("{} is writable", d.display()))
        }
        Err(e) => Check::bad(
            "data dir",
            Status::Fail,
            format!("{}: {e}", d.display()),
            "set KILN_DATA_DIR to a writable directory",
        ),
    }
}

fn template(d: &Path) -> Check {
    match crate::template::current(d) {
        Some(c) => Check::ok("template", format!("built, spec hash {}", c.spec_hash)),
        None => Check::bad("template", Status::Fail, "the app template is not built", "kiln template build"),
    }
}
