//! The Postline token service: mints and caches the bearer tokens receivers
//! require (OAuth2 client credentials, OAuth2 password grant, JSON login
//! token servers) in Redis, with one refresh at a time across every replica,
//! and serves them to delivery over an internal HTTP API.

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod fetch;
pub mod metrics;
pub mod minter;

pub use config::TokenConfig;

use anyhow::Context;
use postline_shared::outbound::OutboundClient;
use postline_shared::redis::token_cache::TokenCache;
use postline_shared::runtime::http_server::ServerLimits;
use postline_shared::runtime::service::{Broker, Running, Service};
use tokio_util::sync::CancellationToken;

/// A started token service: where its HTTP endpoints listen, and its end.
pub type RunningToken = Running;

/// Starts the token service; it runs until `shutdown` is cancelled.
pub async fn start(
    config: TokenConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningToken> {
    let common = &config.common;
    // The token service never talks to the broker: only Redis decides readiness.
    let service = Service::connect("token", common, Broker::Unused, &shutdown).await?;
    let metrics =
        metrics::TokenMetrics::register(&service.registry).context("registering metrics")?;
    let cache = TokenCache::new(
        service.redis.clone(),
        service.keys.clone(),
        common.encryption.clone(),
    );
    let minter = minter::Minter::new(
        service.store.clone(),
        cache,
        service.redis.clone(),
        OutboundClient::new(
            &common.outbound,
            postline_shared::outbound::webhook_request::USER_AGENT,
        )
        .context("building the HTTP client")?,
        minter::Timing {
            fetch_timeout: config.fetch_timeout,
            expiry_margin: config.expiry_margin,
            refresh_ahead: config.refresh_ahead,
        },
        metrics,
    );
    let running = service
        .serve(
            config.listen,
            api::router(minter),
            ServerLimits::default(),
            shutdown,
            |_| async {},
        )
        .await?;
    Ok(running)
}
