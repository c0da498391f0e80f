//! Kiln's server: configuration and the HTTP edge.

pub mod config;
pub mod serve;

pub use config::{Config, ConfigError};
