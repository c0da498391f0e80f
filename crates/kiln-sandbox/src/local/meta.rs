//! On-disk record of one local sandbox (`<data>/sandboxes/<id>/meta.json`).
//!
//! The record is what lets a different process — the CLI after the server
//! created a sandbox, or a server restarted after a crash — find, reach and
//! kill a sandbox. It lives in a directory only root can read: it holds the
//! envd token.

use std::path::{Path, PathBuf};

use kiln_types::{SandboxId, SandboxSpec, SandboxState};
use serde::{Deserialize, Serialize};

use crate::cgroup::SandboxCgroup;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: SandboxId,
    pub state: SandboxState,
    pub spec: SandboxSpec,
    pub spec_hash: String,
    pub created_at_ms: u64,
    pub token: String,
    pub uid: u32,
    /// Who created it (`cli`, `server`, …); see `LocalProvider::with_owner`.
    #[serde(default)]
    pub owner: String,
    pub cgroup: SandboxCgroup,
    /// Host pid of the namespace's init (bwrap's pid 1) and its start time
    /// (from `/proc/<pid>/stat`), so a recycled pid is never killed.
    pub init: Option<(i32, u64)>,
}

/// Paths of one sandbox's directory.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new(sandboxes: &Path, id: &SandboxId) -> Dirs {
        Dirs { root: sandboxes.join(id.as_str()) }
    }
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    /// The overlay's mount point: the sandbox's `/app` as the host sees it.
    pub fn app(&self) -> PathBuf {
        self.root.join("app")
    }
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    /// Root-owned, group-readable by the sandbox uid: the model gateway's
    /// socket lives here, bound read-only into the sandbox.
    pub fn host(&self) -> PathBuf {
        self.root.join("host")
    }
    pub fn socket(&self) -> PathBuf {
        self.run().join(kiln_types::envd::SOCKET_NAME)
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("envd.log")
    }
}

impl Meta {
    pub fn load(path: &Path) -> std::io::Result<Meta> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Atomic replace, so a reader never sees half a record.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if it does not exist.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The pids a process has in each pid namespace it belongs to, outermost
/// (the host's) first: `/proc/<pid>/status`'s `NSpid` line.
pub fn ns_pids(pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// The sandbox's init among the host pids of its cgroup: the process that is
/// pid 1 of the most deeply nested pid namespace. With egress, bwrap runs
/// inside pasta's namespaces and reports its child's pid as *it* sees it
/// (2, say), which names some unrelated host process; the kernel's own
/// record of every pid namespace level cannot be wrong that way.
pub fn find_init(host_pids: &[i32]) -> Option<i32> {
    host_pids
        .iter()
        .filter_map(|&p| ns_pids(p).map(|ns| (p, ns)))
        .filter(|(_, ns)| ns.len() >= 2 && ns.last() == Some(&1))
        .max_by_key(|(p, ns)| (ns.len(), std::cmp::Reverse(*p)))
        .map(|(p, _)| p)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
