//! The app template: built once per spec, shared read-only by every sandbox.
//!
//! `template/` (embedded in the binary, so `kiln` runs from anywhere) is
//! installed with `npm ci` into `<data>/template/<spec hash>/`, then booted
//! once in a sandbox with that directory bound at `/app` so that Vite's
//! dependency cache is built at the path every sandbox will run it at (the
//! cache is keyed by the project's absolute path; warmed elsewhere, each boot
//! would rebuild it). Sandboxes mount the result as their overlay's lower
//! layer. The spec hash covers the template files (the lockfile included),
//! the runtime version and the sandbox spec: a change to any of them yields a
//! new directory, and pooled sandboxes of the old hash are retired.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_types::SandboxSpec;
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

use crate::local::LocalProvider;
use crate::provider::SandboxProvider;

#[derive(RustEmbed)]
#[folder = "../../template/"]
#[exclude = "node_modules/*"]
#[exclude = "dist/*"]
struct Embedded;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template source {0}: {1}")]
    Source(PathBuf, std::io::Error),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("template I/O while {context}: {source}")]
    Io { context: &'static str, source: std::io::Error },
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> TemplateError {
    move |source| TemplateError::Io { context, source }
}

/// The template sandboxes are created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub spec_hash: String,
    /// The installed, warmed app directory (an overlay's lower layer).
    pub app_dir: PathBuf,
}

fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("template")
}

/// The template currently in use, if one was built.
pub fn current(data_dir: &Path) -> Option<Current> {
    let hash = std::fs::read_to_string(root(data_dir).join("current")).ok()?;
    let hash = hash.trim().to_owned();
    let dir = root(data_dir).join(&hash);
    dir.join("ready").exists().then(|| Current { app_dir: dir.join("app"), spec_hash: hash })
}

/// The template's files, sorted by path: from `dir` if given, else the copy
/// embedded in this binary.
pub fn source_files(dir: Option<&Path>) -> Result<Vec<(String, Vec<u8>)>, TemplateError> {
    let mut files = Vec::new();
    match dir {
        None => {
            for name in Embedded::iter() {
                let f = Embedded::get(&name).expect("listed file exists");
                files.push((name.into_owned(), f.data.into_owned()));
            }
        }
        Some(d) => walk(d, d, &mut files)?,
    }
    files.sort();
    Ok(files)
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), TemplateError> {
    let rd = std::fs::read_dir(dir).map_err(|e| TemplateError::Source(dir.to_owned(), e))?;
    for e in rd {
        let e = e.map_err(|e| TemplateError::Source(dir.to_owned(), e))?;
        let p = e.path();
        let name = e.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        if p.is_dir() {
            walk(base, &p, out)?;
        } else {
            let data = std::fs::read(&p).map_err(|e| TemplateError::Source(p.clone(), e))?;
            let rel = p.strip_prefix(base).expect("under base").to_string_lossy().into_owned();
            out.push((rel, data));
        }
    }
    Ok(())
}

/// What the template runs on: Kiln's sandbox runtime, envd's API and Node.
pub fn runtime_version() -> String {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "none".into());
    format!("kiln-sandbox/{} envd-api/{} node/{node}", env!("CARGO_PKG_VERSION"), kiln_types::envd::ENVD_API_VERSION)
}

/// Hash of template files, runtime version and sandbox spec (32 hex digits).
pub fn spec_hash(files: &[(String, Vec<u8>)], runtime: &str, spec: &SandboxSpec) -> String {
    let mut h = Sha256::new();
    for (path, data) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.update(runtime.as_bytes());
    h.update(serde_json::to_vec(spec).expect("spec serializes"));
    hex::encode(&h.finalize()[..16])
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub spec_hash: String,
    /// `false` when the template was already built (a no-op).
    pub built: bool,
    pub install_ms: u64,
    pub warm_ms: u64,
    pub modules_warmed: usize,
}

/// Builds the template for `spec` unless it is built already.
pub async fn build(
    provider: &LocalProvider,
    spec: &SandboxSpec,
    source: Option<&Path>,
) -> Result<BuildReport, TemplateError> {
    let files = source_files(source)?;
    let hash = spec_hash(&files, &runtime_version(), spec);
    let data_dir = provider.config().data_dir.clone();
    let dir = root(&data_dir).join(&hash);
    std::fs::create_dir_all(root(&data_dir)).map_err(io("creating the template directory"))?;
    // Two processes (a CLI and a server, or parallel tests) may build at once.
    let _lock = lock(&root(&data_dir).join(".lock")).await?;
    if dir.join("ready").exists() {
        set_current(&data_dir, &hash)?;
        return Ok(BuildReport { spec_hash: hash, built: false, install_ms: 0, warm_ms: 0, modules_warmed: 0 });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let app = dir.join("app");
    std::fs::create_dir_all(&app).map_err(io("creating the template directory"))?;
    for (rel, data) in &files {
        let p = app.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).map_err(io("writing template files"))?;
        std::fs::write(&p, data).map_err(io("writing template files"))?;
    }

    let t = Instant::now();
    // No lifecycle scripts: this runs as root on the host.
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline", "--loglevel=error"])
        .current_dir(&app)
        .output()
        .await
        .map_err(io("starting npm (is Node installed?)"))?;
    if !out.status.success() {
        return Err(TemplateError::Step { step: "npm ci", detail: String::from_utf8_lossy(&out.stderr).into_owned() });
    }
    let install_ms = t.elapsed().as_millis() as u64;
    chown_tree(&app, provider.config().uid).map_err(io("handing the template to the sandbox uid"))?;

    let t = Instant::now();
    let modules_warmed = warm(provider, &app).await?;
    let warm_ms = t.elapsed().as_millis() as u64;
    // Nothing may write to a lower layer once sandboxes use it.
    std::fs::write(dir.join("ready"), format!("{}\n", runtime_version())).map_err(io("marking the template ready"))?;
    set_current(&data_dir, &hash)?;
    prune(provider, &hash).await;
    Ok(BuildReport { spec_hash: hash, built: true, install_ms, warm_ms, modules_warmed })
}

/// Boots the template at `/app` and fetches its module graph, which makes
/// Vite pre-bundle the dependencies into `node_modules/.vite`.
async fn warm(provider: &LocalProvider, app: &Path) -> Result<usize, TemplateError> {
    let created = provider.create_direct(app).await?;
    let client = crate::EnvdClient::new(created.endpoint.clone());
    let result = async {
        let health =
            client.wait_dev_ready(Duration::from_secs(60)).await.map_err(crate::provider::ProviderError::from)?;
        if health.dev_server.state != kiln_types::envd::DevServerState::Ready {
            return Err(TemplateError::Step { step: "starting vite", detail: health.dev_server.log_tail.join("\n") });
        }
        // The first crawl makes Vite pre-bundle dependencies; it may cut a
        // response short while it swaps the bundle in. Crawl again then.
        let mut attempt = 0;
        let stats = loop {
            attempt += 1;
            match crate::graph::fetch_module_graph(&client, kiln_types::envd::DEV_SERVER_PORT).await {
                Ok(s) if s.failed.is_empty() => break s,
                Ok(s) if attempt >= 3 => {
                    return Err(TemplateError::Step {
                        step: "warming vite",
                        detail: format!("modules failed to load: {:?}", s.failed),
                    });
                }
                Err(e) if attempt >= 3 => return Err(crate::provider::ProviderError::from(e).into()),
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        Ok(stats.modules)
    }
    .await;
    provider.kill(&created.info.id).await?;
    result
}

/// An exclusive lock held until the returned file is dropped.
async fn lock(path: &Path) -> Result<std::fs::File, TemplateError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("opening the template lock"))?;
    tokio::task::spawn_blocking(move || {
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map(|()| f).map_err(std::io::Error::from)
    })
    .await
    .map_err(|e| TemplateError::Io { context: "waiting for the template lock", source: std::io::Error::other(e) })?
    .map_err(io("waiting for the template lock"))
}

fn set_current(data_dir: &Path, hash: &str) -> Result<(), TemplateError> {
    let tmp = root(data_dir).join("current.tmp");
    std::fs::write(&tmp, hash).map_err(io("recording the current template"))?;
    std::fs::rename(tmp, root(data_dir).join("current")).map_err(io("recording the current template"))
}

/// Removes template builds no sandbox uses any more.
async fn prune(provider: &LocalProvider, keep: &str) {
    let in_use: Vec<String> = provider.list().await.unwrap_or_default().into_iter().map(|s| s.spec_hash).collect();
    let Ok(rd) = std::fs::read_dir(root(&provider.config().data_dir)) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && name != keep && !in_use.contains(&name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn chown_tree(p: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))?;
    let meta = std::fs::symlink_metadata(p)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_template_has_the_app_and_its_lockfile_but_no_node_modules() {
        let files = source_files(None).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "package.json",
            "package-lock.json",
            "vite.config.ts",
            "index.html",
            "src/main.tsx",
            "src/kiln-hmr-bridge.ts",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("node_modules")));
    }

    #[test]
    fn main_imports_the_hmr_bridge_first() {
        let files = source_files(None).unwrap();
        let main = &files.iter().find(|(n, _)| n == "src/main.tsx").unwrap().1;
        let first = String::from_utf8_lossy(main).lines().next().unwrap().to_owned();
        assert_eq!(first, "import \"./kiln-hmr-bridge\";");
    }

    #[test]
    fn spec_hash_changes_with_files_runtime_and_spec() {
        let files = vec![("a".to_owned(), b"1".to_vec())];
        let spec = SandboxSpec::app();
        let h = spec_hash(&files, "r1", &spec);
        assert_eq!(h.len(), 32);
        assert_eq!(h, spec_hash(&files, "r1", &spec));
        assert_ne!(h, spec_hash(&[("a".to_owned(), b"2".to_vec())], "r1", &spec));
        assert_ne!(h, spec_hash(&files, "r2", &spec));
        let mut other = spec.clone();
        other.limits.memory_mib += 1;
        assert_ne!(h, spec_hash(&files, "r1", &other));
        // A file's name and content cannot be shifted into each other.
        assert_ne!(
            spec_hash(&[("ab".into(), b"c".to_vec())], "r", &spec),
            spec_hash(&[("a".into(), b"bc".to_vec())], "r", &spec)
        );
    }
}
