//! The committed template lockfile installs with `npm ci` into an empty
//! directory: no "Missing: … from lock file" for optional platform packages,
//! and the Linux x86_64 native packages Vite and Tailwind need are there.

use std::process::Command;

#[test]
fn npm_ci_installs_the_embedded_template() {
    if Command::new("npm").arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and npm is not installed");
        eprintln!("SKIPPED: npm is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (rel, data) in kiln_sandbox::template::source_files(None).unwrap() {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "npm ci failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let nm = dir.path().join("node_modules");
    for must in [
        "vite/bin/vite.js",
        "@tailwindcss/vite",
        "@tailwindcss/oxide-linux-x64-gnu",
        "react-dom",
        "@vitejs/plugin-react",
    ] {
        assert!(nm.join(must).exists(), "{must} missing after npm ci");
    }
    // Platform stubs stay stubs: nothing for another OS was installed.
    assert!(!nm.join("@tailwindcss/oxide-darwin-arm64").exists());
}
