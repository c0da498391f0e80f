//! The local backend: Linux namespaces (bubblewrap) + overlayfs + cgroups.
//!
//! A sandbox is a directory `<data>/sandboxes/<id>/` holding its overlay
//! (`upper/`, `work/`, mounted at `app/`), the directory envd's socket lives
//! in (`run/`, seen inside as `/run/kiln`), envd's log and `meta.json`. The
//! `sandboxes/` directory is mode 0700: only Kiln (root) can open the
//! sockets. Inside, everything runs as one unprivileged uid with no
//! capabilities on the host.

pub mod bwrap;
pub(crate) mod meta;
mod spawn;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kiln_types::{CpuPriority, SandboxId, SandboxInfo, SandboxSpec, SandboxState};
pub use meta::{Dirs, Meta, now_ms};

use crate::cgroup::{Layout, SandboxCgroup};
use crate::envd_client::{Endpoint, EnvdClient};
use crate::provider::{Created, ProviderError, SandboxProvider};
use crate::sys::{HostSys, Sys};
use crate::template;

/// How long `create` waits for envd to answer.
const ENVD_TIMEOUT: Duration = Duration::from_secs(15);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    /// The `kiln-envd` binary on the host (bind-mounted read-only).
    pub envd_bin: PathBuf,
    /// Host uid (and gid) every sandbox process runs as.
    pub uid: u32,
    /// Extra host paths to bind read-only (e.g. Node outside /usr).
    pub extra_ro: Vec<PathBuf>,
    /// Programs (agents) copied into `<data>/bin`, which sandboxes see
    /// read-only at `/opt/kiln/<file name>`.
    pub extra_bins: Vec<PathBuf>,
}

/// The default unprivileged uid for sandbox processes: high enough not to
/// collide with real accounts, below the 65534 `nobody`.
pub const DEFAULT_SANDBOX_UID: u32 = 61000;

pub struct LocalProvider {
    cfg: LocalConfig,
    sys: Arc<dyn Sys>,
    layout: Layout,
    /// Recorded on every sandbox this provider creates, so a server's
    /// start-up reclaim can tell its own leftovers from operator sandboxes.
    owner: String,
}

/// What `/app` is built from.
enum AppSource<'a> {
    /// The built template under a fresh overlay (every app sandbox).
    Overlay { lower: &'a Path },
    /// A directory bound read-write as is (warming the template itself).
    Direct { dir: &'a Path },
}

impl LocalProvider {
    pub fn new(cfg: LocalConfig) -> Result<LocalProvider, ProviderError> {
        let sys: Arc<dyn Sys> = Arc::new(HostSys);
        let layout = Layout::detect(sys.as_ref());
        let mut p = LocalProvider { cfg, sys, layout, owner: "cli".into() };
        let dir = p.sandboxes_dir();
        std::fs::create_dir_all(&dir).map_err(ProviderError::io("creating the sandboxes directory"))?;
        restrict(&dir, p.cfg.uid).map_err(ProviderError::io("restricting the sandboxes directory"))?;
        p.cfg.envd_bin = install_bin(&p.cfg.data_dir, &p.cfg.envd_bin)
            .map_err(ProviderError::io("installing kiln-envd into the data directory"))?;
        for b in &p.cfg.extra_bins {
            install_bin(&p.cfg.data_dir, b)
                .map_err(ProviderError::io(format!("installing {} into the data directory", b.display())))?;
        }
        Ok(p)
    }

    /// Labels sandboxes created from now on with `owner`.
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = owner.to_owned();
        self
    }

    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn sandboxes_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("sandboxes")
    }

    fn dirs(&self, id: &SandboxId) -> Dirs {
        Dirs::new(&self.sandboxes_dir(), id)
    }

    /// Host path of a sandbox's `/app` (the overlay's merged view).
    pub fn app_dir(&self, id: &SandboxId) -> PathBuf {
        self.dirs(id).app()
    }

    async fn create_from(
        &self,
        id: SandboxId,
        spec: &SandboxSpec,
        source: AppSource<'_>,
        spec_hash: &str,
    ) -> Result<Created, ProviderError> {
        let dirs = self.dirs(&id);
        let uid = self.cfg.uid;
        let token = random_token();
        let mut meta = Meta {
            id: id.clone(),
            state: SandboxState::Creating,
            spec: spec.clone(),
            spec_hash: spec_hash.to_owned(),
            created_at_ms: meta::now_ms(),
            token: token.clone(),
            uid,
            owner: self.owner.clone(),
            cgroup: SandboxCgroup::default(),
            init: None,
        };
        let result = self.boot(&dirs, &mut meta, source).await;
        match result {
            Ok(()) => Ok(Created {
                info: info_of(&meta, SandboxState::Running),
                endpoint: Endpoint { socket: dirs.socket(), token },
            }),
            Err(e) => {
                let log = std::fs::read_to_string(dirs.log()).unwrap_or_default();
                let _ = self.destroy(&dirs, Some(&meta));
                let reason = format!("{e}; envd log: {}", tail(&log, 2000));
                Err(ProviderError::Boot { id, reason })
            }
        }
    }

    async fn boot(&self, dirs: &Dirs, meta: &mut Meta, source: AppSource<'_>) -> Result<(), ProviderError> {
        let sys = self.sys.as_ref();
        let uid = meta.uid;
        std::fs::create_dir(&dirs.root).map_err(ProviderError::io("creating the sandbox directory"))?;
        restrict(&dirs.root, uid).map_err(ProviderError::io("restricting the sandbox directory"))?;
        for d in [dirs.run(), dirs.app()] {
            std::fs::create_dir(&d).map_err(ProviderError::io("creating sandbox directories"))?;
        }
        std::fs::create_dir(dirs.host()).map_err(ProviderError::io("creating the gateway directory"))?;
        std::os::unix::fs::chown(dirs.host(), Some(0), Some(uid))
            .and_then(|()| set_mode(&dirs.host(), 0o750))
            .map_err(ProviderError::io("restricting the gateway directory"))?;
        // envd's socket: root-only directory, bound here and handed to envd
        // as a descriptor. Nothing in the sandbox can reach this path.
        set_mode(&dirs.run(), 0o700).map_err(ProviderError::io("restricting the run directory"))?;
        let listener = std::os::unix::net::UnixListener::bind(dirs.socket())
            .map_err(ProviderError::io("binding envd's socket"))?;
        set_mode(&dirs.socket(), 0o600).map_err(ProviderError::io("restricting envd's socket"))?;
        meta.save(&dirs.meta()).map_err(ProviderError::io("writing sandbox metadata"))?;

        let app_dir = match source {
            AppSource::Overlay { lower } => {
                for d in [dirs.upper(), dirs.work()] {
                    std::fs::create_dir(&d).map_err(ProviderError::io("creating overlay directories"))?;
                }
                // The merged root takes its owner from the upper directory.
                chown(&dirs.upper(), uid).map_err(ProviderError::io("handing the overlay to the sandbox uid"))?;
                sys.mount_overlay(lower, &dirs.upper(), &dirs.work(), &dirs.app())
                    .map_err(ProviderError::io("mounting the overlay"))?;
                dirs.app()
            }
            AppSource::Direct { dir } => dir.to_owned(),
        };

        meta.cgroup = self
            .layout
            .create(sys, &crate::cgroup::parent_for(&self.cfg.data_dir), meta.id.as_str(), &meta.spec.limits)
            .map_err(ProviderError::io("creating the sandbox cgroups"))?;
        meta.save(&dirs.meta()).map_err(ProviderError::io("writing sandbox metadata"))?;

        let plan = bwrap::BwrapPlan::for_host(
            meta.id.as_str(),
            uid,
            self.cfg.extra_ro.clone(),
            meta.spec.dev_server,
            meta.spec.egress,
        );
        let plan = bwrap::BwrapPlan { agent: meta.spec.agent.clone(), ..plan };
        let init = spawn::spawn(spawn::SpawnInput {
            plan: &plan,
            app_dir: &app_dir,
            listener: listener.into(),
            bin_dir: self.cfg.envd_bin.parent().expect("envd is installed in <data>/bin"),
            host_dir: &dirs.host(),
            log: &dirs.log(),
            procs_files: meta.cgroup.procs_files(),
            token: &meta.token,
        })
        .await
        .map_err(ProviderError::io("starting bubblewrap"))?;
        let init = self.verified_init(meta, init)?;
        meta.init = meta::start_time(init).map(|t| (init, t));
        meta.state = SandboxState::Running;
        meta.save(&dirs.meta()).map_err(ProviderError::io("writing sandbox metadata"))?;

        let client = EnvdClient::new(Endpoint { socket: dirs.socket(), token: meta.token.clone() });
        wait_for_envd(&client, init, meta.init.map(|(_, t)| t)).await
    }

    /// The host pid of the sandbox's init (envd, pid 1 of the sandbox's pid
    /// namespace), found from the host side: the pid bwrap reports is in
    /// bwrap's own pid namespace, which with egress is not the host's. The
    /// only signal Kiln ever sends by pid goes to the process found here.
    fn verified_init(&self, meta: &Meta, reported: i32) -> Result<i32, ProviderError> {
        let members = meta.cgroup.pids(self.sys.as_ref());
        let found = if members.is_empty() {
            // No usable cgroups: trust bwrap's report only where it is a
            // host pid that is some pid namespace's init.
            meta::find_init(&[reported])
        } else {
            meta::find_init(&members)
        };
        found.ok_or_else(|| ProviderError::Boot {
            id: meta.id.clone(),
            reason: format!("no process of the sandbox is its pid namespace's init (bwrap reported pid {reported})"),
        })
    }

    /// Kills processes, unmounts, removes cgroups and the directory. Used by
    /// `kill`, by a failed `create` and by reclaim; safe to repeat.
    fn destroy(&self, dirs: &Dirs, meta: Option<&Meta>) -> Result<(), ProviderError> {
        let sys = self.sys.as_ref();
        if let Some(meta) = meta {
            let killed = meta.cgroup.kill_all(sys, KILL_TIMEOUT);
            // The namespace's init dying takes every process in it along;
            // this also covers hosts with no usable cgroups.
            if let Some((pid, started)) = meta.init {
                let _ = sys.kill_verified(pid, started, libc::SIGKILL);
            }
            killed.map_err(ProviderError::io(format!("killing sandbox {}", meta.id)))?;
            meta.cgroup
                .remove(sys, KILL_TIMEOUT)
                .map_err(ProviderError::io(format!("removing the cgroups of sandbox {}", meta.id)))?;
        }
        if is_mount_point(&dirs.app()) {
            sys.unmount(&dirs.app()).map_err(ProviderError::io("unmounting the overlay"))?;
        }
        sys.remove_tree(&dirs.root).map_err(ProviderError::io("removing the sandbox directory"))?;
        Ok(())
    }

    /// Synchronous kill, for drop guards and blocking contexts.
    pub fn kill_blocking(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let dirs = self.dirs(id);
        if !dirs.root.exists() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        let meta = Meta::load(&dirs.meta()).ok();
        self.destroy(&dirs, meta.as_ref())
    }

    fn state_of(&self, meta: &Meta) -> SandboxState {
        let alive = if meta.cgroup.dirs.is_empty() {
            meta.init.is_some_and(|(pid, t)| meta::start_time(pid) == Some(t))
        } else {
            !meta.cgroup.pids(self.sys.as_ref()).is_empty()
        };
        match (alive, meta.state) {
            (true, _) => SandboxState::Running,
            (false, SandboxState::Creating) => SandboxState::Creating,
            (false, _) => SandboxState::Exited,
        }
    }

    fn list_blocking(&self) -> Result<Vec<SandboxInfo>, ProviderError> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(self.sandboxes_dir()).map_err(ProviderError::io("listing sandboxes"))?;
        for e in rd.flatten() {
            let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<SandboxId>().ok()) else {
                continue;
            };
            let Ok(meta) = Meta::load(&self.dirs(&id).meta()) else {
                continue;
            };
            out.push(info_of(&meta, self.state_of(&meta)));
        }
        out.sort_by_key(|i| i.created_at_ms);
        Ok(out)
    }

    /// Startup reclaim: kills and removes every sandbox on disk for which
    /// `keep(id, owner, state)` is false, and any cgroup a crashed creator
    /// left without a directory. Returns the ids removed.
    pub async fn reclaim(&self, keep: crate::provider::KeepFn<'_>) -> Result<Vec<SandboxId>, ProviderError> {
        let mut removed = Vec::new();
        let rd = std::fs::read_dir(self.sandboxes_dir()).map_err(ProviderError::io("listing sandboxes"))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|s| s.parse::<SandboxId>().ok()) else {
                continue;
            };
            let dirs = self.dirs(&id);
            let meta = Meta::load(&dirs.meta()).ok();
            let (owner, state) = match &meta {
                Some(m) => (m.owner.as_str(), self.state_of(m)),
                None => ("", SandboxState::Exited),
            };
            if keep(&id, owner, state) {
                continue;
            }
            // A record lost mid-create still names its cgroups by id.
            let meta = meta.or_else(|| self.orphan_meta(&id));
            self.destroy(&dirs, meta.as_ref())?;
            removed.push(id);
        }
        // Cgroups whose sandbox directory is gone entirely.
        let group = crate::cgroup::parent_for(&self.cfg.data_dir);
        let mut parents: Vec<PathBuf> = self.layout.v1.iter().map(|(_, m)| m.join(&group)).collect();
        if let Some(v2) = &self.layout.v2 {
            parents.push(v2.join(&group));
        }
        for parent in parents {
            let Ok(rd) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in rd.flatten() {
                let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<SandboxId>().ok()) else {
                    continue;
                };
                if self.dirs(&id).root.exists() {
                    continue;
                }
                if let Some(m) = self.orphan_meta(&id) {
                    let _ = m.cgroup.kill_all(self.sys.as_ref(), KILL_TIMEOUT);
                    m.cgroup
                        .remove(self.sys.as_ref(), KILL_TIMEOUT)
                        .map_err(ProviderError::io("removing an orphaned cgroup"))?;
                    removed.push(id);
                }
            }
        }
        Ok(removed)
    }

    fn orphan_meta(&self, id: &SandboxId) -> Option<Meta> {
        let group = crate::cgroup::parent_for(&self.cfg.data_dir);
        let mut dirs = Vec::new();
        if let Some(v2) = &self.layout.v2 {
            dirs.push(crate::cgroup::CgDir {
                path: v2.join(&group).join(id.as_str()),
                version: crate::cgroup::Version::V2,
            });
        }
        for (_, m) in &self.layout.v1 {
            let p = m.join(&group).join(id.as_str());
            if p.exists() {
                dirs.push(crate::cgroup::CgDir { path: p, version: crate::cgroup::Version::V1 });
            }
        }
        dirs.retain(|d| d.path.exists());
        Some(Meta {
            id: id.clone(),
            state: SandboxState::Exited,
            spec: SandboxSpec::default(),
            spec_hash: String::new(),
            created_at_ms: 0,
            token: String::new(),
            uid: self.cfg.uid,
            owner: String::new(),
            cgroup: SandboxCgroup { dirs },
            init: None,
        })
    }

    /// Boots a sandbox whose `/app` is `dir` itself, read-write, with the
    /// dev server on. Only for warming the template at the path it runs at.
    pub(crate) async fn create_direct(&self, dir: &Path) -> Result<Created, ProviderError> {
        self.create_from(SandboxId::random(), &SandboxSpec::app(), AppSource::Direct { dir }, "template-warmup").await
    }
}

#[async_trait]
impl SandboxProvider for LocalProvider {
    async fn create_as(&self, id: &SandboxId, spec: &SandboxSpec) -> Result<Created, ProviderError> {
        if self.dirs(id).root.exists() {
            return Err(ProviderError::Boot { id: id.clone(), reason: "a sandbox with this id already exists".into() });
        }
        let t = template::current(&self.cfg.data_dir).ok_or(ProviderError::TemplateMissing)?;
        self.create_from(id.clone(), spec, AppSource::Overlay { lower: &t.app_dir }, &t.spec_hash).await
    }

    async fn spec_hash(&self) -> Result<String, ProviderError> {
        template::current(&self.cfg.data_dir).map(|t| t.spec_hash).ok_or(ProviderError::TemplateMissing)
    }

    async fn reclaim(&self, keep: crate::provider::KeepFn<'_>) -> Result<Vec<SandboxId>, ProviderError> {
        LocalProvider::reclaim(self, keep).await
    }

    async fn kill(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let id = id.clone();
        let me = self.clone_for_blocking();
        tokio::task::spawn_blocking(move || me.kill_blocking(&id))
            .await
            .map_err(|e| ProviderError::io("killing")(std::io::Error::other(e)))?
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, ProviderError> {
        self.list_blocking()
    }

    async fn set_cpu_priority(&self, id: &SandboxId, priority: CpuPriority) -> Result<(), ProviderError> {
        let meta = Meta::load(&self.dirs(id).meta()).map_err(|_| ProviderError::NotFound(id.clone()))?;
        meta.cgroup
            .set_cpu_priority(self.sys.as_ref(), priority)
            .map_err(ProviderError::io(format!("setting the CPU priority of sandbox {id}")))?;
        Ok(())
    }

    fn app_dir(&self, id: &SandboxId) -> Option<PathBuf> {
        Some(self.dirs(id).app())
    }

    fn host_socket(&self, id: &SandboxId) -> Option<PathBuf> {
        // A sandbox of another data directory (another server on this
        // machine prewarmed it) is served by that server's gateway.
        let host = self.dirs(id).host();
        host.is_dir().then(|| host.join("host.sock"))
    }

    async fn connect(&self, id: &SandboxId) -> Result<EnvdClient, ProviderError> {
        let dirs = self.dirs(id);
        let meta = Meta::load(&dirs.meta()).map_err(|_| ProviderError::NotFound(id.clone()))?;
        Ok(EnvdClient::new(Endpoint { socket: dirs.socket(), token: meta.token }))
    }
}

impl LocalProvider {
    fn clone_for_blocking(&self) -> LocalProvider {
        LocalProvider {
            cfg: self.cfg.clone(),
            sys: self.sys.clone(),
            layout: self.layout.clone(),
            owner: self.owner.clone(),
        }
    }
}

fn info_of(meta: &Meta, state: SandboxState) -> SandboxInfo {
    SandboxInfo {
        id: meta.id.clone(),
        state,
        created_at_ms: meta.created_at_ms,
        spec: meta.spec.clone(),
        spec_hash: meta.spec_hash.clone(),
    }
}

async fn wait_for_envd(client: &EnvdClient, init: i32, started: Option<u64>) -> Result<(), ProviderError> {
    let deadline = Instant::now() + ENVD_TIMEOUT;
    let mut delay = Duration::from_millis(1);
    loop {
        match client.health().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(ProviderError::Io {
                    context: format!("waiting {ENVD_TIMEOUT:?} for envd"),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Err(_) => {}
        }
        if started.is_none() || meta::start_time(init) != started {
            return Err(ProviderError::Io {
                context: "waiting for envd".into(),
                source: std::io::Error::other("the sandbox exited during start-up"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

fn random_token() -> String {
    let b: [u8; 32] = rand_bytes();
    hex::encode(b)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).expect("getrandom");
    b
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// `root:<sandbox gid>`, mode 0710: root has the run of it; bubblewrap,
/// running as the sandbox uid, may walk through to the paths it binds (it
/// resolves `--bind-fd` sources by path) but can list nothing; every other
/// host user is kept out.
fn restrict(p: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(p, Some(0), Some(uid))?;
    set_mode(p, 0o710)
}

/// Copies a program (kiln-envd, an agent) to `<data>/bin/`, where the
/// sandbox uid can reach it whatever the permissions of the build directory,
/// and where a rebuild of the source binary cannot change what running
/// sandboxes execute (the copy is replaced by rename; running sandboxes keep
/// the old inode).
fn install_bin(data_dir: &Path, src_path: &Path) -> std::io::Result<PathBuf> {
    let bin = data_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    set_mode(&bin, 0o755)?;
    let name = src_path.file_name().ok_or_else(|| std::io::Error::other("a program path names a file"))?;
    let dest = bin.join(name);
    let (src, cur) = (std::fs::metadata(src_path)?, std::fs::metadata(&dest).ok());
    let fresh = cur.is_some_and(|c| c.len() == src.len() && c.modified().ok() >= src.modified().ok());
    if !fresh {
        let tmp = bin.join(format!(".{}.{}", name.to_string_lossy(), hex::encode(rand_bytes::<8>())));
        // A hard link costs no disk (test runs install the same multi-MB
        // binaries into many data dirs); a copy when it can't be linked or
        // the source isn't world-executable (its mode is shared by the link).
        let linked = src.permissions().mode() & 0o555 == 0o555 && std::fs::hard_link(src_path, &tmp).is_ok();
        if !linked {
            std::fs::copy(src_path, &tmp)?;
            set_mode(&tmp, 0o755)?;
        }
        std::fs::rename(&tmp, &dest)?;
        // rename() between two links of one file does nothing.
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(dest)
}

fn chown(p: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(uid))
}

/// `true` if `p` is a mount point in this mount namespace.
pub fn is_mount_point(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = p.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape_mount(m) == needle))
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn tail(s: &str, max: usize) -> &str {
    let start = s.len().saturating_sub(max);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// Resident anonymous memory of a sandbox in MiB (the cgroup's `rss`; page
/// cache of files it read is not counted), or `None` without a memory cgroup.
pub fn memory_usage_mib(p: &LocalProvider, id: &SandboxId) -> Option<f64> {
    let meta = Meta::load(&p.dirs(id).meta()).ok()?;
    for d in &meta.cgroup.dirs {
        let Ok(stat) = std::fs::read_to_string(d.path.join("memory.stat")) else {
            continue;
        };
        let key = if d.version == crate::cgroup::Version::V2 { "anon" } else { "total_rss" };
        let bytes: u64 = stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())?;
        return Some(bytes as f64 / (1024.0 * 1024.0));
    }
    None
}
