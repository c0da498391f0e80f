//! Kill and start-up reclaim remove every process, mount, cgroup and
//! directory of a sandbox, including one whose creator died.

mod support;

use kiln_sandbox::{LocalProvider, SandboxProvider};
use kiln_types::{SandboxId, SandboxState};

#[tokio::test(flavor = "multi_thread")]
async fn kill_leaves_no_process_mount_or_directory() {
    let env = require_env!();
    let sb = support::Guard::new(env, kiln_types::SandboxSpec::app()).await;
    sb.wait_dev_ready().await;
    // Something started with setsid inside must die too.
    sb.sh("setsid sleep 1000 >/dev/null 2>&1 & exit 0").await;
    assert!(!support::leftovers(env, sb.id()).is_empty(), "sandbox should exist before kill");
    let listed = sb.provider.list().await.unwrap();
    assert!(listed.iter().any(|s| &s.id == sb.id() && s.state == SandboxState::Running));
    sb.provider.kill(sb.id()).await.unwrap();
    assert_eq!(support::leftovers(env, sb.id()), Vec::<String>::new());
    // A second kill says the sandbox is unknown.
    assert!(matches!(sb.provider.kill(sb.id()).await, Err(kiln_sandbox::ProviderError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_reclaim_removes_a_crashed_servers_sandboxes_and_orphans() {
    let env = require_env!();
    let owner = format!("crashed-{}", std::process::id());
    let crashed = LocalProvider::new(env.config.clone()).unwrap().with_owner(&owner);
    let a = crashed.create(&kiln_types::SandboxSpec::app()).await.unwrap().info.id;
    let b = crashed.create(&kiln_types::SandboxSpec::app()).await.unwrap().info.id;
    drop(crashed);

    // A creator that died between making the cgroup and the directory.
    let orphan = SandboxId::random();
    let orphan_cg = support::cgroup_dir(env, "memory", &orphan);
    std::fs::create_dir_all(&orphan_cg).unwrap();

    let restarted = LocalProvider::new(env.config.clone()).unwrap();
    let removed = restarted.reclaim(&|_, o, _| o != owner).await.unwrap();
    assert!(removed.contains(&a) && removed.contains(&b) && removed.contains(&orphan), "{removed:?}");
    for id in [&a, &b, &orphan] {
        assert_eq!(support::leftovers(env, id), Vec::<String>::new(), "{id}");
    }
}
