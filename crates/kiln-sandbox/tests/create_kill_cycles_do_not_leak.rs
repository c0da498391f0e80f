//! 20 create/kill cycles, 4 at a time, leave nothing behind.

mod support;

use kiln_sandbox::SandboxProvider;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_cycles_four_at_a_time() {
    let env = require_env!();
    let p = std::sync::Arc::new(env.provider());
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mut ids = Vec::new();
    for _round in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let c = p.create(&kiln_types::SandboxSpec::app()).await.unwrap();
                let client = kiln_sandbox::EnvdClient::new(c.endpoint.clone());
                let h = client.wait_dev_ready(std::time::Duration::from_secs(60)).await.unwrap();
                assert_eq!(h.dev_server.state, kiln_types::envd::DevServerState::Ready);
                p.kill(&c.info.id).await.unwrap();
                c.info.id
            }));
        }
        for t in tasks {
            ids.push(t.await.unwrap());
        }
    }
    assert_eq!(ids.len(), 20);
    for id in &ids {
        assert_eq!(support::leftovers(env, id), Vec::<String>::new(), "{id}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(support::zombie_children(), Vec::<String>::new(), "sandbox monitors were not reaped");
    let fds_after = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(fds_after <= fds_before + 4, "file descriptors leaked: {fds_before} → {fds_after}");
}
