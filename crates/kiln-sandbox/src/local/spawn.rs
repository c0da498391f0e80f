//! Starting bubblewrap: cgroup membership, descriptor hand-off, privilege drop.
//!
//! Everything between fork and exec happens in a `pre_exec` hook that only
//! makes raw syscalls on data prepared beforehand (no allocation after fork
//! in a multithreaded parent): join the cgroups, move the hand-off
//! descriptors to the numbers bwrap was told, mark every other descriptor
//! close-on-exec (nothing `kiln serve` has open — a pipe, a database file, a
//! listening socket — may reach a sandbox), start a new session, drop to the
//! sandbox uid.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::fs::{Mode, OFlags};
use tokio::io::AsyncWriteExt;

use super::bwrap::{BwrapPlan, FD_APP, FD_ENVD, FD_ETC_BASE, FD_HOST, FD_INFO, FD_LISTEN, etc_files};

pub struct SpawnInput<'a> {
    pub plan: &'a BwrapPlan,
    pub app_dir: &'a Path,
    /// envd's listening socket (bound by the host; see [`FD_LISTEN`]).
    pub listener: OwnedFd,
    /// `<data>/bin`: kiln-envd and the agents, bound at `/opt/kiln`.
    pub bin_dir: &'a Path,
    /// The directory the model gateway's socket is created in.
    pub host_dir: &'a Path,
    pub log: &'a Path,
    pub procs_files: Vec<PathBuf>,
    pub token: &'a str,
}

/// Spawns bwrap; returns the host pid of the sandbox's init process.
pub async fn spawn(input: SpawnInput<'_>) -> std::io::Result<i32> {
    let path_flags = OFlags::PATH | OFlags::CLOEXEC;
    let app = rustix::fs::open(input.app_dir, path_flags | OFlags::DIRECTORY, Mode::empty())?;
    let bin = rustix::fs::open(input.bin_dir, path_flags | OFlags::DIRECTORY, Mode::empty())?;
    let host = rustix::fs::open(input.host_dir, path_flags | OFlags::DIRECTORY, Mode::empty())?;
    let (info_r, info_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut handoff: Vec<(OwnedFd, i32)> =
        vec![(app, FD_APP), (input.listener, FD_LISTEN), (bin, FD_ENVD), (info_w, FD_INFO), (host, FD_HOST)];
    for (i, (name, content)) in etc_files(input.plan.uid, &input.plan.resolv_conf).into_iter().enumerate() {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::io::pwrite(&fd, content.as_bytes(), 0)?;
        handoff.push((fd, FD_ETC_BASE + i as i32));
    }

    let procs: Vec<CString> = input
        .procs_files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(i32, i32)> = handoff.iter().map(|(fd, to)| (fd.as_raw_fd(), *to)).collect();
    let uid = input.plan.uid;

    let log = std::fs::OpenOptions::new().create(true).append(true).open(input.log)?;
    let (program, args) = input.plan.command();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(log.try_clone()?).stderr(log).env_clear().env("PATH", "/usr/bin:/bin");
    // SAFETY: the hook only calls async-signal-safe functions on memory that
    // was allocated before fork.
    unsafe {
        cmd.pre_exec(move || child_setup(&procs, &pairs, uid));
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(format!("{}\n", input.token).as_bytes()).await?;
    drop(stdin);
    // Our copies of the hand-off descriptors must close, or the info pipe
    // never reaches end-of-file.
    drop(handoff);

    let info = tokio::time::timeout(INFO_TIMEOUT, tokio::task::spawn_blocking(move || read_info(info_r)))
        .await
        .map_err(|_| std::io::Error::other("bwrap reported nothing on its info fd"))?
        .map_err(std::io::Error::other)??;
    // Reap bwrap's monitor process as soon as it exits, or every killed
    // sandbox would leave a zombie until tokio's lazy orphan reaper runs.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    info.get("child-pid")
        .and_then(serde_json::Value::as_i64)
        .map(|p| p as i32)
        .ok_or_else(|| std::io::Error::other(format!("bwrap reported no child pid (info {info})")))
}

const INFO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads bwrap's info document. Not to end-of-file: with egress, pasta
/// inherits the pipe's write end and holds it for the sandbox's lifetime.
fn read_info(fd: OwnedFd) -> std::io::Result<serde_json::Value> {
    let mut f = std::fs::File::from(fd);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut chunk)?;
        if n == 0 {
            let text = String::from_utf8_lossy(&buf);
            return Err(std::io::Error::other(format!("bwrap exited before reporting its child (info {text:?})")));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
            return Ok(v);
        }
    }
}

fn child_setup(procs: &[CString], pairs: &[(i32, i32)], uid: u32) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    unsafe {
        // Join every cgroup first: everything bwrap starts inherits them.
        let mut buf = [0u8; 16];
        let pid = itoa(libc::getpid() as u64, &mut buf);
        for p in procs {
            let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(err());
            }
            let n = libc::write(fd, pid.as_ptr().cast(), pid.len());
            libc::close(fd);
            if n < 0 {
                return Err(err());
            }
        }
        // Move descriptors out of the way first, then to their numbers, so no
        // source is overwritten before it is copied.
        let mut high = [0i32; 32];
        for (i, (from, _)) in pairs.iter().enumerate() {
            high[i] = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 1000);
            if high[i] < 0 {
                return Err(err());
            }
        }
        for (i, (_, to)) in pairs.iter().enumerate() {
            if libc::dup2(high[i], *to) < 0 {
                return Err(err());
            }
        }
        // Everything above stderr closes at exec but the hand-off numbers
        // (dup2 left those without close-on-exec). Marking instead of closing
        // keeps the standard library's exec-error pipe working.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            // Kernels before 5.11: the same, one descriptor at a time.
            let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(1024, 65536) as i32;
            for fd in 3..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        for (_, to) in pairs {
            if libc::fcntl(*to, libc::F_SETFD, 0) < 0 {
                return Err(err());
            }
        }
        if libc::setsid() < 0 {
            return Err(err());
        }
        if libc::setgroups(0, std::ptr::null()) < 0 || libc::setgid(uid) < 0 || libc::setuid(uid) < 0 {
            return Err(err());
        }
    }
    Ok(())
}

fn itoa(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn itoa_formats_without_allocating() {
        let mut b = [0u8; 16];
        assert_eq!(super::itoa(0, &mut b), b"0");
        assert_eq!(super::itoa(4194304, &mut b), b"4194304");
    }
}
