//! Agent and model-gateway settings (environment only).
//!
//! | setting | env | default |
//! |---|---|---|
//! | agent command (argv inside the sandbox) | `KILN_AGENT` (JSON array, or words; `none` for no agent) | Kiln's own `kiln-agent` (found next to `kiln`) |
//! | programs copied to `/opt/kiln` | `KILN_AGENT_BINS` (`:`-separated host paths) | none |
//! | model to select | `KILN_AGENT_MODEL` | the agent's default |
//! | kiln-agent's model (passed to it) | `KILN_MODEL` | kiln-agent's default |
//! | Anthropic API base | `KILN_ANTHROPIC_BASE_URL` | `https://api.anthropic.com` |
//! | Anthropic key (stays on the host) | `ANTHROPIC_API_KEY` | none |
//! | OpenAI-compatible API base | `KILN_OPENAI_BASE_URL` | `https://api.openai.com` |
//! | OpenAI-compatible key (stays on the host) | `OPENAI_API_KEY` | none |
//! | tokens one session may use | `KILN_GATEWAY_SESSION_BUDGET` | 5000000 |
//! | tokens all sessions together may use per UTC day | `KILN_GATEWAY_GLOBAL_BUDGET` | unlimited |

use std::path::PathBuf;

use kiln_gateway::GatewayConfig;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Set by `KILN_AGENT`; `None` with `explicit_none` false means "the
    /// bundled kiln-agent" (see `Config::agent_command`).
    pub command: Option<Vec<String>>,
    /// `KILN_AGENT=none`: sandboxes have no agent.
    pub explicit_none: bool,
    pub install: Vec<PathBuf>,
    pub model: Option<String>,
    /// `KILN_MODEL`, passed to the agent's environment.
    pub agent_model: Option<String>,
    pub anthropic_base: String,
    pub anthropic_key: Option<String>,
    pub openai_base: String,
    pub openai_key: Option<String>,
    pub session_budget_tokens: u64,
    pub global_budget_tokens: Option<u64>,
}

/// The placeholder key agents are given: the gateway replaces it.
pub const PLACEHOLDER_KEY: &str = "kiln-gateway";

impl AgentConfig {
    pub fn load(env: &dyn Env) -> Result<AgentConfig, ConfigError> {
        let explicit_none = env.get("KILN_AGENT").is_some_and(|v| v.trim() == "none");
        let command = match env.get("KILN_AGENT").filter(|_| !explicit_none) {
            None => None,
            Some(raw) => {
                let argv: Vec<String> = if raw.trim_start().starts_with('[') {
                    serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                        name: "KILN_AGENT",
                        value: raw.clone(),
                        why: format!("not a JSON array of strings: {e}"),
                    })?
                } else {
                    raw.split_whitespace().map(str::to_owned).collect()
                };
                if argv.is_empty() {
                    return Err(ConfigError::Invalid {
                        name: "KILN_AGENT",
                        value: raw,
                        why: "names no command".into(),
                    });
                }
                Some(argv)
            }
        };
        let mut install = Vec::new();
        if let Some(raw) = env.get("KILN_AGENT_BINS") {
            for p in raw.split(':').filter(|p| !p.is_empty()) {
                let p = PathBuf::from(p);
                if !p.is_absolute() || !p.is_file() {
                    return Err(ConfigError::Invalid {
                        name: "KILN_AGENT_BINS",
                        value: raw.clone(),
                        why: format!("{} is not an absolute path to a file", p.display()),
                    });
                }
                install.push(p);
            }
        }
        let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let v = env.get(name).unwrap_or_else(|| default.to_owned());
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(ConfigError::Invalid { name, value: v, why: "must start with http:// or https://".into() });
            }
            Ok(v.trim_end_matches('/').to_owned())
        };
        let tokens = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            let Some(raw) = env.get(name) else { return Ok(None) };
            raw.trim().parse::<u64>().ok().filter(|n| *n > 0).map(Some).ok_or(ConfigError::Invalid {
                name,
                value: raw,
                why: "must be a positive number of tokens".into(),
            })
        };
        let budget = tokens("KILN_GATEWAY_SESSION_BUDGET")?.unwrap_or(5_000_000);
        Ok(AgentConfig {
            command,
            explicit_none,
            install,
            model: env.get("KILN_AGENT_MODEL"),
            agent_model: env.get("KILN_MODEL"),
            anthropic_base: url("KILN_ANTHROPIC_BASE_URL", "https://api.anthropic.com")?,
            anthropic_key: env.get("ANTHROPIC_API_KEY"),
            openai_base: url("KILN_OPENAI_BASE_URL", "https://api.openai.com")?,
            openai_key: env.get("OPENAI_API_KEY"),
            session_budget_tokens: budget,
            global_budget_tokens: tokens("KILN_GATEWAY_GLOBAL_BUDGET")?,
        })
    }

    pub fn gateway(&self, sandbox_gid: u32) -> GatewayConfig {
        GatewayConfig {
            anthropic_base: self.anthropic_base.clone(),
            anthropic_key: self.anthropic_key.clone(),
            openai_base: self.openai_base.clone(),
            openai_key: self.openai_key.clone(),
            session_budget_tokens: self.session_budget_tokens,
            global_budget_tokens: self.global_budget_tokens,
            sandbox_gid,
        }
    }

    /// What agents run with: the gateway inside the sandbox as their API
    /// base, and a placeholder key.
    pub fn pool_credentials(&self) -> std::collections::BTreeMap<String, String> {
        let port = kiln_types::agent::GATEWAY_PORT;
        let mut creds: std::collections::BTreeMap<String, String> = [
            ("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}/anthropic")),
            ("ANTHROPIC_API_KEY", PLACEHOLDER_KEY.to_owned()),
            ("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/openai/v1")),
            ("OPENAI_API_KEY", PLACEHOLDER_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(m) = &self.agent_model {
            creds.insert("KILN_MODEL".into(), m.clone());
        }
        creds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parsing() {
        let c = AgentConfig::load(&[("X", "")]).unwrap();
        assert_eq!(c.command, None);
        assert_eq!(c.anthropic_base, "https://api.anthropic.com");
        let c = AgentConfig::load(&[("KILN_AGENT", r#"["node", "/opt/kiln/a b.js"]"#)]).unwrap();
        assert_eq!(c.command.unwrap(), vec!["node", "/opt/kiln/a b.js"]);
        let c = AgentConfig::load(&[("KILN_AGENT", "/opt/kiln/kiln-agent --stdio")]).unwrap();
        assert_eq!(c.command.unwrap(), vec!["/opt/kiln/kiln-agent", "--stdio"]);
        let c =
            AgentConfig::load(&[("ANTHROPIC_API_KEY", "sk-ant-real"), ("KILN_MODEL", "anthropic:claude-haiku-4-5")])
                .unwrap();
        let creds = c.pool_credentials();
        assert!(!creds.values().any(|v| v.starts_with("sk-")), "real keys never go to the agent");
        assert_eq!(creds["KILN_MODEL"], "anthropic:claude-haiku-4-5");
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [
            ("KILN_AGENT", "[1, 2]"),
            ("KILN_AGENT", "   "),
            ("KILN_AGENT_BINS", "relative/path"),
            ("KILN_ANTHROPIC_BASE_URL", "api.anthropic.com"),
            ("KILN_GATEWAY_SESSION_BUDGET", "0"),
            ("KILN_GATEWAY_SESSION_BUDGET", "lots"),
            ("KILN_GATEWAY_GLOBAL_BUDGET", "0"),
        ] {
            let e = AgentConfig::load(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
    }
}
