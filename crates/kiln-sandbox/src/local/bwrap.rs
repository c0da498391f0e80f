//! The bubblewrap command line for one sandbox.
//!
//! Why bubblewrap: Debian ships it, it is small and audited, and it sets up
//! user, mount, pid, ipc, uts, net and cgroup namespaces in ~8 ms. Doing the
//! same with `unshare` from a multithreaded tokio process is not possible, and
//! a re-exec'd helper of our own would re-implement bwrap. Its only gap here
//! (0.8 has no `--overlay`) is covered by mounting the overlay on the host,
//! which we need anyway: versions are committed from the host's view of /app.
//!
//! bwrap runs as the unprivileged sandbox uid, so the host hands it every
//! private path as an already-open file descriptor (`--bind-fd`): the sandbox
//! uid never needs, and never gets, permission to walk Kiln's data directory.

use std::path::{Path, PathBuf};

/// The namespaces every sandbox gets, and no nested user namespaces inside.
///
/// `--as-pid-1` makes envd itself the pid namespace's init: the kernel
/// delivers no signal to a namespace's init from inside the namespace unless
/// init installed a handler for it, so no code in the sandbox (same uid or
/// not) can kill or stop envd. envd reaps orphans itself (`kiln-envd`'s
/// `reaper` module).
pub const NAMESPACE_FLAGS: &[&str] = &[
    "--unshare-user",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup",
    "--disable-userns",
    "--as-pid-1",
];

/// With egress, pasta has already made a user namespace (mapping the sandbox
/// uid to 0 inside, with every capability there) and the network namespace.
/// bwrap keeps pasta's network but makes a user namespace of its own inside
/// pasta's, mapped back to the sandbox uid with no capabilities, and disables
/// any further one: code in an egress sandbox can no more create a user
/// namespace (and so hold capabilities) than code in any other sandbox.
pub const EGRESS_NAMESPACE_FLAGS: &[&str] = &[
    "--unshare-user",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-uts",
    "--unshare-cgroup",
    "--disable-userns",
    "--as-pid-1",
    "--cap-drop",
    "ALL",
];

/// pasta, the userspace NAT that gives an egress sandbox its network: a tap
/// device in a new network namespace whose traffic pasta replays with
/// ordinary sockets as the sandbox uid. `--no-map-gw` and `-T/-U none` keep
/// the host's loopback out of reach; `-t/-u none` forward nothing inwards.
pub const PASTA_ARGS: &[&str] = &[
    "--config-net",
    "--quiet",
    "--foreground",
    "--no-map-gw",
    "-t",
    "none",
    "-u",
    "none",
    "-T",
    "none",
    "-U",
    "none",
    "--",
];

/// File descriptors the child finds at these numbers.
pub const FD_APP: i32 = 100;
/// envd's listening socket, bound by the host in a directory only root can
/// enter: the sandbox never sees the socket's path, so nothing in it can
/// unlink, replace or re-bind it.
pub const FD_LISTEN: i32 = 101;
pub const FD_ENVD: i32 = 102;
pub const FD_INFO: i32 = 103;
pub const FD_HOST: i32 = 104;
/// First of the `--ro-bind-data` files (see [`etc_files`]).
pub const FD_ETC_BASE: i32 = 110;

/// Debian's system CA bundle (includes locally added CAs).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where Kiln's binaries directory (`<data>/bin`: envd, agents) appears
/// inside the sandbox, read-only.
pub const BIN_DIR: &str = "/opt/kiln";
/// Where envd's binary appears inside the sandbox.
pub const ENVD_PATH: &str = "/opt/kiln/kiln-envd";
/// The host directory holding the model gateway's socket, read-only.
pub const HOST_DIR: &str = "/run/kiln-host";
/// The gateway socket inside the sandbox.
pub const HOST_SOCKET: &str = "/run/kiln-host/host.sock";

/// Host `/etc` entries that programs in the sandbox need (TLS roots, fonts
/// for Chromium, the loader cache). Nothing else of `/etc` is visible.
pub const ETC_ALLOW: &[&str] = &[
    "ld.so.cache",
    "ssl",
    "ca-certificates",
    "fonts",
    "alternatives",
    "chromium",
    "chromium.d",
    "localtime",
    "mime.types",
    "os-release",
];

/// The synthesized `/etc` files, in fd order from [`FD_ETC_BASE`].
/// `resolv_conf` is empty without egress (there is nothing to resolve).
pub fn etc_files(uid: u32, resolv_conf: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\napp:x:{uid}:{uid}:Kiln app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("root:x:0:\napp:x:{uid}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 kiln\n".into()),
        ("hostname", "kiln\n".into()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".into()),
        ("resolv.conf", resolv_conf.to_owned()),
    ]
}

/// What varies between sandboxes and hosts.
#[derive(Debug, Clone)]
pub struct BwrapPlan {
    pub sandbox_id: String,
    pub uid: u32,
    /// `/etc` entries from [`ETC_ALLOW`] that exist on this host.
    pub etc_present: Vec<String>,
    /// Top-level directories that are symlinks into /usr on this host
    /// (`/bin -> usr/bin` on merged-/usr systems): (name, target).
    pub usr_links: Vec<(String, String)>,
    /// Top-level directories that are real on this host and must be bound.
    pub usr_dirs: Vec<String>,
    /// Extra read-only paths (e.g. a Node installed outside /usr).
    pub extra_ro: Vec<PathBuf>,
    pub dev_server: bool,
    /// Outbound network through pasta (see [`PASTA_ARGS`]).
    pub egress: bool,
    /// The host's resolver configuration, for egress sandboxes.
    pub resolv_conf: String,
    /// The ACP agent envd should host.
    pub agent: Option<Vec<String>>,
}

impl BwrapPlan {
    /// Reads the host's layout of `/bin`, `/lib`… and `/etc`.
    pub fn for_host(sandbox_id: &str, uid: u32, extra_ro: Vec<PathBuf>, dev_server: bool, egress: bool) -> BwrapPlan {
        let mut usr_links = Vec::new();
        let mut usr_dirs = Vec::new();
        for d in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
            let p = Path::new("/").join(d);
            match std::fs::read_link(&p) {
                Ok(t) => usr_links.push((d.to_owned(), t.to_string_lossy().into_owned())),
                Err(_) if p.is_dir() => usr_dirs.push(d.to_owned()),
                Err(_) => {}
            }
        }
        let etc_present =
            ETC_ALLOW.iter().filter(|e| Path::new("/etc").join(e).exists()).map(|e| (*e).to_owned()).collect();
        let resolv_conf =
            if egress { std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default() } else { String::new() };
        BwrapPlan {
            sandbox_id: sandbox_id.to_owned(),
            uid,
            etc_present,
            usr_links,
            usr_dirs,
            extra_ro,
            dev_server,
            egress,
            resolv_conf,
            agent: None,
        }
    }

    /// The program to execute and its arguments: bwrap, or pasta wrapping
    /// bwrap when the sandbox has egress.
    pub fn command(&self) -> (&'static str, Vec<String>) {
        if self.egress {
            let mut a: Vec<String> = PASTA_ARGS.iter().map(|s| (*s).to_owned()).collect();
            a.push("bwrap".into());
            a.extend(self.args());
            ("pasta", a)
        } else {
            ("bwrap", self.args())
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
        push(if self.egress { EGRESS_NAMESPACE_FLAGS } else { NAMESPACE_FLAGS });
        push(&[
            "--new-session",
            "--hostname",
            "kiln",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/local/bin:/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--ro-bind",
            "/usr",
            "/usr",
        ]);
        let uid = self.uid.to_string();
        a.extend(["--uid".into(), uid.clone(), "--gid".into(), uid]);
        a.extend(["--setenv".into(), "KILN_SANDBOX_ID".into(), self.sandbox_id.clone()]);
        for (name, target) in &self.usr_links {
            a.extend(["--symlink".into(), target.clone(), format!("/{name}")]);
        }
        for d in &self.usr_dirs {
            a.extend(["--ro-bind".into(), format!("/{d}"), format!("/{d}")]);
        }
        for p in &self.extra_ro {
            let s = p.to_string_lossy().into_owned();
            a.extend(["--ro-bind".into(), s.clone(), s]);
        }
        a.extend(
            ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm", "--dir", "/etc"]
                .map(String::from),
        );
        for (i, (name, _)) in etc_files(self.uid, &self.resolv_conf).iter().enumerate() {
            a.extend(["--ro-bind-data".into(), (FD_ETC_BASE + i as i32).to_string(), format!("/etc/{name}")]);
        }
        for e in &self.etc_present {
            a.extend(["--ro-bind".into(), format!("/etc/{e}"), format!("/etc/{e}")]);
        }
        if self.etc_present.iter().any(|e| e == "ssl") {
            // Node ignores the system trust store unless told; the system
            // bundle carries any CA the host's administrator added.
            a.extend(["--setenv", "NODE_EXTRA_CA_CERTS", SYSTEM_CA_BUNDLE].map(String::from));
        }
        a.extend(
            [
                "--bind-fd",
                &FD_APP.to_string(),
                kiln_types::envd::APP_DIR,
                "--ro-bind-fd",
                &FD_ENVD.to_string(),
                BIN_DIR,
                "--ro-bind-fd",
                &FD_HOST.to_string(),
                HOST_DIR,
                "--info-fd",
                &FD_INFO.to_string(),
                "--remount-ro",
                "/",
                "--chdir",
                kiln_types::envd::APP_DIR,
                "--",
                ENVD_PATH,
                "--listen-fd",
                &FD_LISTEN.to_string(),
                "--gateway-socket",
                HOST_SOCKET,
            ]
            .map(String::from),
        );
        if let Some(agent) = &self.agent {
            a.push("--agent".into());
            a.push(serde_json::to_string(agent).expect("argv serializes"));
        }
        if self.dev_server {
            a.push("--dev-server".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BwrapPlan {
        BwrapPlan {
            sandbox_id: "abc".into(),
            uid: 61000,
            etc_present: vec!["ssl".into()],
            usr_links: vec![("bin".into(), "usr/bin".into())],
            usr_dirs: vec![],
            extra_ro: vec![],
            dev_server: true,
            egress: false,
            resolv_conf: String::new(),
            agent: None,
        }
    }

    #[test]
    fn egress_runs_bwrap_inside_pasta_with_nested_user_namespaces_disabled() {
        let p = BwrapPlan { egress: true, ..plan() };
        let (program, a) = p.command();
        assert_eq!(program, "pasta");
        let bwrap_at = a.iter().position(|x| x == "bwrap").unwrap();
        assert_eq!(&a[bwrap_at - 1], "--");
        for flag in ["--no-map-gw", "-T", "-U"] {
            assert!(a[..bwrap_at].iter().any(|x| x == flag), "{flag} missing from pasta's arguments");
        }
        let inner = &a[bwrap_at + 1..];
        // pasta's network namespace is kept; the user namespace is bwrap's
        // own, mapped to the sandbox uid, and no further one can be made.
        assert!(!inner.iter().any(|x| x == "--unshare-net"));
        for flag in ["--unshare-user", "--disable-userns", "--as-pid-1", "--uid"] {
            assert!(inner.iter().any(|x| x == flag), "{flag} missing from bwrap's arguments");
        }
        assert!(inner.windows(2).any(|w| w[0] == "--cap-drop" && w[1] == "ALL"));
        assert_eq!(plan().command().0, "bwrap");
    }

    #[test]
    fn every_namespace_is_unshared_and_nested_userns_is_disabled() {
        let a = plan().args();
        for ns in [
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup",
            "--disable-userns",
            "--as-pid-1",
        ] {
            assert!(a.iter().any(|x| x == ns), "{ns} missing");
        }
        assert!(!a.iter().any(|x| x == "--share-net"));
    }

    #[test]
    fn host_secrets_are_never_bound() {
        let a = plan().args().join(" ");
        for forbidden in ["/root", "/home", "/work", "/var", "/etc/shadow", "--bind / "] {
            assert!(!a.contains(forbidden), "{forbidden} appears in {a}");
        }
        // /etc is synthesized, with only allow-listed host entries.
        assert!(a.contains("--ro-bind /etc/ssl /etc/ssl"));
        assert!(a.contains("--dir /etc"));
    }

    #[test]
    fn private_paths_come_in_as_descriptors_and_root_is_read_only() {
        let a = plan().args();
        let s = a.join(" ");
        assert!(s.contains(&format!("--bind-fd {FD_APP} /app")));
        // envd's socket comes in as a listening descriptor; its directory is
        // never visible inside.
        assert!(s.contains(&format!("--listen-fd {FD_LISTEN}")));
        assert!(!s.contains("/run/kiln "));
        assert!(s.contains(&format!("--ro-bind-fd {FD_ENVD} {BIN_DIR}")));
        assert!(s.contains(&format!("--ro-bind-fd {FD_HOST} {HOST_DIR}")));
        let remount = a.iter().position(|x| x == "--remount-ro").unwrap();
        let last_mount = a.iter().rposition(|x| x.starts_with("--bind") || x.starts_with("--ro-bind")).unwrap();
        assert!(remount > last_mount, "root must be made read-only after the last mount");
        assert_eq!(a.last().unwrap(), "--dev-server");
    }

    #[test]
    fn synthesized_passwd_names_the_sandbox_uid() {
        let files = etc_files(61000, "");
        assert!(files[0].1.contains("app:x:61000:61000"));
        assert_eq!(files.len() as i32, 6);
    }
}
