//! Reading one setting from the environment: [`env_or`] parses a variable or
//! falls back to its default, and [`ConfigError`] names a variable that is set
//! but unusable. Every service's configuration is built from these.

use std::str::FromStr;

/// A configuration variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Reads `name` and parses it, or returns `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_string(),
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}
