//! The Postline delivery service: one ordered consumer per subscription queue,
//! POSTing each event to its receiver and acking only after a final outcome.

#![warn(missing_docs)]

mod acks;
pub mod attempt;
pub mod config;
pub mod connections;
pub mod consumer;
mod consumer_error;
pub mod decision;
mod interval;
pub mod metrics;
pub mod pacing;
pub mod status_gauges;
pub mod supervisor;

pub use config::DeliveryConfig;

use anyhow::Context;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::outbound::token_client::{TokenClient, TokenClientMetrics};
use postline_shared::redis::catalog;
use postline_shared::redis::delivery_state::DeliveryState;
use postline_shared::runtime::http_server::ServerLimits;
use postline_shared::runtime::service::{Broker, Service};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started delivery service.
pub struct RunningDelivery {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub addr: SocketAddr,
    /// Completes when the service has shut down.
    pub done: JoinHandle<()>,
    supervisor: tokio::task::AbortHandle,
    stop: CancellationToken,
}

impl RunningDelivery {
    /// Simulates a crash: every consumer is aborted mid-work without acking,
    /// and the broker connection drops, so the broker requeues what was in flight.
    pub fn kill(&self) {
        self.supervisor.abort();
        self.stop.cancel();
    }
}

/// Starts delivery; it runs until `shutdown` is cancelled, then finishes the
/// POSTs in flight, acks them, hands back everything else, and exits.
pub async fn start(
    config: DeliveryConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningDelivery> {
    // A child token, so `kill` can stop this instance without touching the caller's.
    let shutdown = shutdown.child_token();
    let common = &config.common;
    let mut service = Service::connect("delivery", common, Broker::Used, &shutdown).await?;
    let metrics =
        metrics::DeliveryMetrics::register(&service.registry).context("registering metrics")?;
    let (store, redis, keys) = (
        service.store.clone(),
        service.redis.clone(),
        service.keys.clone(),
    );
    let background = service.background();
    let (changed_tx, changed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (catalog, sync) = catalog::start_sync(
        store.clone(),
        background.clone(),
        move |id: &SubscriptionId| {
            let _ = changed_tx.send(id.clone());
        },
    )
    .await
    .context("loading subscriptions")?;
    service.adopt(sync);

    let state = DeliveryState::new(redis.clone(), keys.clone())
        .with_retention(config.delivered_ttl_secs, config.attempt_log_cap);
    service.spawn(status_gauges::run(
        catalog.clone(),
        state.clone(),
        metrics.clone(),
        background.clone(),
    ));
    service.spawn(status_gauges::run_backlog(
        catalog.clone(),
        status_gauges::BrokerDepths::new(&common.amqp_url, common.topology()),
        metrics.clone(),
        config.backlog_refresh,
        background.clone(),
    ));
    let token_cache = postline_shared::redis::token_cache::TokenCache::new(
        redis,
        keys,
        common.encryption.clone(),
    );
    let tokens = TokenClient::new(
        &config.token_url,
        token_cache,
        TokenClientMetrics::register(&service.registry).context("registering token metrics")?,
    )
    .context("building the token service client")?;
    let context = Arc::new(consumer::ConsumerContext {
        topology: service.topology.clone(),
        state,
        store,
        client: postline_shared::outbound::OutboundClient::new(
            &common.outbound,
            postline_shared::outbound::webhook_request::USER_AGENT,
        )
        .context("building the HTTP client")?,
        tokens,
        metrics,
        prefetch: config.prefetch,
    });
    let supervisor = supervisor::Supervisor {
        amqp_url: common.amqp_url.clone(),
        context,
        catalog,
        readiness: service.readiness.clone(),
        channels_per_connection: config.channels_per_connection,
    };
    let supervising = tokio::spawn(supervisor.run(changed_rx, shutdown.clone()));
    let supervisor_abort = supervising.abort_handle();

    // Delivery serves only the ops endpoints.
    let running = service
        .serve(
            config.listen,
            axum::Router::new(),
            ServerLimits::default(),
            shutdown.clone(),
            |_| async move {
                // The supervisor returns once every consumer has finished its
                // POST in flight, acked it, and handed the rest back.
                let _ = supervising.await;
            },
        )
        .await?;
    Ok(RunningDelivery {
        addr: running.addr,
        done: running.done,
        supervisor: supervisor_abort,
        stop: shutdown,
    })
}
