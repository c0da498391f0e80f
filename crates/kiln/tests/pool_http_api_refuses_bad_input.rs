//! The pool's HTTP API on a real server: the admin token (missing, wrong,
//! right) and bad input (targets, JSON, session keys, oversize bodies) get
//! clear 4xx answers and change nothing.

mod server;

use server::{Server, call, status};

const TOKEN: &str = "test-admin-token-0123456789";

#[test]
fn admin_token_and_bad_targets() {
    if !server::prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        dir.path(),
        &[("KILN_POOL_TARGET_SIZE", "0"), ("KILN_POOL_MAX_SIZE", "4"), ("KILN_POOL_ADMIN_TOKEN", TOKEN)],
    );
    s.wait_up();
    let pre = format!("{}/api/vm/prewarm", s.url);

    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        for (method, url) in [
            ("GET", pre.clone()),
            ("POST", pre.clone()),
            ("POST", format!("{}/api/vm/drain", s.url)),
            ("POST", format!("{}/api/vm/claim", s.url)),
        ] {
            let (code, body) = call(method, &url, None, token).unwrap();
            assert_eq!(code, 401, "{method} {url} with {token:?}: {body}");
            assert!(body.contains("KILN_POOL_ADMIN_TOKEN"), "{body}");
        }
    }
    let before = status(&s, Some(TOKEN));
    assert_eq!(
        (before["ready"].as_u64(), before["warming"].as_u64(), before["target"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(before["specHash"].as_str().unwrap().len(), 32);

    for (body, needle) in [
        (r#"{"target": -1}"#, "from 0 to 4"),
        (r#"{"target": 5}"#, "configured maximum"),
        (r#"{"target": 18446744073709551616}"#, "from 0 to 4"),
        (r#"{"target": "2"}"#, "from 0 to 4"),
        (r#"{"target": 1.5}"#, "from 0 to 4"),
        (r#"{"target": 2"#, "JSON"),
        (r#"{"tagret": 2}"#, "unknown field"),
        ("target=2", "JSON"),
    ] {
        let (code, resp) = call("POST", &pre, Some(body), Some(TOKEN)).unwrap();
        assert_eq!(code, 400, "{body}: {resp}");
        assert!(resp.contains(needle), "{body}: {resp}");
    }
    let huge = format!(r#"{{"target": 1, "pad": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(call("POST", &pre, Some(&huge), Some(TOKEN)).unwrap().0, 413);

    let claim = format!("{}/api/vm/claim", s.url);
    for body in [r#"{"sessionKey": "not-a-uuid"}"#, r#"{"sessionKey": "../../etc"}"#, "{", r#"{"session": "x"}"#] {
        let (code, resp) = call("POST", &claim, Some(body), Some(TOKEN)).unwrap();
        assert_eq!(code, 400, "{body}: {resp}");
    }

    // Nothing changed: no rows, no sandboxes.
    assert_eq!(status(&s, Some(TOKEN)), before);
    assert_eq!(std::fs::read_dir(dir.path().join("sandboxes")).unwrap().count(), 0);

    // The right token and a good body work; metrics are exported.
    let (code, resp) = call("POST", &pre, Some(r#"{"target": 0}"#), Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!((v["spawned"].as_u64(), v["target"].as_u64()), (Some(0), Some(0)));
    let (code, metrics) = server::get(&format!("{}/metrics", s.url), None).unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("kiln_pool_ready"), "{metrics}");
    s.sigkill();
    s.destroy();
}
