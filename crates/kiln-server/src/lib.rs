//! Kiln's server: configuration and the HTTP edge.

pub mod agent_config;
pub mod api;
pub mod config;
pub mod metrics;
pub mod serve;

pub use config::{Config, ConfigError};
