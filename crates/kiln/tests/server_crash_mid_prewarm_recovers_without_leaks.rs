//! SIGKILL the server while prewarms are in flight, restart it: within 10 s
//! the pool is back at target, and nothing of the killed server's sandboxes
//! is left — no process, mount, cgroup or directory.

mod server;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiln_types::SandboxId;
use server::{Server, status};

fn sandboxes_on_disk(dir: &std::path::Path) -> HashSet<SandboxId> {
    std::fs::read_dir(dir.join("sandboxes"))
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn sigkill_during_prewarm_then_restart() {
    if !server::prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[("KILN_POOL_TARGET_SIZE", "3")]);
    s.wait_up();
    let st = status(&s, None);
    assert!(st["warming"].as_u64().unwrap() > 0, "no prewarm in flight to interrupt: {st}");
    // Let the prewarms get some way in (sandboxes exist, Vite starting).
    std::thread::sleep(Duration::from_millis(150));
    s.sigkill();
    let orphans = sandboxes_on_disk(dir.path());
    assert!(!orphans.is_empty(), "the killed server had created no sandbox yet");

    s.restart();
    let t = Instant::now();
    s.wait_up();
    loop {
        let st = status(&s, None);
        if st["ready"] == 3 && st["warming"] == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "pool not back at target 10 s after restart: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &orphans {
        let rest = support::leftovers_in(dir.path(), id);
        // An orphan that finished warming before the kill may have been kept
        // as a ready row: then it is one of the three, fully alive.
        if !rest.is_empty() {
            assert!(rest.iter().any(|l| l.starts_with("process")), "{id} half-removed: {rest:?}");
        }
    }
    let now = sandboxes_on_disk(dir.path());
    assert_eq!(now.len(), 3, "exactly the three pool sandboxes remain: {now:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = mounts.lines().filter(|l| l.contains(&dir.path().display().to_string())).count();
    assert_eq!(ours, 3, "one overlay per live sandbox");
    s.destroy();
    for id in now.iter().chain(orphans.iter()) {
        assert_eq!(support::leftovers_in(dir.path(), id), Vec::<String>::new());
    }
}
