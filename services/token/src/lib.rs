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
use postline_shared::redis::subscription_store::SubscriptionStore;
use postline_shared::redis::token_cache::TokenCache;
use postline_shared::runtime::http_server::{self, ServerLimits};
use postline_shared::runtime::ops::{self, Readiness};
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    let metrics = metrics::TokenMetrics::register(&registry).context("registering metrics")?;
    let readiness = Readiness::new();
    // The token service never talks to the broker: only Redis decides readiness.
    readiness.set_broker(true);
    let common = &config.common;
    let keys = common.keys();
    let (store, redis) =
        SubscriptionStore::connect(&common.redis_url, keys.clone(), common.encryption.clone())
            .await
            .with_context(|| format!("connecting to Redis at {}", common.redis_url))?;
    let cache = TokenCache::new(redis.clone(), keys, common.encryption.clone());
    let minter = minter::Minter::new(
        store,
        cache,
        redis.clone(),
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
    // The token service holds no queue and only caches, but it reports a
    // lost state like every service, so the whole installation shows unready.
    let redis_watch = tokio::spawn(postline_shared::runtime::installation::watch(
        redis,
        common.keys(),
        common.amqp_url.clone(),
        common.topology(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, namespace = %common.namespace, "token service listening");
    let app = api::router(minter).merge(ops::router(readiness, registry));
    let done = tokio::spawn(async move {
        http_server::serve(listener, app, ServerLimits::default(), shutdown).await;
        let _ = redis_watch.await;
        tracing::info!("token service stopped");
    });
    Ok(RunningToken { addr, done })
}
