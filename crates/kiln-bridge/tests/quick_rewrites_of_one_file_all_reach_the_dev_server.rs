//! An agent (or a restore) often rewrites one file several times in quick
//! succession. Vite's watcher drops a second change of a file within 50 ms,
//! so envd spaces writes of one file; every rewrite must reach the preview.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

#[tokio::test(flavor = "multi_thread")]
async fn every_rewrite_is_served() {
    let env = require_env!();
    let g = common::sandbox(env).await;
    for i in 0..8 {
        let heading = format!("Rewrite number {i}");
        let src = format!("export default function App() {{ return <h1>{heading}</h1> }}\n");
        let t = std::time::Instant::now();
        g.client().write_file("src/App.tsx", src).await.unwrap();
        let mut seen = false;
        for _ in 0..50 {
            let (status, body) = kiln_sandbox::graph::proxy_get(&g.client(), 5173, "/src/App.tsx").await.unwrap();
            if status == 200 && String::from_utf8_lossy(&body).contains(&heading) {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(seen, "rewrite {i} never reached the dev server");
        // Spacing only delays the write that follows too closely.
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
