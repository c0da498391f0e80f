//! Agent tooling shared by every sandbox: `@playwright/mcp`, the agent's
//! browser, installed once into `<data>/bin/tools` (seen read-only inside
//! sandboxes at `/opt/kiln/tools`) and driven against Debian's Chromium.

use std::path::{Path, PathBuf};

use crate::template::TemplateError;

/// The pinned Playwright MCP server.
pub const PLAYWRIGHT_MCP: &str = "@playwright/mcp@0.0.83";
/// Its entry point inside a sandbox.
pub const PLAYWRIGHT_MCP_CLI: &str = "/opt/kiln/tools/node_modules/@playwright/mcp/cli.js";

/// The Playwright MCP server as an MCP server spec: headless Debian
/// Chromium, a fresh profile each time, output under `/tmp`.
pub fn playwright_mcp_args() -> Vec<String> {
    [
        PLAYWRIGHT_MCP_CLI,
        "--headless",
        "--isolated",
        "--executable-path",
        "/usr/bin/chromium",
        "--no-sandbox",
        "--output-dir",
        "/tmp/playwright-mcp",
    ]
    .map(String::from)
    .to_vec()
}

/// Installs the tools unless this version is there already.
pub async fn install(data_dir: &Path) -> Result<PathBuf, TemplateError> {
    let io = |what: &'static str| move |e: std::io::Error| TemplateError::Step { step: what, detail: e.to_string() };
    let dir = data_dir.join("bin").join("tools");
    let marker = dir.join(format!(".installed-{}", PLAYWRIGHT_MCP.replace(['/', '@'], "_")));
    if marker.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(io("creating the tools directory"))?;
    let lock = std::fs::File::create(data_dir.join("bin").join(".tools.lock")).map_err(io("locking the tools"))?;
    let lock = tokio::task::spawn_blocking(move || {
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map(|()| lock)
    })
    .await
    .map_err(|e| TemplateError::Step { step: "locking the tools", detail: e.to_string() })?
    .map_err(|e| TemplateError::Step { step: "locking the tools", detail: e.to_string() })?;
    if marker.exists() {
        return Ok(dir);
    }
    // No lifecycle scripts (this runs as root) and no browser download:
    // the MCP server drives Debian's Chromium.
    let out = tokio::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--no-package-lock",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&dir)
        .arg(PLAYWRIGHT_MCP)
        .output()
        .await
        .map_err(io("starting npm"))?;
    if !out.status.success() {
        return Err(TemplateError::Step {
            step: "npm install @playwright/mcp",
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    std::fs::write(&marker, "").map_err(io("marking the tools installed"))?;
    drop(lock);
    Ok(dir)
}
