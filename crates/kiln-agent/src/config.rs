//! kiln-agent's configuration: environment only (envd passes the agent's
//! credentials as environment variables; see `kiln-agent --help`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::ModelProvider;
use crate::model::anthropic::Anthropic;
use crate::model::openai::OpenAi;
use crate::model::scripted::Scripted;

pub const HELP: &str = "kiln-agent: Kiln's ACP agent. Speaks ACP (agentclientprotocol.com) on stdin/stdout.

Configuration (environment):
  KILN_MODEL                 which model answers:
                               anthropic:<model>   the Anthropic Messages API
                               openai:<model>      any OpenAI-compatible Chat Completions server
                               scripted:<path>     replay a JSON script of model turns (docs/scripted-model.md)
                             default: anthropic:claude-sonnet-4-5 when ANTHROPIC_API_KEY is set,
                             else openai:<KILN_OPENAI_MODEL> when OPENAI_API_KEY is set
  ANTHROPIC_BASE_URL         default http://127.0.0.1:4141/anthropic (Kiln's model gateway in the sandbox)
  ANTHROPIC_API_KEY          the key (in a Kiln sandbox a placeholder: the gateway adds the real one)
  OPENAI_BASE_URL            default http://127.0.0.1:4141/openai/v1
  OPENAI_API_KEY             the key (placeholder in a Kiln sandbox)
  KILN_AGENT_MAX_STEPS       model calls per turn before the turn stops (default 40)
  KILN_AGENT_MAX_TOKENS      max tokens per model answer (default 8192)
  KILN_AGENT_CONTEXT_TOKENS  context window to stay within (default 180000)

The model can also be chosen per session with the ACP config option `model`.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelChoice {
    Anthropic(String),
    OpenAi(String),
    Scripted(PathBuf),
}

impl ModelChoice {
    pub fn parse(s: &str) -> Result<ModelChoice, String> {
        match s.split_once(':') {
            Some(("anthropic", m)) if !m.is_empty() => Ok(ModelChoice::Anthropic(m.to_owned())),
            Some(("openai", m)) if !m.is_empty() => Ok(ModelChoice::OpenAi(m.to_owned())),
            Some(("scripted", p)) if !p.is_empty() => Ok(ModelChoice::Scripted(PathBuf::from(p))),
            _ => {
                Err(format!("KILN_MODEL={s:?} is not anthropic:<model>, openai:<model> or scripted:<path to a script>"))
            }
        }
    }

    /// The value of the ACP `model` config option.
    pub fn id(&self) -> String {
        match self {
            ModelChoice::Anthropic(m) => format!("anthropic:{m}"),
            ModelChoice::OpenAi(m) => format!("openai:{m}"),
            ModelChoice::Scripted(p) => format!("scripted:{}", p.display()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub model: Option<ModelChoice>,
    /// Other models offered in the `model` option.
    pub offered: Vec<ModelChoice>,
    pub anthropic_base: String,
    pub anthropic_key: String,
    pub openai_base: String,
    pub openai_key: String,
    pub max_steps: u32,
    pub max_tokens: u32,
    pub context_tokens: u64,
}

fn num<T: std::str::FromStr>(get: &dyn Fn(&str) -> Option<String>, name: &str, default: T) -> Result<T, String> {
    match get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
    }
}

impl AgentConfig {
    pub fn from_env() -> Result<AgentConfig, String> {
        AgentConfig::from(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from(get: &dyn Fn(&str) -> Option<String>) -> Result<AgentConfig, String> {
        let anthropic_key = get("ANTHROPIC_API_KEY").unwrap_or_default();
        let openai_key = get("OPENAI_API_KEY").unwrap_or_default();
        let model = match get("KILN_MODEL") {
            Some(m) => Some(ModelChoice::parse(&m)?),
            None if !anthropic_key.is_empty() => Some(ModelChoice::Anthropic("claude-sonnet-4-5".into())),
            None if !openai_key.is_empty() => {
                Some(ModelChoice::OpenAi(get("KILN_OPENAI_MODEL").unwrap_or_else(|| "gpt-4.1".into())))
            }
            None => None,
        };
        let mut offered = vec![
            ModelChoice::Anthropic("claude-sonnet-4-5".into()),
            ModelChoice::Anthropic("claude-opus-4-1".into()),
            ModelChoice::Anthropic("claude-haiku-4-5".into()),
        ];
        if let Some(m) = &model
            && !offered.contains(m)
        {
            offered.insert(0, m.clone());
        }
        let max_steps = num(get, "KILN_AGENT_MAX_STEPS", 40u32)?;
        if max_steps == 0 {
            return Err("KILN_AGENT_MAX_STEPS must be at least 1".into());
        }
        Ok(AgentConfig {
            model,
            offered,
            anthropic_base: get("ANTHROPIC_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:4141/anthropic".into()),
            anthropic_key,
            openai_base: get("OPENAI_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:4141/openai/v1".into()),
            openai_key,
            max_steps,
            max_tokens: num(get, "KILN_AGENT_MAX_TOKENS", 8192u32)?,
            context_tokens: num(get, "KILN_AGENT_CONTEXT_TOKENS", 180_000u64)?,
        })
    }

    /// The provider for a model choice, and the model id to send it.
    pub fn provider(&self, choice: &ModelChoice) -> Result<(Arc<dyn ModelProvider>, String), String> {
        Ok(match choice {
            ModelChoice::Anthropic(m) => (
                Arc::new(Anthropic::new(&self.anthropic_base, &self.anthropic_key)) as Arc<dyn ModelProvider>,
                m.clone(),
            ),
            ModelChoice::OpenAi(m) => (Arc::new(OpenAi::new(&self.openai_base, &self.openai_key)), m.clone()),
            ModelChoice::Scripted(p) => (Arc::new(Scripted::from_file(p)?), "scripted".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<AgentConfig, String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        AgentConfig::from(&move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn model_choice_and_defaults() {
        assert_eq!(cfg(&[]).unwrap().model, None);
        assert_eq!(
            cfg(&[("ANTHROPIC_API_KEY", "x")]).unwrap().model,
            Some(ModelChoice::Anthropic("claude-sonnet-4-5".into()))
        );
        let c =
            cfg(&[("KILN_MODEL", "openai:qwen2.5-coder"), ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")]).unwrap();
        assert_eq!(c.model, Some(ModelChoice::OpenAi("qwen2.5-coder".into())));
        assert_eq!(c.offered[0].id(), "openai:qwen2.5-coder");
        assert_eq!(c.anthropic_base, "http://127.0.0.1:4141/anthropic");
        for bad in [
            ("KILN_MODEL", "gpt-4"),
            ("KILN_MODEL", "anthropic:"),
            ("KILN_AGENT_MAX_STEPS", "0"),
            ("KILN_AGENT_MAX_STEPS", "x"),
        ] {
            assert!(cfg(&[bad]).unwrap_err().contains(bad.0), "{bad:?}");
        }
    }
}
