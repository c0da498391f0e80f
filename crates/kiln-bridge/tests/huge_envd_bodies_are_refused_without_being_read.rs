//! A fake envd answers JSON calls with a 1 GiB body, declared in
//! `content-length` or not. The client refuses a declared one before reading
//! a byte of it and stops an undeclared one at the call's cap (1 MiB for a
//! JSON answer, envd's 16 MiB file limit for a file read), so neither the
//! time nor the memory of a call depends on what envd chooses to send.

#[path = "support/fake_envd.rs"]
mod fake_envd;

use std::time::{Duration, Instant};

use fake_envd::{Behaviour, FakeEnvd};
use kiln_sandbox::envd_client::ClientError;
use kiln_sandbox::envd_client::limits::MAX_JSON_BODY;
use kiln_types::envd::MAX_FILE_BYTES;

fn too_large(r: Result<impl std::fmt::Debug, ClientError>, limit: usize) {
    match r {
        Err(ClientError::TooLarge { limit: l, .. }) => assert_eq!(l, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_json_answer_is_refused_without_being_read_whole() {
    for declared in [true, false] {
        let envd = FakeEnvd::start(Behaviour::HugeBody { declared });
        let t = Instant::now();
        too_large(envd.client().health().await, MAX_JSON_BODY);
        too_large(envd.client().agent_status().await, MAX_JSON_BODY);
        too_large(envd.client().read_file("src/App.tsx").await, MAX_FILE_BYTES);
        // Give the fake a moment to notice the hang-ups.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = envd.bytes_sent();
        eprintln!("declared={declared}: {:?}, envd got {} KiB out", t.elapsed(), sent / 1024);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(sent < 3 * (MAX_FILE_BYTES as u64 + (8 << 20)), "envd wrote {} MiB", sent >> 20);
    }
}
