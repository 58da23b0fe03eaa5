//! Token service settings from the environment.

use postline_shared::runtime::config::{env_or, ConfigError};
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the token service needs to run.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Namespace, Redis and the encryption keys.
    pub common: CommonConfig,
    /// HTTP listen address (`POSTLINE_TOKEN_LISTEN`); keep it internal.
    pub listen: SocketAddr,
    /// How long a partner's token endpoint has to answer (`POSTLINE_TOKEN_FETCH_TIMEOUT_MS`).
    pub fetch_timeout: Duration,
    /// How long before the partner's expiry a token stops being used
    /// (`POSTLINE_TOKEN_EXPIRY_MARGIN_SECS`), for clock skew and requests in flight.
    pub expiry_margin: Duration,
    /// How long before that a token in use is replaced (`POSTLINE_TOKEN_REFRESH_AHEAD_SECS`);
    /// at most a third of a token's usable life.
    pub refresh_ahead: Duration,
}

impl TokenConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::local(CommonConfig::from_env()?);
        Ok(Self {
            listen: env_or("POSTLINE_TOKEN_LISTEN", defaults.listen)?,
            fetch_timeout: Duration::from_millis(env_or(
                "POSTLINE_TOKEN_FETCH_TIMEOUT_MS",
                defaults.fetch_timeout.as_millis() as u64,
            )?),
            expiry_margin: Duration::from_secs(env_or(
                "POSTLINE_TOKEN_EXPIRY_MARGIN_SECS",
                defaults.expiry_margin.as_secs(),
            )?),
            refresh_ahead: Duration::from_secs(env_or(
                "POSTLINE_TOKEN_REFRESH_AHEAD_SECS",
                defaults.refresh_ahead.as_secs(),
            )?),
            ..defaults
        })
    }

    /// Defaults around `common`, listening on 127.0.0.1:8082.
    pub fn local(common: CommonConfig) -> Self {
        Self {
            common,
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            fetch_timeout: Duration::from_secs(10),
            expiry_margin: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
        }
    }
}
