//! Egress is off by default; when a spec turns it on, the sandbox reaches
//! the package registry through pasta, still as an unprivileged uid with no
//! capabilities, and still cannot reach a service on the host's loopback.

mod support;

use std::time::Duration;

use kiln_types::Limits;

const FETCH: &str = "node -e \"fetch('https://registry.npmjs.org/is-number').then(r=>console.log('status',r.status)).catch(e=>console.log('error',(e.cause&&e.cause.code)||e.message))\"";

#[tokio::test(flavor = "multi_thread")]
async fn registry_reachable_only_with_egress_and_host_loopback_never() {
    let env = require_env!();
    if std::process::Command::new("pasta").arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and pasta (apt: passt) is not installed");
        eprintln!("SKIPPED: pasta is not installed (apt-get install passt)");
        return;
    }
    let closed = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let (_, out, _) = closed.sh(FETCH).await;
    assert!(out.starts_with("error"), "a sandbox without egress reached the registry: {out}");

    let mut spec = support::spec(Limits::default(), false);
    spec.egress = true;
    let open = support::Guard::new(env, spec).await;
    let (_, out, err) = open.sh(FETCH).await;
    assert_eq!(out.trim(), "status 200", "stderr: {err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        "node -e \"require('net').connect({port},'127.0.0.1').on('connect',()=>{{console.log('CONNECTED');process.exit(0)}}).on('error',e=>{{console.log(e.code);process.exit(3)}})\""
    );
    let (code, out, _) = open.sh(&probe).await;
    assert_eq!((code, out.trim()), (3, "ECONNREFUSED"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.accept()).await.is_err(),
        "host loopback reached"
    );

    let (_, out, _) = open.sh("grep CapEff /proc/self/status").await;
    assert!(out.contains("0000000000000000"), "{out}");
    // Files it writes belong to the sandbox uid on the host, not root.
    open.client().write_file("owned.txt", "x").await.unwrap();
    let upper = env.data_dir.join("sandboxes").join(open.id().as_str()).join("upper/owned.txt");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(upper).unwrap()), 61000);
    // And kill cleans up pasta with everything else.
    open.provider.kill_blocking(open.id()).unwrap();
    assert_eq!(support::leftovers(env, open.id()), Vec::<String>::new());
}
