//! Delivery settings from the environment.

use postline_shared::runtime::config::{env_or, ConfigError};
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
    /// Most subscription consumers per broker connection; more connections
    /// are opened as needed (`POSTLINE_CHANNELS_PER_CONNECTION`).
    pub channels_per_connection: usize,
    /// How long a delivered (or given-up) marker is kept (`POSTLINE_DELIVERED_TTL_SECS`).
    pub delivered_ttl_secs: u64,
    /// About how many recent attempts each subscription's log keeps (`POSTLINE_ATTEMPT_LOG_CAP`).
    pub attempt_log_cap: usize,
    /// Base URL of the token service (`POSTLINE_TOKEN_URL`).
    pub token_url: String,
    /// How often `postline_subscription_backlog` is read from the broker
    /// (`POSTLINE_BACKLOG_REFRESH_SECS`).
    pub backlog_refresh: Duration,
}

impl DeliveryConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::local(CommonConfig::from_env()?);
        Ok(Self {
            listen: env_or("POSTLINE_DELIVERY_LISTEN", defaults.listen)?,
            prefetch: env_or("POSTLINE_DELIVERY_PREFETCH", defaults.prefetch)?,
            channels_per_connection: env_or(
                "POSTLINE_CHANNELS_PER_CONNECTION",
                defaults.channels_per_connection,
            )?,
            delivered_ttl_secs: env_or("POSTLINE_DELIVERED_TTL_SECS", defaults.delivered_ttl_secs)?,
            attempt_log_cap: env_or("POSTLINE_ATTEMPT_LOG_CAP", defaults.attempt_log_cap)?,
            token_url: env_or("POSTLINE_TOKEN_URL", defaults.token_url.clone())?,
            backlog_refresh: Duration::from_secs(env_or(
                "POSTLINE_BACKLOG_REFRESH_SECS",
                defaults.backlog_refresh.as_secs(),
            )?),
            ..defaults
        })
    }

    /// Defaults around `common`, ops endpoints on 127.0.0.1:8081.
    pub fn local(common: CommonConfig) -> Self {
        Self {
            common,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            prefetch: 64,
            // Well under RabbitMQ's default channel_max of 2047.
            channels_per_connection: 1_000,
            delivered_ttl_secs: postline_shared::redis::delivery_state::DEFAULT_SETTLED_TTL_SECS,
            attempt_log_cap: postline_shared::redis::delivery_state::DEFAULT_ATTEMPT_LOG_CAP,
            token_url: "http://127.0.0.1:8082".to_string(),
            // One passive declare per subscription queue each time: modest.
            backlog_refresh: Duration::from_secs(15),
        }
    }
}
