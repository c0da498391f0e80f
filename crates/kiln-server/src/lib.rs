//! Kiln's server: configuration and the HTTP edge.

pub mod agent_config;
pub mod api;
pub mod apps;
pub mod chat;
pub mod config;
pub mod metrics;
pub mod models;
pub mod proxy;
pub mod serve;
pub mod web;

pub use config::{Config, ConfigError};

/// Milliseconds since the Unix epoch (the store's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
