//! The envd file API inside a real sandbox: traversal, absolute paths,
//! symlink escapes, oversize bodies and a bad token are 4xx, and nothing is
//! written outside /app.

mod support;

use kiln_sandbox::EnvdClient;
use kiln_types::Limits;

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_bodies_and_tokens_are_refused() {
    let env = require_env!();
    let sb = support::Guard::new(env, support::spec(Limits::default(), false)).await;
    let c = sb.client();
    sb.sh("ln -s /tmp /app/tmp-link; ln -s ../../tmp /app/rel-link; mkdir -p /tmp/probe").await;

    for path in [
        "../escape.txt",
        "src/../../escape.txt",
        "/tmp/escape.txt",
        "tmp-link/escape.txt",
        "rel-link/escape.txt",
        "tmp-link/new/deep.txt",
    ] {
        let err = c.write_file(path, "x").await.expect_err(path);
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{path}: {err}");
        let err = c.read_file(path).await.expect_err(path);
        assert!(matches!(err.status().map(|s| s.as_u16()), Some(400 | 404)), "{path}: {err}");
    }
    let err = c.read_file("/etc/passwd").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    let err = c.read_file("tmp-link/probe").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));

    let big = vec![b'a'; kiln_types::envd::MAX_FILE_BYTES + 1];
    let err = c.write_file("big.bin", big).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(413));

    let wrong = EnvdClient::new(kiln_sandbox::Endpoint { socket: c.socket().to_owned(), token: "0".repeat(64) });
    let err = wrong.write_file("ok.txt", "x").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));

    // Nothing landed outside /app, nor the refused files inside it.
    let (_, out, _) = sb.sh("ls -A /tmp /tmp/probe; ls /app").await;
    assert!(!out.contains("escape"), "{out}");
    assert!(!out.contains("big.bin") && !out.contains("ok.txt"), "{out}");
    let upper = env.data_dir.join("sandboxes").join(sb.id().as_str()).join("upper");
    let names: Vec<String> =
        std::fs::read_dir(&upper).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["rel-link", "tmp-link"]);

    // A good write still works and lands in the sandbox's upper layer only.
    c.write_file("src/new/Thing.tsx", "export {}").await.unwrap();
    assert!(upper.join("src/new/Thing.tsx").exists());
}
