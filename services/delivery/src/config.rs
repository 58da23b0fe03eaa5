//! Delivery settings: one `clap` struct, read from `POSTLINE_…` variables (or
//! the matching flags); `postline-delivery --help` lists every one with its
//! default.

use postline_shared::redis::delivery_state::{DEFAULT_ATTEMPT_LOG_CAP, DEFAULT_SETTLED_TTL_SECS};
use postline_shared::runtime::config::ServiceConfig;
use postline_shared::runtime::env::secs;
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the delivery service needs to run.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "postline-delivery",
    version,
    about = "Postline delivery: one ordered consumer per subscription queue, POSTing each event to its receiver and acking only after a final outcome.",
    long_about = None
)]
pub struct DeliveryConfig {
    /// Namespace, broker, Redis, encryption and the outbound guard.
    #[command(flatten)]
    pub common: CommonConfig,
    /// HTTP address of the ops endpoints (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long = "listen",
        env = "POSTLINE_DELIVERY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// AMQP prefetch per subscription consumer.
    #[arg(
        long = "prefetch",
        env = "POSTLINE_DELIVERY_PREFETCH",
        default_value_t = 64
    )]
    pub prefetch: u16,
    /// Subscription consumers (one channel each) per broker connection; more
    /// connections are opened as needed (RabbitMQ allows 2047 channels per
    /// connection by default).
    #[arg(
        long,
        env = "POSTLINE_CHANNELS_PER_CONNECTION",
        default_value_t = 1_000
    )]
    pub channels_per_connection: usize,
    /// How long a delivered (or given-up) marker stops a second POST of the
    /// same event (seconds: 8 days, longer than the ladder).
    #[arg(long = "delivered-ttl-secs", value_name = "SECS", env = "POSTLINE_DELIVERED_TTL_SECS", default_value_t = DEFAULT_SETTLED_TTL_SECS)]
    pub delivered_ttl_secs: u64,
    /// About how many recent attempts each subscription's log keeps.
    #[arg(long, env = "POSTLINE_ATTEMPT_LOG_CAP", default_value_t = DEFAULT_ATTEMPT_LOG_CAP)]
    pub attempt_log_cap: usize,
    /// The token service, asked for receivers' bearer tokens on a cache miss.
    #[arg(
        long,
        env = "POSTLINE_TOKEN_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub token_url: String,
    /// How often `postline_subscription_backlog` is read from the broker (one
    /// passive declare per subscription queue), in seconds.
    #[arg(long = "backlog-refresh-secs", value_name = "SECS", env = "POSTLINE_BACKLOG_REFRESH_SECS", default_value = "15", value_parser = secs)]
    pub backlog_refresh: Duration,
}

impl ServiceConfig for DeliveryConfig {
    fn common_mut(&mut self) -> &mut CommonConfig {
        &mut self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = DeliveryConfig::local(CommonConfig::local("ns"));
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8081)));
        assert_eq!(config.prefetch, 64);
        assert_eq!(config.delivered_ttl_secs, 8 * 24 * 3600);
        assert_eq!(config.backlog_refresh, Duration::from_secs(15));
    }
}
