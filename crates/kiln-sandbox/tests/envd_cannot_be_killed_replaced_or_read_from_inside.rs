//! envd is the host's only door into a sandbox, and everything else in the
//! sandbox runs as the same uid. Attacked from inside as the agent's code
//! would (a command, an npm package), envd can be neither killed, stopped,
//! replaced, re-bound, ptraced nor read: it is the pid namespace's init
//! (the kernel drops signals to it from inside), it is non-dumpable (no
//! ptrace, no `/proc/1/mem`, `environ` or `fd`), and its socket was bound by
//! the host in a directory the sandbox never sees. The same holds in an
//! egress sandbox, which also cannot make a user namespace, and whose
//! recorded init pid is the sandbox's own.

mod support;

use kiln_types::Limits;

/// x86_64 and aarch64 syscall numbers for ptrace, called through perl
/// (Debian's perl-base is always there).
fn ptrace_attach_script() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "perl -e '$r = syscall(117, 16, 1, 0, 0); print $r == -1 ? \"refused $!\" : \"attached\"'"
    } else {
        "perl -e '$r = syscall(101, 16, 1, 0, 0); print $r == -1 ? \"refused $!\" : \"attached\"'"
    }
}

async fn assert_envd_holds(sb: &support::Guard) {
    let before = sb.client().health().await.expect("envd answers");

    // Not killable, not stoppable, by pid or by broadcast.
    let (_, out, _) =
        sb.sh("kill -KILL 1; kill -STOP 1; kill -TERM 1; kill -KILL -1 2>/dev/null; sleep 0.3; cat /proc/1/comm").await;
    assert_eq!(out.trim(), "kiln-envd", "{out}");
    let after = sb.client().health().await.expect("envd still answers after the kill attempts");
    assert!(after.uptime_ms >= before.uptime_ms, "envd restarted: {before:?} → {after:?}");

    // Not traceable, its memory and environment not readable.
    let (_, out, _) = sb.sh(ptrace_attach_script()).await;
    assert!(out.starts_with("refused"), "ptrace of envd: {out}");
    for f in ["mem", "environ", "fd/0", "maps"] {
        let (code, out, _) = sb.sh(&format!("head -c 64 /proc/1/{f} >/dev/null 2>&1 && echo READ")).await;
        assert!(code != 0 && !out.contains("READ"), "/proc/1/{f} is readable from inside");
    }
    // (The token is given to grep in two halves on stdin, so no command line
    // inside holds it whole.) A file written with it is the control that
    // shows the search finds it where it is.
    sb.client().write_file("kiln-control.txt", sb.created.endpoint.token.clone()).await.unwrap();
    let (t1, t2) = sb.created.endpoint.token.split_at(16);
    let (_, out, _) = sb
        .sh(&format!(
            "printf '%s%s\\n' '{t1}' '{t2}' | grep -rlsF -f - /proc/[0-9]*/environ /proc/[0-9]*/cmdline /tmp /app 2>/dev/null; true"
        ))
        .await;
    assert_eq!(out.trim(), "/app/kiln-control.txt", "the envd token is readable inside at {out}");
    sb.client().delete_file("kiln-control.txt", false).await.unwrap();

    // Not replaceable: the socket's directory is not there, and nothing can be
    // bound where it was.
    let (code, out, _) = sb.sh("ls -a /run/kiln 2>&1; mkdir -p /run/kiln 2>&1").await;
    assert_ne!(code, 0, "{out}");
    let (_, out, _) = sb.sh("node -e \"require('net').createServer().listen('/run/kiln/envd.sock',()=>console.log('BOUND')).on('error',e=>console.log(e.code))\"").await;
    assert_ne!(out.trim(), "BOUND");
    // The host still reaches the real envd.
    sb.client().health().await.expect("envd answers the host");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_uid_cannot_kill_replace_trace_or_read_envd() {
    let env = require_env!();
    // A descriptor the host process holds without close-on-exec (as a library
    // might leave one) must not reach the sandbox.
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let leaked = std::fs::read_link(format!("/proc/self/fd/{}", fds[0])).unwrap();
    let sb = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let meta_path = env.data_dir.join("sandboxes").join(sb.id().as_str()).join("meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta_path).unwrap()).unwrap();
    let init = meta["init"][0].as_i64().unwrap();
    for e in std::fs::read_dir(format!("/proc/{init}/fd")).unwrap() {
        let target = std::fs::read_link(e.unwrap().path()).unwrap_or_default();
        assert_ne!(target, leaked, "the host's pipe reached envd");
    }
    let (_, out, _) = sb.sh("ls /proc/self/fd | wc -l").await;
    assert_eq!(out.trim(), "4", "a command inside holds more than stdin, stdout, stderr and ls's own");
    let (_, out, _) = sb.sh("id -u; cat /proc/1/comm; grep CapEff /proc/self/status").await;
    assert!(out.starts_with("61000\nkiln-envd\n") && out.contains("0000000000000000"), "{out}");
    assert_envd_holds(&sb).await;
    // Orphans are reaped by envd (pid 1): a double-forked child leaves no zombie.
    let (_, _, _) = sb.sh("(sh -c 'sleep 0.2' &) ; true").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, out, _) = sb.sh("grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l").await;
    assert_eq!(out.trim(), "0", "zombies left in the sandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_sandbox_has_no_user_namespaces_and_records_its_own_init() {
    let env = require_env!();
    if std::process::Command::new("pasta").arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and pasta (apt: passt) is not installed");
        eprintln!("SKIPPED: pasta is not installed (apt-get install passt)");
        return;
    }
    for egress in [false, true] {
        let mut spec = support::spec(Limits::default(), false);
        spec.egress = egress;
        let sb = support::Guard::new(env, spec).await;
        let (code, out, err) = sb.sh("unshare -U true && echo NESTED").await;
        assert!(code != 0 && !out.contains("NESTED"), "egress={egress}: a nested user namespace was made: {out} {err}");
        let (_, out, _) = sb.sh("id -u; grep CapEff /proc/self/status").await;
        assert!(out.starts_with("61000\n") && out.contains("0000000000000000"), "egress={egress}: {out}");

        // The recorded init is the sandbox's envd: pid 1 of the innermost pid
        // namespace, and a member of the sandbox's own cgroup.
        let meta_path = env.data_dir.join("sandboxes").join(sb.id().as_str()).join("meta.json");
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta_path).unwrap()).unwrap();
        let pid = meta["init"][0].as_i64().expect("init pid recorded");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(nspid.trim_end().ends_with("\t1") && nspid.split_whitespace().count() >= 3, "egress={egress}: {nspid}");
        assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "kiln-envd");
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroup.contains(sb.id().as_str()),
            "egress={egress}: init {pid} is not in the sandbox's cgroup: {cgroup}"
        );
        assert_envd_holds(&sb).await;
    }
}
