//! Token service settings: one `clap` struct, read from `POSTLINE_…`
//! variables (or the matching flags); `postline-token --help` lists every one
//! with its default.

use postline_shared::runtime::config::ServiceConfig;
use postline_shared::runtime::env::{millis, secs};
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the token service needs to run.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "postline-token",
    version,
    about = "Postline token service: mints and caches the bearer tokens receivers require and serves them to delivery.",
    long_about = None
)]
pub struct TokenConfig {
    /// Namespace, Redis, encryption and the outbound guard.
    #[command(flatten)]
    pub common: CommonConfig,
    /// HTTP address of the token service; keep it internal.
    #[arg(
        long = "listen",
        env = "POSTLINE_TOKEN_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,
    /// How long a partner's token endpoint has to answer (ms).
    #[arg(long = "fetch-timeout-ms", value_name = "MS", env = "POSTLINE_TOKEN_FETCH_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub fetch_timeout: Duration,
    /// A token stops being used this long before the partner's expiry (seconds),
    /// for clock skew and requests in flight.
    #[arg(long = "expiry-margin-secs", value_name = "SECS", env = "POSTLINE_TOKEN_EXPIRY_MARGIN_SECS", default_value = "30", value_parser = secs)]
    pub expiry_margin: Duration,
    /// A token in use is replaced this long before it stops being used
    /// (seconds; at most a third of its use).
    #[arg(long = "refresh-ahead-secs", value_name = "SECS", env = "POSTLINE_TOKEN_REFRESH_AHEAD_SECS", default_value = "60", value_parser = secs)]
    pub refresh_ahead: Duration,
}

impl ServiceConfig for TokenConfig {
    fn common_mut(&mut self) -> &mut CommonConfig {
        &mut self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = TokenConfig::local(CommonConfig::local("ns"));
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8082)));
        assert_eq!(config.fetch_timeout, Duration::from_secs(10));
        assert_eq!(config.expiry_margin, Duration::from_secs(30));
        assert_eq!(config.refresh_ahead, Duration::from_secs(60));
    }
}
