//! Sandbox identity, specification and lifecycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A sandbox id: 128 random bits, lowercase hex.
///
/// Ids double as preview host names (`<id>.localhost`) and share links, so
/// they must be unguessable and valid as a DNS label; parsing enforces both.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

/// Length of a sandbox id in hex digits (128 bits).
pub const SANDBOX_ID_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sandbox id {0:?}: expected {SANDBOX_ID_LEN} lowercase hex digits")]
pub struct SandboxIdError(pub String);

impl SandboxId {
    /// A fresh id from the operating system's CSPRNG.
    pub fn random() -> Self {
        let bytes: [u8; SANDBOX_ID_LEN / 2] = rand::random();
        SandboxId(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SandboxId {
    type Err = SandboxIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == SANDBOX_ID_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok { Ok(SandboxId(s.to_owned())) } else { Err(SandboxIdError(s.chars().take(80).collect())) }
    }
}

impl TryFrom<String> for SandboxId {
    type Error = SandboxIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.0)
    }
}

/// Where a sandbox is in its life. The pool's store mirrors these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Directories and mounts exist; the init process may not be up yet.
    Creating,
    /// The sandbox's processes are alive.
    Running,
    /// Its processes are gone (crashed, OOM, killed from outside) but its
    /// directories remain until it is killed or reclaimed.
    Exited,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Exited => "exited",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sandbox's CPU time is weighed against other sandboxes' when the
/// host is busy (its quota is a separate, hard limit). Sandboxes warming in
/// the pool are `Background`, so a refill never slows down the preview of a
/// person who is waiting; a sandbox becomes `Interactive` when it is claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPriority {
    Background,
    Interactive,
}

/// Resource limits of one sandbox. Every limit is enforced by the kernel
/// (cgroups); `kiln doctor` reports which controllers the host offers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory (RSS + page cache) in MiB.
    pub memory_mib: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
    /// CPU in thousandths of a core (1000 = one full core).
    pub cpu_millicores: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Vite idles at ~180 MiB; headless Chromium for the agent's checks and
        // the agent itself need the rest. Chromium alone runs ~100 threads.
        Limits { memory_mib: 2048, pids: 1024, cpu_millicores: 1000 }
    }
}

/// What to create. Part of the template's spec hash: changing it retires
/// every pooled sandbox built to the old spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSpec {
    pub limits: Limits,
    /// Outbound network through a userspace NAT (for `npm install` of a new
    /// package). Off by default: the sandbox then has loopback only.
    pub egress: bool,
    /// Start the Vite dev server as soon as envd is up.
    pub dev_server: bool,
    /// The ACP agent envd hosts (argv, run inside the sandbox); none: the
    /// sandbox has no agent and envd's agent API answers 409.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Vec<String>>,
}

impl SandboxSpec {
    /// The spec used for app sandboxes: default limits, no egress, dev server on.
    pub fn app() -> Self {
        SandboxSpec { dev_server: true, ..Default::default() }
    }
}

/// What the provider knows about one sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub state: SandboxState,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub spec: SandboxSpec,
    /// The spec hash of the template it was built from.
    pub spec_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = SandboxId::random();
        let b = SandboxId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<SandboxId>().unwrap(), a);
        assert_eq!(a.as_str().len(), SANDBOX_ID_LEN);
    }

    #[test]
    fn ids_reject_anything_but_lowercase_hex_of_the_right_length() {
        for bad in [
            "",
            "../etc",
            "ABCDEF0123456789ABCDEF0123456789",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef/123456789abcdef",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let err = serde_json::from_str::<SandboxId>("\"../../root\"");
        assert!(err.is_err());
    }
}
