//! Per-sandbox cgroups: limits, membership, kill.
//!
//! Hosts differ: a pure cgroup v2 host has every controller in one tree; a
//! hybrid host (this project's CI machines) mounts v2 with no resource
//! controllers next to v1 hierarchies that do have memory, pids and cpu. We
//! detect what is there and, per controller, use v2 if it offers it and v1
//! otherwise. A sandbox is placed in every hierarchy we use, so each limit is
//! enforced by whichever kernel interface can, and `kiln doctor` reports which.
//!
//! Kill prefers v2's `cgroup.kill` (atomic, sees forks in flight); without it,
//! the v1 freezer stops the group before every member is sent SIGKILL, so a
//! fork bomb cannot outrun the loop.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_types::{CpuPriority, Limits};
use serde::{Deserialize, Serialize};

use crate::sys::Sys;

/// Prefix of Kiln's parent groups. Each data directory gets its own parent
/// (`kiln-<hash>`, see [`parent_for`]), so that one Kiln instance's cleanup
/// never touches another instance's sandboxes.
pub const PARENT_PREFIX: &str = "kiln-";

/// The parent group of the sandboxes of one data directory.
pub fn parent_for(data_dir: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("{PARENT_PREFIX}{}", hex::encode(&h[..6]))
}
const CPU_PERIOD_US: u64 = 100_000;

/// The CPU weight file of a hierarchy and its value for `priority`. The
/// kernel defaults are the interactive ones; background gets an eighth,
/// enough to keep refilling the pool on a busy host, little enough that a
/// warming sandbox barely delays a claimed one.
fn cpu_weight(version: Version, priority: CpuPriority) -> (&'static str, u32) {
    match (version, priority) {
        (Version::V2, CpuPriority::Interactive) => ("cpu.weight", 100),
        (Version::V2, CpuPriority::Background) => ("cpu.weight", 12),
        (Version::V1, CpuPriority::Interactive) => ("cpu.shares", 1024),
        (Version::V1, CpuPriority::Background) => ("cpu.shares", 128),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// What the host offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Mount point of the cgroup2 tree, if any.
    pub v2: Option<PathBuf>,
    /// Controllers available in the v2 tree.
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies: (controllers of the mount, mount point).
    pub v1: Vec<(Vec<String>, PathBuf)>,
}

/// How each limit is enforced on this host (`None`: not at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub memory: Option<Version>,
    pub pids: Option<Version>,
    pub cpu: Option<Version>,
    /// `v2-kill`, `v1-freezer` or `signals` (namespace init only).
    pub kill: String,
}

impl Layout {
    /// Reads `/proc/self/mounts` and the v2 controller list.
    pub fn detect(sys: &dyn Sys) -> Layout {
        let mounts = sys.read(Path::new("/proc/self/mounts")).unwrap_or_default();
        Layout::from_mounts(sys, &mounts)
    }

    pub fn from_mounts(sys: &dyn Sys, mounts: &str) -> Layout {
        let mut layout = Layout::default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (mnt, fstype, opts) = (PathBuf::from(f[1]), f[2], f[3]);
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    let ctl = sys.read(&mnt.join("cgroup.controllers")).unwrap_or_default();
                    layout.v2_controllers = ctl.split_whitespace().map(str::to_owned).collect();
                    layout.v2 = Some(mnt);
                }
                "cgroup" => {
                    let ctls: Vec<String> = opts
                        .split(',')
                        .filter(|o| ["memory", "pids", "cpu", "cpuacct", "freezer"].contains(o))
                        .map(str::to_owned)
                        .collect();
                    if !ctls.is_empty() {
                        layout.v1.push((ctls, mnt));
                    }
                }
                _ => {}
            }
        }
        layout
    }

    fn v2_has(&self, c: &str) -> bool {
        self.v2.is_some() && self.v2_controllers.iter().any(|x| x == c)
    }

    fn v1_mount(&self, c: &str) -> Option<&Path> {
        self.v1.iter().find(|(ctls, _)| ctls.iter().any(|x| x == c)).map(|(_, p)| p.as_path())
    }

    fn version_for(&self, c: &str) -> Option<Version> {
        if self.v2_has(c) {
            Some(Version::V2)
        } else if self.v1_mount(c).is_some() {
            Some(Version::V1)
        } else {
            None
        }
    }

    pub fn enforcement(&self) -> Enforcement {
        let kill = if self.v2.is_some() {
            "v2-kill"
        } else if self.v1_mount("freezer").is_some() {
            "v1-freezer"
        } else {
            "signals"
        };
        Enforcement {
            memory: self.version_for("memory"),
            pids: self.version_for("pids"),
            cpu: self.version_for("cpu"),
            kill: kill.to_owned(),
        }
    }

    /// Creates the sandbox's groups and writes its limits. On error, whatever
    /// was created is removed again.
    pub fn create(&self, sys: &dyn Sys, parent: &str, id: &str, limits: &Limits) -> io::Result<SandboxCgroup> {
        let mut cg = SandboxCgroup { dirs: Vec::new() };
        let r = self.create_into(sys, parent, id, limits, &mut cg);
        if let Err(e) = r {
            let _ = cg.remove(sys, Duration::from_secs(1));
            return Err(e);
        }
        Ok(cg)
    }

    fn create_into(
        &self,
        sys: &dyn Sys,
        parent_name: &str,
        id: &str,
        limits: &Limits,
        cg: &mut SandboxCgroup,
    ) -> io::Result<()> {
        let memory = (limits.memory_mib * 1024 * 1024).to_string();
        let quota = (limits.cpu_millicores * CPU_PERIOD_US / 1000).max(1000);
        if let Some(root) = &self.v2 {
            let wanted: Vec<&str> = ["memory", "pids", "cpu"].into_iter().filter(|c| self.v2_has(c)).collect();
            let parent = root.join(parent_name);
            sys.create_dir_all(&parent)?;
            if !wanted.is_empty() {
                let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
                sys.write(&root.join("cgroup.subtree_control"), enable.trim_end())?;
                sys.write(&parent.join("cgroup.subtree_control"), enable.trim_end())?;
            }
            let dir = parent.join(id);
            sys.create_dir_all(&dir)?;
            cg.dirs.push(CgDir { path: dir.clone(), version: Version::V2 });
            if self.v2_has("memory") {
                sys.write(&dir.join("memory.max"), &memory)?;
                let _ = sys.write(&dir.join("memory.swap.max"), "0");
            }
            if self.v2_has("pids") {
                sys.write(&dir.join("pids.max"), &limits.pids.to_string())?;
            }
            if self.v2_has("cpu") {
                sys.write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        // v1 for whatever v2 does not offer, plus the freezer when v2 is absent.
        let mut v1_needed: Vec<&str> = ["memory", "pids", "cpu"].into_iter().filter(|c| !self.v2_has(c)).collect();
        if self.v2.is_none() {
            v1_needed.push("freezer");
        }
        let mut used_mounts: Vec<&Path> = Vec::new();
        for c in v1_needed {
            let Some(mnt) = self.v1_mount(c) else {
                continue;
            };
            let dir = mnt.join(parent_name).join(id);
            if !used_mounts.contains(&mnt) {
                sys.create_dir_all(&dir)?;
                cg.dirs.push(CgDir { path: dir.clone(), version: Version::V1 });
                used_mounts.push(mnt);
            }
            match c {
                "memory" => {
                    sys.write(&dir.join("memory.limit_in_bytes"), &memory)?;
                    // Without swap accounting this file is absent; then there is no swap to evade into.
                    let _ = sys.write(&dir.join("memory.memsw.limit_in_bytes"), &memory);
                }
                "pids" => sys.write(&dir.join("pids.max"), &limits.pids.to_string())?,
                "cpu" => {
                    sys.write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    sys.write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgDir {
    pub path: PathBuf,
    pub version: Version,
}

/// The groups one sandbox lives in. Stored in the sandbox's metadata so that
/// another process (a CLI, a restarted server) can kill it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCgroup {
    pub dirs: Vec<CgDir>,
}

impl SandboxCgroup {
    /// The `cgroup.procs` files a new process must be written into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.join("cgroup.procs")).collect()
    }

    /// Sets the sandbox's CPU weight in whichever hierarchy has the cpu
    /// controller. Returns whether any was found (a host without one
    /// cannot weigh sandboxes; that is not an error).
    pub fn set_cpu_priority(&self, sys: &dyn Sys, priority: CpuPriority) -> io::Result<bool> {
        let mut found = false;
        for d in &self.dirs {
            let (file, weight) = cpu_weight(d.version, priority);
            let path = d.path.join(file);
            if sys.exists(&path) {
                sys.write(&path, &weight.to_string())?;
                found = true;
            }
        }
        Ok(found)
    }

    /// Member pids (from the first hierarchy; all hold the same processes).
    pub fn pids(&self, sys: &dyn Sys) -> Vec<i32> {
        let Some(d) = self.dirs.first() else {
            return vec![];
        };
        sys.read(&d.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn freezer(&self, sys: &dyn Sys) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.version == Version::V1 && sys.exists(&d.path.join("freezer.state")))
            .map(|d| d.path.as_path())
    }

    /// Kills every member and waits (up to `timeout`) until none is left.
    pub fn kill_all(&self, sys: &dyn Sys, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let v2 = self.dirs.iter().find(|d| d.version == Version::V2 && sys.exists(&d.path.join("cgroup.kill")));
        if let Some(d) = v2 {
            sys.write(&d.path.join("cgroup.kill"), "1")?;
        } else if let Some(fz) = self.freezer(sys).map(Path::to_owned) {
            sys.write(&fz.join("freezer.state"), "FROZEN")?;
            while sys.read(&fz.join("freezer.state")).unwrap_or_default().trim() == "FREEZING"
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            for pid in self.pids(sys) {
                let _ = sys.kill(pid, libc::SIGKILL);
            }
            sys.write(&fz.join("freezer.state"), "THAWED")?;
        }
        loop {
            let left = self.pids(sys);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!("{} processes still alive after kill", left.len())));
            }
            for pid in left {
                let _ = sys.kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the (empty) groups. Tasks that were just killed keep a group
    /// busy until the kernel has finished tearing them down, so `EBUSY` is
    /// retried for up to `timeout`. A group already gone is success.
    pub fn remove(&self, sys: &dyn Sys, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        for d in self.dirs.iter().rev() {
            loop {
                match sys.remove_dir(&d.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("removing cgroup {}: {e}", d.path.display())));
                    }
                }
            }
            // The per-data-dir parent goes with its last sandbox; while
            // others remain it is busy and stays.
            if let Some(parent) = d.path.parent() {
                let _ = sys.remove_dir(parent);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, RecordingSys};

    const HYBRID: &str = "\
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
proc /proc proc rw 0 0
";
    const PURE_V2: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";

    fn limits() -> Limits {
        Limits { memory_mib: 256, pids: 64, cpu_millicores: 500 }
    }

    #[test]
    fn cpu_priority_writes_the_weight_of_the_hierarchy_that_has_cpu() {
        let v1 = SandboxCgroup {
            dirs: vec![
                CgDir { path: "/sys/fs/cgroup/unified/k/a".into(), version: Version::V2 },
                CgDir { path: "/sys/fs/cgroup/cpu/k/a".into(), version: Version::V1 },
                CgDir { path: "/sys/fs/cgroup/memory/k/a".into(), version: Version::V1 },
            ],
        };
        let sys = RecordingSys::with_files(&[("/sys/fs/cgroup/cpu/k/a/cpu.shares", "1024")]);
        assert!(v1.set_cpu_priority(&sys, CpuPriority::Background).unwrap());
        assert_eq!(sys.read(Path::new("/sys/fs/cgroup/cpu/k/a/cpu.shares")).unwrap(), "128");
        assert!(v1.set_cpu_priority(&sys, CpuPriority::Interactive).unwrap());
        assert_eq!(sys.read(Path::new("/sys/fs/cgroup/cpu/k/a/cpu.shares")).unwrap(), "1024");
        let writes = sys.calls().into_iter().filter(|c| matches!(c, Call::Write(..))).count();
        assert_eq!(writes, 2, "only the cpu hierarchy is written");

        let v2 = SandboxCgroup { dirs: vec![CgDir { path: "/sys/fs/cgroup/k/a".into(), version: Version::V2 }] };
        let sys = RecordingSys::with_files(&[("/sys/fs/cgroup/k/a/cpu.weight", "100")]);
        assert!(v2.set_cpu_priority(&sys, CpuPriority::Background).unwrap());
        assert_eq!(sys.read(Path::new("/sys/fs/cgroup/k/a/cpu.weight")).unwrap(), "12");

        let none = RecordingSys::default();
        assert!(!v2.set_cpu_priority(&none, CpuPriority::Background).unwrap(), "no cpu controller: nothing to weigh");
        assert!(none.calls().is_empty());
    }

    #[test]
    fn hybrid_host_uses_v1_for_limits_and_v2_for_kill() {
        let sys = RecordingSys::with_files(&[("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")]);
        let l = Layout::from_mounts(&sys, HYBRID);
        let e = l.enforcement();
        assert_eq!(
            (e.memory, e.pids, e.cpu, e.kill.as_str()),
            (Some(Version::V1), Some(Version::V1), Some(Version::V1), "v2-kill")
        );
        let cg = l.create(&sys, "kiln", "abc", &limits()).unwrap();
        let dirs: Vec<_> = cg.dirs.iter().map(|d| d.path.to_str().unwrap().to_owned()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/unified/kiln/abc",
                "/sys/fs/cgroup/memory/kiln/abc",
                "/sys/fs/cgroup/pids/kiln/abc",
                "/sys/fs/cgroup/cpu/kiln/abc"
            ]
        );
        let writes: Vec<_> = sys
            .calls()
            .into_iter()
            .filter_map(|c| if let Call::Write(p, v) = c { Some((p.to_str().unwrap().to_owned(), v)) } else { None })
            .collect();
        assert!(writes.contains(&("/sys/fs/cgroup/memory/kiln/abc/memory.limit_in_bytes".into(), "268435456".into())));
        assert!(writes.contains(&("/sys/fs/cgroup/pids/kiln/abc/pids.max".into(), "64".into())));
        assert!(writes.contains(&("/sys/fs/cgroup/cpu/kiln/abc/cpu.cfs_quota_us".into(), "50000".into())));
        // No controller is enabled in a v2 tree that has none.
        assert!(!writes.iter().any(|(p, _)| p.ends_with("subtree_control")));
    }

    #[test]
    fn pure_v2_host_enables_controllers_and_writes_v2_files() {
        let sys = RecordingSys::with_files(&[("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")]);
        let l = Layout::from_mounts(&sys, PURE_V2);
        let cg = l.create(&sys, "kiln", "abc", &limits()).unwrap();
        assert_eq!(cg.dirs.len(), 1);
        let calls = sys.calls();
        assert!(
            calls.contains(&Call::Write("/sys/fs/cgroup/cgroup.subtree_control".into(), "+memory +pids +cpu".into()))
        );
        assert!(calls.contains(&Call::Write("/sys/fs/cgroup/kiln/abc/memory.max".into(), "268435456".into())));
        assert!(calls.contains(&Call::Write("/sys/fs/cgroup/kiln/abc/cpu.max".into(), "50000 100000".into())));
        assert!(calls.contains(&Call::Write("/sys/fs/cgroup/kiln/abc/pids.max".into(), "64".into())));
    }

    #[test]
    fn v2_kill_writes_cgroup_kill_and_waits_for_empty() {
        let sys = RecordingSys::with_files(&[("/cg/kiln/x/cgroup.kill", ""), ("/cg/kiln/x/cgroup.procs", "")]);
        let cg = SandboxCgroup { dirs: vec![CgDir { path: "/cg/kiln/x".into(), version: Version::V2 }] };
        cg.kill_all(&sys, Duration::from_millis(50)).unwrap();
        assert_eq!(sys.calls(), [Call::Write("/cg/kiln/x/cgroup.kill".into(), "1".into())]);
        cg.remove(&sys, Duration::from_millis(50)).unwrap();
        assert_eq!(sys.calls()[1..], [Call::RemoveDir("/cg/kiln/x".into()), Call::RemoveDir("/cg/kiln".into())]);
    }

    #[test]
    fn kill_reports_survivors_after_the_timeout() {
        let sys = RecordingSys::with_files(&[("/cg/kiln/x/cgroup.procs", "41\n42\n")]);
        let cg = SandboxCgroup { dirs: vec![CgDir { path: "/cg/kiln/x".into(), version: Version::V1 }] };
        let err = cg.kill_all(&sys, Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("2 processes"));
        assert!(sys.calls().contains(&Call::Kill(41, libc::SIGKILL)));
    }

    #[test]
    fn no_cgroups_at_all_is_reported_not_hidden() {
        let sys = RecordingSys::default();
        let e = Layout::from_mounts(&sys, "proc /proc proc rw 0 0\n").enforcement();
        assert_eq!((e.memory, e.pids, e.cpu, e.kill.as_str()), (None, None, None, "signals"));
    }
}
