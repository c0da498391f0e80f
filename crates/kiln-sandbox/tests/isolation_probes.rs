//! Probes from inside a sandbox: the host's files, other sandboxes, the
//! host's loopback and processes are out of reach; the pids and memory limits
//! stop a fork bomb and a memory hog without touching the host or a neighbour.

mod support;

use std::time::Duration;

use kiln_sandbox::SandboxProvider;
use kiln_types::Limits;

#[tokio::test(flavor = "multi_thread")]
async fn host_paths_other_sandboxes_and_host_processes_are_invisible() {
    let env = require_env!();
    let a = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let b = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    b.client().write_file("secret.txt", "b's secret").await.unwrap();

    let data = env.data_dir.display().to_string();
    let b_app = env.data_dir.join("sandboxes").join(b.id().as_str()).join("app/secret.txt");
    for path in ["/root", "/work", "/home", "/var", &data, &b_app.display().to_string(), "/etc/shadow"] {
        let (code, out, _) = a.sh(&format!("ls -a {path} || cat {path}")).await;
        assert_ne!(code, 0, "{path} is visible inside: {out}");
    }
    let (code, out, _) = a.sh("grep -rl --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=node_modules \"b's secret\" / 2>/dev/null; true").await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "", "another sandbox's file found from inside");

    // Its own pid namespace: a handful of processes, pid 1 is envd itself.
    let (_, out, _) = a.sh("ls /proc | grep -cE '^[0-9]+$'; cat /proc/1/comm").await;
    let mut lines = out.lines();
    let count: usize = lines.next().unwrap().parse().unwrap();
    assert!(count < 20, "{count} processes visible: the host's /proc leaks in");
    assert_eq!(lines.next(), Some("kiln-envd"));

    // Runs as the unprivileged uid with no capabilities.
    let (_, out, _) = a.sh("id -u; grep CapEff /proc/self/status").await;
    assert!(out.starts_with("61000\n"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_loopback_is_unreachable() {
    let env = require_env!();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sb = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let script = format!(
        "node -e \"require('net').connect({port},'127.0.0.1').on('connect',()=>{{console.log('CONNECTED');process.exit(0)}}).on('error',e=>{{console.log(e.code);process.exit(3)}})\""
    );
    let (code, out, err) = sb.sh(&script).await;
    assert_eq!(code, 3, "stdout {out} stderr {err}");
    assert_eq!(out.trim(), "ECONNREFUSED");
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the host listener received a connection from the sandbox");
    let (_, out, _) = sb.sh("cat /proc/net/dev | grep -c ':'").await;
    assert_eq!(out.trim(), "1", "only loopback should exist");
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_is_stopped_by_the_pids_limit() {
    let env = require_env!();
    let limits = Limits { pids: 64, ..Limits::default() };
    let sb = support::Guard::new(env, support::spec(limits, false)).await;
    let neighbour = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let (_code, _, _) = sb.sh("f(){ f | f & }; f; sleep 2; exit 0").await;
    let cg = support::cgroup_dir(env, "pids", sb.id());
    let events = std::fs::read_to_string(cg.join("pids.events")).unwrap();
    let refused: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(refused > 0, "the pids limit never refused a fork: {events}");
    let current: u64 = std::fs::read_to_string(cg.join("pids.current")).unwrap().trim().parse().unwrap();
    assert!(current <= 64, "{current} tasks over a limit of 64");
    // The host and the neighbour are fine.
    assert!(std::process::Command::new("true").status().unwrap().success());
    assert_eq!(neighbour.sh("echo ok").await.1.trim(), "ok");
    // And kill still cleans a sandbox full of fork-bomb processes.
    sb.provider.kill(sb.id()).await.unwrap();
    assert_eq!(support::leftovers(env, sb.id()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_killed_inside_its_own_sandbox_only() {
    let env = require_env!();
    let limits = Limits { memory_mib: 256, ..Limits::default() };
    let sb = support::Guard::new(env, support::spec(limits, false)).await;
    let neighbour = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let (code, _, _) = sb.sh("node -e 'const a=[];for(;;)a.push(Buffer.alloc(1<<20,1))'").await;
    assert_eq!(code, 128 + 9, "the hog should die of SIGKILL (OOM)");
    let oom = std::fs::read_to_string(support::cgroup_dir(env, "memory", sb.id()).join("memory.oom_control")).unwrap();
    let kills: u64 = oom.lines().find_map(|l| l.strip_prefix("oom_kill ")).unwrap().parse().unwrap();
    assert!(kills >= 1, "{oom}");
    // envd survived in the hog's sandbox; the neighbour never noticed.
    sb.client().health().await.expect("envd still answers after the OOM kill");
    assert_eq!(neighbour.sh("echo ok").await.1.trim(), "ok");
}
