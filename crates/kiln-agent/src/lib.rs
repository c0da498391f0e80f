//! kiln-agent: Kiln's own ACP agent.
//!
//! [`model`] talks to language models behind one trait: the Anthropic
//! Messages API, any OpenAI-compatible Chat Completions server (Ollama,
//! vLLM, llama.cpp, OpenRouter), and a scripted provider that replays a file
//! of model turns for tests and the demo mode.

pub mod acp_workspace;
pub mod agent;
pub mod config;
pub mod context;
pub mod mcp;
pub mod model;
pub mod tools;
pub mod turn;
