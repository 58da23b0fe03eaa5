//! Delivery settings from the environment.

use postline_shared::config::{env_or, ConfigError};
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the delivery service needs to run.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Namespace, broker and Redis.
    pub common: CommonConfig,
    /// Listen address of `/healthz`, `/readyz`, `/metrics` (`POSTLINE_DELIVERY_LISTEN`).
    pub listen: SocketAddr,
    /// Messages in flight from the broker per subscription consumer (`POSTLINE_DELIVERY_PREFETCH`).
    pub prefetch: u16,
    /// Immediate retries of a failed POST before the event is handed back (`POSTLINE_INPLACE_RETRIES`).
    pub inplace_retries: u32,
    /// Pause between immediate retries (`POSTLINE_RETRY_PAUSE_MS`).
    pub retry_pause: Duration,
    /// How long a delivered marker is kept (`POSTLINE_DELIVERED_TTL_SECS`).
    pub delivered_ttl_secs: u64,
    /// Base URL of the token service (`POSTLINE_TOKEN_URL`).
    pub token_url: String,
}

impl DeliveryConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::local(CommonConfig::from_env()?);
        Ok(Self {
            listen: env_or("POSTLINE_DELIVERY_LISTEN", defaults.listen)?,
            prefetch: env_or("POSTLINE_DELIVERY_PREFETCH", defaults.prefetch)?,
            inplace_retries: env_or("POSTLINE_INPLACE_RETRIES", defaults.inplace_retries)?,
            retry_pause: Duration::from_millis(env_or(
                "POSTLINE_RETRY_PAUSE_MS",
                defaults.retry_pause.as_millis() as u64,
            )?),
            delivered_ttl_secs: env_or("POSTLINE_DELIVERED_TTL_SECS", defaults.delivered_ttl_secs)?,
            token_url: env_or("POSTLINE_TOKEN_URL", defaults.token_url.clone())?,
            ..defaults
        })
    }

    /// Defaults around `common`, ops endpoints on 127.0.0.1:8081.
    pub fn local(common: CommonConfig) -> Self {
        Self {
            common,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            prefetch: 64,
            inplace_retries: 3,
            retry_pause: Duration::from_millis(500),
            delivered_ttl_secs: 7 * 24 * 3600,
            token_url: "http://127.0.0.1:8082".to_string(),
        }
    }
}
