//! Which model answers: for the agents in sandboxes (`KILN_MODEL`, passed to
//! kiln-agent) and for Quick mode (called from the host).
//!
//! A script (`scripted:<host path>`) and the bundled demo replay must be
//! readable *inside* sandboxes too, so they are copied to `<data>/bin/models`
//! (bound read-only at `/opt/kiln/models`) and agents are given that path.
//! With no model configured Kiln still runs: the UI says so, explains how to
//! set one, and offers the demo — a replay, labelled as such.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_agent::config::ModelChoice;
use kiln_agent::model::ModelProvider;
use kiln_agent::model::anthropic::Anthropic;
use kiln_agent::model::openai::OpenAi;
use kiln_agent::model::scripted::Scripted;
use serde::Serialize;

use crate::agent_config::AgentConfig;

/// The demo replay an agent runs: builds a small sample app.
pub const DEMO_AGENT_SCRIPT: &str = include_str!("../demo/agent.json");
/// The demo replay of Quick mode: one HTML file.
pub const DEMO_QUICK_SCRIPT: &str = include_str!("../demo/quick.json");

/// The model value that selects the demo (`KILN_MODEL=demo`, or a chat
/// request's `"demo": true`).
pub const DEMO: &str = "demo";

#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("KILN_MODEL={0:?} is not demo, anthropic:<model>, openai:<model> or scripted:<path>")]
    Choice(String),
    #[error("KILN_QUICK_MODEL={0:?} is not demo, anthropic:<model>, openai:<model> or scripted:<path>")]
    QuickChoice(String),
    #[error("installing the model script {path}: {source}")]
    Install { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Provider(String),
}

/// What the UI is told about the model.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// The configured model (`anthropic:claude-sonnet-4-5`, `demo`, …), or
    /// `None` when there is none (the demo is then offered).
    pub model: Option<String>,
    pub quick_model: Option<String>,
    /// How to configure one, for the UI's notice.
    pub how_to: &'static str,
}

pub const HOW_TO: &str = "Set ANTHROPIC_API_KEY (Claude), or point KILN_OPENAI_BASE_URL at an \
OpenAI-compatible server such as a local Ollama (http://127.0.0.1:11434) and set \
KILN_MODEL=openai:<model>; then restart kiln serve.";

#[derive(Clone, Debug)]
pub struct Models {
    /// Given to agents as `KILN_MODEL`.
    pub agent_model: Option<String>,
    /// The demo as agents see it (`scripted:/opt/kiln/models/demo.json`).
    pub demo_agent_model: String,
    info: ModelInfo,
    quick: Option<ModelChoice>,
    demo_quick: PathBuf,
    anthropic: (String, String),
    openai: (String, String),
}

/// Where scripts are installed: `<data>/bin/models`, i.e. `/opt/kiln/models`.
fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("bin").join("models")
}

fn install(data_dir: &Path, name: &str, content: &[u8]) -> Result<(PathBuf, String), ModelsError> {
    let dir = models_dir(data_dir);
    let path = dir.join(name);
    let io = |source| ModelsError::Install { path: path.clone(), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).map_err(io)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok((path, format!("scripted:/opt/kiln/models/{name}")))
}

impl Models {
    /// Resolves the configuration and installs the scripts agents need.
    pub fn prepare(data_dir: &Path, agent: &AgentConfig, quick_env: Option<&str>) -> Result<Models, ModelsError> {
        let (demo_quick, _) = install(data_dir, "demo-quick.json", DEMO_QUICK_SCRIPT.as_bytes())?;
        let (_, demo_agent_model) = install(data_dir, "demo.json", DEMO_AGENT_SCRIPT.as_bytes())?;
        let keyed = |k: &Option<String>| k.as_deref().is_some_and(|k| !k.is_empty());
        // What answers in sandboxes.
        let (agent_model, label) = match agent.agent_model.as_deref().map(str::trim) {
            Some(DEMO) => (Some(demo_agent_model.clone()), Some(DEMO.to_owned())),
            Some(m) => match ModelChoice::parse(m).map_err(|_| ModelsError::Choice(m.into()))? {
                ModelChoice::Scripted(p) => {
                    let content =
                        std::fs::read(&p).map_err(|source| ModelsError::Install { path: p.clone(), source })?;
                    let name = format!("script-{}.json", &hex_sha(&content)[..16]);
                    (Some(install(data_dir, &name, &content)?.1), Some(m.to_owned()))
                }
                c => (Some(c.id()), Some(c.id())),
            },
            None if keyed(&agent.anthropic_key) => (None, Some("anthropic:claude-sonnet-4-5".into())),
            None if keyed(&agent.openai_key) => (None, Some("openai (agent default)".into())),
            None => (None, None),
        };
        // What answers in Quick mode: KILN_QUICK_MODEL, else the same
        // provider as the agents (a script written for agents would make no
        // sense as an HTML file, so scripts fall back to the demo).
        let quick = match quick_env.map(str::trim) {
            Some(DEMO) => None,
            Some(q) => Some(ModelChoice::parse(q).map_err(|_| ModelsError::QuickChoice(q.into()))?),
            None => match agent.agent_model.as_deref().map(ModelChoice::parse) {
                Some(Ok(c @ (ModelChoice::Anthropic(_) | ModelChoice::OpenAi(_)))) => Some(c),
                Some(_) => None,
                None if keyed(&agent.anthropic_key) => Some(ModelChoice::Anthropic("claude-haiku-4-5".into())),
                None => None,
            },
        };
        let quick_label = match (&quick, &label) {
            (Some(c), _) => Some(c.id()),
            (None, Some(_)) => Some(DEMO.to_owned()),
            (None, None) => None,
        };
        Ok(Models {
            agent_model,
            demo_agent_model,
            info: ModelInfo { model: label, quick_model: quick_label, how_to: HOW_TO },
            quick,
            demo_quick,
            anthropic: (agent.anthropic_base.clone(), agent.anthropic_key.clone().unwrap_or_default()),
            openai: (openai_v1(&agent.openai_base), agent.openai_key.clone().unwrap_or_default()),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A model is configured (otherwise only the demo can answer).
    pub fn configured(&self) -> bool {
        self.info.model.is_some()
    }

    /// The provider Quick mode calls, and the model id to send it. A new
    /// provider per session: a script's position is per session.
    pub fn quick_provider(&self, demo: bool) -> Result<(Arc<dyn ModelProvider>, String), ModelsError> {
        let choice = match (&self.quick, demo) {
            (Some(c), false) => c.clone(),
            _ => ModelChoice::Scripted(self.demo_quick.clone()),
        };
        Ok(match choice {
            ModelChoice::Anthropic(m) => (Arc::new(Anthropic::new(&self.anthropic.0, &self.anthropic.1)), m),
            ModelChoice::OpenAi(m) => (Arc::new(OpenAi::new(&self.openai.0, &self.openai.1)), m),
            ModelChoice::Scripted(p) => {
                (Arc::new(Scripted::from_file(&p).map_err(ModelsError::Provider)?), "scripted".into())
            }
        })
    }
}

/// The gateway appends the agent's `/v1/…` path to `KILN_OPENAI_BASE_URL`;
/// Quick mode calls the same server directly.
fn openai_v1(base: &str) -> String {
    if base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1") }
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
