//! envd is pid 1 of its sandbox (bwrap `--as-pid-1`), so that nothing in the
//! sandbox can signal it: the kernel drops every signal sent to a pid
//! namespace's init from inside the namespace unless init handles it. The
//! price is init's other duty: processes whose parent dies are re-parented
//! to envd, and their zombies are envd's to reap.
//!
//! tokio reaps the children it spawned by pid, so a `waitpid(-1)` loop would
//! steal their exit statuses. Instead every child envd starts is recorded
//! (under one lock held across the spawn, so a child that exits at once is
//! never mistaken for an orphan), and the reaper collects only zombies that
//! are not on the record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Children tokio owns: pid → start time (so a recycled pid is not confused
/// with the child that had it).
static OWNED: Mutex<Option<HashMap<i32, u64>>> = Mutex::new(None);

/// Spawns `cmd` and records the child as tokio's to reap.
pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        let pid = pid as i32;
        owned.get_or_insert_default().insert(pid, start_time(pid).unwrap_or(0));
    }
    Ok(child)
}

/// When envd is pid 1, reaps orphaned zombies on every `SIGCHLD` and once a
/// second (signals coalesce). A no-op otherwise.
pub fn start() {
    if std::process::id() != 1 {
        return;
    }
    tokio::spawn(async {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        loop {
            let wait = async {
                match sigchld.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let n = reap_orphans();
            if n > 0 {
                tracing::debug!(reaped = n, "reaped orphaned processes");
            }
        }
    });
}

/// Reaps every zombie child of envd that tokio does not own; returns how many.
pub fn reap_orphans() -> usize {
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let owned = owned.get_or_insert_default();
    owned.retain(|pid, started| start_time(*pid) == Some(*started));
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut reaped = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if owned.contains_key(&pid) {
            continue;
        }
        let Some((state, ppid)) = state_and_parent(pid) else { continue };
        if state == 'Z' && ppid == me {
            // SAFETY: waitpid on a specific pid with WNOHANG only collects
            // that zombie; no memory is passed but a valid status pointer.
            let mut status = 0;
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

/// `/proc/<pid>/stat` fields after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let f = stat_fields(pid)?;
    Some((f.first()?.chars().next()?, f.get(1)?.parse().ok()?))
}

fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owned_children_are_left_to_tokio_and_orphans_are_collected() {
        // Not pid 1 here, so no re-parenting: check the bookkeeping instead.
        let mut child = spawn(tokio::process::Command::new("true").kill_on_drop(true)).unwrap();
        let pid = child.id().unwrap() as i32;
        // Wait until it is a zombie; the reaper must not take it from tokio.
        for _ in 0..200 {
            if state_and_parent(pid).map(|s| s.0) == Some('Z') {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reap_orphans(), 0);
        assert!(child.wait().await.unwrap().success(), "tokio still gets the exit status");
        // An untracked zombie child of ours is reaped.
        let raw = std::process::Command::new("true").spawn().unwrap();
        let raw_pid = raw.id() as i32;
        for _ in 0..200 {
            if state_and_parent(raw_pid).map(|s| s.0) == Some('Z') {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(state_and_parent(raw_pid).map(|s| s.0), Some('Z'));
        assert!(reap_orphans() >= 1);
        assert!(state_and_parent(raw_pid).is_none(), "the zombie was collected");
        std::mem::forget(raw);
    }
}
