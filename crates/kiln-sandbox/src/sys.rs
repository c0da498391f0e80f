//! The host operations the local backend performs, behind a trait.
//!
//! Mount, cgroup and kill logic is written against [`Sys`] so that its order
//! and arguments are unit-tested with [`RecordingSys`] without root; the real
//! [`HostSys`] is exercised by the integration tests, which run as root.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub trait Sys: Send + Sync + 'static {
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    fn write(&self, p: &Path, data: &str) -> io::Result<()>;
    fn read(&self, p: &Path) -> io::Result<String>;
    fn remove_dir(&self, p: &Path) -> io::Result<()>;
    fn exists(&self, p: &Path) -> bool;
    fn mount_overlay(&self, lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()>;
    /// Unmounts `target`; falls back to a lazy detach if it is busy.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()>;
    /// Signals `pid` only if it is still the process that started at
    /// `started` (clock ticks since boot, `/proc/<pid>/stat` field 22),
    /// through a pidfd so the check and the signal name the same process.
    /// `Ok(false)`: that process is gone (nothing was signalled).
    fn kill_verified(&self, pid: i32, started: u64, signal: i32) -> io::Result<bool>;
    fn remove_tree(&self, p: &Path) -> io::Result<()>;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSys;

impl Sys for HostSys {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
    fn write(&self, p: &Path, data: &str) -> io::Result<()> {
        // cgroup files want one write(2) with the whole value, no truncation.
        use std::io::Write;
        std::fs::OpenOptions::new().write(true).open(p)?.write_all(data.as_bytes())
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn remove_dir(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn mount_overlay(&self, lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            escape_overlay(lower),
            escape_overlay(upper),
            escape_overlay(work)
        );
        let opts = std::ffi::CString::new(opts).map_err(io::Error::other)?;
        let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
        rustix::mount::mount("overlay", target, "overlay", flags, Some(opts.as_c_str())).map_err(io::Error::from)
    }
    fn unmount(&self, target: &Path) -> io::Result<()> {
        use rustix::mount::UnmountFlags;
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).map_err(io::Error::from)
            }
            Err(e) => Err(e.into()),
        }
    }
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
    fn kill_verified(&self, pid: i32, started: u64, signal: i32) -> io::Result<bool> {
        let Some(p) = rustix::process::Pid::from_raw(pid) else { return Ok(false) };
        let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        // The pidfd now pins one process; if it is not the one that started
        // at `started`, the pid was recycled and the signal is not ours to send.
        if crate::local::meta::start_time(pid) != Some(started) {
            return Ok(false);
        }
        let sig = rustix::process::Signal::from_named_raw(signal).ok_or_else(|| io::Error::other("bad signal"))?;
        match rustix::process::pidfd_send_signal(&fd, sig) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    fn remove_tree(&self, p: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// Overlay options are comma-separated and use `\` escapes.
fn escape_overlay(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "\\\\").replace(',', "\\,").replace(':', "\\:")
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateDirAll(PathBuf),
    Write(PathBuf, String),
    RemoveDir(PathBuf),
    MountOverlay { lower: PathBuf, upper: PathBuf, work: PathBuf, target: PathBuf },
    Unmount(PathBuf),
    Kill(i32, i32),
    RemoveTree(PathBuf),
}

/// A fake that records every mutating call and serves reads from a map.
/// Writes are also visible to later reads, like a filesystem.
#[derive(Debug, Default)]
pub struct RecordingSys {
    pub calls: Mutex<Vec<Call>>,
    pub files: Mutex<HashMap<PathBuf, String>>,
}

impl RecordingSys {
    pub fn with_files(files: &[(&str, &str)]) -> Self {
        let s = RecordingSys::default();
        for (p, c) in files {
            s.files.lock().unwrap().insert(PathBuf::from(p), (*c).to_owned());
        }
        s
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn rec(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
}

impl Sys for RecordingSys {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.rec(Call::CreateDirAll(p.to_owned()));
        Ok(())
    }
    fn write(&self, p: &Path, data: &str) -> io::Result<()> {
        self.rec(Call::Write(p.to_owned(), data.to_owned()));
        self.files.lock().unwrap().insert(p.to_owned(), data.to_owned());
        Ok(())
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        self.files.lock().unwrap().get(p).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn remove_dir(&self, p: &Path) -> io::Result<()> {
        self.rec(Call::RemoveDir(p.to_owned()));
        Ok(())
    }
    fn exists(&self, p: &Path) -> bool {
        let files = self.files.lock().unwrap();
        files.keys().any(|k| k.starts_with(p))
    }
    fn mount_overlay(&self, lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
        self.rec(Call::MountOverlay {
            lower: lower.into(),
            upper: upper.into(),
            work: work.into(),
            target: target.into(),
        });
        Ok(())
    }
    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.rec(Call::Unmount(target.to_owned()));
        Ok(())
    }
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        self.rec(Call::Kill(pid, signal));
        Ok(())
    }
    fn kill_verified(&self, pid: i32, _started: u64, signal: i32) -> io::Result<bool> {
        self.rec(Call::Kill(pid, signal));
        Ok(true)
    }
    fn remove_tree(&self, p: &Path) -> io::Result<()> {
        self.rec(Call::RemoveTree(p.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_escape_separators() {
        assert_eq!(escape_overlay(Path::new("/a,b:c\\d")), "/a\\,b\\:c\\\\d");
    }
}
