//! The Postline token service: mints and caches receiver bearer tokens
//! (OAuth2 client credentials, password grant, token servers) in Redis.
//!
//! This first version serves only its operational endpoints; token minting
//! arrives with the receiver-authentication work.

#![warn(missing_docs)]

use anyhow::Context;
use postline_shared::config::{env_or, ConfigError};
use postline_shared::ops::{self, Readiness};
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Token service settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Namespace and Redis.
    pub common: CommonConfig,
    /// HTTP listen address (`POSTLINE_TOKEN_LISTEN`).
    pub listen: SocketAddr,
}

impl TokenConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env()?,
            listen: env_or(
                "POSTLINE_TOKEN_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 8082)),
            )?,
        })
    }
}

/// A started token service.
pub struct RunningToken {
    /// Where its HTTP endpoints listen.
    pub addr: SocketAddr,
    /// Completes when the service has shut down.
    pub done: JoinHandle<()>,
}

/// Starts the token service; it runs until `shutdown` is cancelled.
pub async fn start(
    config: TokenConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningToken> {
    let registry = prometheus::Registry::new();
    let readiness = Readiness::new();
    // The token service never talks to the broker: only Redis decides readiness.
    readiness.set_broker(true);
    let (_client, redis) = postline_shared::config::connect_redis(&config.common.redis_url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.common.redis_url))?;
    let redis_watch = tokio::spawn(ops::watch_redis(redis, readiness.clone(), shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, "token service listening");
    let app = ops::router(readiness, registry);
    let done = tokio::spawn(async move {
        let stop = shutdown.clone();
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::error!(%error, "token HTTP server failed");
        }
        let _ = redis_watch.await;
        tracing::info!("token service stopped");
    });
    Ok(RunningToken { addr, done })
}
