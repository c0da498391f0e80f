//! Configuration: a TOML file plus `KILN_*` environment variables; the
//! environment wins. An invalid value stops start-up with a message that
//! names the setting — never a silent default.
//!
//! | setting | env | TOML | default |
//! |---|---|---|---|
//! | data directory | `KILN_DATA_DIR` | `data_dir` | `/var/lib/kiln` |
//! | listen address | `KILN_LISTEN` | `listen` | `127.0.0.1:8080` |
//! | sandbox memory (MiB) | `KILN_SANDBOX_MEMORY_MIB` | `sandbox.memory_mib` | 2048 |
//! | sandbox tasks | `KILN_SANDBOX_PIDS` | `sandbox.pids` | 1024 |
//! | sandbox CPU (millicores) | `KILN_SANDBOX_CPU_MILLICORES` | `sandbox.cpu_millicores` | 1000 |
//! | sandbox uid | `KILN_SANDBOX_UID` | `sandbox.uid` | 61000 |
//! | envd binary | `KILN_ENVD_BIN` | `sandbox.envd_bin` | `kiln-envd` next to `kiln` |
//! | sandbox idle timeout | `KILN_SANDBOX_IDLE_TIMEOUT` | `sandbox.idle_timeout` | `60m` |
//! | database | `KILN_DATABASE_URL` | `database_url` | `sqlite://<data dir>/kiln.db` |
//! | pool target size | `KILN_POOL_TARGET_SIZE` | `pool.target_size` | 1 (clamped to the maximum) |
//! | pool maximum size | `KILN_POOL_MAX_SIZE` | `pool.max_size` | 16 |
//! | pool row max age | `KILN_POOL_MAX_AGE` | `pool.max_age` | `45m` |
//! | warming lease | `KILN_POOL_LEASE` | `pool.lease` | `30s` |
//! | maintenance interval | `KILN_POOL_MAINTENANCE_INTERVAL` | `pool.maintenance_interval` | `15s` |
//! | refill delay after a claim | `KILN_POOL_CLAIM_REFILL_DELAY` | `pool.claim_refill_delay` | `1s` |
//! | admin token | `KILN_POOL_ADMIN_TOKEN` | `pool.admin_token` | unset: pool endpoints open |
//! | instance name | `KILN_INSTANCE` | `instance` | derived from host name and data dir |
//!
//! | preview base domain | `KILN_PREVIEW_DOMAIN` | — | `localhost` (previews at `<id>.localhost:<port>`) |
//! | public URL of the UI | `KILN_PUBLIC_URL` | — | `http://localhost:<listen port>` |
//! | Quick mode's model | `KILN_QUICK_MODEL` | — | see [`crate::models`] |
//!
//! Agent and model-gateway settings: see [`crate::agent_config`].
//!
//! Durations are an integer with a unit: `500ms`, `30s`, `45m`, `2h`.
//!
//! The file is `KILN_CONFIG` if set, else `<data dir>/kiln.toml` if present.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_sandbox::LocalConfig;
use kiln_types::{Limits, SandboxSpec};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0} is not valid: {1}")]
    Parse(PathBuf, String),
    #[error("invalid {name}={value:?}: {why}")]
    Invalid { name: &'static str, value: String, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: String,
    /// This server's name in the pool's rows (stable across restarts).
    pub instance: String,
    pub sandbox: SandboxConfig,
    pub pool: PoolSettings,
    /// The agent and the model gateway (see [`crate::agent_config`]).
    pub agent: crate::agent_config::AgentConfig,
    pub edge: EdgeConfig,
}

/// How the outside world reaches this server: the UI's URL, and the base
/// domain previews live under (`<sandbox id>.<domain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    pub preview_domain: String,
    /// Scheme, host and port the browser uses, without a trailing slash.
    pub public_url: String,
    pub quick_model: Option<String>,
}

/// `host:port` → `host` (`[::1]:80` → `[::1]`).
fn strip_port(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => h,
    }
}

impl EdgeConfig {
    fn load(env: &dyn Env, listen: SocketAddr) -> Result<EdgeConfig, ConfigError> {
        let preview_domain = env.get("KILN_PREVIEW_DOMAIN").unwrap_or_else(|| "localhost".into()).to_ascii_lowercase();
        let ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if preview_domain.len() > 200 || !preview_domain.split('.').all(ok) {
            return Err(ConfigError::Invalid {
                name: "KILN_PREVIEW_DOMAIN",
                value: preview_domain,
                why: "expected a domain name such as preview.example.com (no scheme, no port)".into(),
            });
        }
        let public_url = match env.get("KILN_PUBLIC_URL") {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => u.trim_end_matches('/').to_owned(),
            Some(u) => {
                return Err(ConfigError::Invalid {
                    name: "KILN_PUBLIC_URL",
                    value: u,
                    why: "must start with http:// or https://".into(),
                });
            }
            None => format!("http://localhost:{}", listen.port()),
        };
        Ok(EdgeConfig { preview_domain, public_url, quick_model: env.get("KILN_QUICK_MODEL") })
    }

    /// `http://<id>.localhost:8080/`: the live preview, which is also the
    /// share link. Scheme and port follow the public URL.
    pub fn preview_url(&self, sandbox_id: &str) -> String {
        let (scheme, rest) = self.public_url.split_once("://").unwrap_or(("http", &self.public_url));
        let port =
            rest.rsplit_once(':').map(|(_, p)| format!(":{p}")).filter(|p| p[1..].bytes().all(|b| b.is_ascii_digit()));
        format!("{scheme}://{sandbox_id}.{}{}/", self.preview_domain, port.unwrap_or_default())
    }

    /// `Host` names Kiln itself: the public URL's host, loopback names, or
    /// the address it listens on (any port: proxies may rewrite it).
    pub fn serves_host(&self, host: &str, listen: SocketAddr) -> bool {
        let name = strip_port(host).trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let public = self.public_url.split_once("://").map_or("", |(_, r)| r);
        let public = strip_port(public.split('/').next().unwrap_or("")).trim_start_matches('[').trim_end_matches(']');
        name == public.to_ascii_lowercase()
            || ["localhost", "127.0.0.1", "::1"].contains(&name.as_str())
            || name == listen.ip().to_string()
    }

    /// The first label of a request's `Host` if the rest is the preview
    /// domain (`<label>.<preview domain>[:port]`); the caller checks that the
    /// label is a sandbox id.
    pub fn preview_id<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name =
            host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let (label, domain) = name.split_once('.')?;
        domain.eq_ignore_ascii_case(&self.preview_domain).then_some(label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub target: u32,
    pub max_target: u32,
    /// Set when the configured target was above the maximum.
    pub clamped_from: Option<u32>,
    pub max_age: Duration,
    pub lease: Duration,
    pub maintenance_interval: Duration,
    pub claim_refill_delay: Duration,
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    pub limits: Limits,
    pub uid: u32,
    pub envd_bin: Option<PathBuf>,
    pub idle_timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    database_url: Option<String>,
    instance: Option<String>,
    #[serde(default)]
    sandbox: FileSandbox,
    #[serde(default)]
    pool: FilePool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePool {
    target_size: Option<i64>,
    max_size: Option<i64>,
    max_age: Option<String>,
    lease: Option<String>,
    maintenance_interval: Option<String>,
    claim_refill_delay: Option<String>,
    admin_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSandbox {
    memory_mib: Option<u64>,
    pids: Option<u64>,
    cpu_millicores: Option<u64>,
    uid: Option<u32>,
    envd_bin: Option<PathBuf>,
    idle_timeout: Option<String>,
}

/// Where settings come from; a seam so tests need not touch the process env.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }
}

/// Parses `500ms`, `30s`, `45m`, `2h`.
pub fn parse_duration(name: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let bad = |why: &str| ConfigError::Invalid { name, value: raw.into(), why: why.into() };
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| bad("add a unit: ms, s, m or h (e.g. 45m)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad("expected an integer with a unit, e.g. 45m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad("unknown unit: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(bad("must be greater than zero"));
    }
    Ok(d)
}

fn parse_num<T: TryFrom<u64>>(name: &'static str, raw: &str, min: u64, max: u64) -> Result<T, ConfigError> {
    let v: u64 = raw.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        value: raw.into(),
        why: "not a non-negative integer".into(),
    })?;
    if v < min || v > max {
        return Err(ConfigError::Invalid { name, value: raw.into(), why: format!("must be between {min} and {max}") });
    }
    T::try_from(v).map_err(|_| ConfigError::Invalid { name, value: raw.into(), why: "out of range".into() })
}

impl Config {
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(&ProcessEnv)
    }

    pub fn load_from(env: &dyn Env) -> Result<Config, ConfigError> {
        let env_data_dir = env.get("KILN_DATA_DIR").map(PathBuf::from);
        let file_path = env.get("KILN_CONFIG").map(PathBuf::from).or_else(|| {
            let p = env_data_dir.clone().unwrap_or_else(default_data_dir).join("kiln.toml");
            p.exists().then_some(p)
        });
        let file = match &file_path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse(p.clone(), e.to_string()))?
            }
            None => FileConfig::default(),
        };

        let data_dir = env_data_dir.or(file.data_dir).unwrap_or_else(default_data_dir);
        if !data_dir.is_absolute() {
            return Err(ConfigError::Invalid {
                name: "KILN_DATA_DIR",
                value: data_dir.display().to_string(),
                why: "must be an absolute path".into(),
            });
        }
        let listen_raw = env.get("KILN_LISTEN").or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            name: "KILN_LISTEN",
            value: listen_raw.clone(),
            why: "expected host:port, e.g. 127.0.0.1:8080".into(),
        })?;

        let d = Limits::default();
        let num =
            |name: &'static str, file_v: Option<u64>, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match env.get(name) {
                    Some(raw) => parse_num(name, &raw, min, max),
                    None => match file_v {
                        Some(v) => parse_num(name, &v.to_string(), min, max),
                        None => Ok(default),
                    },
                }
            };
        let limits = Limits {
            memory_mib: num("KILN_SANDBOX_MEMORY_MIB", file.sandbox.memory_mib, d.memory_mib, 64, 1 << 20)?,
            pids: num("KILN_SANDBOX_PIDS", file.sandbox.pids, d.pids, 16, 1 << 22)?,
            cpu_millicores: num(
                "KILN_SANDBOX_CPU_MILLICORES",
                file.sandbox.cpu_millicores,
                d.cpu_millicores,
                10,
                1 << 20,
            )?,
        };
        let uid = num(
            "KILN_SANDBOX_UID",
            file.sandbox.uid.map(u64::from),
            kiln_sandbox::local::DEFAULT_SANDBOX_UID.into(),
            1000,
            65533,
        )? as u32;
        let envd_bin = env.get("KILN_ENVD_BIN").map(PathBuf::from).or(file.sandbox.envd_bin);
        let dur = |name: &'static str, file_v: Option<String>, default: &str| -> Result<Duration, ConfigError> {
            parse_duration(name, &env.get(name).or(file_v).unwrap_or_else(|| default.to_owned()))
        };
        let idle_timeout = dur("KILN_SANDBOX_IDLE_TIMEOUT", file.sandbox.idle_timeout, "60m")?;

        let database_url = env
            .get("KILN_DATABASE_URL")
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("kiln.db").display()));
        if !["sqlite:", "postgres:", "postgresql:"].iter().any(|p| database_url.starts_with(p)) {
            return Err(ConfigError::Invalid {
                name: "KILN_DATABASE_URL",
                value: database_url.chars().take(12).collect::<String>() + "…",
                why: "expected sqlite://<file> or postgres://…".into(),
            });
        }

        let signed = |name: &'static str, file_v: Option<i64>, default: u64, max: u64| -> Result<u32, ConfigError> {
            match env.get(name) {
                Some(raw) => parse_num(name, &raw, 0, max),
                None => match file_v {
                    Some(v) => parse_num(name, &v.to_string(), 0, max),
                    None => Ok(default as u32),
                },
            }
        };
        let max_target = signed("KILN_POOL_MAX_SIZE", file.pool.max_size, 16, 1024)?;
        let wanted = signed("KILN_POOL_TARGET_SIZE", file.pool.target_size, 1, u64::from(u32::MAX))?;
        let admin_token = env.get("KILN_POOL_ADMIN_TOKEN").or(file.pool.admin_token).filter(|t| !t.is_empty());
        let pool = PoolSettings {
            target: wanted.min(max_target),
            max_target,
            clamped_from: (wanted > max_target).then_some(wanted),
            max_age: dur("KILN_POOL_MAX_AGE", file.pool.max_age, "45m")?,
            lease: dur("KILN_POOL_LEASE", file.pool.lease, "30s")?,
            maintenance_interval: dur("KILN_POOL_MAINTENANCE_INTERVAL", file.pool.maintenance_interval, "15s")?,
            claim_refill_delay: dur("KILN_POOL_CLAIM_REFILL_DELAY", file.pool.claim_refill_delay, "1s")?,
            admin_token,
        };
        let instance = env.get("KILN_INSTANCE").or(file.instance).unwrap_or_else(|| default_instance(&data_dir));
        Ok(Config {
            data_dir,
            listen,
            database_url,
            instance,
            sandbox: SandboxConfig { limits, uid, envd_bin, idle_timeout },
            pool,
            agent: crate::agent_config::AgentConfig::load(env)?,
            edge: EdgeConfig::load(env, listen)?,
        })
    }

    /// The spec app sandboxes are created with.
    pub fn app_spec(&self) -> SandboxSpec {
        SandboxSpec { limits: self.sandbox.limits.clone(), agent: self.agent_command(), ..SandboxSpec::app() }
    }

    /// Kiln's own agent next to the running executable (or one level up,
    /// for test binaries in target/*/deps).
    pub fn bundled_agent(&self) -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        [dir.join("kiln-agent"), dir.parent()?.join("kiln-agent")].into_iter().find(|p| p.is_file())
    }

    /// The agent sandboxes host: `KILN_AGENT`, else the bundled kiln-agent,
    /// else none (`KILN_AGENT=none`, or kiln-agent not built).
    pub fn agent_command(&self) -> Option<Vec<String>> {
        if self.agent.explicit_none {
            return None;
        }
        if let Some(c) = &self.agent.command {
            return Some(c.clone());
        }
        self.bundled_agent().map(|_| vec!["/opt/kiln/kiln-agent".to_owned()])
    }

    /// Programs copied into every sandbox's `/opt/kiln`.
    pub fn agent_install(&self) -> Vec<PathBuf> {
        let mut v = self.agent.install.clone();
        if self.agent.command.is_none()
            && !self.agent.explicit_none
            && let Some(a) = self.bundled_agent()
        {
            v.push(a);
        }
        v
    }

    /// The `kiln-envd` binary: configured, or next to the running executable.
    pub fn envd_bin(&self) -> Option<PathBuf> {
        if let Some(p) = &self.sandbox.envd_bin {
            return Some(p.clone());
        }
        let exe = std::env::current_exe().ok()?;
        // Next to `kiln`, or one level up for test binaries in target/*/deps.
        let dir = exe.parent()?;
        [dir.join("kiln-envd"), dir.parent()?.join("kiln-envd")].into_iter().find(|p| p.exists())
    }

    pub fn local(&self) -> Option<LocalConfig> {
        Some(LocalConfig {
            data_dir: self.data_dir.clone(),
            envd_bin: self.envd_bin()?,
            uid: self.sandbox.uid,
            extra_ro: node_outside_usr(),
            extra_bins: self.agent_install(),
        })
    }
}

/// `<host name>/<data dir>`: the same after a restart, different for two
/// servers with their own data directories on one machine.
fn default_instance(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}{}", host.trim(), data_dir.display())
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/kiln")
}

/// If `node` lives outside /usr (e.g. /opt/node), its prefix must be bound
/// into sandboxes too.
fn node_outside_usr() -> Vec<PathBuf> {
    let Ok(path) = std::env::var("PATH") else {
        return vec![];
    };
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("node");
        if let Ok(real) = std::fs::canonicalize(&candidate) {
            if real.starts_with("/usr") {
                return vec![];
            }
            // <prefix>/bin/node → bind <prefix>
            return real.parent().and_then(Path::parent).map(|p| vec![p.to_owned()]).unwrap_or_default();
        }
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_without_any_setting() {
        let c = Config::load_from(&[("KILN_DATA_DIR", "/tmp/kiln-test-none")]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sandbox.limits, Limits::default());
        assert_eq!(c.sandbox.uid, 61000);
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[sandbox]\nmemory_mib = 512\npids = 100\n").unwrap();
        let f = file.to_str().unwrap();
        let c = Config::load_from(&[("KILN_CONFIG", f), ("KILN_DATA_DIR", "/tmp/x"), ("KILN_SANDBOX_PIDS", "200")])
            .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.sandbox.limits.memory_mib, 512);
        assert_eq!(c.sandbox.limits.pids, 200);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        for (k, v) in [
            ("KILN_SANDBOX_PIDS", "-1"),
            ("KILN_SANDBOX_MEMORY_MIB", "lots"),
            ("KILN_LISTEN", "8080"),
            ("KILN_SANDBOX_UID", "0"),
            ("KILN_DATA_DIR", "rel/dir"),
        ] {
            let env = [("KILN_DATA_DIR", "/tmp/x"), (k, v)];
            let env = if k == "KILN_DATA_DIR" { [(k, v), ("X", "")] } else { env };
            let err = Config::load_from(&env).unwrap_err().to_string();
            assert!(err.contains(k), "{err} does not name {k}");
        }
    }

    #[test]
    fn pool_settings_parse_clamp_and_name_bad_values() {
        let c = Config::load_from(&[
            ("KILN_DATA_DIR", "/tmp/x"),
            ("KILN_POOL_TARGET_SIZE", "40"),
            ("KILN_POOL_MAX_AGE", "10m"),
        ])
        .unwrap();
        assert_eq!((c.pool.target, c.pool.clamped_from), (16, Some(40)));
        assert_eq!(c.pool.max_age, Duration::from_secs(600));
        assert_eq!(c.database_url, "sqlite:///tmp/x/kiln.db");
        assert_eq!(c.pool.admin_token, None);
        for (k, v) in [
            ("KILN_POOL_TARGET_SIZE", "-1"),
            ("KILN_POOL_TARGET_SIZE", "two"),
            ("KILN_POOL_TARGET_SIZE", "1.5"),
            ("KILN_POOL_MAX_AGE", "45"),
            ("KILN_POOL_MAX_AGE", "0m"),
            ("KILN_SANDBOX_IDLE_TIMEOUT", "soon"),
            ("KILN_DATABASE_URL", "mysql://x"),
        ] {
            let err = Config::load_from(&[("KILN_DATA_DIR", "/tmp/x"), (k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
        let c = Config::load_from(&[("KILN_DATA_DIR", "/tmp/x"), ("KILN_POOL_TARGET_SIZE", "0")]).unwrap();
        assert_eq!(c.pool.target, 0, "zero is a valid target (no pool)");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "listen_addr = \"x\"\n").unwrap();
        let err =
            Config::load_from(&[("KILN_CONFIG", file.to_str().unwrap()), ("KILN_DATA_DIR", "/tmp/x")]).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn preview_hosts_and_urls() {
        let c = Config::load_from(&[("KILN_DATA_DIR", "/tmp/x"), ("KILN_LISTEN", "127.0.0.1:9000")]).unwrap();
        assert_eq!(c.edge.public_url, "http://localhost:9000");
        assert_eq!(c.edge.preview_url("ab12"), "http://ab12.localhost:9000/");
        assert_eq!(c.edge.preview_id("ab12.localhost:9000"), Some("ab12"));
        assert_eq!(c.edge.preview_id("AB12.LocalHost"), Some("AB12"));
        assert_eq!(c.edge.preview_id("localhost:9000"), None);
        assert_eq!(c.edge.preview_id("ab12.evil.com"), None);
        assert_eq!(c.edge.preview_id("a.b.localhost"), None);
        let c = Config::load_from(&[
            ("KILN_DATA_DIR", "/tmp/x"),
            ("KILN_PREVIEW_DOMAIN", "preview.example.com"),
            ("KILN_PUBLIC_URL", "https://kiln.example.com/"),
        ])
        .unwrap();
        assert_eq!(c.edge.preview_url("ab12"), "https://ab12.preview.example.com/");
        assert_eq!(c.edge.preview_id("ab12.preview.example.com"), Some("ab12"));
        let listen: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        for ok in ["kiln.example.com", "KILN.example.com:443", "localhost:9000", "127.0.0.1", "[::1]:9000"] {
            assert!(c.edge.serves_host(ok, listen), "{ok}");
        }
        for bad in ["evil.com", "evil.com:9000", "kiln.example.com.evil.com", "10.0.0.1:9000"] {
            assert!(!c.edge.serves_host(bad, listen), "{bad}");
        }
        for (k, v) in [
            ("KILN_PREVIEW_DOMAIN", "http://x"),
            ("KILN_PREVIEW_DOMAIN", "a..b"),
            ("KILN_PUBLIC_URL", "kiln.example.com"),
        ] {
            let e = Config::load_from(&[("KILN_DATA_DIR", "/tmp/x"), (k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
    }
}
